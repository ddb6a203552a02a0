"""Which frames to render when: speech frames in chunks that still make their slots, rest frames
(idle motion) a few slots ahead, both on the inference worker, earliest deadline first.

Frames the encoder's fused push already drew (encoder_feed.py) are not planned again."""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import time

import numpy as np

from realtime.inference.rest_cache import RestFrameCache
from realtime.inference.worker import InferenceWorker, WorkerBusy, WorkerClosed
from realtime.metrics import ServerMetrics
from realtime.render.base import AvatarFrames, Renderer, RenderState
from realtime.session.audio import MediaClock
from realtime.session.config import SessionConfig
from realtime.session.degrade import Degradation
from realtime.session.frames import HANGOVER, ReadyFrame, SessionFrames
from realtime.session.grid import TimeGrid

log = logging.getLogger(__name__)

REST_STRIDE = 2  # rest (idle-motion) frames rendered for every 2nd avatar frame: 12.5 fps idle motion


class RenderPlanner:
    def __init__(self, config: SessionConfig, grid: TimeGrid, frames: SessionFrames, degrade: Degradation,
                 worker: InferenceWorker, renderer: Renderer, avatar: AvatarFrames, state: RenderState,
                 clock: MediaClock, metrics: ServerMetrics, counts: collections.Counter,
                 rest_cache: RestFrameCache | None = None) -> None:
        self.config, self.grid, self.frames, self.degrade = config, grid, frames, degrade
        self.worker, self.renderer, self.avatar, self.state = worker, renderer, avatar, state
        self.clock, self.metrics, self.counts, self.rest_cache = clock, metrics, counts, rest_cache
        self.render_s_per_frame = 0.01  # running estimate, used to skip frames that cannot make it
        self.wake = asyncio.Event()

    # ---- speech frames -----------------------------------------------------------------------
    def next_speech_chunk(self) -> list[int]:
        """The input frames of the next render call (consecutive; thinned ones skipped)."""
        f, g, now = self.frames, self.grid, self.clock.now()
        thin = self.degrade.thinning
        chunk: list[int] = []
        for i in sorted(f.blocks):
            b = f.blocks[i]
            if i <= f.rendered_upto or b.silent or i + g.K in f.ready or i in f.thinned:
                continue  # ready: drawn with its push; thinned: at the top level, by the fused push
            slot = i + g.K
            if slot <= f.sent_slot or g.slot_time(slot) < now + self.render_s_per_frame * (len(chunk) + 1):
                f.rendered_upto = max(f.rendered_upto, i)  # cannot make its slot: it repeats
                continue
            if thin and i % 2:  # render every other frame, repeat in between
                f.rendered_upto = max(f.rendered_upto, i)
                f.thinned.add(i)
                continue
            if chunk and (i != chunk[-1] + 1 and not (thin and i == chunk[-1] + 2)):
                break
            if len(f.ready) + len(chunk) >= self.config.max_frames_ahead:
                break
            # a chunk's frames all wait for the whole chunk: grow it only while its first frame
            # still makes its deadline (smaller chunks when time is short)
            if chunk and g.slot_time(chunk[0] + g.K) < now + self.render_s_per_frame * (len(chunk) + 1.5):
                break
            chunk.append(i)
            if len(chunk) >= self.degrade.chunk_limit():
                break
        return chunk

    async def run(self) -> None:
        """The render loop: woken by new blocks and by each slot that leaves."""
        while True:
            await self.wake.wait()
            self.wake.clear()
            await self._prepare_rest()
            while True:
                chunk = self.next_speech_chunk()
                if not chunk:
                    break
                await self._render(chunk)

    async def _render(self, chunk: list[int]) -> None:
        f, g = self.frames, self.grid
        gen = f.gen
        slots = np.array([i + g.K for i in chunk], dtype=np.int64)
        blocks = np.stack([f.blocks[i].block for i in chunk])
        arrivals = [f.blocks[i].arrival for i in chunk]
        f.rendered_upto = chunk[-1]
        deadline = g.slot_time(int(slots[0]))
        self.state.quality, self.state.deadline = self.degrade.quality, deadline  # a remote renderer serves EDF
        try:
            result = await self.worker.run(lambda: self._render_job(slots, blocks), deadline=deadline, kind="render")
        except (WorkerBusy, WorkerClosed):
            return
        except Exception as e:  # the renderer failed on this chunk: its slots repeat, the session goes on
            log.warning("render job failed (%s: %s)", type(e).__name__, e)
            self.counts["render_failures"] += 1
            return
        frames, events, seconds_per_frame = result
        self.rendered(len(frames), seconds_per_frame)
        if gen != f.gen:
            self.metrics.frames_dropped.inc(len(frames))
            return
        now = self.clock.now()
        for s, img, ev, a in zip(slots, frames, events, arrivals):
            f.make_ready(int(s), ReadyFrame(img, ev, a), g.slot_time(int(s)) - now)

    def _render_job(self, slots: np.ndarray, blocks: np.ndarray) -> tuple[list, list, float]:
        """On the worker thread: (frames, their events, seconds per frame)."""
        t = time.perf_counter()
        idx = np.array([self.grid.avatar_index(int(s)) for s in slots], dtype=np.int64)
        out = self.renderer.render_chunk(self.avatar, idx, blocks, self.state)
        return out.frames, out.frame_events(), (time.perf_counter() - t) / len(slots)

    def rendered(self, n: int, seconds_per_frame: float) -> None:
        """Bookkeeping for ``n`` frames rendered (here or with their push)."""
        self.metrics.render_time.observe(seconds_per_frame)
        self.metrics.frames_rendered.inc(n)
        self.render_s_per_frame = 0.8 * self.render_s_per_frame + 0.2 * seconds_per_frame

    # ---- rest frames -------------------------------------------------------------------------
    def rest_frame(self, slot: int) -> np.ndarray:
        idx = self.grid.avatar_index(slot)
        if self.rest_cache is not None:
            return self.rest_cache.get(self.renderer, self.avatar, idx, self.state.seed)
        return self.renderer.rest_frame(self.avatar, idx, self.state)

    async def _prepare_rest(self) -> None:
        """Keeps rest frames ready for the next few slots (cheap; done in the worker in one job)."""
        if self.clock.t0 is None:
            return
        f, g = self.frames, self.grid
        first = max(0, math.ceil((self.clock.now() - self.clock.t0) / self.config.period))
        newest = max(f.blocks, default=None)
        if newest is not None and newest - f.last_speech_i <= HANGOVER + 1:
            # Speaking: upcoming slots will be rendered; rest frames would be wasted work. The first
            # silent slots after speech fall back to repeating the (closing) last frame.
            return
        # Idle motion (head sway, blinks) is slow: it is rendered for every REST_STRIDE-th avatar
        # frame (the same ones in every session, so the shared cache serves all of them) and held
        # in between. Halves the cost of silence, which otherwise dominates a listening session.
        # One frame per job: a long rest job would hold the worker when speech starts.
        stride = REST_STRIDE * (2 if self.degrade.level >= 2 else 1)
        want = [s for s in range(first + 1, first + 1 + 3 * stride)
                if g.avatar_index(s) % stride == 0 and s not in f.rest and s not in f.ready][:1]
        if not want:
            return
        try:
            frames = await self.worker.run(lambda: [self.rest_frame(s) for s in want],
                                           deadline=g.slot_time(want[0]), kind="rest")
        except (WorkerBusy, WorkerClosed):
            return
        except Exception as e:  # the rest frame failed: the slot shows the avatar's frame, the session goes on
            log.warning("rest frame job failed (%s: %s)", type(e).__name__, e)
            self.counts["rest_failures"] += 1
            return
        f.rest.update(zip(want, frames))
