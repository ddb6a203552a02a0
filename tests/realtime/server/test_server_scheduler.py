"""Scheduler without WebRTC: audio packets and video slots driven in real time against a slow renderer."""

from __future__ import annotations

import asyncio
import time

import numpy as np

from realtime.server.media import MediaClock
from realtime.server.metrics import ServerMetrics
from realtime.server.scheduler import MAX_LEVEL, FrameScheduler
from realtime.server.worker import InferenceWorker
from server_fakes import FakeAvatar, FakeEncoder, FakeRenderer, mouth_darkness


class SlowRenderer(FakeRenderer):
    def __init__(self, seconds_per_frame: float) -> None:
        super().__init__()
        self.delay = seconds_per_frame

    def render_chunk(self, avatar, frame_indices, audio_blocks, state):
        time.sleep(self.delay * len(frame_indices))
        return super().render_chunk(avatar, frame_indices, audio_blocks, state)


def make_scheduler(renderer, worker, budget_s=0.17):
    return FrameScheduler(
        fps=25, budget_s=budget_s, lookahead_s=0.12, max_chunk=4, silence_dbfs=-45, max_frames_ahead=8,
        audio_buffer_s=2.0, worker=worker, renderer=renderer, avatar=FakeAvatar(), encoder=FakeEncoder(),
        render_state=renderer.new_state(), clock=MediaClock(), metrics=ServerMetrics())


async def drive(sched: FrameScheduler, seconds: float, loud: bool, out: list) -> None:
    """Feeds 20 ms packets and pulls video slots, both on the absolute schedule, for ``seconds``."""
    clock = sched.clock
    t0 = clock.start()
    base_pkt = getattr(sched, "_test_pkt", 0)
    base_slot = getattr(sched, "_test_slot", 0)
    pkt, slot = base_pkt, base_slot
    rng = np.random.default_rng(0)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t_pkt, t_slot = t0 + pkt * 0.02, t0 + slot * 0.04
        await asyncio.sleep(max(0.0, min(t_pkt, t_slot) - time.monotonic()))
        now = time.monotonic()
        if now >= t_pkt:
            x = (0.3 * rng.standard_normal(320)).astype(np.float32) if loud else np.zeros(320, np.float32)
            sched.ring16.write(x)
            sched.ring48.write(np.zeros(960, np.int16))
            sched.on_packet(sched.ring16.end, now)
            pkt += 1
        if now >= t_slot:
            out.append((slot, sched.frame_for(slot), sched.level, len(sched.ready)))
            slot += 1
    sched._test_pkt, sched._test_slot = pkt, slot


async def test_slow_renderer_degrades_keeps_fps_and_recovers():
    worker = InferenceWorker()
    renderer = SlowRenderer(0.05)  # slower than the 40 ms frame period: cannot keep up at full rate
    sched = make_scheduler(renderer, worker, budget_s=0.25)
    tasks = [asyncio.create_task(sched.encode_loop()), asyncio.create_task(sched.render_loop())]
    try:
        out: list = []
        await drive(sched, 3.0, loud=True, out=out)
        assert len(out) >= 73  # every slot got a frame, renderer or not
        assert max(o[3] for o in out) <= 8  # bounded queue
        assert sched.level >= 2, sched.level
        m = sched.metrics
        assert m.frames_late.value > 0 and m.frames_repeated.value >= m.frames_late.value
        assert m.frames_rendered.value > 25  # still rendering a large share of the frames
        assert sched.level == MAX_LEVEL
        last = [kind for _, _, kind in list(sched.history)[-25:]]
        print("last second at the top level:", {k: last.count(k) for k in set(last)})
        assert last.count("speech") >= 10 and last.count("repeat") >= 10  # every other frame, on time
        assert last.count("late") <= 3
        assert max(renderer.calls) <= 4
        top = sched.level
        renderer.delay = 0.002
        out2: list = []
        await drive(sched, 3.0, loud=True, out=out2)
        assert sched.level < top, (top, sched.level)  # recovered at least one step
        assert len(out2) >= 73
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        worker.close()


async def test_silence_sends_rest_frames_without_rendering():
    worker = InferenceWorker()
    renderer = FakeRenderer()
    sched = make_scheduler(renderer, worker)
    tasks = [asyncio.create_task(sched.encode_loop()), asyncio.create_task(sched.render_loop())]
    try:
        out: list = []
        await drive(sched, 1.2, loud=False, out=out)
        assert len(out) >= 28 and renderer.calls == []
        rest = FakeAvatar().frame(0)
        assert all(mouth_darkness(f, rest) == 0.0 for _, f, _, _ in out)
        assert sched.counts["rest"] == len(out) and sched.metrics.frames_late.value == 0
        assert sched.audio_backlog_s < 0.05  # the encoder keeps up; nothing accumulates
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        worker.close()
