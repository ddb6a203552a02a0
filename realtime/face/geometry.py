"""LatentSync's face geometry: 3-point similarity alignment, crop, temporal smoothing, soft paste-back.

Facts (LatentSync ``affine_transform.py`` / ``image_processor.py``, v1.5+):
- template [[17, 20], [58, 20], [37.5, 40]] * r, r = resolution / 256 * 2.8, points ordered
  [image-left brow, image-right brow, nose] in image (x, y) coordinates;
- the warp fills with 127 and produces a 75r x 100r face (210 x 280 at 256, 420 x 560 at 512), which is
  Lanczos-resized to a square R x R crop;
- the similarity comes from normalised points (centred, divided by their overall unbiased std) and an SVD; the
  smoothing adds ``bias = template_n[2] - points_n[2]`` (normalised units!) to the translation, mixed
  0.2 * previous + 0.8 * current across frames;
- paste-back: bicubic resize to the face size, inverse affine warp, ones-mask eroded 2x2 then by
  2 * w_edge, w_edge = int(sqrt(area)) // 20, Gaussian blur (2 * w_edge + 1), alpha blend.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TEMPLATE_BASE = np.array([[17.0, 20.0], [58.0, 20.0], [37.5, 40.0]])  # (19-2, 30-10), (56+2, 30-10), (37.5, 45-5)
FACE_BASE_WH = (75, 100)  # face size before the ratio: 210 x 280 at r = 2.8
FILL_VALUE = 127
SMOOTH_PREV = 0.2  # bias = 0.2 * previous + 0.8 * current


def ratio_for(resolution: int) -> float:
    return resolution / 256 * 2.8


@dataclass(frozen=True)
class FaceGeometry:
    """Template and sizes for one output resolution (256 or 512; any multiple of 64 works)."""

    resolution: int = 256

    @property
    def ratio(self) -> float:
        return ratio_for(self.resolution)

    @property
    def template(self) -> np.ndarray:
        return TEMPLATE_BASE * self.ratio

    @property
    def face_size(self) -> tuple[int, int]:
        """(W, H) of the warped face before the square resize: (210, 280) at 256."""
        return int(FACE_BASE_WH[0] * self.ratio), int(FACE_BASE_WH[1] * self.ratio)

    def crop_scale_matrix(self) -> np.ndarray:
        """3x3 matrix taking face-size pixel coordinates to R x R crop pixels (cv2.resize's centres)."""
        w, h = self.face_size
        sx, sy = self.resolution / w, self.resolution / h
        # cv2.resize maps pixel centres: x' + 0.5 = (x + 0.5) * s
        return np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])


