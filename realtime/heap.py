"""Garbage collection tuned for a long-running real-time server.

Two costs of Python's cyclic collector show up here:

- A full collection walks every tracked object. After start-up the server process holds ~195 000
  of them (torch, aiortc, numpy...) and the inference process ~268 000: a full collection stalls
  the process for ~150-200 ms on this 2-core CPU, several frame times for every session at once.
  ``freeze_startup_heap`` moves what start-up made into the permanent generation (``gc.freeze``),
  which the collector never walks again; a full collection then takes ~1 ms plus what it frees.
- What a closed session leaves in reference cycles (aiortc's peer connection, transports and RTP
  history, PyAV's filter graphs, each of which holds native threads) waits for the next full
  collection, which on a quiet server can be minutes away: threads and memory pile up meanwhile.
  ``Sweeper`` runs one collection shortly after sessions end, so they are given back promptly.
  It only runs while the start-up heap is frozen, so that a collection stays cheap.
- What the native side frees (video frames, codec and filter-graph buffers, allocated in aiortc's
  and PyAV's threads) stays in glibc's per-thread malloc arenas as free-but-resident pages: the
  server's resident memory climbed in steps by ~11 MB per 100 sessions while its Python heap grew
  by under 0.5 MB (tracemalloc). After each sweep ``release_free_memory`` asks glibc to give those
  pages back (``malloc_trim``), in a worker thread, since it walks every arena.
"""

from __future__ import annotations

import asyncio
import collections
import ctypes
import ctypes.util
import functools
import gc
import logging
import time

log = logging.getLogger(__name__)

SWEEP_DELAY_S = 0.5  # after a session ends: its transports' last callbacks have run by then


def freeze_startup_heap() -> int:
    """Collects once, then freezes every object alive now; returns how many were frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    """glibc's ``malloc_trim``, or None where the C library has none (musl, macOS)."""
    name = ctypes.util.find_library("c")
    try:
        fn = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None
    if fn is not None:
        fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
    return fn


def release_free_memory() -> bool:
    """Returns the C heap's free pages to the system (every arena); False where that is not possible.
    Releases the GIL while it runs (a ctypes call)."""
    fn = _malloc_trim()
    if fn is None:
        return False
    fn(0)
    return True


class Sweeper:
    """One ``gc.collect()`` ``delay_s`` after a session ends, however many end together. The
    durations go to ``on_sweep(seconds, objects_freed)`` (the server's metrics)."""

    def __init__(self, delay_s: float = SWEEP_DELAY_S, on_sweep=None, trim: bool = True) -> None:
        self.delay_s = delay_s
        self.on_sweep = on_sweep
        self.trim = trim and _malloc_trim() is not None
        self.sweeps = 0
        self._handle: asyncio.TimerHandle | None = None

    def session_ended(self) -> None:
        if self._handle is not None or gc.get_freeze_count() == 0:
            return  # one already pending / nothing frozen: a collection would walk the whole heap
        self._handle = asyncio.get_running_loop().call_later(self.delay_s, self._sweep)

    def _sweep(self) -> None:
        self._handle = None
        t = time.perf_counter()
        freed = gc.collect()
        dt = time.perf_counter() - t
        self.sweeps += 1
        log.debug("swept %d objects in %.1f ms", freed, dt * 1000)
        if self.on_sweep is not None:
            self.on_sweep(dt, freed)
        if self.trim:
            asyncio.get_running_loop().run_in_executor(None, self._timed_trim)

    def _timed_trim(self) -> None:
        t = time.perf_counter()
        release_free_memory()
        log.debug("gave free C-heap pages back in %.1f ms", (time.perf_counter() - t) * 1000)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


class PauseWatch:
    """Every collection's duration in this process, whoever started it (``gc.callbacks``): the
    stalls the collector took from the event loop and the threads. The callback runs wherever a
    collection starts, possibly inside a metric's lock, so it only appends to a deque (no lock);
    ``drain()`` hands the durations over from the event loop."""

    def __init__(self, keep: int = 10000) -> None:
        self.pending: collections.deque[float] = collections.deque(maxlen=keep)
        self._t0 = 0.0

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            self.pending.append(time.perf_counter() - self._t0)

    def drain(self) -> list[float]:
        out = []
        while True:
            try:
                out.append(self.pending.popleft())
            except IndexError:
                return out

    def install(self) -> "PauseWatch":
        gc.callbacks.append(self)
        return self

    def remove(self) -> None:
        if self in gc.callbacks:
            gc.callbacks.remove(self)
