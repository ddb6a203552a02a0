"""`syncvid bench soak`: many sessions, one after another, against one server: does it give back
what each session took?

Runs the real server (`syncvid serve`) as a subprocess and, from aiortc peers in this process,
opens ``--sessions`` sessions in waves of ``--concurrency``. Each session speaks for
``--session-seconds`` and then ends in one of the ways a client ends one, in turn:

- ``close``: a ``close`` message, then the socket closes;
- ``drop``: the socket closes with no message (a closed tab);
- ``interrupt``: an ``interrupt`` in the middle of speech, then ``close``;
- ``ice``: the peer connection closes while the socket stays open (the media path is gone).

After every wave it waits for ``/healthz`` to count no session (the teardown time) and samples
the resident memory of the server and of its inference process, and the server's open file
descriptors and threads. Growth is the least-squares slope over the second half of the run, so the
warm-up (first allocations, caches and pools filling) does not count as growth; beside it, how far
the second half's peak is above the first half's (a process whose memory swings between levels has
a slope that depends on where the swings fall, but no higher peak unless it also leaks).
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

from realtime.bench.loopback import FIXTURE, http_json, speech_bursts, start_server, stop_process
from realtime.cli import CLIError

log = logging.getLogger(__name__)

ENDINGS = ("close", "drop", "interrupt", "ice")
TEARDOWN_LIMIT_S = 5.0  # a vanished client's session is gone within this (the server's promise)


def add_arguments(p) -> None:
    p.add_argument("--sessions", type=int, default=200, help="sessions to open in all (default 200)")
    p.add_argument("--concurrency", type=int, default=4, help="sessions at once, per wave (default 4)")
    p.add_argument("--session-seconds", type=float, default=3.0, help="seconds each session lasts (default 3)")
    p.add_argument("--server-config", default=None, help="YAML config for the server under test")
    p.add_argument("--json", default=None, help="also write the results as JSON to this file")


def process_tree(pid: int) -> list[int]:
    """``pid`` and every process below it (the inference process, multiprocessing's helpers)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):  # gone meanwhile
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def status_field(pid: int, name: str) -> int:
    """An integer field of /proc/PID/status (VmRSS in kB, Threads); 0 if the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(name + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def sample(server_pid: int) -> dict:
    """Resident memory (MB) of the server and of the rest of its process tree; its fds and threads."""
    others = [p for p in process_tree(server_pid) if p != server_pid]
    try:
        fds = len(os.listdir(f"/proc/{server_pid}/fd"))
    except OSError:
        fds = 0
    return {"server_mb": round(status_field(server_pid, "VmRSS") / 1024, 1),
            "inference_mb": round(sum(status_field(p, "VmRSS") for p in others) / 1024, 1),
            "fds": fds, "threads": status_field(server_pid, "Threads")}


def verdict(samples: list[dict], sessions_per_wave: int) -> dict:
    """Growth per 100 sessions over the second half of the run: the least-squares slope of each
    sampled figure against sessions done, from the middle sample on (the first half is warm-up:
    first allocations, caches and pools filling)."""
    if len(samples) < 4:
        raise ValueError("need at least 3 waves to tell growth from warm-up (raise --sessions)")
    half = samples[(len(samples) - 1) // 2:]
    x = np.arange(len(half), dtype=np.float64) * sessions_per_wave
    return {k: round(float(np.polyfit(x, [s[k] for s in half], 1)[0]) * 100.0, 2)
            for k in ("server_mb", "inference_mb", "fds", "threads")}


def peak_growth(samples: list[dict]) -> dict:
    """How far each figure's highest value in the second half of the run is above its highest in
    the first half. Where a process's memory swings between levels (the allocator handing large
    blocks back and taking them again), the slope of the second half depends on where the swings
    fall; a leak also raises the peak, a swing does not."""
    mid = (len(samples) - 1) // 2
    return {k: round(max(s[k] for s in samples[mid:]) - max(s[k] for s in samples[:mid]), 1)
            for k in ("server_mb", "inference_mb", "fds", "threads")}


async def one_session(port: int, burst, ending: str, seconds: float, seed: int) -> dict:
    """A session that speaks, then ends the ``ending`` way. Returns what it saw."""
    from clients.webrtc_peer import WebRTCPeer  # aiortc is heavy; `syncvid --help` imports this module

    peer = WebRTCPeer(f"ws://127.0.0.1:{port}/ws", options={"seed": seed}, keep_video=False)
    try:
        await peer.connect()
        await peer.wait_connected()
        peer.play(burst)
        if ending == "interrupt":
            await asyncio.sleep(min(seconds / 2, 0.5))
            await peer.send({"type": "interrupt"})
            await asyncio.sleep(max(0.0, seconds - 0.5))
        else:
            await asyncio.sleep(seconds)
        frames = len(peer.video_times)
        if ending == "ice":
            await peer.pc.close()  # the socket stays open until the server ends the session
            return {"frames": frames, "keep": peer}
        await peer.close(send_close=ending != "drop")
        return {"frames": frames}
    except Exception as e:
        await peer.close(send_close=False)
        return {"frames": len(peer.video_times), "error": f"{type(e).__name__}: {e}"}


async def wait_sessions(port: int, n: int, limit: float) -> float | None:
    """Seconds until /healthz counts ``n`` sessions or fewer; None if it does not within ``limit``."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        if http_json(port, "/healthz")["sessions"] <= n:
            return time.monotonic() - t0
        await asyncio.sleep(0.05)
    return None


