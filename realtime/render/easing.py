"""Smooth ramps shared by the renderers' blends and gates."""

from __future__ import annotations

import numpy as np


def smoothstep(x: np.ndarray | float, lo: float, hi: float, dtype=None) -> np.ndarray:
    """0 at or below ``lo``, 1 at or above ``hi``, Hermite ``3t^2 - 2t^3`` in between (elementwise).

    ``x`` is taken as an array of ``dtype`` (None: its own); ``hi - lo`` is floored at 1e-6, so an
    empty range is a step instead of a division by zero.
    """
    t = np.clip((np.asarray(x, dtype) - lo) / max(hi - lo, 1e-6), 0, 1)
    return t * t * (3 - 2 * t)
