"""The shared inference worker: earliest deadline first, bounded, errors delivered, never on the loop."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from realtime.inference.worker import InferenceWorker, WorkerBusy


async def test_jobs_run_earliest_deadline_first_off_the_loop():
    worker = InferenceWorker()
    try:
        gate = threading.Event()
        order: list[str] = []
        loop_thread = threading.get_ident()
        blocker = worker.submit(lambda: gate.wait(2), deadline=0.0)
        await asyncio.sleep(0.05)  # the worker is now busy with the blocker
        now = time.monotonic()
        futs = [worker.submit(lambda n=n: order.append(n) or threading.get_ident(), deadline=now + d)
                for n, d in (("late", 0.3), ("soon", 0.1), ("mid", 0.2))]
        assert worker.depth == 3
        gate.set()
        threads = await asyncio.gather(blocker, *futs)
        assert order == ["soon", "mid", "late"]
        assert all(t != loop_thread for t in threads[1:])
    finally:
        worker.close()


async def test_bounded_queue_and_errors_reach_the_caller():
    worker = InferenceWorker(max_pending=2)
    try:
        gate = threading.Event()
        first = worker.submit(lambda: gate.wait(2))
        await asyncio.sleep(0.05)
        a, b = worker.submit(lambda: 1), worker.submit(lambda: 1 / 0)
        with pytest.raises(WorkerBusy):
            worker.submit(lambda: 2)
        gate.set()
        assert await first is True and await a == 1
        with pytest.raises(ZeroDivisionError):
            await b
        assert await worker.run(lambda: "still alive") == "still alive"
    finally:
        worker.close()


async def test_two_threads_share_one_queue():
    worker = InferenceWorker(threads=2)
    try:
        t0 = time.monotonic()
        await asyncio.gather(*(worker.run(lambda: time.sleep(0.2)) for _ in range(2)))
        assert time.monotonic() - t0 < 0.35  # ran side by side
    finally:
        worker.close()
