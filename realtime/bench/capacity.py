"""Capacity part of `syncvid bench realtime`: the most concurrent sessions (full look-ahead) at a
sustained 25 fps with < 1 % late frames. Frames the top degradation level repeats on purpose
(every other speech frame) are on time but are not 25 fps of content: they count against the
target too (< 1 %). Load-generating peers run in this process, on the same 2 cores."""

from __future__ import annotations

import asyncio
import logging
import os
import time

from realtime.bench.loopback import BURST_S, CALIBRATE_S, GAP_S, http_json, probe_server, start_server, stop_process

log = logging.getLogger(__name__)


async def capacity(port: int, box, n: int, seconds: float, bursts, options: dict) -> dict:
    from clients.webrtc_peer import WebRTCPeer  # aiortc is heavy; `syncvid --help` imports this module

    peers = [WebRTCPeer(f"ws://127.0.0.1:{port}/ws", options=options, keep_video=False) for _ in range(n)]
    for p in peers:
        await p.connect()
    for p in peers:
        await p.wait_connected()

    async def talk(p, seed):
        k = seed
        while True:
            p.play(bursts[k % len(bursts)])
            k += 1
            await asyncio.sleep(BURST_S + GAP_S * (0.5 + (k % 3) * 0.25))

    talkers = [asyncio.create_task(talk(p, i)) for i, p in enumerate(peers)]
    await asyncio.sleep(3.0)  # warm-up
    before = http_json(port, "/stats?reset=1")
    thin0 = sum(k.get("repeat", 0) for k in before["kinds"])
    n0 = [len(p.video_times) for p in peers]
    t0 = time.monotonic()
    await asyncio.sleep(seconds)
    after = http_json(port, "/stats")
    dt = time.monotonic() - t0
    rx = [(len(p.video_times) - a) / dt for p, a in zip(peers, n0)]
    for t in talkers:
        t.cancel()
    for p in peers:
        await p.close()
    d = {k: after["frames"][k] - before["frames"][k] for k in after["frames"]}
    late = d["late"] / max(1, d["sent"])
    # degraded on purpose (the top level repeats every other speech frame): on time, but not
    # 25 fps of content, so it counts against the target as late frames do
    thinned = (sum(k.get("repeat", 0) for k in after["kinds"]) - thin0) / max(1, d["sent"])
    return {"sessions": n, "late_frac": round(late, 4), "thinned_frac": round(thinned, 4),
            "degrade_level_max": after["degrade_level_max"],
            "sent_fps_per_session": round(d["sent"] / dt / n, 2),
            "rx_fps_min": round(min(rx), 2), "render_ms_per_frame_p50": after["render_ms_per_frame"]["p50"],
            "engine_latency_ms": after["engine_latency_ms"], "skipped_slots": after["skipped_slots"],
            "ok": late < 0.01 and thinned < 0.01 and min(rx) >= 24.0}


async def capacity_search(args, box, bursts, results: dict) -> None:
    """Most sessions (full look-ahead) meeting the target, once per ``--peer-nice`` value: 0 is
    the peers competing for the 2 cores as equals; 19 has the OS serve the server first, as if
    the peers (browsers, in use) were other machines. Nice only goes up: increasing order."""
    port, server = start_server(args)
    try:
        await probe_server(f"ws://127.0.0.1:{port}/ws", box, CALIBRATE_S + 3, bursts, {}, analyse=False)
        results["capacity"], results["max_sessions"] = {}, {}
        for nice in sorted({int(x) for x in str(args.peer_nice).split(",") if x.strip()}):
            os.nice(max(0, nice - os.nice(0)))
            caps = []
            for n in range(1, args.max_sessions + 1):
                c = await capacity(port, box, n, args.capacity_seconds, bursts, {})
                log.info("capacity (peers at nice %d) %s", nice, c)
                caps.append(c)
                if not c["ok"]:
                    break
            results["capacity"][str(nice)] = caps
            results["max_sessions"][str(nice)] = max([c["sessions"] for c in caps if c["ok"]], default=0)
    finally:
        stop_process(server)
