"""From speech to drawn frames: the encoder feed and the render planner.

``EncoderFeed`` feeds the session's 16 kHz input to its streaming encoder on the frame grid and
turns what the encoder returns into per-frame blocks (``SessionFrames.blocks``). Audio goes to the
encoder when it completes a frame (every other 20 ms packet at 25 fps: half the jobs, no added
delay). After ``GATE_AFTER_S`` of silence the encoder is not fed at all (its frames would be rest
frames anyway) until speech returns. With an encoder in the inference process the push also
renders the speech frames it completes (the fused push): one round trip instead of two off the
42 ms between a frame's last packet and its slot.

``RenderPlanner`` decides which frames to render when: speech frames in chunks that still make
their slots, rest frames (idle motion) a few slots ahead, both on the inference worker, earliest
deadline first. Frames the fused push already drew are not planned again.

Hand-off: model calls run on the inference worker; everything they return is stored here on the
event loop after the ``await`` (``EncoderFeed._push``, ``RenderPlanner._render``), so no worker
thread writes session state."""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import time

import numpy as np

from realtime.audio.features import STEPS_PER_SECOND
from realtime.inference.messages import DrawFrame, Drawn, DrawSpec, avatar_key
from realtime.inference.rest_cache import RestFrameCache
from realtime.inference.worker import InferenceWorker, WorkerBusy, WorkerClosed
from realtime.metrics import ServerMetrics
from realtime.render.base import AvatarFrames, Renderer, RenderState
from realtime.session.config import Degradation, FusedEncoder, SessionConfig, StreamEncoder, as_block
from realtime.session.timeline import (ENCODER_RATE, HANGOVER, PACKET_SAMPLES, AudioRing, MediaClock, ReadyFrame,
                                       SessionFrames, TimeGrid)

log = logging.getLogger(__name__)

# ---- the render planner ----
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


log = logging.getLogger(__name__)

# ---- the encoder feed ----
MAX_ENCODE_BACKLOG_S = 1.0  # more audio than this waiting for the encoder: skip ahead
GATE_AFTER_S = 0.4  # silence fed to the encoder before it is gated (covers block past + hangover)
GATE_CONTEXT_S = 0.2  # audio before a speech onset re-encoded on resume (the block's past steps)
MAX_PUSH_WAIT = 3 * PACKET_SAMPLES  # audio waiting this long goes to the encoder whatever the arithmetic says
FRAME_WINDOW_S = 0.04  # a frame's own audio for silence decisions: 40 ms either side of its centre


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if len(x) else 0.0


