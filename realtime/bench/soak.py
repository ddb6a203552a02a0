"""`syncvid bench soak`: many sessions, one after another, against one server: does it give back
what each session took?

Runs the real server (`syncvid serve`) as a subprocess and, from this process, opens ``--sessions``
sessions in waves of ``--concurrency``: WebRTC sessions (aiortc peers) and, a ``--sdk-share`` of
them, avatar-SDK sessions (``syncvid_client.AvatarClient``), mixed within each wave. Each session
speaks for ``--session-seconds`` and then ends in one of the ways a client ends one, each kind
taking its endings in turn:

- ``close``: a ``close`` message, then the socket closes;
- ``drop``: the socket goes with no message (a closed tab; for SDK the TCP connection is cut, not
  even a close frame);
- ``interrupt``: an ``interrupt`` in the middle of speech, then ``close``;
- ``ice`` (WebRTC): the peer connection closes while the socket stays open (the media path is gone);
- ``stall`` (SDK): the client stops reading but keeps sending speech, as an agent whose event loop
  is stuck; the server must cut it (``slow_consumer``) once its bounded send queue is full. It asks
  for raw video so the socket buffers fill in well under a second.

After every wave it waits for ``/healthz`` to count no session (the teardown time) and for the
server's collection after sessions end (``gc_sweeps`` in ``/stats``: until it has run, what the
sessions left is still waiting to be freed), then samples the resident memory of the server and of
its inference process, the server's open file descriptors and threads, and from ``/stats`` its
asyncio tasks, Python threads and open WebSockets.
Growth is judged two ways, both leaving out the warm-up (first allocations, caches and pools
filling): the least-squares slope over the second half of the run, and how far the second half's
peak is above the first half's (a process whose memory swings between levels has a slope that
depends on where the swings fall, but no higher peak unless it also leaks). The verdict is on the
peaks (``realtime.bench.leaks``): RSS of server + inference up by at most 50 MB, no count up.
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
from syncvid_client import AvatarClient, Frame, SyncVidError

from realtime.bench.leaks import FIGURES, leak_verdict, peak_growth, server_sample, verdict
from realtime.bench.loopback import FIXTURE, http_json, speech_bursts, start_server, stop_process
from realtime.bench.sdk import RATE, to_rate
from realtime.cli import CLIError

log = logging.getLogger(__name__)

WEBRTC_ENDINGS = ("close", "drop", "interrupt", "ice")
SDK_ENDINGS = ("close", "drop", "interrupt", "stall")
TEARDOWN_LIMIT_S = 5.0  # a vanished client's session is gone within this (the server's promise)
SWEEP_WAIT_S = 2.0  # the server collects 0.5 s after sessions end (realtime.heap.Sweeper); if not, sample anyway
STALL_LIMIT_S = 10.0  # a stalled SDK client is cut within this (2 s of output queued, 1.5 s to close, slack)


def add_arguments(p) -> None:
    p.add_argument("--sessions", type=int, default=200, help="sessions to open in all (default 200)")
    p.add_argument("--concurrency", type=int, default=4, help="sessions at once, per wave (default 4)")
    p.add_argument("--session-seconds", type=float, default=3.0, help="seconds each session lasts (default 3)")
    p.add_argument("--sdk-share", type=float, default=0.5,
                   help="fraction of the sessions that are avatar-SDK sessions, the rest WebRTC (default 0.5)")
    p.add_argument("--server-config", default=None, help="YAML config for the server under test")
    p.add_argument("--json", default=None, help="also write the results as JSON to this file")


def is_sdk(i: int, share: float) -> bool:
    """Session ``i`` is an SDK session: spreads ``share`` of the sessions evenly over the run."""
    return int((i + 1) * share + 1e-9) > int(i * share + 1e-9)


class FrameCounter:
    """Reads an SDK client's events in the background and counts its frames (keeps none)."""

    def __init__(self, client: AvatarClient) -> None:
        self.frames = 0
        self.error: str | None = None
        self.task = asyncio.create_task(self._run(client))

    async def _run(self, client: AvatarClient) -> None:
        try:
            async for ev in client.events():
                if isinstance(ev, Frame):
                    self.frames += 1
        except SyncVidError as e:
            self.error = f"{type(e).__name__}: {e}"

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


