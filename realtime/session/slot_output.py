"""The session's output: what each slot shows, and the speech delayed exactly like the video.

Every slot is filled when it is due, whatever happened: a rendered frame, a rest frame (silence:
no renderer work) or, when the renderer missed the deadline, the last frame repeated. Nothing here
waits: a transport asks for a slot when it is due and gets it at once."""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from realtime.metrics import ServerMetrics
from realtime.render.base import AvatarFrames, FrameEvent
from realtime.session.audio import AUDIO_OUT_RATE, AUDIO_OUT_SAMPLES, AUDIO_PTIME, AudioRing, MediaClock
from realtime.session.config import SessionConfig
from realtime.session.degrade import Degradation
from realtime.session.frames import SessionFrames
from realtime.session.grid import TimeGrid
from realtime.session.shared import LoadWatch

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
