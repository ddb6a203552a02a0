"""Per-session frame scheduler: input audio -> encoder blocks -> rendered frames, one deadline per slot.

Timeline (anchoring in timeline.py). The first packets anchor input time 0; the output clock starts
at ``T0``. Output slot ``n`` departs at ``T0 + offset + n / fps`` and shows input time
``n / fps + phi``, chosen so a frame leaves ``budget - margin`` after the packet holding its content
arrived. Input frames ``i`` sit on the grid ``e0 + i / fps`` and slot ``n = i + K``. The outgoing
audio plays input time ``t - T0 - offset + phi`` at wall time ``t``: exactly the video's delay, from
the same clock.

Every slot is filled when it is due, whatever happened: a rendered frame, a rest frame (silence:
no renderer work) or, when the renderer missed the deadline, the last frame repeated. Lateness
raises a degradation level (smaller chunks, lighter renderer hint, every other frame rendered) and
on-time streaks lower it again. Every buffer is bounded; ``interrupt()`` empties all of them at once.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import time

import numpy as np

from realtime.server.media import AUDIO_OUT_RATE, AUDIO_OUT_SAMPLES, AUDIO_PTIME, ENCODER_RATE, AudioRing, MediaClock
from realtime.server.metrics import ServerMetrics
from realtime.server.timeline import (HANGOVER, PACKET_S, RECEPTIVE_FIELD_S, REST_STRIDE, THIN_LEVEL, Block,
                                      InputStage, quality_for, split_encoder_output)

__all__ = ["FrameScheduler", "Block", "split_encoder_output", "MAX_LEVEL"]
from realtime.server.worker import InferenceWorker, WorkerBusy, WorkerClosed

log = logging.getLogger(__name__)

MAX_LEVEL = THIN_LEVEL
LEVEL_UP_LATE = 2  # late frames within the last WINDOW speech frames that raise the level
WINDOW = 25
RECOVER_STREAK = 50  # consecutive on-time speech frames before stepping back down
# Slots after the level is raised whose lateness does not raise it again: frames already
# in flight were scheduled at the old level, so only later ones show whether the step was enough.
# Without it one burst of late frames (a few hundred ms of contention) climbed every level at once.
SETTLE_SLOTS = 10




class FrameScheduler(InputStage):
    def __init__(self, *, fps: int, budget_s: float, lookahead_s: float, max_chunk: int,
                 silence_dbfs: float, max_frames_ahead: int, audio_buffer_s: float,
                 worker: InferenceWorker, renderer, avatar, encoder, render_state,
                 clock: MediaClock, metrics: ServerMetrics, audio_extra_delay_s: float = 0.0,
                 epoch: float | None = None, rest_cache=None, phases=None, load=None,
                 light_cut_s: float = 0.0, light_sessions: int = 0) -> None:
        self.fps, self.period = fps, 1.0 / fps
        self.budget_s, self.lookahead_s = budget_s, lookahead_s
        self.max_chunk, self.max_frames_ahead = max_chunk, max_frames_ahead
        self.silence_rms = 10 ** (silence_dbfs / 20.0)
        self.worker, self.renderer, self.avatar = worker, renderer, avatar
        # Avatar frame index = time since the server's epoch in frames, the same for every session at
        # any moment: idle motion is continuous, and rest frames are shared through ``rest_cache``.
        self.epoch, self.rest_cache = epoch, rest_cache
        self.phases = phases  # engine.SlotPhases shared by the sessions, or None
        # engine.LoadWatch, or None: aim ``light_cut_s`` under the budget while the server is lightly
        # loaded (``cut_s``: the current cut, changed only in silence, timeline.InputStage.on_packet)
        self.load, self.light_cut_s, self.light_sessions = load, light_cut_s, light_sessions
        self.cut_s = 0.0
        if load is not None:
            load.join(id(self))
        self.encoder, self.state = encoder, render_state
        self.clock, self.metrics = clock, metrics
        self.audio_extra_delay_s = audio_extra_delay_s
        self.ring16 = AudioRing(ENCODER_RATE, audio_buffer_s, np.float32)
        self.ring48 = AudioRing(AUDIO_OUT_RATE, audio_buffer_s, np.int16)
        self.phi: float | None = None  # input time shown by slot 0
        self.a0 = 0.0  # estimated arrival time of input time 0
        self.video_offset_s = 0.0  # video slot grid shift against the clock (see _set_anchor)
        # content phase within a packet so that content + look-ahead (+ the encoder's 12.5 ms
        # receptive field) ends 1 ms before a packet boundary
        self.content_phase = (-(lookahead_s + RECEPTIVE_FIELD_S) - 0.001) % PACKET_S
        self.K = 0  # slot = input frame + K
        self.e0 = 0.0
        self.enc_pos = 0  # next 16 kHz input sample the encoder gets
        self.enc_base = 0  # input frame index of encoder frame 0 (changes on reset)
        self.enc_frames = 0  # frames the encoder has emitted since its last reset
        self.need_reset = False
        self.gated = False  # silence gating of the encoder (see _gate)
        self._quiet_s = 0.0
        self.gen = 0  # bumped on interrupt; results of older generations are dropped
        self.blocks: dict[int, Block] = {}
        self.rendered_upto = -(10**9)  # highest input frame handed to the renderer
        self.last_speech_i = -(10**9)
        self._last_speech_t = -1e9
        self._last_loud_arrival = -1e9
        self.ready: dict[int, np.ndarray] = {}  # slot -> frame rendered from speech
        self.ready_arrival: dict[int, float] = {}
        self.rest: dict[int, np.ndarray] = {}  # slot -> rest frame
        self.last_frame: np.ndarray | None = None
        self.last_kind = "rest"
        self.sent_slot = -(10**9)  # newest slot handed to the video track: never rendered again
        self.thinned: set[int] = set()  # input frames skipped on purpose at the top level (repeated)
        self._packets: list[tuple[int, float]] = []  # (end sample, arrival) of recent packets
        self.level = 0
        self._outcomes: collections.deque[bool] = collections.deque(maxlen=WINDOW)
        self._streak = 0
        self._settle = 0  # slots left in which lateness does not raise the level (SETTLE_SLOTS)
        self.render_s_per_frame = 0.01  # running estimate, used to skip frames that cannot make it
        self._audio_wake = asyncio.Event()
        self._render_wake = asyncio.Event()
        self.counts = collections.Counter()
        self.history: collections.deque[tuple[float, int, str]] = collections.deque(maxlen=250)  # (t, slot, kind)
        self._sent_delay_v: float | None = None
        self.av_offset_s = 0.0


    # ---- control -----------------------------------------------------------------------------
    def interrupt(self) -> None:
        """Drops pending audio, blocks and frames now; the next slot is a rest frame."""
        self.gen += 1
        dropped = len(self.ready) + sum(1 for b in self.blocks.values() if not b.silent)
        self.metrics.frames_dropped.inc(dropped)
        self.metrics.interrupts.inc()
        self.ready.clear()
        self.ready_arrival.clear()
        self.blocks.clear()
        self.thinned.clear()
        self.ring16.clear()
        self.ring48.clear()
        self.last_speech_i = -(10**9)
        if self.phi is not None:  # restart the encoder on the same frame grid, after the dropped audio
            i = math.ceil((self.ring16.end / ENCODER_RATE - self.e0) * self.fps)
            self.enc_base, self.enc_pos = i, self.grid_sample(i)
            self.rendered_upto = i - 1
        self.need_reset = True
        self.last_frame = None
        self._render_wake.set()


    # ---- render loop -------------------------------------------------------------------------
    def _chunk_limit(self) -> int:
        return {0: self.max_chunk, 1: max(1, self.max_chunk // 2)}.get(self.level, max(1, min(2, self.max_chunk)))

    def _next_speech_chunk(self) -> list[int]:
        now = self.clock.now()
        chunk: list[int] = []
        for i in sorted(self.blocks):
            b = self.blocks[i]
            if i <= self.rendered_upto or b.silent or i + self.K in self.ready or i in self.thinned:
                continue  # ready: drawn with its push; thinned: at the top level, by _fused_spec
            slot = i + self.K
            if slot <= self.sent_slot or self.slot_time(slot) < now + self.render_s_per_frame * (len(chunk) + 1):
                self.rendered_upto = max(self.rendered_upto, i)  # cannot make its slot: it repeats
                continue
            if self.level >= MAX_LEVEL and i % 2:  # render every other frame, repeat in between
                self.rendered_upto = max(self.rendered_upto, i)
                self.thinned.add(i)
                continue
            if chunk and (i != chunk[-1] + 1 and not (self.level >= MAX_LEVEL and i == chunk[-1] + 2)):
                break
            if len(self.ready) + len(chunk) >= self.max_frames_ahead:
                break
            # a chunk's frames all wait for the whole chunk: grow it only while its first frame
            # still makes its deadline (smaller chunks when time is short)
            if chunk and self.slot_time(chunk[0] + self.K) < now + self.render_s_per_frame * (len(chunk) + 1.5):
                break
            chunk.append(i)
            if len(chunk) >= self._chunk_limit():
                break
        return chunk

    async def render_loop(self) -> None:
        while True:
            await self._render_wake.wait()
            self._render_wake.clear()
            await self._prepare_rest()
            while True:
                chunk = self._next_speech_chunk()
                if not chunk:
                    break
                await self._render(chunk)

    async def _render(self, chunk: list[int]) -> None:
        gen = self.gen
        slots = np.array([i + self.K for i in chunk], dtype=np.int64)
        blocks = np.stack([self.blocks[i].block for i in chunk])
        arrivals = [self.blocks[i].arrival for i in chunk]
        self.rendered_upto = chunk[-1]
        if self.state is not None:
            self.state.data["quality"] = quality_for(self.level)
            self.state.data["deadline"] = self.slot_time(int(slots[0]))  # a remote renderer serves EDF
        try:
            frames = await self.worker.run(lambda: self._render_job(slots, blocks),
                                           deadline=self.slot_time(int(slots[0])), kind="render")
        except (WorkerBusy, WorkerClosed):
            return
        except Exception as e:  # the renderer failed on this chunk: its slots repeat, the session goes on
            log.warning("render job failed (%s: %s)", type(e).__name__, e)
            self.counts["render_failures"] += 1
            return
        if gen != self.gen:
            self.metrics.frames_dropped.inc(len(frames))
            return
        now = self.clock.now()
        for s, f, a in zip(slots, frames, arrivals):
            self._make_ready(int(s), f, a, now)

    def _render_job(self, slots: np.ndarray, blocks: np.ndarray) -> list[np.ndarray]:
        t = time.perf_counter()
        idx = np.array([self.avatar_index(int(s)) for s in slots], dtype=np.int64)
        out = self.renderer.render_chunk(self.avatar, idx, blocks, self.state).frames
        self._rendered(len(slots), (time.perf_counter() - t) / len(slots))
        return out

    def _rest_frame(self, slot: int) -> np.ndarray:
        idx = self.avatar_index(slot)
        if self.rest_cache is not None:
            return self.rest_cache.get(self.renderer, self.avatar, idx, self.state.seed if self.state else 0)
        return self.renderer.rest_frame(self.avatar, idx, self.state)

    async def _prepare_rest(self) -> None:
        """Keeps rest frames ready for the next few slots (cheap; done in the worker in one job)."""
        if self.clock.t0 is None:
            return
        first = max(0, math.ceil((self.clock.now() - self.clock.t0) / self.period))
        newest = max(self.blocks, default=None)
        if newest is not None and newest - self.last_speech_i <= HANGOVER + 1:
            # Speaking: upcoming slots will be rendered; rest frames would be wasted work. The first
            # silent slots after speech fall back to repeating the (closing) last frame.
            return
        # Idle motion (head sway, blinks) is slow: it is rendered for every REST_STRIDE-th avatar
        # frame (the same ones in every session, so the shared cache serves all of them) and held
        # in between. Halves the cost of silence, which otherwise dominates a listening session.
        # One frame per job: a long rest job would hold the worker when speech starts.
        stride = REST_STRIDE * (2 if self.level >= 2 else 1)
        want = [s for s in range(first + 1, first + 1 + 3 * stride)
                if self.avatar_index(s) % stride == 0 and s not in self.rest and s not in self.ready][:1]
        if not want:
            return
        try:
            frames = await self.worker.run(
                lambda: [self._rest_frame(s) for s in want],
                deadline=self.slot_time(want[0]), kind="rest")
        except (WorkerBusy, WorkerClosed):
            return
        except Exception as e:  # the rest frame failed: the slot shows the avatar's frame, the session goes on
            log.warning("rest frame job failed (%s: %s)", type(e).__name__, e)
            self.counts["rest_failures"] += 1
            return
        self.rest.update(zip(want, frames))

    # ---- output --------------------------------------------------------------------------------
    def frame_for(self, slot: int) -> np.ndarray:
        """Called by the video track when ``slot`` is due. Never waits."""
        now = self.clock.now()
        self.sent_slot = max(self.sent_slot, slot)
        for d in (self.ready, self.ready_arrival, self.rest):
            for s in [s for s in d if s < slot]:
                if d is self.ready:
                    self.metrics.frames_dropped.inc()
                del d[s]
        i = slot - self.K if self.phi is not None else None
        for k in [k for k in self.blocks if i is None or k < i - 2]:
            del self.blocks[k]
        self.thinned = {k for k in self.thinned if i is not None and k >= i}
        frame = self.ready.pop(slot, None)
        if frame is not None:
            self.metrics.engine_latency.observe(now - self.ready_arrival.pop(slot))
            self._outcome(True)
            kind = "speech"
        elif i is not None and i in self.thinned:
            kind = "repeat"  # degraded on purpose: every other frame repeats the previous one
            self._outcome(True)
        elif i is not None and ((i in self.blocks and not self.blocks[i].silent)
                                or (i not in self.blocks and self._input_loud(i))):
            # speech whose frame is not ready (renderer late, or the encoder has not even produced
            # its block): repeat what the viewer saw last
            kind = "late"
            # why (in /stats): the encoder had not produced the block / the render missed the slot
            self.counts["late_no_block" if i not in self.blocks else "late_render"] += 1
            if self.load is not None:
                self.load.late(now)
            self.metrics.frames_late.inc()
            self._outcome(False)
        else:
            kind = "rest"
            self._outcome(True, speech=False)
        if kind == "rest":
            frame = self.rest.pop(slot, None)
            if frame is None:
                if self.last_kind == "rest" and self.last_frame is not None:
                    frame = self.last_frame  # idle motion held between strided rest frames
                else:
                    frame = self.last_frame if self.last_frame is not None else self.avatar.frame(self.avatar_index(slot))
                    self.metrics.frames_repeated.inc()
            self.metrics.frames_rest.inc()
        elif kind in ("late", "repeat"):
            frame = self.last_frame if self.last_frame is not None else self.rest.pop(slot, None)
            if frame is None:
                frame = self.avatar.frame(self.avatar_index(slot))
            self.metrics.frames_repeated.inc()
        self.counts[kind] += 1
        self.last_kind = kind
        self.history.append((now, slot, kind))
        self.metrics.frames_sent.inc()
        self.last_frame = frame
        self._render_wake.set()
        return frame

    def _outcome(self, on_time: bool, speech: bool = True) -> None:
        """Per slot: lateness of speech frames raises the level (not in the SETTLE_SLOTS after a
        raise); slots without lateness (silence included, so a session recovers while it listens)
        lower it again."""
        settling = self._settle > 0
        self._settle = max(0, self._settle - 1)
        if speech and not settling:
            self._outcomes.append(on_time)
        self._streak = self._streak + 1 if on_time else 0
        if not on_time and self._outcomes.count(False) >= LEVEL_UP_LATE and self.level < MAX_LEVEL:
            self.level += 1
            self._outcomes.clear()
            self._settle = SETTLE_SLOTS
            log.info("degrading to level %d", self.level)
        elif (self._streak >= RECOVER_STREAK and self.level > 0
              # leaving the top level renders twice as many frames: only when the renderer can
              and (self.level < MAX_LEVEL or self.render_s_per_frame < 0.8 * self.period)):
            self.level -= 1
            self._streak = 0
            log.info("recovering to level %d", self.level)

    def on_video_sent(self, slot: int, t: float) -> None:
        if self.phi is not None:
            self._sent_delay_v = t - (slot * self.period + self.phi)  # both delays relative to t0+offset

    def samples_for(self, k: int) -> np.ndarray:
        """48 kHz int16 samples of audio frame ``k``: the input delayed exactly like the video."""
        if self.phi is None:
            return np.zeros(AUDIO_OUT_SAMPLES, np.int16)
        start = round((k * AUDIO_PTIME - self.video_offset_s + self.phi - self.audio_extra_delay_s) * AUDIO_OUT_RATE)
        return self.ring48.read(start, AUDIO_OUT_SAMPLES)

    def on_audio_sent(self, k: int, t: float) -> None:
        if self.phi is not None and self._sent_delay_v is not None:
            delay_a = t - (k * AUDIO_PTIME - self.video_offset_s + self.phi - self.audio_extra_delay_s)
            self.av_offset_s = 0.9 * self.av_offset_s + 0.1 * (delay_a - self._sent_delay_v)

    @property
    def audio_backlog_s(self) -> float:
        return max(0, self.ring16.end - self.enc_pos) / ENCODER_RATE
