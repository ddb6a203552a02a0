"""What a WebRTC session tells its page besides media: where the face is in the frame (so the page
can zoom to it) and, once a second, the session's live figures (the ``stats`` event)."""

from __future__ import annotations

import statistics
from typing import Any

import numpy as np

from realtime.render.base import AvatarFrames
from realtime.server.protocol import event_message
from realtime.session.live import LiveSession

FACE_BOX_MARGIN = 0.35  # the face's landmark box grown by this fraction on each side: chin to hair
FACE_BOX_SAMPLES = 16  # frames of a video avatar whose landmarks make up the box


def face_box(avatar: AvatarFrames) -> list[int] | None:
    """``[x0, y0, x1, y1]``: a square around the avatar's face in output-frame pixels, covering
    every sampled frame's face (a video's head moves), or None for an avatar without landmarks."""
    landmarks = getattr(avatar, "landmarks", None)
    n = int(getattr(avatar, "num_frames", 0) or 0)
    if landmarks is None or n == 0:
        return None
    points = [p for p in (landmarks(i) for i in np.linspace(0, n - 1, min(n, FACE_BOX_SAMPLES)).astype(int))
              if p is not None]
    if not points:
        return None
    pts = np.concatenate(points)
    (x0, y0), (x1, y1) = pts.min(axis=0), pts.max(axis=0)
    side = max(x1 - x0, y1 - y0) * (1 + 2 * FACE_BOX_MARGIN)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    height, width = avatar.frame(0).shape[:2]
    side = min(side, width, height)
    left = float(np.clip(cx - side / 2, 0, width - side))
    top = float(np.clip(cy - side / 2, 0, height - side))
    return [round(left), round(top), round(left + side), round(top + side)]


def session_stats(live: LiveSession, output_fps: float, window_s: float) -> dict[str, Any]:
    """The ``stats`` event: the median engine latency of the speech frames of the last ``window_s``
    (None in silence), cumulative frame counts, the degradation level, the output rate."""
    now = live.clock.now()
    recent = [lat for t, lat in live.output.recent_latency if now - t <= window_s]
    counts = live.counts
    frames = sum(counts[k] for k in ("speech", "rest", "late", "repeat"))
    return event_message("stats", engine_latency_ms=round(statistics.median(recent) * 1000, 1) if recent else None,
                         late_frames=counts["late"], frames=frames, degrade_level=live.level,
                         output_fps=round(output_fps, 1), speaking=live.output.last_kind != "rest")
