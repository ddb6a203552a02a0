"""The `/stats` summary of a running server: what benchmarks and soak runs read (percentiles from
raw samples, frame counts, per-session figures, and the counts a leak shows in first)."""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from realtime.server.app import RealtimeServer


def server_summary(server: "RealtimeServer", reset: bool = False) -> dict:
    m = server.metrics
    server.drain_gc_pauses()
    lat, rt = m.engine_latency, m.render_time

    def ms(h, *qs) -> dict:
        """Percentiles ``qs`` of ``h`` in ms, as {"p50": ...} (None while it has no samples)."""
        return {f"p{q}": None if v != v else round(v * 1000, 2) for q, v in zip(qs, h.percentiles(*qs))}

    out = {
        "sessions": len(server.sessions),
        "engine_latency_ms": {**ms(lat, 50, 95), "n": len(lat.samples)},
        "render_ms_per_frame": ms(rt, 50, 95),
        "encode_ms_per_push": ms(m.encode_time, 50, 95),
        # where a frame's compute window goes: packet -> push submitted, push round trip, and
        # how early speech frames were ready for their slot (p5: the tight end)
        "packet_lateness_ms": ms(m.packet_lateness, 50, 95, 99),
        "push_wait_ms": ms(m.push_wait, 50, 95),
        "push_round_trip_ms": ms(m.push_round_trip, 50, 95, 99),
        "frame_slack_ms": ms(m.frame_slack, 5, 50),
        # the collector's stalls of this process (what a frozen start-up heap keeps short)
        "gc_pause_ms": {**ms(m.gc_pause, 50, 99, 100), "n": len(m.gc_pause.samples)},
        "gc_sweeps": int(m.gc_sweeps.value),
        "frames": {k: int(getattr(m, "frames_" + k).value)
                   for k in ("sent", "rendered", "rest", "late", "repeated", "dropped")},
        "skipped_slots": sum(s.skipped for s in server.sessions),
        "output_fps": round(m.output_fps.value, 2),
        "degrade_level_max": max((s.live.level for s in server.sessions), default=0),
        "av_offset_ms": [round(s.live.av_offset_s * 1000, 2) for s in server.sessions],
        "kinds": [dict(s.live.counts) for s in server.sessions],
        # what each session aims at now: its budget less the light-load cut (engine.LoadWatch)
        "latency_target_ms": [round((s.budget_s - s.live.grid.cut_s) * 1000, 1) for s in server.sessions],
        # what a soak compares at its start and end: leaks show here first
        "asyncio_tasks": len(asyncio.all_tasks()),
        "threads": threading.active_count(),
        "websockets_open": server.open_websockets,
    }
    if reset:
        for h in (lat, rt, m.encode_time, m.packet_lateness, m.push_wait, m.push_round_trip, m.frame_slack,
                  m.gc_pause):
            h.reset_samples()
    return out
