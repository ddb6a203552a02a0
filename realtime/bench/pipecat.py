"""`syncvid bench pipecat`: the pipecat avatar service (``syncvid_client.pipecat``) on loopback.

Against a `syncvid serve` subprocess (real models, the default avatar), a pipecat pipeline
[scripted TTS -> SyncVidVideoService -> recorder] speaks utterances of real speech (24 kHz, 100 ms
TTS frames queued as fast as the pipeline takes them, as TTS services produce them):
- TTS frame in -> first image showing it: from queuing an utterance's first TTS frame to the
  arrival, at the pipeline's end, of the image pushed with that frame's first audio;
- interruption -> last speech image: utterances cut by an ``InterruptionFrame`` 0.4 s after their
  first image; from queuing it to the last image that still arrives flagged ``speaking``, and to the
  last one whose mouth FaceMesh reads as open (0 when none does); the speech audio frames that
  still arrive one frame period after it;
- CPU of this process (the pipeline) and of the server's process tree per second of speech, with
  the images sent as raw RGB and as JPEG (decoded with Pillow here).
The pipeline runs in this process, on the same cores as the server: the load is in the output.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

from realtime.bench.leaks import process_tree
from realtime.bench.loopback import (
    FIXTURE,
    free_port,
    server_command,
    speech_bursts,
    start_process,
    stop_process,
)
from realtime.bench.realtime import machine_description
from realtime.bench.sdk import RATE, summary, to_rate

log = logging.getLogger(__name__)

CHUNK_S = 0.1  # TTS frame length
GAP_S = 1.0  # silence between utterances
CUT_AFTER_S = 0.4  # interrupt this long after an utterance's first image
AFTER_CUT_S = 0.6  # then watch what still arrives


def add_arguments(p) -> None:
    p.add_argument("--utterances", type=int, default=12, help="utterances per figure (default 12)")
    p.add_argument("--video", default="raw", choices=("raw", "jpeg"), help="image format of the latency runs")
    p.add_argument("--cpu-seconds", type=float, default=8.0, help="speech per image format in the CPU runs (0: skip)")
    p.add_argument("--audio", default=str(FIXTURE), help="speech WAV the utterances are cut from")
    p.add_argument("--server-config", default=None, help="YAML config for the server under test")
    p.add_argument("--json", default=None, help="also write the results as JSON to this file")


def make_recorder():
    """The pipeline's last processor: ``got`` holds (arrival time, frame) of every downstream frame.
    Built here, not at import: `syncvid --help` imports this module, and pipecat is slow to import."""
    from pipecat.frames.frames import OutputImageRawFrame
    from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

    class Recorder(FrameProcessor):
        """Images keep their pixels (half size) in ``pixels`` while ``keep`` is set; the others drop
        them (0.8 MB a frame at 512x512 would add up to gigabytes)."""

        def __init__(self) -> None:
            super().__init__(name="Recorder")
            self.got: list[tuple[float, object]] = []
            self.keep = False
            self.pixels: dict[int, np.ndarray] = {}  # by frame id

        async def process_frame(self, frame, direction):
            await super().process_frame(frame, direction)
            if direction is FrameDirection.DOWNSTREAM:
                self.got.append((time.monotonic(), frame))
                if isinstance(frame, OutputImageRawFrame):
                    if self.keep:
                        w, h = frame.size
                        self.pixels[frame.id] = np.frombuffer(frame.image, np.uint8).reshape(h, w, 3)[::2, ::2].copy()
                    frame.image = b""
            await self.push_frame(frame, direction)

    return Recorder()


@contextlib.asynccontextmanager
async def pipeline_running(processors: list, rate: int, start_timeout: float, end_timeout: float):
    """Runs ``Pipeline(processors)`` (output rate ``rate``) in a worker; yields the worker once the
    pipeline has started; then ends it with an EndFrame (unless the body did) and waits for it,
    cancelling it if it does not finish. The tests run their pipelines through this too."""
    from pipecat.frames.frames import EndFrame
    from pipecat.pipeline.pipeline import Pipeline
    from pipecat.pipeline.worker import PipelineParams, PipelineWorker
    from pipecat.workers.runner import WorkerRunner

    worker = PipelineWorker(Pipeline(processors), params=PipelineParams(audio_out_sample_rate=rate),
                            cancel_on_idle_timeout=False, idle_timeout_secs=None, enable_rtvi=False)
    started = asyncio.Event()

    @worker.event_handler("on_pipeline_started")
    async def _started(worker, frame):
        started.set()

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    run = asyncio.create_task(runner.run())
    try:
        await asyncio.wait_for(started.wait(), start_timeout)
        yield worker
        if not worker.has_finished():
            await worker.queue_frame(EndFrame())
        await asyncio.wait_for(run, end_timeout)
    finally:
        if not run.done():
            await worker.cancel()
            await asyncio.wait_for(run, 10)


@contextlib.asynccontextmanager
async def running(url: str, video: str):
    """A started pipeline [service, recorder]; yields (worker, service, recorder); ends with EndFrame."""
    from syncvid_client.pipecat import SyncVidVideoService

    service, recorder = SyncVidVideoService(url, video=video), make_recorder()
    async with pipeline_running([service, recorder], RATE, start_timeout=30, end_timeout=30) as worker:
        if service.client is None:
            raise RuntimeError(f"the service opened no session on {url}")
        yield worker, service, recorder


def tts_frames(pcm: np.ndarray, stop: bool = True) -> list:
    from pipecat.frames.frames import TTSAudioRawFrame, TTSStartedFrame, TTSStoppedFrame

    n = round(RATE * CHUNK_S)
    frames = [TTSStartedFrame(), *(TTSAudioRawFrame(pcm[k:k + n].tobytes(), RATE, 1) for k in range(0, len(pcm), n))]
    return frames + [TTSStoppedFrame()] if stop else frames


async def wait_for(recorder, pred, after: float, timeout: float = 10.0) -> tuple[float, object]:
    """The first (time, frame) recorded at or after ``after`` that satisfies ``pred``."""
    t0, seen = time.monotonic(), 0
    while time.monotonic() - t0 < timeout:
        got = recorder.got
        for k in range(seen, len(got)):
            if got[k][0] >= after and pred(got[k][1]):
                return got[k]
        seen = len(got)
        await asyncio.sleep(0.002)
    raise TimeoutError("the frame never reached the end of the pipeline")


def first_image_showing(recorder, t0: float) -> float:
    """Arrival of the image pushed right before the first speech audio that came after ``t0``."""
    from pipecat.frames.frames import OutputImageRawFrame, TTSAudioRawFrame

    got = recorder.got
    k = next(i for i, (t, f) in enumerate(got) if t >= t0 and isinstance(f, TTSAudioRawFrame))
    return next(t for t, f in reversed(got[:k]) if isinstance(f, OutputImageRawFrame))


async def latency_runs(url: str, bursts: list[np.ndarray], n: int, video: str) -> dict:
    from pipecat.frames.frames import (
        InterruptionFrame,
        OutputImageRawFrame,
        TTSAudioRawFrame,
        TTSStoppedFrame,
    )

    first_image, cut, late_audio, windows = [], [], [], []
    async with running(url, video) as (worker, service, recorder):
        period = 1.0 / service.client.started.fps
        await asyncio.sleep(GAP_S)
        for k in range(n):
            t0 = time.monotonic()
            await worker.queue_frames(tts_frames(bursts[k % len(bursts)]))
            await wait_for(recorder, lambda f: isinstance(f, TTSStoppedFrame), t0)
            first_image.append(first_image_showing(recorder, t0) - t0)
            await asyncio.sleep(GAP_S)
        for k in range(n):
            t0 = time.monotonic()
            await worker.queue_frames(tts_frames(bursts[k % len(bursts)], stop=False))  # the TTS is still talking
            await wait_for(recorder, lambda f: isinstance(f, TTSAudioRawFrame), t0)
            await asyncio.sleep(CUT_AFTER_S - 0.2)
            recorder.keep = True
            await asyncio.sleep(0.2)
            t_cut = time.monotonic()
            await worker.queue_frame(InterruptionFrame())
            await asyncio.sleep(AFTER_CUT_S)
            recorder.keep = False
            windows.append([(t - t_cut, recorder.pixels.pop(f.id)) for t, f in recorder.got
                            if isinstance(f, OutputImageRawFrame) and f.id in recorder.pixels])
            after = [(t, f) for t, f in recorder.got if t >= t_cut]
            speaking = [t for t, f in after if isinstance(f, OutputImageRawFrame) and f.metadata["syncvid"]["speaking"]]
            cut.append(max(speaking) - t_cut if speaking else 0.0)
            late_audio.append(sum(1 for t, f in after if isinstance(f, TTSAudioRawFrame) and t > t_cut + period))
            await asyncio.sleep(GAP_S - AFTER_CUT_S)
    return {"tts_frame_in_to_first_image_ms": summary(first_image),
            "interruption_to_last_speech_image_ms": summary(cut),
            "interruption_to_last_open_mouth_image_ms": last_open_mouth(windows),
            "speech_audio_frames_after_interruption": {"max": max(late_audio), "total": sum(late_audio)}}


def last_open_mouth(windows: list[list[tuple[float, np.ndarray]]]) -> dict:
    """What the viewer sees, not what the frames are flagged: per interruption, the images from 0.2 s
    before it to 0.6 s after, the mouth opening read by FaceMesh (after the runs: it is heavy); the
    last image after the interruption open by more than ``Probe.JUMP`` over the rest opening (the
    median over its last 0.3 s). Cuts where the mouth was not open just before are counted apart."""
    from realtime.bench.loopback import Probe
    from realtime.bench.mouth_open import opening_series

    last, closed_before = [], 0
    for window in windows:
        times = np.array([t for t, _ in window])
        opening = np.nan_to_num(opening_series([img for _, img in window]))
        rest = float(np.median(opening[times > AFTER_CUT_S - 0.3]))
        is_open = opening > rest + Probe.JUMP
        if not is_open[times < 0].any():
            closed_before += 1
            continue
        late = times[(times >= 0) & is_open]
        last.append(float(late.max()) if late.size else 0.0)
    return {**summary(last), "mouth_closed_before_the_cut": closed_before}


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of these processes so far (those gone count 0)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / os.sysconf("SC_CLK_TCK")


async def cpu_run(url: str, bursts: list[np.ndarray], seconds: float, video: str, server_pid: int) -> dict:
    """Back-to-back utterances for ``seconds``; CPU s per s of this process and of the server."""
    from pipecat.frames.frames import TTSStoppedFrame

    async with running(url, video) as (worker, service, recorder):
        await asyncio.sleep(1.0)
        pids = process_tree(server_pid)
        c0, s0, t0 = time.process_time(), cpu_seconds(pids), time.monotonic()
        k = 0
        while time.monotonic() - t0 < seconds:
            mark = time.monotonic()
            await worker.queue_frames(tts_frames(bursts[k % len(bursts)]))
            await wait_for(recorder, lambda f: isinstance(f, TTSStoppedFrame), mark)
            k += 1
        dt = time.monotonic() - t0
        client, server = (time.process_time() - c0) / dt, (cpu_seconds(pids) - s0) / dt
        size = service.client.started.width, service.client.started.height
    return {"video": video, "size": list(size), "seconds": round(dt, 1), "client_cpu_s_per_s": round(client, 3),
            "server_cpu_s_per_s": round(server, 3), "total_cpu_s_per_s": round(client + server, 3)}


async def run_async(args) -> dict:
    bursts = [to_rate(b) for b in speech_bursts(args.audio, 8)]
    args.max_sessions = 2  # server_command's session cap (it adds one)
    port = free_port()
    proc = start_process(server_command(args, port), port, "/healthz")
    url = f"ws://127.0.0.1:{port}/ws"
    results: dict = {"machine": machine_description(), "rate": RATE, "video": args.video}
    try:
        log.info("warm-up...")
        await latency_runs(url, bursts, 1, args.video)  # the first inferences are slow
        log.info("latency and interruption, %d utterances each...", args.utterances)
        results.update(await latency_runs(url, bursts, args.utterances, args.video))
        if args.cpu_seconds > 0:
            results["cpu"] = [await cpu_run(url, bursts, args.cpu_seconds, video, proc.pid)
                              for video in ("raw", "jpeg")]
    finally:
        stop_process(proc)
    results["load_average_after"] = round(os.getloadavg()[0], 2)
    return results


def print_table(r: dict) -> None:
    print(f"machine: {r['machine']} (load average after: {r['load_average_after']})")
    print(f"video {r['video']}, TTS at {r['rate']} Hz")
    print(f"TTS frame in -> first image showing it, ms: {r['tts_frame_in_to_first_image_ms']}")
    print(f"interruption -> last speech image, ms: {r['interruption_to_last_speech_image_ms']} (flagged speaking); "
          f"{r['interruption_to_last_open_mouth_image_ms']} (mouth open, FaceMesh)")
    print(f"speech audio frames after an interruption: {r['speech_audio_frames_after_interruption']}")
    for c in r.get("cpu", []):
        print(f"cpu, {c['video']} {c['size'][0]}x{c['size'][1]}: client {c['client_cpu_s_per_s']} + server "
              f"{c['server_cpu_s_per_s']} = {c['total_cpu_s_per_s']} CPU s per s ({c['seconds']} s of speech)")


def run(args) -> int:
    logging.getLogger("aioice").setLevel(logging.WARNING)
    with contextlib.suppress(ImportError):  # pipecat logs every frame processor's start at DEBUG
        from loguru import logger

        logger.remove()
        logger.add(sys.stderr, level="WARNING")
    results = asyncio.run(run_async(args))
    print_table(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0
