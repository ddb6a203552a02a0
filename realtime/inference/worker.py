"""One inference worker shared by every session: renderer and audio-encoder work off the event loop.

Sessions submit small jobs (encode pushed audio, render a chunk, prepare rest frames) with a
deadline into one queue, served earliest deadline first by the worker's thread(s) (``threads``:
``inference_threads`` with the models in the server process; with the models in the inference
process, the default, 8 threads that only forward jobs over pipes and wait). So the chunks of all
sessions are scheduled together and a late session cannot starve one whose frame is due sooner.
A session has at most one encode and one render job in flight. Models live in the renderer/encoders given to sessions and are
loaded once per process; the worker only serialises access to them, which is also what keeps
non-thread-safe torch modules safe.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


class WorkerClosed(RuntimeError):
    pass


class WorkerBusy(RuntimeError):
    """The worker queue is full: the caller degrades instead of queueing more."""


@dataclass(order=True)
class _Job:
    deadline: float
    seq: int
    fn: Callable[[], Any] = field(compare=False)
    loop: asyncio.AbstractEventLoop = field(compare=False)
    future: asyncio.Future = field(compare=False)
    kind: str = field(compare=False, default="job")


class InferenceWorker:
    """Earliest-deadline-first job runner on one thread; bounded queue of ``max_pending`` jobs."""

    def __init__(self, max_pending: int = 256, on_batch: Callable[[int], None] | None = None,
                 threads: int = 1) -> None:
        self._heap: list[_Job] = []
        self._cv = threading.Condition()
        self._seq = itertools.count()
        self._max_pending = max_pending
        self._closed = False
        self._on_batch = on_batch
        self.batches = 0
        self.jobs_run = 0
        self._threads = [threading.Thread(target=self._run, name=f"syncvid-inference-{k}", daemon=True)
                         for k in range(max(1, threads))]
        for t in self._threads:
            t.start()

    @property
    def depth(self) -> int:
        return len(self._heap)

    def submit(self, fn: Callable[[], Any], deadline: float | None = None, kind: str = "job") -> asyncio.Future:
        """Queues ``fn`` (run on the worker thread); returns a future resolved on the caller's loop."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        with self._cv:
            if self._closed:
                raise WorkerClosed("inference worker is closed")
            if len(self._heap) >= self._max_pending:
                raise WorkerBusy(f"inference worker has {len(self._heap)} jobs pending")
            d = time.monotonic() if deadline is None else deadline
            heapq.heappush(self._heap, _Job(d, next(self._seq), fn, loop, fut, kind))
            self._cv.notify()
        return fut

    async def run(self, fn: Callable[[], Any], deadline: float | None = None, kind: str = "job") -> Any:
        return await self.submit(fn, deadline, kind)

    def close(self, timeout: float = 5.0) -> None:
        with self._cv:
            self._closed = True
            pending, self._heap = self._heap, []
            self._cv.notify_all()
        for job in pending:
            job.loop.call_soon_threadsafe(_cancel, job.future)
        for t in self._threads:
            t.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._heap and not self._closed:
                    self._cv.wait()
                if self._closed:
                    return
                job = heapq.heappop(self._heap)  # earliest deadline first
                depth = len(self._heap)
            self.batches += 1
            if self._on_batch:
                self._on_batch(depth + 1)
            if job.future.cancelled():
                continue
            try:
                result, exc = job.fn(), None
            except BaseException as e:  # delivered to the awaiting session, never kills the worker
                result, exc = None, e
            self.jobs_run += 1
            try:
                job.loop.call_soon_threadsafe(_deliver, job.future, result, exc)
            except RuntimeError:  # the submitting loop is closed: nobody is waiting
                pass


def _deliver(fut: asyncio.Future, result: Any, exc: BaseException | None) -> None:
    if fut.done():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)


def _cancel(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.cancel()
