"""Driving a ``LiveSession`` over test stand-ins in real time: packets in, slots out."""

from __future__ import annotations

import asyncio
import contextlib
import time

import numpy as np

from realtime.inference.worker import InferenceWorker
from realtime.session.config import SessionConfig
from realtime.session.live import LiveSession
from realtime.session.shared import Engine
from tests.fakes import FakeAvatar, FakeEncoder


def make_engine(renderer, worker, encoder=None) -> Engine:
    return Engine(avatar=FakeAvatar(), renderer_factory=lambda la: renderer,
                  encoder_factory=lambda la, fps: encoder or FakeEncoder(), worker=worker)


def make_scheduler(renderer, worker, budget_s=0.17, engine=None, encoder=None, **config) -> LiveSession:
    """A live session over fakes: 25 fps, chunks of up to 4 frames, 8 frames ahead at most."""
    engine = engine or make_engine(renderer, worker, encoder)
    return LiveSession(engine, SessionConfig(fps=25, budget_s=budget_s, max_chunk=4, silence_dbfs=-45,
                                             max_frames_ahead=8, audio_buffer_s=2.0, **config))


async def drive(sched: LiveSession, seconds: float, loud: bool, out: list, pull: bool = True) -> None:
    """Feeds 20 ms packets and pulls video slots, both on the absolute schedule, for ``seconds``
    (``pull=False``: no video slot is pulled, as when the client's video never starts)."""
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
            if pull:
                out.append((slot, sched.frame_for(slot), sched.level, len(sched.frames.ready)))
            slot += 1
    sched._test_pkt, sched._test_slot = pkt, slot


async def stop(tasks: list, worker: InferenceWorker) -> None:
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    worker.close()


@contextlib.asynccontextmanager
async def running(renderer, **kw):
    """A session over ``renderer`` with its encoder feed and render planner running (``sched.tasks``)."""
    worker = InferenceWorker()
    sched = make_scheduler(renderer, worker, **kw)
    sched.start()
    try:
        yield sched
    finally:
        await stop(sched.tasks, worker)
