"""`syncvid bench sdk`: the avatar-SDK session on loopback, with the Python client.

Against a `syncvid serve` subprocess (real models, the default avatar), per look-ahead mode:
- first speaking frame after the first speech sample was sent, for speech sent in real time (20 ms
  chunks, paced) and in bulk (the whole utterance at once, as TTS does): to the first frame flagged
  ``speaking`` and to the frame that plays the utterance's first audio (``playback_started``);
- interrupt -> ``playback_finished{interrupted: true}`` at the client;
- frames per utterance (``playback_started`` .. ``playback_finished``) against duration x fps, and
  the gaps between frame events at the client;
then the most concurrent SDK sessions (speech in bursts, JPEG out) with < 1 % late frames, and a
mixed run of WebRTC and SDK sessions. Clients run in this process, on the same cores.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path

import numpy as np
from syncvid_client import AvatarClient, Frame, PlaybackFinished, PlaybackStarted

from realtime.bench.loopback import (
    BURST_S,
    FIXTURE,
    GAP_S,
    free_port,
    http_json,
    server_command,
    speech_bursts,
    start_process,
    stop_process,
)
from realtime.bench.realtime import machine_description

log = logging.getLogger(__name__)

RATE = 24000  # TTS services commonly speak at 24 kHz
CHUNK_S = 0.02  # real-time uploads: one 20 ms chunk every 20 ms


def add_arguments(p) -> None:
    p.add_argument("--utterances", type=int, default=12, help="utterances per mode and upload style")
    p.add_argument("--modes", default="full,low", help="look-ahead modes: full,low")
    p.add_argument("--max-sessions", type=int, default=6, help="capacity search upper bound")
    p.add_argument("--capacity-seconds", type=float, default=15.0, help="measured seconds per session count")
    p.add_argument("--skip-capacity", action="store_true")
    p.add_argument("--mixed", default="2+2", help="WebRTC+SDK sessions of the mixed run ('' to skip)")
    p.add_argument("--audio", default=str(FIXTURE), help="speech WAV the clients speak (bursts cut from it)")
    p.add_argument("--server-config", default=None, help="YAML config for the server under test")
    p.add_argument("--json", default=None, help="also write the results as JSON to this file")


def pct(xs: list[float], q: float) -> float | None:
    return round(float(np.percentile(xs, q)) * 1000, 1) if xs else None


def summary(xs: list[float]) -> dict:
    return {"p50": pct(xs, 50), "p95": pct(xs, 95), "n": len(xs)}


def to_rate(burst48: np.ndarray) -> np.ndarray:
    """48 kHz int16 -> RATE int16 (a whole ratio: every other sample of a 2:1 low-passed signal)."""
    from scipy.signal import (
        resample_poly,  # slow to import; `syncvid --help` imports this module
    )

    return np.clip(resample_poly(burst48.astype(np.float32), RATE, 48000), -32768, 32767).astype(np.int16)


class Recorder:
    """Reads a client's events in the background: arrival times of frames and playback events."""

    def __init__(self, client: AvatarClient) -> None:
        self.client = client
        self.frames: list[tuple[float, Frame]] = []
        self.playback: list[tuple[float, object]] = []
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for ev in self.client.events():
            t = time.monotonic()
            if isinstance(ev, Frame):
                self.frames.append((t, ev))
            elif isinstance(ev, (PlaybackStarted, PlaybackFinished)):
                self.playback.append((t, ev))

    async def wait_for(self, pred, timeout: float = 10.0):
        t0 = time.monotonic()
        seen = 0
        while time.monotonic() - t0 < timeout:
            items = self.playback + [(t, f) for t, f in self.frames[seen:]]
            for t, ev in items:
                if pred(t, ev):
                    return t, ev
            await asyncio.sleep(0.002)
        raise TimeoutError("the event never came")