async def run_async(args) -> dict:
    bursts = speech_bursts(str(FIXTURE), 8)
    port, server = start_server(argparse.Namespace(max_sessions=args.concurrency, server_config=args.server_config))
    waves: list[dict] = []
    errors: list[str] = []
    try:
        from tqdm import tqdm  # `syncvid --help` imports this module: only a run loads tqdm

        samples = [sample(server.pid)]
        done, k = 0, 0
        with tqdm(total=args.sessions, unit="session", desc="soak", leave=False) as bar:
            while done < args.sessions:
                n = min(args.concurrency, args.sessions - done)
                endings = [ENDINGS[(k + j) % len(ENDINGS)] for j in range(n)]
                results = await asyncio.gather(*[one_session(port, bursts[(k + j) % len(bursts)], e,
                                                             args.session_seconds, k + j)
                                                 for j, e in enumerate(endings)])
                t_end = await wait_sessions(port, 0, 3 * TEARDOWN_LIMIT_S)
                for r in results:  # peers left with their socket open: close them now
                    if "keep" in r:
                        await r.pop("keep").close(send_close=False)
                    if "error" in r:
                        errors.append(r["error"])
                await asyncio.sleep(0.3)  # the server's last callbacks for the sockets just closed
                samples.append(sample(server.pid))
                waves.append({"endings": endings, "teardown_s": None if t_end is None else round(t_end, 2),
                              "frames_min": min(r["frames"] for r in results), **samples[-1]})
                done += n
                k += n
                bar.update(n)
        health = http_json(port, "/healthz")
        stats = http_json(port, "/stats")
    finally:
        stop_process(server)
    teardowns = [w["teardown_s"] for w in waves]
    by_ending: dict[str, list[float]] = {e: [] for e in ENDINGS}
    for w in waves:
        for e in set(w["endings"]):
            by_ending[e].append(w["teardown_s"] if w["teardown_s"] is not None else float("inf"))
    return {
        "sessions": args.sessions, "concurrency": args.concurrency, "session_seconds": args.session_seconds,
        "start": samples[0], "waves": waves,
        "growth_per_100_sessions": verdict(samples, args.concurrency),
        "peak_growth": peak_growth(samples),
        "teardown_s_max": None if None in teardowns else max(teardowns),
        "teardown_s_max_by_ending": {e: max(v) for e, v in by_ending.items() if v},
        "frames_min": min(w["frames_min"] for w in waves),
        "errors": errors, "sessions_at_end": health["sessions"], "inference": health["inference"],
        "frames": stats.get("frames"), "gc_pause_ms": stats.get("gc_pause_ms"), "gc_sweeps": stats.get("gc_sweeps"),
    }


def print_report(r: dict) -> None:
    print(f"soak: {r['sessions']} sessions, {r['concurrency']} at once, {r['session_seconds']:g} s each "
          f"(endings in turn: {', '.join(ENDINGS)})")
    print("| after sessions | server RSS MB | inference RSS MB | server fds | server threads | teardown s |")
    print("|---|---|---|---|---|---|")
    s = r["start"]
    print(f"| 0 (started) | {s['server_mb']} | {s['inference_mb']} | {s['fds']} | {s['threads']} | - |")
    step = max(1, len(r["waves"]) // 10)
    for i, w in enumerate(r["waves"]):
        if i % step == 0 or i == len(r["waves"]) - 1:
            n = min(r["sessions"], (i + 1) * r["concurrency"])
            print(f"| {n} | {w['server_mb']} | {w['inference_mb']} | {w['fds']} | {w['threads']} | {w['teardown_s']} |")
    g = r["growth_per_100_sessions"]
    print(f"growth per 100 sessions over the second half: server {g['server_mb']:+} MB, inference "
          f"{g['inference_mb']:+} MB, fds {g['fds']:+}, threads {g['threads']:+}")
    p = r["peak_growth"]
    print(f"peak of the second half over the peak of the first: server {p['server_mb']:+} MB, inference "
          f"{p['inference_mb']:+} MB, fds {p['fds']:+}, threads {p['threads']:+}")
    print(f"teardown (last session of a wave gone, /healthz): max {r['teardown_s_max']} s; by ending "
          + ", ".join(f"{e} {v}" for e, v in r["teardown_s_max_by_ending"].items()))
    print(f"fewest frames a session received: {r['frames_min']}; sessions left: {r['sessions_at_end']}; "
          f"inference: {r['inference']}; client errors: {len(r['errors'])}"
          + (f" (first: {r['errors'][0]})" if r["errors"] else ""))
    if r.get("gc_pause_ms"):
        g = r["gc_pause_ms"]
        print(f"server garbage collections: {g['n']}, pause p50 / p99 / max {g['p50']} / {g['p99']} / {g['p100']} ms; "
              f"{r['gc_sweeps']} after sessions ended")


def run(args) -> int:
    if args.concurrency < 1 or args.session_seconds <= 0:
        raise CLIError("--concurrency must be >= 1 and --session-seconds > 0")
    if args.sessions < 3 * args.concurrency:
        raise CLIError(f"--sessions {args.sessions} is under three waves of --concurrency {args.concurrency}; "
                       "growth is judged on the second half of at least 3 waves")
    logging.getLogger("aioice").setLevel(logging.WARNING)
    results = asyncio.run(run_async(args))
    print_report(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    ok = (results["teardown_s_max"] is not None and results["teardown_s_max"] <= TEARDOWN_LIMIT_S
          and results["sessions_at_end"] == 0 and not results["errors"])
    return 0 if ok else 1
