"""`syncvid bench livekit`: the LiveKit VideoGenerator (``syncvid_client.livekit``) on loopback.

Against a `syncvid serve` subprocess (real models, the default avatar), with no LiveKit server: the
bench drives ``SyncVidVideoGenerator`` as ``AvatarRunner`` does (100 ms ``rtc.AudioFrame``s of TTS
speech pushed at once, then ``AudioSegmentEnd``; one consumer iterating its output) and measures:
- TTS audio in -> first video frame showing it: from pushing a segment's first frame to the first
  ``rtc.VideoFrame`` yielded whose syncvid frame shows speech (``speaking`` with visemes not at
  rest: the server can flag a rest frame ``speaking`` just after an interrupt);
- ``clear_buffer`` -> last speech frame: ``clear_buffer()`` called 0.3 s into a segment's playback,
  to the last video frame yielded after it that shows speech (0 when none; frames already on their
  way still come), and to the last ``rtc.AudioFrame`` after it (the generator yields none);
- ``clear_buffer()`` -> its return: ``AvatarRunner`` sends ``lk.playback_finished`` (interrupted)
  as soon as the generator's ``clear_buffer()`` returns, so this is when it goes out, to compare
  with one frame time. (The RPC itself is checked on a fake room in tests/clients.)
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from realtime.bench.loopback import (
    FIXTURE,
    free_port,
    server_command,
    speech_bursts,
    start_process,
    stop_process,
)

log = logging.getLogger(__name__)

RATE = 24000  # TTS services commonly speak at 24 kHz; the session opens at the TTS rate
PUSH_S = 0.1  # DataStreamAudioReceiver hands the runner 100 ms frames
CLEAR_AFTER_S = 0.3  # into a segment's playback
SETTLE_S = 0.5  # after a segment's end or a clear, before the next one


def add_arguments(p) -> None:
    p.add_argument("--segments", type=int, default=10, help="segments played out and segments cleared")
    p.add_argument("--rate", type=int, choices=(16000, 24000, 48000), default=RATE,
                   help="the TTS's sample rate, and the session's (default 24000)")
    p.add_argument("--video", choices=("raw", "jpeg"), default="raw", help="frames from the server")
    p.add_argument("--low-latency", action="store_true", help="the 40 ms look-ahead mode")
    p.add_argument("--audio", default=str(FIXTURE), help="speech WAV the segments are cut from")
    p.add_argument("--server-config", default=None, help="YAML config for the server under test")
    p.add_argument("--json", default=None, help="also write the results as JSON to this file")


def summary(xs: list[float]) -> dict:
    if not xs:
        return {"p50": None, "p95": None, "max": None, "n": 0}
    ms = np.asarray(xs) * 1000
    return {"p50": round(float(np.percentile(ms, 50)), 1), "p95": round(float(np.percentile(ms, 95)), 1),
            "max": round(float(ms.max()), 1), "n": len(xs)}


def shows_speech(frame) -> bool:
    return bool(frame.speaking) and (frame.visemes or {}).get("sil", 1.0) < 1.0


class Consumer:
    """Iterates the generator as AvatarRunner does: (time, kind, shows speech) per item."""

    def __init__(self, gen) -> None:
        from livekit import rtc

        self.gen, self.rtc = gen, rtc
        self.items: list[tuple[float, str, bool]] = []
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for item in self.gen:
            if isinstance(item, self.rtc.VideoFrame):
                self.items.append((time.monotonic(), "video", shows_speech(self.gen.last_frame)))
            elif isinstance(item, self.rtc.AudioFrame):
                self.items.append((time.monotonic(), "audio", True))
            else:
                self.items.append((time.monotonic(), "end", False))

    async def first(self, pred, since: float, timeout: float = 10.0) -> float:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            for t, kind, speech in self.items:
                if t >= since and pred(kind, speech):
                    return t
            await asyncio.sleep(0.002)
        raise TimeoutError("the generator never yielded it")

    def last(self, pred, since: float) -> float | None:
        return max((t for t, kind, speech in self.items if t >= since and pred(kind, speech)), default=None)


async def probe(url: str, segments: list, n: int, rate: int, video: str, low_latency: bool) -> dict:
    from livekit import rtc
    from livekit.agents.voice.avatar import AudioSegmentEnd
    from syncvid_client.livekit import SyncVidVideoGenerator

    def frames(pcm: np.ndarray) -> list:
        step = round(rate * PUSH_S)
        return [rtc.AudioFrame(pcm[k:k + step].tobytes(), rate, 1, len(pcm[k:k + step]))
                for k in range(0, len(pcm), step)]

    first_shown, clear_return, last_speech, last_audio, n_speech_after = [], [], [], [], []
    async with SyncVidVideoGenerator(url, sample_rate=rate, video=video, low_latency=low_latency) as gen:
        out = Consumer(gen)
        await asyncio.sleep(1.0)
        for k in range(n):
            pcm = segments[k % len(segments)]
            # a segment played out
            t0 = time.monotonic()
            for f in frames(pcm):
                await gen.push_audio(f)
            await gen.push_audio(AudioSegmentEnd())
            first_shown.append(await out.first(lambda kind, s: kind == "video" and s, t0) - t0)
            await out.first(lambda kind, s: kind == "end", t0)
            await asyncio.sleep(SETTLE_S)
            # a segment cleared mid-playback
            t0 = time.monotonic()
            for f in frames(pcm):
                await gen.push_audio(f)
            shown = await out.first(lambda kind, s: kind == "video" and s, t0)
            await asyncio.sleep(max(0.0, shown + CLEAR_AFTER_S - time.monotonic()))
            tc = time.monotonic()
            await gen.clear_buffer()
            clear_return.append(time.monotonic() - tc)
            await gen.push_audio(AudioSegmentEnd())  # as DataStreamAudioReceiver ends a cleared stream
            await asyncio.sleep(SETTLE_S)
            t_last = out.last(lambda kind, s: kind == "video" and s, tc)
            last_speech.append(0.0 if t_last is None else t_last - tc)
            n_speech_after.append(sum(1 for t, kind, s in out.items if t >= tc and kind == "video" and s))
            t_audio = out.last(lambda kind, s: kind == "audio", tc)
            last_audio.append(0.0 if t_audio is None else t_audio - tc)
        fps = gen.started.fps
        out.task.cancel()
    return {"fps": fps, "tts_in_to_first_speech_frame_ms": summary(first_shown),
            "clear_buffer_to_last_speech_frame_ms": summary(last_speech),
            "speech_frames_after_clear_buffer": {"max": max(n_speech_after), "mean": float(np.mean(n_speech_after))},
            "clear_buffer_to_last_audio_frame_ms": summary(last_audio),
            "clear_buffer_call_ms": summary(clear_return),
            "playback_finished_within_one_frame": bool(max(clear_return) < 1.0 / fps)}


async def run_async(args) -> dict:
    from scipy.signal import (
        resample_poly,  # slow to import; `syncvid --help` imports this module
    )

    from realtime.bench.realtime import machine_description

    segments = [np.clip(resample_poly(b.astype(np.float32), args.rate, 48000), -32768, 32767).astype(np.int16)
                for b in speech_bursts(args.audio, 8)]  # 48 kHz bursts to the TTS rate
    args.max_sessions = 1  # server_command's session cap: this bench opens one session
    port = free_port()
    proc = start_process(server_command(args, port, low_latency=args.low_latency), port, "/healthz")
    url = f"ws://127.0.0.1:{port}/ws"
    results: dict = {"machine": machine_description(), "rate": args.rate, "video": args.video,
                     "low_latency": args.low_latency, "loadavg_before": [round(x, 2) for x in os.getloadavg()]}
    try:
        await probe(url, segments, 2, args.rate, args.video, args.low_latency)  # warm-up: first inference is slow
        results.update(await probe(url, segments, args.segments, args.rate, args.video, args.low_latency))
    finally:
        stop_process(proc)
    results["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    return results


def print_table(r: dict) -> None:
    print(f"machine: {r['machine']}  load average before {r['loadavg_before']} after {r['loadavg_after']}")
    print(f"LiveKit VideoGenerator, {r['video']} video, {r['rate']} Hz, {r['fps']:g} fps, "
          f"{'low' if r['low_latency'] else 'full'} look-ahead")
    print(f"TTS audio in -> first video frame showing it ms {r['tts_in_to_first_speech_frame_ms']}")
    print(f"clear_buffer -> last speech frame ms {r['clear_buffer_to_last_speech_frame_ms']}  "
          f"(speech frames after it: {r['speech_frames_after_clear_buffer']})")
    print(f"clear_buffer -> last audio frame ms {r['clear_buffer_to_last_audio_frame_ms']}")
    print(f"clear_buffer() returns (AvatarRunner sends lk.playback_finished then) ms {r['clear_buffer_call_ms']}  "
          f"within one frame time: {r['playback_finished_within_one_frame']}")


def run(args) -> int:
    results = asyncio.run(run_async(args))
    print_table(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0
