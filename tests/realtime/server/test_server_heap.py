"""Garbage collection of a long-running server (realtime/heap.py): a frozen start-up heap, a
collection soon after sessions end (their cycles hold native threads), collector stalls measured."""

from __future__ import annotations

import asyncio
import gc
import os
import time
import weakref

import pytest

from clients.webrtc_peer import WebRTCPeer
from realtime import heap
from realtime.heap import PauseWatch, Sweeper, freeze_startup_heap, release_free_memory
from tests.fakes import speech_like


@pytest.fixture
def frozen_heap():
    """The heap as `syncvid serve` leaves it after start-up; thawed again for the other tests."""
    n = freeze_startup_heap()
    try:
        yield n
    finally:
        gc.unfreeze()


class _Cycle:
    def __init__(self) -> None:
        self.me = self


def _native_threads() -> int:
    """Threads that are not Python threads (the loop's executor grows on demand; those stay)."""
    import threading

    return len(os.listdir("/proc/self/task")) - threading.active_count()


def test_freezing_makes_a_full_collection_skip_the_start_up_heap(frozen_heap):
    assert gc.get_freeze_count() > 10000  # pytest, numpy, torch, aiortc...
    t = time.perf_counter()
    gc.collect()
    frozen_s = time.perf_counter() - t
    gc.unfreeze()
    t = time.perf_counter()
    gc.collect()
    thawed_s = time.perf_counter() - t
    freeze_startup_heap()  # as the fixture expects
    assert frozen_s < thawed_s / 3, (frozen_s, thawed_s)


async def test_sweeper_collects_once_after_sessions_end(frozen_heap):
    swept = []
    sweeper = Sweeper(delay_s=0.05, on_sweep=lambda s, n: swept.append(n))
    gc.disable()  # only the sweeper may collect here
    try:
        garbage = _Cycle()
        alive = weakref.ref(garbage)
        del garbage
        for _ in range(3):  # three sessions end together: one collection
            sweeper.session_ended()
        assert alive() is not None and swept == []
        await asyncio.sleep(0.2)
        assert alive() is None, "the cycle left by the session was not collected"
        assert sweeper.sweeps == 1 and len(swept) == 1 and swept[0] >= 1
    finally:
        gc.enable()
        sweeper.cancel()


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def test_release_free_memory_gives_back_what_a_thread_freed():
    """Memory a codec thread allocated and freed stays resident in that thread's malloc arena until
    it is trimmed: 80 MB of 4 kB blocks, all freed but the last (which pins the arena's top)."""
    import threading

    import numpy as np

    kept = []

    def codec_like_thread():
        blocks = [np.ones(512) for _ in range(20000)]
        kept.append(blocks[-1])

    t = threading.Thread(target=codec_like_thread)
    t.start()
    t.join()
    before = _rss_mb()
    if not release_free_memory():
        pytest.skip("this C library has no malloc_trim (not glibc)")
    assert before - _rss_mb() > 50, (before, _rss_mb())


async def test_sweeper_gives_free_pages_back_after_its_collection(frozen_heap, monkeypatch):
    if not Sweeper().trim:
        pytest.skip("this C library has no malloc_trim (not glibc)")
    order = []
    monkeypatch.setattr(heap, "release_free_memory", lambda: order.append("trim"))
    sweeper = Sweeper(delay_s=0.01, on_sweep=lambda s, n: order.append("collect"))
    sweeper.session_ended()
    await asyncio.sleep(0.2)
    assert order == ["collect", "trim"]
    untrimmed = Sweeper(delay_s=0.01, on_sweep=lambda s, n: order.append("collect"), trim=False)
    untrimmed.session_ended()
    await asyncio.sleep(0.2)
    assert order == ["collect", "trim", "collect"]


async def test_sweeper_does_not_walk_an_unfrozen_heap():
    assert gc.get_freeze_count() == 0
    sweeper = Sweeper(delay_s=0.01)
    sweeper.session_ended()
    await asyncio.sleep(0.05)
    assert sweeper.sweeps == 0


def test_pause_watch_times_every_collection():
    watch = PauseWatch().install()
    try:
        gc.collect()
        gc.collect(0)
    finally:
        watch.remove()
    pauses = watch.drain()
    assert len(pauses) == 2 and all(0 < p < 5 for p in pauses)
    assert watch.drain() == [] and watch not in gc.callbacks


async def test_a_closed_sessions_threads_are_given_back_promptly(server, frozen_heap):
    """Each session's audio resamplers are PyAV filter graphs: reference cycles that hold native
    threads. With the start-up heap frozen, the server collects them right after the session ends
    instead of whenever a full collection next comes round."""
    url = f"ws://127.0.0.1:{server.port}/ws"

    async def one_session() -> None:
        peer = WebRTCPeer(url, keep_video=False)
        await peer.connect()
        await peer.wait_connected()
        peer.play(speech_like(0.6))
        await asyncio.sleep(1.0)
        await peer.close()

    gc.disable()  # no automatic collection may do the sweeper's work
    try:
        await one_session()  # first use starts the loop's executor threads; they stay
        await asyncio.sleep(1.0)
        baseline, sweeps = _native_threads(), server.sweeper.sweeps
        assert sweeps >= 1
        await one_session()
        during = _native_threads()
        t0 = time.monotonic()
        while (server.sweeper.sweeps == sweeps or _native_threads() > baseline) and time.monotonic() - t0 < 3:
            await asyncio.sleep(0.05)
    finally:
        gc.enable()
    assert server.sweeper.sweeps == sweeps + 1
    assert _native_threads() <= baseline, (baseline, during, _native_threads())
    stats = server.stats()
    assert stats["gc_sweeps"] == sweeps + 1 and stats["gc_pause_ms"]["n"] >= 1
    assert "syncvid_gc_sweeps_total" in server.metrics.render()
