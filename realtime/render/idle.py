"""Idle life for a still photo: blinks and a slight, smooth head motion.

Everything here is a pure function of (seed, frame time), so a session rendered chunk by chunk gives
the same frames as one call over the whole clip, and two sessions with the same seed look the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from realtime.render.easing import smoothstep

# FaceMesh eyelid contours, corner to corner, as (upper, lower) pairs facing each other.
EYES = (
    ([246, 161, 160, 159, 158, 157, 173], [7, 163, 144, 145, 153, 154, 155], (33, 133)),
    ([466, 388, 387, 386, 385, 384, 398], [249, 390, 373, 374, 380, 381, 382], (263, 362)),
)
# The second ring above each eye (the lid crease) follows the lid part of the way.
UPPER_RING = ([247, 30, 29, 27, 28, 56, 190], [467, 260, 259, 257, 258, 286, 414])

BLINK_INTERVAL_S = (2.0, 6.0)  # people blink every 2-6 s at rest
BLINK_CLOSE_S, BLINK_HOLD_S, BLINK_OPEN_S = 0.05, 0.04, 0.08  # ~150 ms; opening is slower than closing
HEAD_ROT_DEG = 0.8  # peak rotation; more reads as a nodding doll, less as frozen
HEAD_SHIFT = 0.004  # peak translation as a fraction of the frame size
HEAD_FREQS_HZ = (0.07, 0.31)  # slow sway, no periodic nodding at speech rates


def eyelid_mode(lm: np.ndarray) -> np.ndarray:
    """(468, 2) displacement that closes both eyes: the upper lids come all the way down.

    The lids meet on the lower lid line, so the seam samples lash-line pixels rather than the white
    of the eye."""
    disp = np.zeros((468, 2))
    mesh = lm[:468]
    for (upper, lower, (c0, c1)), ring in zip(EYES, UPPER_RING):
        width = float(np.linalg.norm(lm[c1] - lm[c0]))
        gap = lm[lower] - lm[upper]  # (7, 2)
        # Skin above the eye follows the lid with a falloff, strongest near the lid centre.
        d_up = np.linalg.norm(mesh[:, None] - lm[upper][None], axis=2)
        nearest = d_up.argmin(1)
        w_up = np.exp(-((d_up.min(1) / (0.35 * width)) ** 2))
        eye_line = (lm[c0] + lm[c1]) / 2
        above = (mesh[:, 1] < eye_line[1] - 0.05 * width) & (d_up.min(1) < 0.9 * width)
        disp[above] += gap[nearest[above]] * w_up[above, None] * 0.6
        disp[ring] = 0.45 * gap
        disp[upper] = gap
        disp[lower] = 0.0
    return disp


def _blink_profile(dt: np.ndarray) -> np.ndarray:
    """Closure in [0, 1] at dt seconds after a blink starts."""
    closing = smoothstep(dt / BLINK_CLOSE_S, 0.0, 1.0)
    opening = 1 - smoothstep((dt - BLINK_CLOSE_S - BLINK_HOLD_S) / BLINK_OPEN_S, 0.0, 1.0)
    return np.where(dt < 0, 0.0, np.minimum(closing, opening))


BLINK_BLOCK_S = 60.0  # the blink schedule is drawn per minute: any time is O(1), however long the session


@dataclass
class IdleMotion:
    """Deterministic blink schedule and head sway for one session (seeded)."""

    seed: int = 0
    _blocks: dict[int, np.ndarray] = field(default_factory=dict)  # minute -> blink start times (s)

    def __post_init__(self) -> None:
        r = np.random.default_rng([self.seed, 0x4EAD])
        self._phase = r.uniform(0, 2 * np.pi, (3, 3))
        self._freq = r.uniform(*HEAD_FREQS_HZ, (3, 3))

    def _block(self, k: int) -> np.ndarray:
        """Blink starts in minute ``k``: a function of (seed, k) alone. The first comes soon after
        the start (0.5-2.5 s), later minutes' 1-2 s into the minute and none after 59 s, so blinks
        stay >= 2 s apart across minutes too."""
        got = self._blocks.get(k)
        if got is None:
            rng = np.random.default_rng([self.seed, 0x1D1E, k])
            t = float(rng.uniform(0.5, 2.5) if k == 0 else rng.uniform(1.0, 2.0))
            starts = []
            while t <= BLINK_BLOCK_S - 1.0:
                starts.append(k * BLINK_BLOCK_S + t)
                t += float(rng.uniform(*BLINK_INTERVAL_S))
            got = self._blocks[k] = np.asarray(starts)
            while len(self._blocks) > 4:  # frames ask for times near each other
                del self._blocks[min(self._blocks)]
        return got

    def blink(self, t: float) -> float:
        """Eye closure in [0, 1] at time t seconds."""
        k = int(np.floor(t / BLINK_BLOCK_S))
        if k < 0:
            return 0.0
        starts = self._block(k)
        if k > 0 and t - k * BLINK_BLOCK_S < 1.0:  # a blink from the minute before may still be closing
            starts = np.concatenate([self._block(k - 1), starts])
        return float(_blink_profile(t - starts).max()) if len(starts) else 0.0

    def head_pose(self, t: float) -> tuple[float, float, float]:
        """(rotation degrees, dx, dy as frame fractions): sums of three slow sines per axis."""
        waves = np.sin(2 * np.pi * self._freq * t + self._phase).sum(1) / 3  # in [-1, 1]
        return HEAD_ROT_DEG * waves[0], HEAD_SHIFT * waves[1], HEAD_SHIFT * waves[2]

    def head_matrix(self, t: float, pivot: tuple[float, float], size_hw: tuple[int, int]) -> np.ndarray:
        """(2, 3) affine (frame pixel -> moved pixel) of the head pose at ``t`` about ``pivot``."""
        angle, dx, dy = self.head_pose(t)
        h, w = size_hw
        m = cv2.getRotationMatrix2D(pivot, angle, 1.0)
        m[:, 2] += (dx * w, dy * h)
        return m

    def move_head(self, frame: np.ndarray, t: float, pivot: tuple[float, float]) -> np.ndarray:
        """Rotates/shifts the whole frame about ``pivot`` (the neck), reflecting at the borders."""
        return move_frame(frame, self.head_matrix(t, pivot, frame.shape[:2]))


def move_frame(frame: np.ndarray, m: np.ndarray) -> np.ndarray:
    """The whole frame through the head-pose affine ``m``, reflecting at the borders."""
    h, w = frame.shape[:2]
    return cv2.warpAffine(frame, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)


def moved_box(m: np.ndarray, box: tuple[int, int, int, int], size_hw: tuple[int, int],
              margin: int = 2) -> tuple[tuple[int, int, int, int], tuple[int, int, int, int]] | None:
    """Where the frame box ``(y0, y1, x0, x1)`` lands after ``m`` (grown by ``margin``: bilinear
    taps reach one pixel), and the source box those output pixels read (grown likewise).
    None when the source box leaves the frame (the border reflection then matters)."""
    h, w = size_hw

    def bounds(a: np.ndarray, y0: int, y1: int, x0: int, x1: int) -> tuple[int, int, int, int]:
        c = np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]], np.float64) @ a[:, :2].T + a[:, 2]
        lo, hi = np.floor(c.min(0)).astype(int) - margin, np.ceil(c.max(0)).astype(int) + margin + 1
        return int(lo[1]), int(hi[1]), int(lo[0]), int(hi[0])

    dy0, dy1, dx0, dx1 = bounds(m, *box)
    dst = (max(dy0, 0), min(dy1, h), max(dx0, 0), min(dx1, w))
    src = bounds(cv2.invertAffineTransform(m), *dst)
    if src[0] < 0 or src[2] < 0 or src[1] > h or src[3] > w:
        return None
    return dst, src
