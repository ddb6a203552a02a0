"""``LiveSession``: the pipeline of one live avatar, whatever carries it, and its output per slot.

Speech comes in as samples with their arrival time (``push_audio``, or a transport that writes the
rings itself and calls ``on_packet``); the session anchors its time grid on the arrivals, feeds the
streaming encoder on that grid, plans renders against each slot's deadline on the shared inference
worker, and gives, per output slot on one clock, the frame, that slot's audio and its events
(``slot``). Latency budget, degradation, rest frames, A/V alignment and cross-session batching all
live here, shared by every transport. Transports only move bytes: WebRTC (realtime/server/webrtc),
the avatar SDK and the virtual camera.

Parts: ``TimeGrid`` and ``SessionFrames`` (timeline.py), ``EncoderFeed`` and ``RenderPlanner``
(feed.py), ``SlotOutput`` (here), ``Degradation`` (config.py). All of them run on the event loop;
only model calls go to the worker.

``SlotOutput``: what each slot shows, and the speech delayed exactly like the video. Every slot is
filled when it is due, whatever happened: a rendered frame, a rest frame (silence: no renderer
work) or, when the renderer missed the deadline, the last frame repeated. Nothing here waits: a
transport asks for a slot when it is due and gets it at once."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from realtime.metrics import ServerMetrics
from realtime.render.base import AvatarFrames, FrameEvent
from realtime.session.config import Degradation, SessionConfig
from realtime.session.feed import EncoderFeed, RenderPlanner, rms
from realtime.session.shared import Engine, LoadWatch
from realtime.session.timeline import (AUDIO_OUT_RATE, AUDIO_OUT_SAMPLES, AUDIO_PTIME, ENCODER_RATE, HANGOVER,
                                       PACKET_SAMPLES, Anchor, AudioRing, MediaClock, SessionFrames, TimeGrid)

# ---- the slot output ----
HISTORY_SLOTS = 250  # (time, slot, kind) of the last 10 s of slots, for /stats and tests
RECENT_LATENCIES = 100  # (time, engine latency) of the last speech frames, for a session's live figures


@dataclass(frozen=True)
class SlotFrame:
    """What one output slot shows."""

    slot: int
    image: np.ndarray  # (H, W, 3) uint8 RGB
    kind: str  # "speech" (rendered from speech) | "rest" (silence) | "late" (speech not ready: repeated) | "repeat" (thinned)
    event: FrameEvent | None  # visemes and blendshapes of a speech frame; None otherwise

    @property
    def speaking(self) -> bool:
        return self.kind != "rest"


class SlotOutput:
    def __init__(self, config: SessionConfig, grid: TimeGrid, frames: SessionFrames, degrade: Degradation,
                 ring48: AudioRing, avatar: AvatarFrames, clock: MediaClock, metrics: ServerMetrics,
                 counts: collections.Counter, render_speed: Callable[[], float], input_loud: Callable[[int], bool],
                 load: LoadWatch | None = None) -> None:
        self.config, self.grid, self.frames, self.degrade, self.ring48 = config, grid, frames, degrade, ring48
        self.avatar, self.clock, self.metrics, self.counts, self.load = avatar, clock, metrics, counts, load
        self.render_speed, self.input_loud = render_speed, input_loud
        self.last_frame: np.ndarray | None = None
        self.last_rest: np.ndarray | None = None  # the last prepared rest frame shown (mouth closed)
        self.last_kind = "rest"
        self.history: collections.deque[tuple[float, int, str]] = collections.deque(maxlen=HISTORY_SLOTS)
        self.recent_latency: collections.deque[tuple[float, float]] = collections.deque(maxlen=RECENT_LATENCIES)
        self._sent_delay_v: float | None = None
        self.av_offset_s = 0.0  # outgoing audio's delay minus the video's, smoothed (should be ~0)

    def slot(self, slot: int) -> SlotFrame:
        """Called when ``slot`` is due. Never waits."""
        f, g = self.frames, self.grid
        now = self.clock.now()
        i = slot - g.K if g.anchored else None
        f.forget_before(slot, i)
        ready = f.ready.pop(slot, None)
        event = None
        if ready is not None:
            self.metrics.engine_latency.observe(now - ready.arrival)
            self.recent_latency.append((now, now - ready.arrival))
            self._outcome(True)
            kind, frame, event = "speech", ready.image, ready.event
        elif i is not None and i in f.thinned:
            kind = "repeat"  # degraded on purpose: every other frame repeats the previous one
            self._outcome(True)
        elif i is not None and ((i in f.blocks and not f.blocks[i].silent) or (i not in f.blocks and self.input_loud(i))):
            # speech whose frame is not ready (renderer late, or the encoder has not even produced
            # its block): repeat what the viewer saw last
            kind = "late"
            # why (in /stats): the encoder had not produced the block / the render missed the slot
            self.counts["late_no_block" if i not in f.blocks else "late_render"] += 1
            if self.load is not None:
                self.load.late(now)
            self.metrics.frames_late.inc()
            self._outcome(False)
        else:
            kind = "rest"
            self._outcome(True, speech=False)
        if kind == "rest":
            frame = f.rest.pop(slot, None)
            if frame is not None:
                self.last_rest = frame
            elif self.last_kind == "rest" and self.last_frame is not None:
                frame = self.last_frame  # idle motion held between strided rest frames
            else:
                # no rest frame ready (just after an interrupt or an utterance): the last rest frame
                # shown, mouth closed; the avatar's own frame (a photo's smile or open lips) only
                # before the session ever had one
                frame = self.last_rest if self.last_rest is not None else (
                    self.last_frame if self.last_frame is not None else self.avatar.frame(g.avatar_index(slot)))
                self.metrics.frames_repeated.inc()
            self.metrics.frames_rest.inc()
        elif kind in ("late", "repeat"):
            frame = self.last_frame if self.last_frame is not None else f.rest.pop(slot, self.last_rest)
            if frame is None:
                frame = self.avatar.frame(g.avatar_index(slot))
            self.metrics.frames_repeated.inc()
        self.counts[kind] += 1
        self.last_kind = kind
        self.history.append((now, slot, kind))
        self.metrics.frames_sent.inc()
        self.last_frame = frame
        return SlotFrame(slot, frame, kind, event)

    def _outcome(self, on_time: bool, speech: bool = True) -> None:
        self.degrade.outcome(on_time, speech, self.render_speed())

    def on_video_sent(self, slot: int, t: float) -> None:
        if self.grid.anchored:  # both delays relative to t0 + offset
            self._sent_delay_v = t - (slot * self.config.period + self.grid.phi)

    def _input_time(self, t: float) -> float:
        """Input time of the speech that plays ``t`` seconds after the clock's start: the video's
        delay (the slot grid's offset undone), plus the configured extra audio delay."""
        g = self.grid
        return t - g.video_offset_s + g.phi - self.config.audio_extra_delay_s

    def _played(self, t: float, n: int) -> np.ndarray:
        """48 kHz int16: the ``n`` samples that play from ``t`` seconds after the clock's start."""
        if not self.grid.anchored:
            return np.zeros(n, np.int16)
        return self.ring48.read(round(self._input_time(t) * AUDIO_OUT_RATE), n)

    def samples_for(self, k: int) -> np.ndarray:
        """Audio frame ``k`` (20 ms): the input delayed exactly like the video."""
        return self._played(k * AUDIO_PTIME, AUDIO_OUT_SAMPLES)

    def slot_input_time(self, slot: int) -> float | None:
        """Input time (seconds on the speech's own timeline) of the first sample that plays while
        ``slot`` shows; None before the grid exists. For transports that keep the speech themselves."""
        if not self.grid.anchored:
            return None
        return self._input_time(self.grid.video_offset_s + slot * self.config.period)

    def slot_audio(self, slot: int) -> np.ndarray:
        """The speech played while ``slot`` shows (one frame period from its departure)."""
        return self._played(self.grid.video_offset_s + slot * self.config.period,
                            round(self.config.period * AUDIO_OUT_RATE))

    def on_audio_sent(self, k: int, t: float) -> None:
        if self.grid.anchored and self._sent_delay_v is not None:
            delay_a = t - self._input_time(k * AUDIO_PTIME)
            self.av_offset_s = 0.9 * self.av_offset_s + 0.1 * (delay_a - self._sent_delay_v)


log = logging.getLogger(__name__)

_keys = itertools.count(1)  # identifies a session in the engine's shared bookkeeping


# ---- the live session ----
class LiveSession:
    def __init__(self, engine: Engine, config: SessionConfig, metrics: ServerMetrics | None = None,
                 clock: MediaClock | None = None) -> None:
        self.engine, self.config = engine, config
        self.metrics = metrics or ServerMetrics()
        self.clock = clock or MediaClock()
        self.key = next(_keys)
        self.counts: collections.Counter = collections.Counter()
        self.renderer = engine.renderer(config.lookahead)
        self.encoder = engine.encoder_factory(config.lookahead, config.fps)
        self.state = self.renderer.new_state(config.seed)
        self.avatar = engine.avatars.get(config.avatar)
        self.ring16 = AudioRing(ENCODER_RATE, config.audio_buffer_s, np.float32)
        self.ring48 = AudioRing(AUDIO_OUT_RATE, config.audio_buffer_s, np.int16)
        self.frames = SessionFrames(config.max_frames_ahead, self.metrics)
        self.degrade = Degradation(config.max_chunk, config.period)
        self.grid = TimeGrid(config, self.clock, self.metrics, self.key, engine.epoch, engine.phases, engine.load)
        if engine.load is not None:
            engine.load.join(self.key)
        self.planner = RenderPlanner(config, self.grid, self.frames, self.degrade, engine.worker, self.renderer,
                                     self.avatar, self.state, self.clock, self.metrics, self.counts,
                                     engine.rest_cache)
        self.feed = EncoderFeed(config, self.grid, self.frames, self.degrade, self.planner, self.ring16,
                                engine.worker, self.encoder, self.state, self.clock, self.metrics, self.counts)
        self.output = SlotOutput(config, self.grid, self.frames, self.degrade, self.ring48, self.avatar,
                                 self.clock, self.metrics, self.counts, lambda: self.planner.render_s_per_frame,
                                 self.feed.input_loud, engine.load)
        self.tasks: list[asyncio.Task] = []
        self.closed = False

    # ---- life ------------------------------------------------------------------------------------
    def start(self) -> None:
        """Starts the encoder feed and the render planner (on the running event loop)."""
        if not self.tasks:
            self.tasks = [asyncio.create_task(self.feed.run(), name=f"session{self.key}-encode"),
                          asyncio.create_task(self.planner.run(), name=f"session{self.key}-render")]

    async def prime(self) -> None:
        """One rest frame (mouth closed) made before the first slot is due, so that no slot shows the
        avatar's own frame (a photo's smile or open lips) while the first rest frames are on their way.
        A failure only leaves the avatar's frame as that fallback."""
        if self.output.last_rest is not None:
            return
        try:
            frame = await self.engine.worker.run(lambda: self.planner.rest_frame(0), kind="rest")
        except Exception as e:  # noqa: BLE001 (the session works without it)
            log.warning("session %s: no first rest frame (%s: %s)", self.key, type(e).__name__, e)
            return
        if self.output.last_rest is None:
            self.output.last_rest = frame

    async def close(self) -> None:
        """Stops the loops and frees every buffer and the model-side state; idempotent."""
        if self.closed:
            return
        self.closed = True
        for t in self.tasks:
            t.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*self.tasks, return_exceptions=True)
        self.grid.release()
        if self.engine.load is not None:
            self.engine.load.release(self.key)
        self.engine.release(self.encoder, _StateRelease(self.renderer, self.state))
        self.frames.clear()
        self.frames.rest.clear()

    # ---- input -------------------------------------------------------------------------------------
    def push_audio(self, samples16: np.ndarray, samples48: np.ndarray, arrival: float) -> None:
        """One packet of speech at the engine's two rates (16 kHz float32 for the encoder, 48 kHz
        int16 for the output), arrived at ``arrival`` (monotonic seconds)."""
        self.ring16.write(samples16)
        self.ring48.write(samples48)
        self.on_packet(self.ring16.end, arrival)

    def push_gap(self, samples48: int) -> None:
        """Audio the sender skipped (lost packets, DTX): silence in its place keeps the timeline."""
        self.ring48.write_silence(samples48)
        self.ring16.write_silence(samples48 * ENCODER_RATE // AUDIO_OUT_RATE)

    def on_packet(self, end16: int, arrival: float) -> None:
        """The rings now hold input up to 16 kHz sample ``end16``, whose packet arrived at ``arrival``."""
        loud = rms(self.ring16.read(end16 - PACKET_SAMPLES, PACKET_SAMPLES)) >= self.config.silence_rms
        change = self.grid.observe(end16, arrival, loud, self._quiet)
        if change is Anchor.FIRST:
            self.feed.start()
        elif change is not Anchor.UNCHANGED:  # restart the encoder on the new grid after the audio it has
            self.counts["retarget" if change is Anchor.RETARGET else "reanchor"] += 1
            if change is Anchor.RETARGET:
                self.frames.gen += 1
            self.frames.blocks.clear()
            self.feed.restart_at(max(self.feed.enc_pos, self.ring16.end))
            self.frames.rendered_upto = self.feed.enc_base - 1
        self.feed.wake.set()

    def _quiet(self, arrival: float, seconds: float, speech_s: float) -> bool:
        """Input silent for ``seconds``, the last speech block added ``speech_s`` ago and no frame
        pending: a timeline shift is unseen."""
        return (arrival - self.grid.last_loud_arrival > seconds and arrival - self.frames.last_speech_t > speech_s
                and not self.frames.ready)

    # ---- control -----------------------------------------------------------------------------------
    def interrupt(self) -> None:
        """Drops pending audio, blocks and frames now; the next slot is a rest frame."""
        dropped = self.frames.clear()
        self.metrics.frames_dropped.inc(dropped)
        self.metrics.interrupts.inc()
        self.ring16.clear()
        self.ring48.clear()
        if self.grid.anchored:  # restart the encoder on the same frame grid, after the dropped audio
            self.feed.restart_at(self.ring16.end)
            self.frames.rendered_upto = self.feed.enc_base - 1
        self.feed.need_reset = True
        self.feed.tail_end = 0
        self.output.last_frame = None
        self.planner.wake.set()

    def end_of_utterance(self) -> None:
        """No more speech for now: the last words' frames are made without waiting for their
        look-ahead audio (silence is assumed after the input's end) and the mouth closes."""
        if not self.grid.anchored:
            return
        last = self.grid.frame_at(self.ring16.end) - 1  # the last frame the input reaches
        self.feed.tail_until(last + HANGOVER + 1)

    # ---- output ------------------------------------------------------------------------------------
    def slot(self, n: int) -> SlotFrame:
        """Output slot ``n``, when it is due (never waits)."""
        out = self.output.slot(n)
        self.planner.wake.set()
        return out

    def frame_for(self, n: int) -> np.ndarray:
        return self.slot(n).image

    def samples_for(self, k: int) -> np.ndarray:
        """48 kHz int16 speech of output audio frame ``k`` (20 ms), delayed exactly like the video."""
        return self.output.samples_for(k)

    def slot_audio(self, n: int) -> np.ndarray:
        """48 kHz int16 speech that plays during slot ``n`` (one frame period), for transports that
        send each frame with its audio."""
        return self.output.slot_audio(n)

    def slot_input_time(self, n: int) -> float | None:
        """Input time (seconds since the first pushed sample) where slot ``n``'s audio starts; None
        until the grid is anchored. The next slot's is where it ends."""
        return self.output.slot_input_time(n)

    def on_video_sent(self, n: int, t: float) -> None:
        self.output.on_video_sent(n, t)

    def on_audio_sent(self, k: int, t: float) -> None:
        self.output.on_audio_sent(k, t)

    # ---- figures -----------------------------------------------------------------------------------
    @property
    def level(self) -> int:
        return self.degrade.level

    @property
    def audio_backlog_s(self) -> float:
        return self.feed.backlog_s

    @property
    def av_offset_s(self) -> float:
        return self.output.av_offset_s

    @property
    def video_offset_s(self) -> float:
        return self.grid.video_offset_s


class _StateRelease:
    """``release()`` of a renderer state that lives in the inference process (no-op otherwise)."""

    def __init__(self, renderer, state) -> None:
        self.renderer, self.state = renderer, state

    def release(self) -> None:
        self.renderer.release(self.state)
