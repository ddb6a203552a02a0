"""Degradation: when frames miss their slots the session does less work per frame instead of
falling behind, and steps back once it keeps up.

Level 0 renders chunks of up to ``max_chunk`` frames; 1 halves them; from ``LIGHT_ENCODER_LEVEL``
the encoder calls are the cheap kind and the renderer is told "low" (fewer diffusion steps); at
``THIN_LEVEL`` every other speech frame repeats the one before, and the diffusion path hands its
frames to the embedded renderer ("lighter")."""

from __future__ import annotations

import collections
import logging

from realtime.render.base import Quality

log = logging.getLogger(__name__)

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
