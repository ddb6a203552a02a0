"""`syncvid bench hold`: a few sessions kept speaking for minutes against one server: does anything
drift?

Runs the real server (`syncvid serve`) as a subprocess and opens ``--webrtc`` WebRTC sessions
(aiortc peers) and ``--sdk`` avatar-SDK sessions (``syncvid_client.AvatarClient``, JPEG out) from
this process. Every session speaks for the whole ``--minutes``: 0.8 s speech bursts with 0.45-0.9 s
of silence between them. After a warm-up, every ``--interval`` seconds it records:

- per session, the frames per second its client received over the interval;
- late frames and engine latency p50/p95 over the interval (``/stats?reset=1``: each read clears
  the server's latency samples, so each figure is the interval's own);
- resident memory of the server and of its inference process, the server's fds and threads, and
  from ``/stats`` its asyncio tasks, Python threads and open WebSockets (``realtime.bench.leaks``);
- per WebRTC session the server's A/V offset (``av_offset_ms``: the outgoing audio's delay minus
  the video's, smoothed). SDK sessions have none to drift: each frame carries the audio cut to it by
  construction, and the server reports 0 for them, which is how their entries are told apart (the
  ``/stats`` list is in the server's session order, unlabelled, stable while no session comes or goes).

The verdict compares the first interval with the last: RSS of server + inference up by at most
50 MB, no count up, every WebRTC session's A/V offset within one frame (40 ms) of its start (A/V:
the median of the first three samples against that of the last three, as the server's figure is a
running average that swings by +-20 ms between samples on a busy machine).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
from syncvid_client import AvatarClient

from realtime.bench.leaks import FIGURES, leak_verdict, server_sample
from realtime.bench.loopback import BURST_S, FIXTURE, GAP_S, http_json, speech_bursts, start_server, stop_process
from realtime.bench.realtime import machine_description
from realtime.bench.sdk import RATE, to_rate
from realtime.bench.soak import FrameCounter
from realtime.cli import CLIError

log = logging.getLogger(__name__)

WARMUP_S = 5.0  # first inferences, pools filling: not part of any interval
AV_DRIFT_LIMIT_MS = 40.0  # one frame at 25 fps
AV_ENDS = 3  # samples whose median is the A/V offset at the start, and at the end


def add_arguments(p) -> None:
    p.add_argument("--minutes", type=float, default=10.0, help="how long the sessions are held (default 10)")
    p.add_argument("--webrtc", type=int, default=2, help="WebRTC sessions (default 2)")
    p.add_argument("--sdk", type=int, default=2, help="avatar-SDK sessions (default 2)")
    p.add_argument("--interval", type=float, default=10.0, help="seconds between samples (default 10)")
    p.add_argument("--warmup", type=float, default=WARMUP_S,
                   help=f"seconds of speech before the first interval starts (default {WARMUP_S:g})")
    p.add_argument("--server-config", default=None, help="YAML config for the server under test")
    p.add_argument("--json", default=None, help="also write the results as JSON to this file")


class HeldWebRTC:
    kind = "webrtc"

    def __init__(self, port: int, seed: int) -> None:
        from clients.webrtc_peer import WebRTCPeer  # aiortc is heavy; `syncvid --help` imports this module

        self.peer = WebRTCPeer(f"ws://127.0.0.1:{port}/ws", options={"seed": seed}, keep_video=False)

    async def open(self) -> None:
        await self.peer.connect()
        await self.peer.wait_connected()

    @property
    def frames(self) -> int:
        return len(self.peer.video_times)

    @property
    def error(self) -> str | None:
        state = self.peer.pc.connectionState
        if state == "connected":
            return None
        said = [m for m in self.peer.messages if m.get("event") == "session_ended" or m.get("type") == "error"]
        return f"webrtc: peer connection {state}" + (f" (the server: {said[-1]})" if said else "")

    async def say(self, burst48: np.ndarray, burst24: np.ndarray) -> None:
        self.peer.play(burst48)

    async def close(self) -> None:
        await self.peer.close()


class HeldSdk:
    kind = "sdk"

    def __init__(self, port: int, seed: int) -> None:
        self.client = AvatarClient(f"ws://127.0.0.1:{port}/ws", sample_rate=RATE, seed=seed, decode_images=False)
        self.counter: FrameCounter | None = None

    async def open(self) -> None:
        await self.client.connect()
        self.counter = FrameCounter(self.client)

    @property
    def frames(self) -> int:
        return self.counter.frames if self.counter else 0

    @property
    def error(self) -> str | None:
        if self.counter is None:
            return "sdk: not connected"
        if self.counter.error:
            return f"sdk: {self.counter.error}"
        return "sdk: the session ended" if self.counter.task.done() else None

    async def say(self, burst48: np.ndarray, burst24: np.ndarray) -> None:
        await self.client.send_audio(burst24)  # all at once, as TTS sends it; the server plays it in real time
        await self.client.end_utterance()

    async def close(self) -> None:
        await self.client.close()
        if self.counter is not None:
            await self.counter.stop()


async def talk(session, bursts48: list[np.ndarray], bursts24: list[np.ndarray], k: int) -> None:
    """Speech bursts with silences of varying length between them, until cancelled."""
    while True:
        await session.say(bursts48[k % len(bursts48)], bursts24[k % len(bursts24)])
        k += 1
        await asyncio.sleep(BURST_S + GAP_S * (0.5 + (k % 3) * 0.25))


def webrtc_offsets(samples: list[dict]) -> list[int] | None:
    """Indices of the WebRTC sessions in /stats' ``av_offset_ms``: those not 0 in some sample (the
    server measures no offset for an SDK session: its entry stays 0). None when a session came or
    went meanwhile: the unlabelled list no longer lines up."""
    n = len(samples[0]["av_offset_ms"])
    if any(len(s["av_offset_ms"]) != n for s in samples):
        return None
    return [i for i in range(n) if any(s["av_offset_ms"][i] != 0.0 for s in samples)]


def av_drift(samples: list[dict], n_webrtc: int) -> dict:
    """Per WebRTC session, its A/V offset at the end minus at the start, each the median of
    AV_ENDS samples: the offset ``/stats`` reports is a running average of one reading per 20 ms
    audio frame and swings by +-20 ms between samples on a busy machine; a drift moves the median."""
    idx = webrtc_offsets(samples)
    k = max(1, min(AV_ENDS, len(samples) // 2))
    sessions = [{"start_ms": round(float(np.median([s["av_offset_ms"][i] for s in samples[:k]])), 2),
                 "end_ms": round(float(np.median([s["av_offset_ms"][i] for s in samples[-k:]])), 2)}
                for i in idx or []]
    for a in sessions:
        a["drift_ms"] = round(a["end_ms"] - a["start_ms"], 2)
    # every WebRTC session's offset found, and none drifted by more than a frame
    ok = len(sessions) == n_webrtc and all(abs(a["drift_ms"]) <= AV_DRIFT_LIMIT_MS for a in sessions)
    return {"sessions": sessions, "samples_per_end": k, "limit_ms": AV_DRIFT_LIMIT_MS, "ok": ok,
            "note": None if idx is not None else "a session ended during the hold: its offsets cannot be matched"}


def hold_verdict(samples: list[dict], n_webrtc: int) -> dict:
    """First interval against the last: resources (``leak_verdict``) and each WebRTC A/V offset.
    Beside it (not judged) the growth over the second half, which leaves the warm-up out."""
    start, mid, end = samples[0], samples[(len(samples) - 1) // 2], samples[-1]
    growth = {k: round(end[k] - start[k], 1) for k in FIGURES}
    out = {"start": {k: start[k] for k in FIGURES}, "end": {k: end[k] for k in FIGURES}, "growth": growth,
           "second_half_growth": {k: round(end[k] - mid[k], 1) for k in FIGURES}, **leak_verdict(growth)}
    out["av"] = av_drift(samples, n_webrtc)
    out["checks"]["av"] = out["av"]["ok"]
    out["ok"] = all(out["checks"].values())
    return out


async def hold(port: int, server_pid: int, n_webrtc: int, n_sdk: int, seconds: float, interval: float,
               warmup: float = WARMUP_S) -> dict:
    """The hold proper, against a server already listening on ``port``."""
    bursts48 = speech_bursts(str(FIXTURE), 8)
    bursts24 = [to_rate(b) for b in bursts48]
    sessions = [HeldWebRTC(port, i) for i in range(n_webrtc)] + [HeldSdk(port, n_webrtc + i) for i in range(n_sdk)]
    talkers: list[asyncio.Task] = []
    samples: list[dict] = []
    try:
        for s in sessions:
            await s.open()
        talkers = [asyncio.create_task(talk(s, bursts48, bursts24, i)) for i, s in enumerate(sessions)]
        await asyncio.sleep(warmup)
        prev = http_json(port, "/stats?reset=1")
        t0 = t_prev = time.monotonic()
        frames_prev = [s.frames for s in sessions]
        k = 0
        while t_prev - t0 < seconds - 1e-6:
            k += 1
            await asyncio.sleep(max(0.0, t0 + min(k * interval, seconds) - time.monotonic()))
            stats = http_json(port, "/stats?reset=1")
            now = time.monotonic()
            frames = [s.frames for s in sessions]
            dt = now - t_prev
            fps = [round((f - p) / dt, 2) for f, p in zip(frames, frames_prev)]
            sent = stats["frames"]["sent"] - prev["frames"]["sent"]
            late = stats["frames"]["late"] - prev["frames"]["late"]
            samples.append({
                "t_s": round(now - t0, 1),
                "rx_fps": {kind: [f for f, s in zip(fps, sessions) if s.kind == kind] for kind in ("webrtc", "sdk")},
                "frames_sent": sent, "late": late, "late_frac": round(late / max(1, sent), 4),
                "engine_latency_ms": stats["engine_latency_ms"], "output_fps": stats["output_fps"],
                "sessions": stats["sessions"], "av_offset_ms": stats["av_offset_ms"],
                # why frames were late: the degradation level and the latency each session aims at now
                "degrade_level_max": stats["degrade_level_max"], "latency_target_ms": stats["latency_target_ms"],
                "session_errors": {i: x.error for i, x in enumerate(sessions) if x.error},
                **server_sample(port, server_pid, stats), "load": round(os.getloadavg()[0], 2)})
            prev, t_prev, frames_prev = stats, now, frames
    finally:
        errors = [e for e in (s.error for s in sessions) if e]
        for t in talkers:
            t.cancel()
        for s, t in zip(sessions, await asyncio.gather(*talkers, return_exceptions=True)):
            if isinstance(t, Exception):  # speech could not be sent: the session was gone
                errors.append(f"{s.kind} speech: {type(t).__name__}: {t}")
        for s in sessions:
            try:
                await s.close()
            except Exception as e:  # one session's failed close must not keep the others open
                errors.append(f"{s.kind} close: {type(e).__name__}: {e}")
    p95 = [s["engine_latency_ms"]["p95"] for s in samples if s["engine_latency_ms"]["p95"] is not None]
    fps_all = [f for s in samples for v in s["rx_fps"].values() for f in v]
    sent, late = sum(s["frames_sent"] for s in samples), sum(s["late"] for s in samples)
    return {"webrtc": n_webrtc, "sdk": n_sdk, "seconds": seconds, "interval_s": interval, "warmup_s": warmup,
            "samples": samples,
            "rx_fps_min": min(fps_all, default=None), "late": late, "late_frac": round(late / max(1, sent), 4),
            "engine_latency_p95_ms_max": max(p95, default=None),
            "verdict": hold_verdict(samples, n_webrtc) if samples else None, "errors": errors}


async def run_async(args) -> dict:
    machine = machine_description()
    port, server = start_server(argparse.Namespace(max_sessions=args.webrtc + args.sdk,
                                                   server_config=args.server_config))
    try:
        out = await hold(port, server.pid, args.webrtc, args.sdk, args.minutes * 60.0, args.interval, args.warmup)
        if out["errors"]:  # why the server ended them, in its own words
            server.log_file.seek(0)
            lines = server.log_file.read().decode(errors="replace").splitlines()
            out["server_log"] = [ln for ln in lines if " INFO " not in ln or " realtime.server." in ln][-40:]
    finally:
        stop_process(server)
    return {"machine": machine, **out}


def print_report(r: dict) -> None:
    print(f"hold: {r['webrtc']} WebRTC + {r['sdk']} SDK sessions speaking for {r['seconds'] / 60:g} min, "
          f"a sample every {r['interval_s']:g} s after {r.get('warmup_s', WARMUP_S):g} s of warm-up; "
          f"machine: {r['machine']}")
    print("| t s | rx fps WebRTC | rx fps SDK | late | latency p50/p95 ms | degrade level | server/inference RSS MB "
          "| fds | threads | asyncio tasks | py threads | websockets | A/V ms (WebRTC) | load |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    v = r["verdict"]
    step = max(1, len(r["samples"]) // 12)
    for i, s in enumerate(r["samples"]):
        if i % step and i != len(r["samples"]) - 1:
            continue
        lat = s["engine_latency_ms"]
        av = ", ".join(str(x) for x in s["av_offset_ms"] if x != 0.0)  # the WebRTC sessions' (SDK: 0)
        fps = {kind: ", ".join(map(str, x)) for kind, x in s["rx_fps"].items()}
        print(f"| {s['t_s']:g} | {fps['webrtc']} | {fps['sdk']} | {s['late']} | {lat['p50']} / {lat['p95']} "
              f"| {s.get('degrade_level_max', '-')} | {s['server_mb']} / {s['inference_mb']} | {s['fds']} "
              f"| {s['threads']} | {s['tasks']} | {s['py_threads']} | {s['websockets']} | {av} | {s['load']} |")
    print(f"fewest frames per second a client received in an interval: {r['rx_fps_min']}; late frames "
          f"{r['late']} ({r['late_frac'] * 100:.2f} %); engine latency p95, worst interval: "
          f"{r['engine_latency_p95_ms_max']} ms")
    if v is None:
        print("no interval completed")
        return
    print("first interval -> last: " + ", ".join(f"{k} {v['start'][k]} -> {v['end'][k]} ({v['growth'][k]:+})"
                                                  for k in FIGURES))
    print("second half (not judged): " + ", ".join(f"{k} {g:+}" for k, g in v["second_half_growth"].items()))
    av = v["av"]
    print(f"A/V offset per WebRTC session, median of the first {av['samples_per_end']} samples -> of the last: "
          + ("; ".join(f"{a['start_ms']} -> {a['end_ms']} ms ({a['drift_ms']:+} ms)" for a in av["sessions"])
             or av["note"] or "none found"))
    print(f"verdict: {'ok' if v['ok'] else 'FAILED'} (RSS server + inference up <= {v['rss_limit_mb']:g} MB, "
          f"no count up, A/V within {v['av']['limit_ms']:g} ms of its start): "
          + ", ".join(f"{k} {'ok' if ok else 'NO'}" for k, ok in v["checks"].items()))
    if r["errors"]:
        print(f"session errors: {r['errors']}")


def run(args) -> int:
    if (args.minutes <= 0 or args.interval <= 0 or args.warmup < 0 or args.webrtc < 0 or args.sdk < 0
            or args.webrtc + args.sdk < 1):
        raise CLIError("--minutes and --interval must be > 0, --warmup >= 0, and --webrtc + --sdk at least "
                       "1 session")
    if args.minutes * 60.0 < 2 * args.interval:
        raise CLIError(f"--minutes {args.minutes:g} holds under two --interval {args.interval:g} s samples; "
                       "start and end need one each")
    logging.getLogger("aioice").setLevel(logging.WARNING)
    results = asyncio.run(run_async(args))
    print_report(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0 if results["verdict"] and results["verdict"]["ok"] and not results["errors"] else 1
