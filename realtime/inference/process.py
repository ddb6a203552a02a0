"""Model work in a child process, so the event loop's Python (aiortc: RTP, SRTP, Opus, pacing) and
the models' Python never wait on each other's GIL.

Measured on 2 cores with 4 sessions and the worker as threads in the server process: the renderer
took 10-14 ms of wall time per frame against 3.9 ms alone and the streaming encoder 17 ms against
3.2, because numpy/OpenCV/torch glue holds the GIL between native calls while the event loop wants
it too; 30-48 % of speech frames missed their slot with the CPU only 70 % busy. In a process of its
own the same work runs at its single-thread speed.

Layout. The server keeps its earliest-deadline-first ``InferenceWorker`` (scheduling, bounded
queue, errors delivered to the session); its threads only forward jobs here through a pool of
pipes and block (GIL released) until the answer comes. The child holds the only copy of each model
and every session's encoder and renderer state, keyed by ids the proxies below carry. Each time it
wakes it reads every pending request and serves them together: all sessions' encoder pushes go
through one batched encoder call (``push_many``), then render and rest jobs. The proxies implement
the interfaces the scheduler already uses (``push``/``reset``, ``render_chunk``/``rest_frame``).

If the child dies, or gives no answer within ``CALL_TIMEOUT_S`` (it hangs), the jobs in flight
fail with ``WorkerBusy`` (the scheduler skips the frames, a session restarts its encoder) and a new
child is started; sessions carry on with fresh state. A push for an encoder the child does not hold
(it was restarted) fails the same way, so the session's frame grid restarts with its encoder. If a
new child cannot start, calls fail at once with ``WorkerBusy`` and the start is retried with a
growing back-off; ``/healthz`` reports the inference process down meanwhile.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing as mp
import queue
import signal
import threading
import time
from multiprocessing.connection import Connection, wait

import numpy as np

from realtime.errors import ServerStartError
from realtime.heap import freeze_startup_heap
from realtime.inference.factory import DiffusionConfig
from realtime.inference.messages import (Answer, ChildSpec, Drawn, DrawSpec, EncodeAnswer, EncodeRequest, Failed,
                                         Ready, ReleaseRequest, RenderAnswer, RenderRequest, Request, RestAnswer,
                                         RestRequest, StartFailed, avatar_key)
from realtime.inference.shm_channel import ANSWER_BYTES, REQUEST_BYTES, Region
from realtime.inference.worker import WorkerBusy
from realtime.render.base import AvatarFrames, RenderedChunk, Renderer, RenderState

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 120.0  # model loading in the child (seconds normally; slow disks, first run); x5 for diffusion
RESTART_BACKOFF_S = 2.0
MAX_RESTART_BACKOFF_S = 30.0  # a child that cannot start is retried at most this far apart
CALL_TIMEOUT_S = 10.0  # no answer within this: the child hangs (a frame's work takes milliseconds); x6 for diffusion


class ProcessBackend:
    """Parent side: owns the child process and a pool of ``connections`` pipes to it. ``call`` is
    blocking and thread-safe (one pipe per concurrent caller)."""

    def __init__(self, avatar_dir: str | None, renderer: str = "embedded", fps: int = 25,
                 connections: int = 8, nice: int | None = None, diffusion: DiffusionConfig | None = None,
                 max_avatars: int = 4) -> None:
        self.spec = ChildSpec(avatar_dir, renderer, fps, nice, diffusion, max_avatars)
        self.n_conn = connections
        self._lock = threading.Lock()
        self._closed = False
        self._generation = 0
        self._last_start = 0.0
        self.down: str | None = None  # why no child is running (its start failed), else None
        self._next_try = 0.0
        self._backoff = RESTART_BACKOFF_S
        self.call_timeout = CALL_TIMEOUT_S * (6 if renderer == "diffusion" else 1)
        self._ids = itertools.count(1)
        # per pipe: (request region, answer region), kept across child restarts
        self._regions = [(Region(REQUEST_BYTES), Region(ANSWER_BYTES)) for _ in range(connections)]
        try:
            self._start()
        except BaseException:
            self._close_regions()
            raise

    def new_id(self) -> int:
        return next(self._ids)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def _start(self) -> None:
        ctx = mp.get_context("spawn")  # never fork a process that already runs threads
        pairs = [ctx.Pipe(duplex=True) for _ in range(self.n_conn)]
        names = [(rq.name, an.name) for rq, an in self._regions]
        self._proc = ctx.Process(target=child_main, args=([c for _, c in pairs], self.spec, names),
                                 name="syncvid-inference", daemon=True)
        self._proc.start()
        for _, c in pairs:
            c.close()  # the child's ends live in the child now
        self._pool: queue.Queue[tuple[Connection, Region, Region]] = queue.Queue()
        first = pairs[0][0]
        timeout = READY_TIMEOUT_S * (5 if self.spec.renderer == "diffusion" else 1)  # a 5 GB UNet
        try:
            if not first.poll(timeout):
                raise ServerStartError(f"the inference process did not load its models within {timeout:.0f} s; "
                                       "check that the model files are on a local disk")
            try:
                hello = first.recv()
            except (EOFError, OSError):
                hello = StartFailed(f"it exited with code {self._proc.exitcode}")
            if not isinstance(hello, Ready):
                raise ServerStartError(f"the inference process failed to start: {hello.reason}")
        except ServerStartError:
            self._proc.kill()
            self._proc.join(5)
            for p, _ in pairs:
                p.close()
            raise
        regions = self._regions
        if not hello.attached:  # the child could not map them: pipes only, both ways
            log.warning("the inference process could not attach the shared memory; using the pipes only")
            regions = [(Region(0), Region(0)) for _ in self._regions]
        for (p, _), (rq, an) in zip(pairs, regions):
            self._pool.put((p, rq, an))
        self._generation += 1
        self._last_start = time.monotonic()
        log.info("inference process %d ready (%s)", self._proc.pid, hello.info)

    def call(self, request: Request) -> Answer:
        """Sends one request, waits for its answer (from a worker thread, never the event loop);
        a ``Failed`` answer raises its error here."""
        if self.down is not None:
            self._retry_start()
        gen, pool = self._generation, self._pool
        try:
            slot = pool.get(timeout=5.0)
        except queue.Empty:
            raise WorkerBusy("no free connection to the inference process") from None
        conn, req_region, ans_region = slot
        try:
            conn.send_bytes(req_region.pack(request))
            if not conn.poll(self.call_timeout):
                raise TimeoutError(f"no answer within {self.call_timeout:.0f} s")
            answer = ans_region.unpack(conn.recv_bytes())
        except (EOFError, OSError) as e:  # TimeoutError too: a hung child is replaced like a dead one
            self._restart(gen, e)
            raise WorkerBusy(f"the inference process stopped ({type(e).__name__}: {e}); restarting it") from None
        except Exception:  # the pipe is in step (nothing sent, or the answer read): it stays usable
            self._give_back(slot, gen)
            raise
        self._give_back(slot, gen)
        if isinstance(answer, Failed):
            raise answer.error
        return answer

    def _give_back(self, slot: tuple, gen: int) -> None:
        with self._lock:
            if gen == self._generation and not self._closed:
                self._pool.put(slot)
                return
        slot[0].close()  # a pipe to a child that has been replaced

    def _restart(self, gen: int, why: BaseException) -> None:
        with self._lock:
            if self._closed or gen != self._generation or self.down is not None:
                return  # closed, or another caller restarted it already (or is retrying its start)
            log.error("inference process %s exited or hangs (%s: %s); starting a new one", self.pid,
                      type(why).__name__, why)
            self._drain_pool()
            if self._proc.is_alive():  # it must not answer into the regions the new child will use
                self._proc.kill()
            self._proc.join(1.0)
            wait_s = RESTART_BACKOFF_S - (time.monotonic() - self._last_start)
            if wait_s > 0:  # a child that dies at once must not spin
                time.sleep(wait_s)
            self._try_start()

    def _try_start(self) -> None:
        """``_start`` under the lock; on failure the backend is ``down`` until a retry succeeds."""
        try:
            self._start()
        except ServerStartError as e:
            self.down = str(e)
            self._generation += 1  # pipes of the failed start are closed; callers holding old ones give them up
            self._next_try = time.monotonic() + self._backoff
            log.error("%s; retrying in %.0f s", e, self._backoff)
            self._backoff = min(MAX_RESTART_BACKOFF_S, 2 * self._backoff)
            return
        self.down, self._backoff = None, RESTART_BACKOFF_S

    def _retry_start(self) -> None:
        """Called while ``down``: one caller retries the start when the back-off allows; every
        other call fails at once instead of queueing behind a process that is not there."""
        if self._lock.acquire(blocking=False):
            try:
                if self.down is not None and not self._closed and time.monotonic() >= self._next_try:
                    self._try_start()
            finally:
                self._lock.release()
        if self.down is not None or self._closed:
            raise WorkerBusy(f"the inference process is down ({self.down}); a new start is retried")

    def _drain_pool(self) -> None:
        while True:
            try:
                self._pool.get_nowait()[0].close()
            except queue.Empty:
                return

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._drain_pool()  # the child sees EOF on every pipe and exits
            self._proc.join(5.0)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join(1.0)
            self._close_regions()

    def _close_regions(self) -> None:
        for regions in self._regions:
            for r in regions:
                r.close()


class EncoderProxy:
    """A session's streaming encoder in the child (same ``push``/``reset`` as StreamingAudioEncoder;
    frames come back as ``(index, block)``)."""

    def __init__(self, backend: ProcessBackend, lookahead: str, fps: int) -> None:
        self.backend, self.lookahead, self.fps = backend, lookahead, fps
        self.id = backend.new_id()
        self._reset = True  # the first push creates the child's encoder; a push without reset needs it there
        self.light = False  # StreamingAudioEncoder.light, applied in the child with each push

    def reset(self) -> None:
        self._reset = True  # sent with the next push: one round trip

    def _request(self, samples: np.ndarray, draw: DrawSpec | None) -> EncodeAnswer:
        # On failure the caller restarts the encoder on its frame grid (reset(), as after any lost audio).
        reset, self._reset = self._reset, False
        return self.backend.call(EncodeRequest(self.id, self.lookahead, np.asarray(samples, np.float32), reset,
                                               bool(self.light), draw))

    def push(self, samples: np.ndarray) -> list[tuple[int, np.ndarray]]:
        return list(self._request(samples, None).blocks)

    def push_render(self, samples: np.ndarray, draw: DrawSpec) -> tuple[list[tuple[int, np.ndarray]], Drawn | None]:
        """``push`` plus, in the same request, rendering the frames ``draw`` names (the fused push,
        session.feed) with the session's renderer state. A frame past its deadline is not
        rendered."""
        answer = self._request(samples, draw)
        return list(answer.blocks), answer.drawn

    def release(self) -> None:
        self.backend.call(ReleaseRequest("encoder", self.id))


class RendererProxy(Renderer):
    """The renderer in the child. Each ``RenderState`` made here names its state in the child; each
    request names the avatar by its folder (``messages.avatar_key``), which the child loads."""

    def __init__(self, backend: ProcessBackend, lookahead: str, name: str = "embedded") -> None:
        self.backend, self.lookahead, self.name = backend, lookahead, name

    def new_state(self, seed: int = 0) -> RenderState:
        return RenderState(seed=seed, remote_id=self.backend.new_id())

    def render_chunk(self, avatar: AvatarFrames, frame_indices: np.ndarray, audio_blocks: np.ndarray,
                     state: RenderState) -> RenderedChunk:
        answer: RenderAnswer = self.backend.call(RenderRequest(
            state.remote_id, self.lookahead, state.seed, np.asarray(frame_indices),
            np.asarray(audio_blocks, np.float32), state.quality, state.deadline, avatar_key(avatar)))
        return RenderedChunk(list(answer.frames), list(answer.events))

    def rest_frame(self, avatar: AvatarFrames, frame_index: int, state: RenderState) -> np.ndarray:
        answer: RestAnswer = self.backend.call(RestRequest(self.lookahead, state.seed, int(frame_index),
                                                           avatar_key(avatar)))
        return answer.frame

    def release(self, state: RenderState) -> None:
        if state.remote_id is not None:
            self.backend.call(ReleaseRequest("render", state.remote_id))


# ---- child ------------------------------------------------------------------------------------------
def child_main(conns: list[Connection], spec: ChildSpec, regions: list[tuple[str | None, str | None]]) -> None:
    from realtime.inference.child import ChildEngine, set_nice  # models: only the child imports them

    # Ctrl-C in a terminal reaches the whole process group: the server stops this process itself
    # (closing its pipes ends the loop below), so the child ignores SIGINT instead of dying with a
    # KeyboardInterrupt traceback in the middle of the server's orderly shutdown
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    set_nice(spec.nice)  # before any thread starts: threads inherit it
    try:
        engine = ChildEngine(spec)
    except Exception as e:  # reported to the parent, which raises it with this text
        conns[0].send(StartFailed(f"{type(e).__name__}: {e}"))
        return
    channels, attached = {}, True
    for c, names in zip(conns, regions):
        pair = (_attach(names[0]), _attach(names[1]))
        attached = attached and all(r.shm is not None for name, r in zip(names, pair) if name)
        channels[c] = pair
    if not attached:  # the server then sends everything in band: so do we
        channels = {c: (Region(0), Region(0)) for c in conns}
    frozen = freeze_startup_heap()  # a full collection would otherwise stall every session ~150 ms
    conns[0].send(Ready(f"{engine.describe()}, start-up heap of {frozen} objects frozen", attached))
    live = list(conns)
    while live:
        requests = []
        for c in wait(live):
            try:
                requests.append((c, channels[c][0].unpack(c.recv_bytes())))
            except (EOFError, OSError):  # the server closed this pipe (shutdown)
                live.remove(c)
        for c, answer in engine.serve(requests):
            try:
                c.send_bytes(channels[c][1].pack(answer))
            except OSError:
                if c in live:
                    live.remove(c)


def _attach(name: str | None) -> Region:
    return Region(name=name) if name else Region(0)
