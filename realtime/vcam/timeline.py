"""The virtual camera's timeline, without I/O: which input packet is due, which engine slot and
which camera frame are due, and which samples of the session's output each block of the sound card
plays.

Everything is scheduled on the session's one ``MediaClock`` against absolute times (``t0 + offset
+ n * period``): a late wake-up delays one frame, never the ones after it, so errors never add up
over hours. The sound card runs on its own crystal: ``AudioPlayout`` follows the times the card
reports for its blocks and re-anchors its read position when they drift (docs/vcam.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from realtime.session.live import SlotFrame
from realtime.session.timeline import AUDIO_OUT_RATE, AUDIO_OUT_SAMPLES, AUDIO_PTIME, MediaClock

PACKET_S = AUDIO_PTIME  # input packets of 20 ms, as a microphone delivers them
MAX_LATE_SLOTS = 2  # a frame loop this many engine slots behind rejoins the present (never a burst)
SOFT_ERROR_S = 0.002  # playout off by more than this: moved at the next quiet block (unheard)
HARD_ERROR_S = 0.015  # off by more: moved at once, speech or not (A/V stays well within a frame)
RESYNC_S = 0.05  # one block off by more (an underrun, a stall; never timestamp jitter): re-anchored at once
ERROR_SMOOTHING = 0.05  # weight of one block in the error's running mean (host timestamps jitter)
QUIET_RMS = 32768 * 10 ** (-45 / 20)  # int16 RMS under which a block is silence (-45 dBFS, the
# session's silence level): a jump there is not heard


class SlotSource(Protocol):
    """What the camera and speaker need of a ``LiveSession``."""

    video_offset_s: float

    def slot(self, n: int) -> SlotFrame: ...

    def samples_for(self, k: int) -> np.ndarray: ...


@dataclass(frozen=True)
class CameraFrame:
    """A frame the camera sends now: camera frame ``index`` shows engine slot ``slot``."""

    index: int
    slot: int
    image: np.ndarray  # (H, W, 3) uint8 RGB, the avatar's size
    kind: str  # the slot's kind: speech | rest | late | repeat


class FrameLoop:
    """Engine slots taken when due, camera frames sent at the camera's own constant rate.

    Engine slot ``n`` is due at ``t0 + offset + n / engine_fps`` and camera frame ``j`` at ``t0 +
    offset + j / camera_fps`` (the session's ``video_offset_s``): at equal rates frame ``j`` is
    slot ``j``, sent at its departure, so the video is delayed exactly like the session's audio. At
    other rates a camera frame shows the newest slot due (repeated or thinned). Every slot is
    taken from the session, shown or not: its bookkeeping (rest frames, late frames) stays exact.
    """

    def __init__(self, source: SlotSource, clock: MediaClock, engine_fps: int, camera_fps: float) -> None:
        self.source, self.clock = source, clock
        self.period, self.camera_period = 1.0 / engine_fps, 1.0 / camera_fps
        self.slot: int | None = None  # the next engine slot to take
        self.frame = 0  # the next camera frame
        self.latest: SlotFrame | None = None
        self.skipped_slots = 0  # not taken: the loop stalled
        self.skipped_frames = 0  # camera frames not sent: the loop stalled

    def step(self) -> tuple[CameraFrame | None, float]:
        """Takes the slots due now; returns the camera frame due now (None: none is) and the clock
        time to call again."""
        t0 = self.clock.start()
        offset = self.source.video_offset_s
        rel = self.clock.now() - t0 - offset
        if self.slot is None:
            self.slot = max(0, math.ceil(rel / self.period - 1e-9))
            self.frame = max(0, math.ceil(rel / self.camera_period - 1e-9))
        newest = math.floor(rel / self.period + 1e-9)
        if newest - self.slot >= MAX_LATE_SLOTS:
            self.skipped_slots += newest - self.slot
            self.slot = newest
        while self.slot <= newest:
            self.latest = self.source.slot(self.slot)
            self.slot += 1
        out = None
        due = math.floor(rel / self.camera_period + 1e-9)
        if self.latest is not None and due >= self.frame:
            self.skipped_frames += due - self.frame
            out = CameraFrame(due, self.latest.slot, self.latest.image, self.latest.kind)
            self.frame = due + 1
        wake = t0 + offset + min(self.slot * self.period, self.frame * self.camera_period)
        return out, wake


class AudioPlayout:
    """Which samples of the session's output timeline each block of the sound card plays.

    The session's output frame ``k`` (``samples_for(k)``: 20 ms at 48 kHz, the input delayed exactly
    like the video) is due at ``t0 + k * 20 ms`` on the session's clock. A block whose first sample
    the card plays at ``dac`` (same clock) should start at timeline sample ``(dac - t0) * 48000``.
    Blocks follow each other without a gap; the difference between that wanted start and the
    continuous position (the card's crystal against the clock) is averaged over blocks and taken
    out by a jump: at the next quiet block once above ``SOFT_ERROR_S``, at once above
    ``HARD_ERROR_S``; a block off by more than ``RESYNC_S`` (an underrun, a stall) re-anchors. ``block`` is called on the sound card's thread and only reads the
    session (its audio ring and two floats of its grid).
    """

    def __init__(self, samples_for: Callable[[int], np.ndarray], clock: MediaClock) -> None:
        self.samples_for, self.clock = samples_for, clock
        self.pos: int | None = None  # timeline sample the next block starts at
        self.error = 0.0  # running mean of (wanted - continuous) start, samples
        self.jumps = 0
        self.jumped = 0  # samples skipped (+) or replayed (-) in all
        self._last_quiet = True

    def block(self, frames: int, dac: float) -> np.ndarray:
        """48 kHz int16: the ``frames`` samples the card plays from ``dac`` (clock seconds)."""
        t0 = self.clock.t0
        if t0 is None:  # the session has not started: nothing to play yet
            return np.zeros(frames, np.int16)
        wanted = (dac - t0) * AUDIO_OUT_RATE
        if self.pos is None or abs(wanted - self.pos) > RESYNC_S * AUDIO_OUT_RATE:
            if self.pos is not None:
                self.jumps += 1
                self.jumped += round(wanted) - self.pos
            self.pos, self.error = round(wanted), 0.0
        else:
            self.error += ERROR_SMOOTHING * ((wanted - self.pos) - self.error)
        out = self.read(self.pos, frames)
        quiet = _rms(out) < QUIET_RMS
        off_s = abs(self.error) / AUDIO_OUT_RATE
        if off_s > HARD_ERROR_S or (off_s > SOFT_ERROR_S and quiet and self._last_quiet):
            step = round(self.error)
            self.pos += step
            self.error -= step
            self.jumps += 1
            self.jumped += step
            out = self.read(self.pos, frames)
            quiet = _rms(out) < QUIET_RMS
        self._last_quiet = quiet
        self.pos += frames
        return out

    def read(self, start: int, n: int) -> np.ndarray:
        """Timeline samples ``[start, start + n)`` from the session's 20 ms output frames."""
        k0, k1 = start // AUDIO_OUT_SAMPLES, (start + n - 1) // AUDIO_OUT_SAMPLES
        x = np.concatenate([self.samples_for(k) for k in range(k0, k1 + 1)])
        i = start - k0 * AUDIO_OUT_SAMPLES
        return x[i : i + n]


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float32) ** 2))) if len(x) else 0.0