def cut_connection(client: AvatarClient) -> None:
    """The TCP connection goes with no close frame (the client has no public way to do this)."""
    client._ws.transport.abort()  # noqa: SLF001


async def stall_until_cut(client: AvatarClient, limit: float) -> float | None:
    """Stops reading (the socket's receive side paused: the server's writes pile up) while sending
    100 ms of silence every 100 ms; seconds until the server cut the connection, None if it did not
    within ``limit``."""
    client._ws.transport.pause_reading()  # noqa: SLF001 (the client reads in the library's own callbacks)
    chunk = np.zeros(RATE // 10, np.int16)
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        try:
            await asyncio.wait_for(client.send_audio(chunk), 1.0)
        except SyncVidError:
            return time.monotonic() - t0
        except asyncio.TimeoutError:  # the server stopped reading too: keep trying until the limit
            pass
        await asyncio.sleep(0.1)
    return None


async def sdk_session(port: int, burst: np.ndarray, ending: str, seconds: float, seed: int) -> dict:
    """An SDK session that speaks ``burst`` (at RATE), then ends the ``ending`` way."""
    client = AvatarClient(f"ws://127.0.0.1:{port}/ws", sample_rate=RATE, seed=seed, decode_images=False,
                          video="raw" if ending == "stall" else "jpeg")
    counter: FrameCounter | None = None
    try:
        await client.connect()
        counter = FrameCounter(client)
        await client.send_audio(burst)
        await client.end_utterance()
        if ending == "interrupt":
            await asyncio.sleep(min(seconds / 2, 0.5))
            await client.interrupt()
            await asyncio.sleep(max(0.0, seconds - 0.5))
        else:
            await asyncio.sleep(seconds / 2 if ending == "stall" else seconds)
        frames = counter.frames
        await counter.stop()
        if ending == "stall":
            cut = await stall_until_cut(client, STALL_LIMIT_S)
            out = {"frames": frames, "stall_cut_s": None if cut is None else round(cut, 2)}
            if cut is None:
                out["error"] = f"sdk: a client that stopped reading was not cut within {STALL_LIMIT_S:g} s"
            return out
        if ending == "drop":
            cut_connection(client)
        else:
            await client.close()
        return {"frames": frames}
    except (SyncVidError, OSError, asyncio.TimeoutError) as e:
        return {"frames": counter.frames if counter else 0, "error": f"sdk: {type(e).__name__}: {e}"}
    finally:
        if counter is not None:
            await counter.stop()
        if client._ws is not None:  # noqa: SLF001
            cut_connection(client)  # whatever is left of it (a no-op after a close)


async def webrtc_session(port: int, burst, ending: str, seconds: float, seed: int) -> dict:
    """A WebRTC session that speaks, then ends the ``ending`` way. Returns what it saw."""
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
        return {"frames": len(peer.video_times), "error": f"webrtc: {type(e).__name__}: {e}"}


async def wait_sessions(port: int, n: int, limit: float) -> float | None:
    """Seconds until /healthz counts ``n`` sessions or fewer; None if it does not within ``limit``."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        if http_json(port, "/healthz")["sessions"] <= n:
            return time.monotonic() - t0
        await asyncio.sleep(0.05)
    return None


async def wait_sweep(port: int, sweeps: int, limit: float) -> bool:
    """Whether the server's count of collections after sessions ended passed ``sweeps`` within ``limit``."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        if http_json(port, "/stats")["gc_sweeps"] > sweeps:
            return True
        await asyncio.sleep(0.05)
    return False


def plan(n: int, start: int, share: float) -> list[tuple[str, str]]:
    """(kind, ending) of sessions ``start`` .. ``start + n - 1``: each kind takes its endings in turn."""
    out = []
    for i in range(start, start + n):
        sdk = is_sdk(i, share)
        nth_sdk = int(i * share + 1e-9)  # SDK sessions before this one (is_sdk's steps up to i)
        nth = nth_sdk if sdk else i - nth_sdk  # sessions of this kind before this one
        out.append(("sdk", SDK_ENDINGS[nth % len(SDK_ENDINGS)]) if sdk
                   else ("webrtc", WEBRTC_ENDINGS[nth % len(WEBRTC_ENDINGS)]))
    return out


async def churn(port: int, server_pid: int, args) -> dict:
    """The soak proper, against a server already listening on ``port``."""
    from tqdm import tqdm  # `syncvid --help` imports this module: only a run loads tqdm

    bursts48 = speech_bursts(str(FIXTURE), 8)
    bursts24 = [to_rate(b) for b in bursts48]
    waves: list[dict] = []
    errors: list[str] = []
    samples = [server_sample(port, server_pid)]
    done = 0
    progress = getattr(args, "progress", False)  # the CLI shows a bar; tests call this without one
    with tqdm(total=args.sessions, unit="session", desc="soak", leave=False, disable=not progress) as bar:
        while done < args.sessions:
            n = min(args.concurrency, args.sessions - done)
            kinds = plan(n, done, args.sdk_share)
            results = await asyncio.gather(*[
                (sdk_session(port, bursts24[(done + j) % 8], ending, args.session_seconds, done + j) if kind == "sdk"
                 else webrtc_session(port, bursts48[(done + j) % 8], ending, args.session_seconds, done + j))
                for j, (kind, ending) in enumerate(kinds)])
            t_end = await wait_sessions(port, 0, 3 * TEARDOWN_LIMIT_S)
            sweeps = http_json(port, "/stats")["gc_sweeps"]
            for r in results:  # peers left with their socket open: close them now
                if "keep" in r:
                    await r.pop("keep").close(send_close=False)
                if "error" in r:
                    errors.append(r["error"])
            # sampled once the server's collection after sessions end has run (and given memory
            # back), as it does 0.5 s after the last one: before it, what the sessions left waits for it
            await wait_sweep(port, sweeps, SWEEP_WAIT_S)
            await asyncio.sleep(0.3)  # the server's last callbacks for the sockets just closed; the trim
            samples.append(server_sample(port, server_pid))
            cuts = [r["stall_cut_s"] for r in results if r.get("stall_cut_s") is not None]
            waves.append({"endings": [f"{k}:{e}" for k, e in kinds],
                          "teardown_s": None if t_end is None else round(t_end, 2),
                          "frames_min": min(r["frames"] for r in results),
                          "stall_cut_s": max(cuts) if cuts else None, **samples[-1]})
            done += n
            bar.update(n)
    health = http_json(port, "/healthz")
    stats = http_json(port, "/stats")
    teardowns = [w["teardown_s"] for w in waves]
    by_ending: dict[str, list[float]] = {}
    for w in waves:
        for e in set(w["endings"]):
            by_ending.setdefault(e, []).append(w["teardown_s"] if w["teardown_s"] is not None else float("inf"))
    growth = peak_growth(samples)
    cuts = [w["stall_cut_s"] for w in waves if w["stall_cut_s"] is not None]
    return {
        "sessions": args.sessions, "concurrency": args.concurrency, "session_seconds": args.session_seconds,
        "sdk_share": args.sdk_share,
        "sdk_sessions": sum(is_sdk(i, args.sdk_share) for i in range(args.sessions)),
        "start": samples[0], "end": samples[-1], "waves": waves,
        "growth_per_100_sessions": verdict(samples, args.concurrency),
        "peak_growth": growth, "verdict": leak_verdict(growth),
        "teardown_s_max": None if None in teardowns else max(teardowns),
        "teardown_s_max_by_ending": {e: max(v) for e, v in sorted(by_ending.items())},
        "stall_cut_s_max": max(cuts) if cuts else None,
        "frames_min": min(w["frames_min"] for w in waves),
        "errors": errors, "sessions_at_end": health["sessions"], "inference": health["inference"],
        "frames": stats.get("frames"), "gc_pause_ms": stats.get("gc_pause_ms"), "gc_sweeps": stats.get("gc_sweeps"),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


async def run_async(args) -> dict:
    port, server = start_server(argparse.Namespace(max_sessions=args.concurrency, server_config=args.server_config))
    try:
        return await churn(port, server.pid, args)
    finally:
        stop_process(server)


def print_report(r: dict) -> None:
    print(f"soak: {r['sessions']} sessions ({r['sdk_sessions']} SDK, the rest WebRTC), {r['concurrency']} at once, "
          f"{r['session_seconds']:g} s each (endings in turn, WebRTC: {', '.join(WEBRTC_ENDINGS)}; "
          f"SDK: {', '.join(SDK_ENDINGS)})")
    print("| after sessions | server RSS MB | inference RSS MB | fds | threads | asyncio tasks | py threads "
          "| websockets | teardown s |")
    print("|---|---|---|---|---|---|---|---|---|")

    def row(label, s, teardown) -> None:
        print(f"| {label} | {s['server_mb']} | {s['inference_mb']} | {s['fds']} | {s['threads']} | {s['tasks']} "
              f"| {s['py_threads']} | {s['websockets']} | {teardown} |")

    row("0 (started)", r["start"], "-")
    step = max(1, len(r["waves"]) // 10)
    for i, w in enumerate(r["waves"]):
        if i % step == 0 or i == len(r["waves"]) - 1:
            row(min(r["sessions"], (i + 1) * r["concurrency"]), w, w["teardown_s"])

    def figures(g: dict) -> str:
        return ", ".join(f"{k} {g[k]:+}" for k in FIGURES)

    print(f"growth per 100 sessions over the second half (slope): {figures(r['growth_per_100_sessions'])}")
    print(f"peak of the second half over the peak of the first: {figures(r['peak_growth'])}")
    v = r["verdict"]
    print(f"verdict: {'no leak' if v['ok'] else 'LEAK'} (RSS server + inference <= {v['rss_limit_mb']:g} MB, "
          "no count up): " + ", ".join(f"{k} {'ok' if ok else 'UP'}" for k, ok in v["checks"].items()))
    print(f"teardown (last session of a wave gone, /healthz): max {r['teardown_s_max']} s; by ending "
          + ", ".join(f"{e} {v}" for e, v in r["teardown_s_max_by_ending"].items()))
    if r["stall_cut_s_max"] is not None:
        print(f"stalled SDK clients cut by the server within {r['stall_cut_s_max']} s of their stall")
    print(f"fewest frames a session received: {r['frames_min']}; sessions left: {r['sessions_at_end']}; "
          f"inference: {r['inference']}; client errors: {len(r['errors'])}"
          + (f" (first: {r['errors'][0]})" if r["errors"] else ""))
    if r.get("gc_pause_ms"):
        g = r["gc_pause_ms"]
        print(f"server garbage collections: {g['n']}, pause p50 / p99 / max {g['p50']} / {g['p99']} / {g['p100']} ms; "
              f"{r['gc_sweeps']} after sessions ended")
    print(f"load average at the end: {r['load_average']}")


def passed(r: dict) -> bool:
    """Every session torn down in time, none left, no client error, no leak."""
    return (r["teardown_s_max"] is not None and r["teardown_s_max"] <= TEARDOWN_LIMIT_S
            and r["sessions_at_end"] == 0 and not r["errors"] and r["verdict"]["ok"])


def run(args) -> int:
    if args.concurrency < 1 or args.session_seconds <= 0:
        raise CLIError("--concurrency must be >= 1 and --session-seconds > 0")
    if not 0.0 <= args.sdk_share <= 1.0:
        raise CLIError(f"--sdk-share must be a fraction from 0 to 1; got {args.sdk_share:g}")
    if args.sessions < 3 * args.concurrency:
        raise CLIError(f"--sessions {args.sessions} is under three waves of --concurrency {args.concurrency}; "
                       "growth is judged on the second half of at least 3 waves")
    logging.getLogger("aioice").setLevel(logging.WARNING)
    args.progress = True
    results = asyncio.run(run_async(args))
    print_report(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0 if passed(results) else 1