def similarity_from_points(points: np.ndarray, template: np.ndarray, smooth: bool = True,
                           prev_bias: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """LatentSync's ``transformation_from_points``: (2, 3) float64 matrix frame -> face, and the new bias.

    ``points`` are the 3 alignment points in the frame (already rounded, as LatentSync does).
    """
    p1 = np.asarray(points, np.float64).copy()
    p2 = np.asarray(template, np.float64).copy()
    assert p1.shape == p2.shape == (3, 2), (p1.shape, p2.shape)
    c1, c2 = p1.mean(0), p2.mean(0)
    p1 -= c1
    p2 -= c2
    # torch.std in LatentSync: unbiased (n - 1) over all six coordinates; it scales the smoothing bias
    s1, s2 = p1.std(ddof=1), p2.std(ddof=1)
    p1 /= s1
    p2 /= s2
    u, _, vt = np.linalg.svd(p1.T @ p2)
    rot = (u @ vt).T
    if np.linalg.det(rot) < 0:  # never a reflection
        vt[-1] *= -1
        rot = (u @ vt).T
    sr = (s2 / s1) * rot
    t = c2 - sr @ c1
    m = np.concatenate([sr, t[:, None]], axis=1)
    bias = None
    if smooth:
        bias = p2[2] - p1[2]
        if prev_bias is not None:
            bias = SMOOTH_PREV * prev_bias + (1 - SMOOTH_PREV) * bias
        m[:, 2] += bias
    return m, bias


class AffineTracker:
    """Per-track smoothing state: call ``update`` on the frames of one video in order."""

    def __init__(self, geometry: FaceGeometry, smooth: bool = True):
        self.geometry = geometry
        self.smooth = smooth
        self.bias: np.ndarray | None = None

    def update(self, points3: np.ndarray) -> np.ndarray:
        """(2, 3) float32 frame -> face-size matrix (LatentSync's float32 kornia matrix)."""
        m, bias = similarity_from_points(np.round(points3), self.geometry.template, self.smooth, self.bias)
        if self.smooth:
            self.bias = bias
        return m.astype(np.float32)


def to_crop_affine(face_affine: np.ndarray, geometry: FaceGeometry) -> np.ndarray:
    """Composes the face matrix with the Lanczos resize: (2, 3) float32 frame -> R x R crop."""
    m = np.vstack([np.asarray(face_affine, np.float64), [0.0, 0.0, 1.0]])
    return (geometry.crop_scale_matrix() @ m)[:2].astype(np.float32)


def warp_face(frame: np.ndarray, face_affine: np.ndarray, geometry: FaceGeometry) -> np.ndarray:
    """Aligned R x R crop (uint8) of ``frame``: bilinear affine warp with fill 127, Lanczos to square."""
    import cv2  # OpenCV is heavy: the face package imports cheaply

    w, h = geometry.face_size
    face = cv2.warpAffine(frame, np.asarray(face_affine, np.float64), (w, h), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(FILL_VALUE,) * 3)
    r = geometry.resolution
    return cv2.resize(face, (r, r), interpolation=cv2.INTER_LANCZOS4)


@dataclass
class PasteMask:
    """Soft blend mask of one face placement, restricted to its bounding box in the frame."""

    y0: int
    y1: int
    x0: int
    x1: int
    inverse: np.ndarray  # (2, 3) face -> ROI coordinates
    alpha: np.ndarray  # (y1 - y0, x1 - x0, 1) float32


def paste_mask(face_affine: np.ndarray, frame_hw: tuple[int, int], geometry: FaceGeometry) -> PasteMask:
    """LatentSync's soft mask for pasting a face back; computed once per placement and reusable.

    Work is restricted to the face's bounding box plus a margin wider than the erosion and blur, so the
    result equals the whole-frame computation while costing a fraction of it.
    """
    import cv2  # heavy: imported on first use

    h, w = frame_hw
    fw, fh = geometry.face_size
    inv = cv2.invertAffineTransform(np.asarray(face_affine, np.float64))
    corners = np.array([[0, 0, 1], [fw, 0, 1], [0, fh, 1], [fw, fh, 1]], np.float64) @ inv.T
    margin = 4
    x0 = int(np.clip(np.floor(corners[:, 0].min()) - margin, 0, w))
    x1 = int(np.clip(np.ceil(corners[:, 0].max()) + margin, 0, w))
    y0 = int(np.clip(np.floor(corners[:, 1].min()) - margin, 0, h))
    y1 = int(np.clip(np.ceil(corners[:, 1].max()) + margin, 0, h))
    roi_inv = inv.copy()
    roi_inv[:, 2] -= (x0, y0)
    if x1 <= x0 or y1 <= y0:
        return PasteMask(y0, y0, x0, x0, roi_inv, np.zeros((0, 0, 1), np.float32))
    ones = np.ones((fh, fw), np.float32)
    # the eroded mask is zero near the ROI edge (the face quad lies inside the margin), so eroding and
    # blurring inside the ROI equals doing it on the whole frame, except at real frame borders where
    # both see the same border handling.
    inv_mask = cv2.warpAffine(ones, roi_inv, (x1 - x0, y1 - y0))
    inv_mask = cv2.erode(inv_mask, np.ones((2, 2), np.uint8))
    area = float(inv_mask.sum())
    w_edge = int(area**0.5) // 20
    if w_edge > 0:
        # pad so the blur never reads past the ROI: keeps it identical to the full-frame result
        pad = 2 * w_edge + 2
        big = cv2.copyMakeBorder(inv_mask, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        big = cv2.erode(big, np.ones((2 * w_edge, 2 * w_edge), np.uint8))
        big = cv2.GaussianBlur(big, (2 * w_edge + 1, 2 * w_edge + 1), 0)
        inv_mask = big[pad:-pad, pad:-pad]
    return PasteMask(y0, y1, x0, x1, roi_inv, inv_mask[:, :, None].astype(np.float32))


def paste_back(frame: np.ndarray, crop: np.ndarray, face_affine: np.ndarray, geometry: FaceGeometry,
               mask: PasteMask | None = None) -> np.ndarray:
    """Blends an R x R crop back into a copy of ``frame`` (uint8 RGB) at the placement ``face_affine``."""
    import cv2  # heavy: imported on first use

    if mask is None:
        mask = paste_mask(face_affine, frame.shape[:2], geometry)
    out = frame.copy()
    if mask.alpha.size == 0:
        return out
    fw, fh = geometry.face_size
    face = cv2.resize(np.asarray(crop), (fw, fh), interpolation=cv2.INTER_CUBIC)
    roi_w, roi_h = mask.x1 - mask.x0, mask.y1 - mask.y0
    restored = cv2.warpAffine(face, mask.inverse, (roi_w, roi_h), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    roi = out[mask.y0 : mask.y1, mask.x0 : mask.x1]
    a = mask.alpha
    blended = a * restored.astype(np.float32) + (1.0 - a) * roi.astype(np.float32)
    out[mask.y0 : mask.y1, mask.x0 : mask.x1] = np.clip(blended, 0, 255).astype(np.uint8)
    return out
