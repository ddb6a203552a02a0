"""What a session is built from: its settings (``SessionConfig``, from the server's config and the
client's options), the streaming encoder as it sees it (``StreamEncoder``, ``FusedEncoder``), and
how it degrades when frames miss their slots (``Degradation``).

The encoder is implemented by ``audio.streaming.StreamingAudioEncoder`` (models in this process)
and by ``inference.process.EncoderProxy`` (models in the inference process), which can also render
the frames a push completes in the same round trip (``FusedEncoder``).

Degradation: when frames miss their slots the session does less work per frame instead of falling
behind, and steps back once it keeps up. Level 0 renders chunks of up to ``max_chunk`` frames; 1
halves them; from ``LIGHT_ENCODER_LEVEL`` the encoder calls are the cheap kind and the renderer is
told "low" (fewer diffusion steps); at ``THIN_LEVEL`` every other speech frame repeats the one
before, and the diffusion path hands its frames to the embedded renderer ("lighter")."""

from __future__ import annotations

import collections
import logging
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from realtime.inference.messages import Drawn, DrawSpec
from realtime.render.base import Quality
from realtime.visemes.windows import WINDOWS

if TYPE_CHECKING:  # the server's config; read here, never imported at run time (no circle)
    from realtime.server.config import RealtimeConfig


# Future audio each look-ahead setting needs: LatentSync's block ends 6 encoder steps (120 ms)
# past the frame centre; the low-latency viseme model is trained for at most 40 ms.
LOOKAHEAD_S = {name: w.lookahead_ms / 1000.0 for name, w in WINDOWS.items()}


@dataclass(frozen=True)
class SessionConfig:
    fps: int = 25
    lookahead: str = "full"  # "full" (120 ms of future audio) | "low" (40 ms)
    budget_s: float = 0.170  # speech sample arrival -> departure of the frame showing it
    max_chunk: int = 4  # frames per renderer call at most (fewer when late)
    silence_dbfs: float = -45.0  # below this a frame's audio window is silence: a rest frame
    max_frames_ahead: int = 16  # rendered-but-not-sent frames
    audio_buffer_s: float = 4.0  # input audio rings; older audio is overwritten, never queued
    audio_extra_delay_s: float = 0.0  # added to the outgoing audio's delay (receiver-side A/V trim)
    light_cut_s: float = 0.0  # aimed under the budget while the server is lightly loaded (LoadWatch)
    light_sessions: int = 0  # "lightly loaded": at most this many sessions
    seed: int = 0
    avatar: str = "default"  # a name of the engine's avatar library (Engine.avatars)

    @property
    def lookahead_s(self) -> float:
        return LOOKAHEAD_S[self.lookahead]

    @property
    def period(self) -> float:
        return 1.0 / self.fps

    @cached_property  # read per packet and per frame: computed once
    def silence_rms(self) -> float:
        return 10 ** (self.silence_dbfs / 20.0)

    @classmethod
    def from_realtime(cls, config: RealtimeConfig, low_latency: bool = False, seed: int = 0,
                      avatar: str = "default") -> SessionConfig:
        """A session of the server configured by ``config``; ``low_latency``: the client asked for it
        (the server's ``lookahead: low`` makes every session low-latency); ``avatar``: the name of
        the avatar it chose."""
        lookahead = "low" if low_latency or config.lookahead == "low" else "full"
        budget_ms = config.low_latency_budget_ms if lookahead == "low" else config.latency_budget_ms
        return cls(fps=config.fps, lookahead=lookahead, budget_s=budget_ms / 1000.0, max_chunk=config.max_chunk,
                   silence_dbfs=config.silence_dbfs, max_frames_ahead=config.limits.max_frames_ahead,
                   audio_buffer_s=config.limits.audio_buffer_s,
                   audio_extra_delay_s=config.audio_extra_delay_ms / 1000.0,
                   light_cut_s=config.light_load_cut_ms / 1000.0, light_sessions=config.light_load_sessions,
                   seed=seed, avatar=avatar)


# ---- the streaming encoder as a session sees it ----
class StreamEncoder(Protocol):
    light: bool  # the cheap kind of encoder call (degraded sessions)

    def reset(self) -> None:
        """The next push starts a new stream (its frame 0 at the pushed audio's start)."""

    def push(self, samples: np.ndarray) -> list[Any]:
        """16 kHz float32 audio in; the frames it completes out, as ``FrameFeatures`` or
        ``(index, block)`` (see ``as_block``)."""

    def release(self) -> None:
        """Frees the encoder's state where it lives elsewhere (nothing for a local one)."""


@runtime_checkable
class FusedEncoder(Protocol):
    """An encoder that renders the frames a push completes in the same call (``EncoderProxy``)."""

    def push_render(self, samples: np.ndarray, draw: DrawSpec) -> tuple[list[Any], Drawn | None]: ...


def as_block(item: Any) -> tuple[int, np.ndarray]:
    """``(index, (50, 384) float32 block)`` of one encoder output: an ``(index, block)`` pair (the
    proxy, test stand-ins) or a ``FrameFeatures`` (index, features tensor)."""
    if isinstance(item, tuple):
        idx, block = item
    else:
        idx, block = item.index, item.features
    if not isinstance(block, np.ndarray):  # a torch tensor from the in-process encoder
        block = block.detach().cpu().numpy()
    return int(idx), np.asarray(block, dtype=np.float32)


log = logging.getLogger(__name__)

# ---- degradation ----
THIN_LEVEL = 3  # the top level: every other speech frame repeats the one before
MAX_LEVEL = THIN_LEVEL
LIGHT_ENCODER_LEVEL = 2  # from this level encoder calls are the cheap kind
LEVEL_UP_LATE = 2  # late frames within the last WINDOW speech frames that raise the level
WINDOW = 25
RECOVER_STREAK = 50  # consecutive on-time slots before stepping back down
# Slots after the level is raised whose lateness does not raise it again: frames already in
# flight were scheduled at the old level, so only later ones show whether the step was enough.
# Without it one burst of late frames (a few hundred ms of contention) climbed every level at once.
SETTLE_SLOTS = 10


def quality_for(level: int) -> Quality:
    """The renderer hint (``RenderState.quality``) of a degradation level."""
    return "lighter" if level >= THIN_LEVEL else "low" if level >= LIGHT_ENCODER_LEVEL else "full"


class Degradation:
    def __init__(self, max_chunk: int, period: float) -> None:
        self.max_chunk, self.period = max_chunk, period
        self.level = 0
        self._outcomes: collections.deque[bool] = collections.deque(maxlen=WINDOW)
        self._streak = 0
        self._settle = 0  # slots left in which lateness does not raise the level (SETTLE_SLOTS)

    @property
    def thinning(self) -> bool:
        return self.level >= THIN_LEVEL

    @property
    def light_encoder(self) -> bool:
        return self.level >= LIGHT_ENCODER_LEVEL

    @property
    def quality(self) -> Quality:
        return quality_for(self.level)

    def chunk_limit(self) -> int:
        return {0: self.max_chunk, 1: max(1, self.max_chunk // 2)}.get(self.level, max(1, min(2, self.max_chunk)))

    def outcome(self, on_time: bool, speech: bool, render_s_per_frame: float) -> None:
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
              and (self.level < MAX_LEVEL or render_s_per_frame < 0.8 * self.period)):
            self.level -= 1
            self._streak = 0
            log.info("recovering to level %d", self.level)
