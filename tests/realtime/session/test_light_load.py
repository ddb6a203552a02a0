"""Lighter load, lower latency: sessions aim under their budget while the server is lightly loaded
(engine.LoadWatch) and move between the targets only in silence."""

from __future__ import annotations

import pytest
from live_helpers import drive, make_engine, make_scheduler, stop

from realtime.config import ConfigError
from realtime.inference.worker import InferenceWorker
from realtime.server.config import RealtimeConfig
from realtime.session.shared import LATE_HOLD_S, LoadWatch
from realtime.session.timeline import ARRIVAL_MARGIN_S
from tests.fakes import FakeRenderer


def test_load_watch_counts_sessions_and_holds_after_a_late_frame():
    w = LoadWatch()
    for k in (1, 2):
        w.join(k)
    assert w.light(100.0, 2) and not w.light(100.0, 1)
    w.join(3)
    assert not w.light(100.0, 2) and len(w) == 3
    w.release(3)
    w.release(3)  # twice: harmless
    w.late(100.0)
    assert not w.light(100.0 + LATE_HOLD_S - 0.1, 2)
    assert w.light(100.0 + LATE_HOLD_S + 0.1, 2)


def test_cut_is_checked_against_the_budgets():
    assert RealtimeConfig().light_load_cut_ms == 20 and RealtimeConfig().light_load_sessions == 2
    with pytest.raises(ConfigError, match="light_load_cut_ms"):
        RealtimeConfig(light_load_cut_ms=-1)
    with pytest.raises(ConfigError, match="light_load_cut_ms"):
        RealtimeConfig(light_load_cut_ms=30)  # over a quarter of the 90 ms low-latency budget
    with pytest.raises(ConfigError, match="light_load_sessions"):
        RealtimeConfig(light_load_sessions=-1)


async def test_latency_drops_by_the_cut_when_light_and_returns_in_silence_when_loaded():
    worker, renderer = InferenceWorker(), FakeRenderer()
    engine = make_engine(renderer, worker)
    load = engine.load  # LoadWatch
    sched = make_scheduler(renderer, worker, engine=engine, light_cut_s=0.02, light_sessions=2)
    sched.start()
    tasks = sched.tasks

    async def speech_latency() -> tuple[float, float]:
        lat, late = sched.metrics.engine_latency, sched.metrics.frames_late
        lat.reset_samples()
        count0, late0 = lat.count, late.value
        out: list = []
        await drive(sched, 1.0, loud=True, out=out)
        await drive(sched, 0.5, loud=False, out=out)
        assert lat.count - count0 >= 20 and late.value == late0
        return lat.percentile(50), lat.percentile(95)

    try:
        await drive(sched, 0.4, loud=False, out=[])
        assert sched.grid.cut_s == 0.02
        p50, p95 = await speech_latency()
        light_target = 0.17 - ARRIVAL_MARGIN_S - 0.02
        assert light_target - 0.006 <= p50 <= light_target + 0.004 and p95 <= light_target + 0.008, (p50, p95)
        assert sched.counts["retarget"] == 0
        load.join(-1)
        load.join(-2)  # three sessions: no longer light
        await drive(sched, 0.1, loud=False, out=[])
        assert sched.counts["retarget"] == 1 and sched.grid.cut_s == 0.0  # in the silence after speech
        p50, p95 = await speech_latency()
        assert 0.17 - ARRIVAL_MARGIN_S - 0.006 <= p50 <= 0.17 and p95 <= 0.17, (p50, p95)
        # back to light while speaking: no shift until the speech has left
        load.release(-1)
        load.release(-2)
        out: list = []
        await drive(sched, 0.6, loud=True, out=out)
        assert sched.grid.cut_s == 0.0 and sched.counts["retarget"] == 1
        await drive(sched, 0.25, loud=False, out=out)
        assert sched.grid.cut_s == 0.0  # the last speech frames are still on their way
        await drive(sched, 0.25, loud=False, out=out)
        assert sched.grid.cut_s == 0.02 and sched.counts["retarget"] == 2
        slots = [o[0] for o in out]
        assert slots == list(range(slots[0], slots[0] + len(slots)))  # one frame per slot throughout
        assert sched.metrics.frames_late.value == 0
    finally:
        await stop(tasks, worker)
