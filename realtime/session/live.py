"""``LiveSession``: the pipeline of one live avatar, whatever carries it.

Speech comes in as samples with their arrival time (``push_audio``, or a transport that writes the
rings itself and calls ``on_packet``); the session anchors its time grid on the arrivals, feeds the
streaming encoder on that grid, plans renders against each slot's deadline on the shared inference
worker, and gives, per output slot on one clock, the frame, that slot's audio and its events
(``slot``). Latency budget, degradation, rest frames, A/V alignment and cross-session batching all
live here, shared by every transport. Transports only move bytes: WebRTC (realtime/server/webrtc),
the avatar SDK and the virtual camera.

Parts (one file each): ``TimeGrid`` (grid.py), ``EncoderFeed`` (encoder_feed.py), ``RenderPlanner``
(render_planner.py), ``SlotOutput`` (slot_output.py), over ``SessionFrames`` (frames.py) and
``Degradation`` (degrade.py). All of them run on the event loop; only model calls go to the worker.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging

import numpy as np

from realtime.metrics import ServerMetrics
from realtime.session.audio import AUDIO_OUT_RATE, ENCODER_RATE, PACKET_SAMPLES, AudioRing, MediaClock
from realtime.session.config import SessionConfig
from realtime.session.degrade import Degradation
from realtime.session.encoder_feed import EncoderFeed, rms
from realtime.session.frames import HANGOVER, SessionFrames
from realtime.session.grid import Anchor, TimeGrid
from realtime.session.render_planner import RenderPlanner
from realtime.session.shared import Engine
from realtime.session.slot_output import SlotFrame, SlotOutput

log = logging.getLogger(__name__)

_keys = itertools.count(1)  # identifies a session in the engine's shared bookkeeping


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