class EncoderFeed:
    def __init__(self, config: SessionConfig, grid: TimeGrid, frames: SessionFrames, degrade: Degradation,
                 planner: RenderPlanner, ring16: AudioRing, worker: InferenceWorker, encoder: StreamEncoder,
                 state: RenderState, clock: MediaClock, metrics: ServerMetrics, counts: collections.Counter) -> None:
        self.config, self.grid, self.frames, self.degrade, self.planner = config, grid, frames, degrade, planner
        self.ring16, self.worker, self.encoder, self.state = ring16, worker, encoder, state
        self.clock, self.metrics, self.counts = clock, metrics, counts
        self.enc_pos = 0  # next 16 kHz input sample the encoder gets
        self.enc_base = 0  # input frame index of encoder frame 0 (changes on reset)
        self.enc_frames = 0  # frames the encoder has emitted since its last reset
        self.need_reset = False
        self.gated = False  # silence gating (see gate)
        self._quiet_s = 0.0
        self.tail_end = 0  # end_of_utterance: encode up to this 16 kHz sample now, silence past the input
        self.wake = asyncio.Event()

    @property
    def backlog_s(self) -> float:
        return max(0, self.ring16.end - self.enc_pos) / ENCODER_RATE

    def start(self) -> None:
        """The grid was just fixed: the encoder starts at input frame 0."""
        self.enc_pos = round(self.grid.e0 * ENCODER_RATE)

    def tail_until(self, i: int) -> None:
        """Makes input frame ``i`` (and those before it) now, taking silence for the audio that has
        not arrived (the speaker stopped: no look-ahead will come)."""
        self.tail_end = max(self.tail_end, self.frame_need_sample(i))
        self.wake.set()

    def restart_at(self, end: int) -> None:
        """The encoder starts afresh on the first grid frame at or after 16 kHz sample ``end``."""
        i = self.grid.frame_at(end)
        self.enc_base, self.enc_pos = i, self.grid.grid_sample(i)
        self.need_reset = True

    # ---- the loop ------------------------------------------------------------------------------
    async def run(self) -> None:
        min_push = PACKET_SAMPLES
        while True:
            await self.wake.wait()
            self.wake.clear()
            end = max(self.ring16.end, self.tail_end)
            if not self.grid.anchored or end - self.enc_pos < min_push:  # no grid yet: nothing to place
                continue
            if end - self.enc_pos > MAX_ENCODE_BACKLOG_S * ENCODER_RATE:  # worker too slow: skip ahead
                log.warning("encoder backlog %.2f s: skipping audio", (end - self.enc_pos) / ENCODER_RATE)
                self.counts["encode_skips"] += 1
                self.restart_at(end)  # on the next frame's grid sample, >= end
                if end - self.enc_pos < min_push:
                    continue  # the audio after the skip is still to come
            if (not self.gated and not self.need_reset and end - self.enc_pos < MAX_PUSH_WAIT
                    and end < self.frame_need_sample(self.enc_base + self.enc_frames)):
                continue  # this audio completes no frame yet: it goes with the packet that does
            if not self.gate(end):
                continue
            await self._push(end)

    async def _push(self, end: int) -> None:
        start, gen, reset = self.enc_pos, self.frames.gen, self.need_reset
        if reset:
            self.enc_frames = 0
        samples = self.ring16.read(start, end - start)
        self.enc_pos, self.need_reset = end, False
        draw, base = self._draw_spec(end), self.enc_base
        t_sub = time.monotonic()
        if self.grid.packets:
            self.metrics.push_wait.observe(max(0.0, t_sub - self.grid.packets[-1][1]))
        try:
            out, drawn = await self.worker.run(lambda: self._encode(samples, reset, draw), kind="encode")
        except WorkerClosed:
            return
        except Exception as e:  # busy, or the model process failed: that audio is lost, so
            # the encoder restarts on the frame grid after it (frames keep their indices)
            log.warning("encoder job failed (%s: %s); restarting the encoder", type(e).__name__, e)
            self.counts["encode_failures"] += 1
            if gen == self.frames.gen:
                self.restart_at(max(self.enc_pos, self.ring16.end))
            return
        self.metrics.push_round_trip.observe(time.monotonic() - t_sub)
        if gen != self.frames.gen:
            self.metrics.frames_dropped.inc(len(drawn.frames) if drawn else 0)
            return
        for item in out:
            j, block = as_block(item)
            i = self.enc_base + j
            self.frames.add_block(i, block, self.block_silent(i), self.grid.arrival_of(self.grid.grid_sample(i)))
            self.enc_frames = max(self.enc_frames, j + 1)
        if drawn and base == self.enc_base:
            self._take_drawn(base, drawn)
        self.planner.wake.set()

    def _encode(self, samples: np.ndarray, reset: bool, draw: DrawSpec | None) -> tuple[list, Drawn | None]:
        """(encoder frames, frames rendered with them or None): on the worker thread."""
        t = time.perf_counter()
        self.encoder.light = self.degrade.light_encoder  # degraded: cheaper encoder calls
        if reset:
            self.encoder.reset()
        if draw is not None:
            out, drawn = self.encoder.push_render(samples, draw)
        else:
            out, drawn = self.encoder.push(samples), None
        self.metrics.encode_time.observe(time.perf_counter() - t - (drawn.seconds if drawn else 0.0))
        return out, drawn

    # ---- the fused push ------------------------------------------------------------------------
    def _draw_spec(self, end: int) -> DrawSpec | None:
        """What the model process should render right after this push, in the same request: the
        speech (and hangover) frames the push completes. Saves a round trip per frame (the push's
        answer, the render loop's wake-up, a second request, which can queue behind other
        sessions' work). At the top level odd frames are thinned here, as the render planner
        does. None where the encoder cannot do it (models in this process, test stand-ins)."""
        if not isinstance(self.encoder, FusedEncoder) or self.state.remote_id is None:
            return None
        g, frames, j = self.grid, [], self.enc_frames
        last = self.frames.last_speech_i
        real_clock = self.clock.now is time.monotonic  # the deadline is checked in another process
        while self.frame_need_sample(self.enc_base + j) <= end and len(frames) < self.config.max_chunk:
            i = self.enc_base + j
            j += 1
            if not self.block_silent(i):
                last = i
            elif i - last > HANGOVER:
                continue
            if self.degrade.thinning and i % 2:
                self.frames.thinned.add(i)
                continue
            slot = i + g.K
            frames.append(DrawFrame(j - 1, g.avatar_index(slot), g.slot_time(slot) if real_clock else math.inf))
        if not frames:
            return None
        return DrawSpec(self.state.remote_id, self.state.seed, tuple(frames), self.degrade.quality,
                        avatar=avatar_key(self.planner.avatar))

    def _take_drawn(self, base: int, drawn: Drawn) -> None:
        """Frames rendered with the push become ready like the render planner's."""
        f, g = self.frames, self.grid
        now, n = self.clock.now(), len(drawn.frames)
        for j, image, event in drawn.frames:
            i = base + j
            b, slot = f.blocks.get(i), i + g.K
            if (b is None or b.silent or slot in f.ready or g.slot_time(slot) <= now
                    or len(f.ready) >= self.config.max_frames_ahead):  # bounded even if nothing sends them
                self.metrics.frames_dropped.inc()
                continue
            f.make_ready(slot, ReadyFrame(image, event, b.arrival), g.slot_time(slot) - now)
        if n:
            self.planner.rendered(n, drawn.seconds / n)

    # ---- where frames need audio ---------------------------------------------------------------
    def frame_need_sample(self, i: int) -> int:
        """Input sample after which the encoder can emit frame ``i`` (the streaming encoder's rule:
        the block's newest step needs mel frames up to 2 * step + 2, i.e. 160 * that + 200 samples
        since its reset, which was at the grid position of ``enc_base``)."""
        c = self.config
        step = int((i - self.enc_base) * STEPS_PER_SECOND / c.fps) + round(c.lookahead_s * STEPS_PER_SECOND) - 1
        return self.grid.grid_sample(self.enc_base) + 160 * (2 * step + 2) + 200

    def gate(self, end: int) -> bool:
        """Silence gating: after GATE_AFTER_S of silence the encoder is not fed; on the first loud
        20 ms it restarts on the frame grid GATE_CONTEXT_S before it, so the first speech frames
        still have left context. Returns whether to encode now."""
        seg = self.ring16.read(self.enc_pos, end - self.enc_pos)
        n = len(seg) // PACKET_SAMPLES * PACKET_SAMPLES
        sub = (np.sqrt(np.mean(np.square(seg[:n].reshape(-1, PACKET_SAMPLES), dtype=np.float64), axis=1))
               if n else np.zeros(0))
        loud = np.nonzero(sub >= self.config.silence_rms)[0]
        if not self.gated:
            self._quiet_s = 0.0 if len(loud) else self._quiet_s + len(seg) / ENCODER_RATE
            if self._quiet_s >= GATE_AFTER_S:
                self.gated = True
                self.counts["gated"] += 1
            return True
        if not len(loud):
            self.enc_pos = end  # silence while gated: nothing to encode
            return False
        onset = self.enc_pos + int(loud[0]) * PACKET_SAMPLES
        g = self.grid
        i = math.floor(((onset / ENCODER_RATE - GATE_CONTEXT_S) - g.e0) * self.config.fps)
        self.enc_base = max(i, self.frames.rendered_upto + 1)
        self.enc_pos = g.grid_sample(self.enc_base)
        self.need_reset, self.gated, self._quiet_s = True, False, 0.0
        return True

    def block_silent(self, i: int) -> bool:
        """Whether input frame ``i``'s block (40 ms before it to the look-ahead after) is silence."""
        lo = self.grid.grid_sample(i) - int(FRAME_WINDOW_S * ENCODER_RATE)
        window = self.ring16.read(lo, int((FRAME_WINDOW_S + self.config.lookahead_s) * ENCODER_RATE))
        return rms(window) < self.config.silence_rms

    def input_loud(self, i: int) -> bool:
        """Whether input frame ``i``'s own +-40 ms of audio (if it has arrived) is speech."""
        half = int(FRAME_WINDOW_S * ENCODER_RATE)
        return rms(self.ring16.read(self.grid.grid_sample(i) - half, 2 * half)) >= self.config.silence_rms
