"""What both session kinds (WebRTC, avatar SDK) keep of their own tasks and output rate."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

log = logging.getLogger(__name__)

RATE_WINDOW_S = 0.5  # output rate measured over at least this long


class SessionTasks:
    """The tasks of one session. A task that fails ends the session: ``gone`` is set and
    ``failed`` says which task (the traceback goes to the log), so the server can tell the client."""

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self.tasks: set[asyncio.Task] = set()
        self.gone = asyncio.Event()
        self.failed: str | None = None

    def spawn(self, coro, name: str) -> asyncio.Task:
        task = asyncio.create_task(coro, name=f"{self.session_id}-{name}")
        self.watch(task)
        return task

    def watch(self, task: asyncio.Task) -> None:
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task) -> None:
        self.tasks.discard(task)
        if task.cancelled() or task.exception() is None:
            return
        log.error("session %s task %s failed", self.session_id, task.get_name(), exc_info=task.exception())
        self.failed = f"{task.get_name().split('-', 1)[-1]} task failed"
        self.gone.set()

    async def cancel(self, timeout: float) -> None:
        """Cancels every task but the caller's and waits for them, at most ``timeout`` seconds."""
        self.gone.set()
        tasks = [t for t in self.tasks if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout)


class OutputRate:
    """Frames a session sent, and its recent frames per second (for the server's gauges)."""

    def __init__(self) -> None:
        self.sent = 0
        self.fps = 0.0
        self._mark = (time.monotonic(), 0)

    def frame_sent(self) -> None:
        self.sent += 1

    def now(self) -> float:
        t, n = time.monotonic(), self.sent
        t0, n0 = self._mark
        if t - t0 >= RATE_WINDOW_S:
            self.fps = (n - n0) / (t - t0)
            self._mark = (t, n)
        return self.fps