async def send_utterance(c: AvatarClient, pcm: np.ndarray, bulk: bool) -> float:
    """Sends one utterance and its end; returns when its first sample was sent."""
    t0 = time.monotonic()
    if bulk:
        await c.send_audio(pcm)
    else:
        n = round(RATE * CHUNK_S)
        for k in range(0, len(pcm), n):
            await c.send_audio(pcm[k:k + n])
            await asyncio.sleep(max(0.0, t0 + (k // n + 1) * CHUNK_S - time.monotonic()))
    await c.end_utterance()
    return t0


async def latency_probe(url: str, bursts: list[np.ndarray], n: int, low: bool) -> dict:
    out: dict = {}
    for style in ("realtime", "bulk"):
        speaking, playing, frames_err, gaps = [], [], [], []
        async with AvatarClient(url, sample_rate=RATE, video="jpeg", low_latency=low) as c:
            rec = Recorder(c)
            await asyncio.sleep(1.0)
            for k in range(n):
                pcm = bursts[k % len(bursts)]
                mark = len(rec.frames)
                t0 = await send_utterance(c, pcm, bulk=style == "bulk")
                ts, _ = await rec.wait_for(lambda t, e, t0=t0: isinstance(e, Frame) and e.speaking and t >= t0)
                tp, started = await rec.wait_for(lambda t, e, t0=t0: isinstance(e, PlaybackStarted) and t >= t0)
                tf, fin = await rec.wait_for(lambda t, e, tp=tp: isinstance(e, PlaybackFinished) and t >= tp)
                speaking.append(ts - t0)
                playing.append(tp - t0)
                during = [f for t, f in rec.frames if started.pts - 1e-6 <= f.pts and t <= tf]
                frames_err.append(len(during) - len(pcm) / RATE * c.started.fps)
                arr = [t for t, _ in rec.frames[mark:]]
                gaps += list(np.diff(arr))
                await asyncio.sleep(GAP_S)
            rec.task.cancel()
        out[style] = {"first_speaking_frame_ms": summary(speaking), "first_played_frame_ms": summary(playing),
                      "frames_minus_duration_x_fps": {"min": round(min(frames_err), 2),
                                                      "max": round(max(frames_err), 2)},
                      "frame_gap_ms": summary(gaps)}
    # interrupts: mid-utterance (0.5 s after playback started) and before the first frame
    mid, early = [], []
    async with AvatarClient(url, sample_rate=RATE, video="jpeg", low_latency=low) as c:
        rec = Recorder(c)
        await asyncio.sleep(0.5)
        for k in range(n):
            pcm = bursts[k % len(bursts)]
            t0 = time.monotonic()
            await c.send_audio(pcm)
            await rec.wait_for(lambda t, e, t0=t0: isinstance(e, PlaybackStarted) and t >= t0)
            await asyncio.sleep(0.5)
            ti = time.monotonic()
            await c.interrupt()
            tf, fin = await rec.wait_for(lambda t, e, ti=ti: isinstance(e, PlaybackFinished) and t >= ti)
            mid.append(tf - ti)
            await asyncio.sleep(0.3)
            ti = time.monotonic()
            await c.send_audio(pcm)
            await c.interrupt()
            tf, fin = await rec.wait_for(lambda t, e, ti=ti: isinstance(e, PlaybackFinished) and t >= ti)
            early.append(tf - ti)
            assert fin.interrupted and fin.playback_position == 0.0, fin
            await asyncio.sleep(0.3)
        rec.task.cancel()
    out["interrupt_to_finished_ms"] = {"mid_utterance": summary(mid), "before_first_frame": summary(early)}
    return out


async def load(url: str, bursts: list[np.ndarray], bursts48: list[np.ndarray], n_sdk: int, n_webrtc: int,
               seconds: float, port: int) -> dict:
    """``n_sdk`` SDK and ``n_webrtc`` WebRTC sessions talking in bursts; late frames from /stats."""
    from clients.webrtc_peer import (
        WebRTCPeer,  # aiortc is heavy; imported only for mixed runs
    )

    clients = [AvatarClient(url, sample_rate=RATE, video="jpeg", decode_images=False) for _ in range(n_sdk)]
    for c in clients:
        await c.__aenter__()
    recs = [Recorder(c) for c in clients]
    peers = [WebRTCPeer(url, keep_video=False) for _ in range(n_webrtc)]
    for p in peers:
        await p.connect()
    for p in peers:
        await p.wait_connected()

    async def talk(i: int) -> None:
        k = i
        while True:
            if i < n_sdk:
                await clients[i].send_audio(bursts[k % len(bursts)])
                await clients[i].end_utterance()
            else:
                peers[i - n_sdk].play(bursts48[k % len(bursts48)])
            k += 1
            await asyncio.sleep(BURST_S + GAP_S * (0.5 + (k % 3) * 0.25))

    talkers = [asyncio.create_task(talk(i)) for i in range(n_sdk + n_webrtc)]
    await asyncio.sleep(3.0)
    before = http_json(port, "/stats?reset=1")
    n0 = [len(r.frames) for r in recs]
    t0 = time.monotonic()
    await asyncio.sleep(seconds)
    after = http_json(port, "/stats")
    dt = time.monotonic() - t0
    for t in talkers:
        t.cancel()
    rx = [(len(r.frames) - a) / dt for r, a in zip(recs, n0)]
    for r in recs:
        r.task.cancel()
    for c in clients:
        await c.__aexit__(None, None, None)
    for p in peers:
        await p.close()
    d = {k: after["frames"][k] - before["frames"][k] for k in after["frames"]}
    late = d["late"] / max(1, d["sent"])
    return {"sdk": n_sdk, "webrtc": n_webrtc, "late_frac": round(late, 4),
            "rx_fps_min_sdk": round(min(rx), 2) if rx else None, "skipped_slots": after["skipped_slots"],
            "engine_latency_ms": after["engine_latency_ms"], "ok": late < 0.01 and (not rx or min(rx) >= 24.0)}


async def run_async(args) -> dict:
    bursts48 = speech_bursts(args.audio, 8)
    bursts = [to_rate(b) for b in bursts48]
    results: dict = {"machine": machine_description(), "rate": RATE, "modes": {}}
    port = free_port()
    cmd = server_command(args, port)
    proc = start_process(cmd, port, "/healthz")
    url = f"ws://127.0.0.1:{port}/ws"
    try:
        await latency_probe(url, bursts, 2, low=False)  # warm-up: first inference is slow
        for mode in [m for m in args.modes.split(",") if m]:
            log.info("latency probe, %s look-ahead...", mode)
            results["modes"][mode] = await latency_probe(url, bursts, args.utterances, low=mode == "low")
        if not args.skip_capacity:
            caps = []
            for n in range(1, args.max_sessions + 1):
                c = await load(url, bursts, bursts48, n, 0, args.capacity_seconds, port)
                log.info("capacity %s", c)
                caps.append(c)
                if not c["ok"]:
                    break
            results["capacity"] = caps
            results["max_sdk_sessions"] = max([c["sdk"] for c in caps if c["ok"]], default=0)
        if args.mixed:
            n_webrtc, n_sdk = (int(x) for x in args.mixed.split("+"))
            results["mixed"] = await load(url, bursts, bursts48, n_sdk, n_webrtc, args.capacity_seconds, port)
    finally:
        stop_process(proc)
    return results


def print_table(r: dict) -> None:
    print(f"machine: {r['machine']}")
    for mode, m in r["modes"].items():
        for style in ("realtime", "bulk"):
            s = m[style]
            print(f"{mode:4s} {style:8s} first speaking frame ms {s['first_speaking_frame_ms']}  first played frame "
                  f"ms {s['first_played_frame_ms']}  frames-duration*fps {s['frames_minus_duration_x_fps']}  "
                  f"frame gaps ms {s['frame_gap_ms']}")
        print(f"{mode:4s} interrupt -> playback_finished ms {m['interrupt_to_finished_ms']}")
    if "capacity" in r:
        for c in r["capacity"]:
            print(f"capacity {c}")
        print(f"max SDK sessions with < 1 % late frames: {r['max_sdk_sessions']}")
    if "mixed" in r:
        print(f"mixed {r['mixed']}")


def run(args) -> int:
    logging.getLogger("aioice").setLevel(logging.WARNING)
    results = asyncio.run(run_async(args))
    print_table(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0
