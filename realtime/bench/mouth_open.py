"""Mouth opening of received video frames from face landmarks (`syncvid bench realtime`'s probes).

The probe keeps the face region of every received frame (the Y plane, as decoded) and, after the
session, runs FaceMesh in tracking mode over them: running the detector during the session would
take CPU from the server under test and skew the timings it measures. The signal per frame is the
inner-lip gap (FaceMesh points 13 and 14) over the mouth width (61 and 291): independent of the
face's size and of the idle head sway, ~0 with the lips together.
"""

from __future__ import annotations

import numpy as np

from realtime.face.landmarks import INNER_LIP_BOTTOM, INNER_LIP_TOP, MOUTH_CORNERS, FaceMeshDetector


def face_box(avatar, margin: float = 0.35) -> tuple[slice, slice]:
    """Rows/cols of the avatar's face (all landmarks) grown by ``margin`` of its size on each side,
    clipped to the frame: room for the head sway and the jaw."""
    lm = avatar.landmarks(0)
    h, w = np.asarray(avatar.frame(0)).shape[:2]
    (x0, y0), (x1, y1) = lm.min(0), lm.max(0)
    mx, my = margin * (x1 - x0), margin * (y1 - y0)
    return (slice(max(0, int(y0 - my)), min(h, int(y1 + my))), slice(max(0, int(x0 - mx)), min(w, int(x1 + mx))))


def opening(landmarks: np.ndarray) -> float:
    """Inner-lip gap over mouth width for one face's FaceMesh landmarks."""
    gap = float(np.linalg.norm(landmarks[INNER_LIP_TOP] - landmarks[INNER_LIP_BOTTOM]))
    width = float(np.linalg.norm(landmarks[MOUTH_CORNERS[0]] - landmarks[MOUTH_CORNERS[1]]))
    return gap / max(width, 1e-6)


def opening_series(crops: list[np.ndarray]) -> np.ndarray:
    """Mouth opening per crop (gray (H, W) or RGB uint8), in order; NaN where no face is found."""
    out = np.full(len(crops), np.nan)
    with FaceMeshDetector(static=False) as det:
        for k, c in enumerate(crops):
            rgb = np.repeat(c[..., None], 3, axis=-1) if c.ndim == 2 else c
            lm = det.detect(np.ascontiguousarray(rgb))
            if lm is not None:
                out[k] = opening(lm)
    return out
