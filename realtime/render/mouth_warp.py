"""Landmark-driven lip and jaw deformation: one piecewise-affine mesh warp per frame, one ``cv2.remap``.

Per avatar frame a :class:`FaceRig` is built once from the frame's 478 FaceMesh landmarks: a square
work region around the face (on the frame's own pixel grid), a Delaunay triangulation of the mesh
vertices plus a fixed band outside the face outline and the work-region border, and a small linear
basis of per-vertex displacements ("modes": seal the lips, drop the lower lip, drop the jaw, narrow,
widen, roll, blink). A frame's deformation is then ``seal + sum(weight_k * mode_k)``: a (V, 2)
multiply-add. Only triangles that any mode moves are re-rasterised in their deformed pose, in one
compiled pass that writes each covered pixel's source position (``raster.py``), and one remap reads
the source frame.

Why the seal is part of the base pose: a closed mouth is the rest state (silence, bilabials), and many
photos (the default astronaut) smile with the teeth showing. Upper inner-lip points move a third of the
way and lower ones two thirds (the jaw does most of the closing), and the skin around follows with a
Gaussian falloff, so the teeth triangles collapse without tearing the lips.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import cv2
import numpy as np
from scipy.spatial import Delaunay

from realtime.render.idle import eyelid_mode
from realtime.render.raster import fill_warp_maps

N_MESH = 468  # FaceMesh vertices; the 10 iris points (refine_landmarks) are not warp vertices

# FaceMesh lip contours, left corner to right corner (MediaPipe's annotation order).
UPPER_INNER = [78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308]
LOWER_INNER = [78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308]
UPPER_OUTER = [61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291]
LOWER_OUTER = [61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291]
UPPER_MID = [62, 183, 42, 41, 38, 12, 268, 271, 272, 407, 292, 76, 184, 74, 73, 72, 11, 302, 303, 304, 408, 306]
LOWER_MID = [96, 89, 179, 86, 15, 316, 403, 319, 325, 77, 90, 180, 85, 16, 315, 404, 320, 307]
FACE_OVAL = [10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
             152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109]
UPPER_LIP = UPPER_INNER[1:-1] + UPPER_OUTER[1:-1] + UPPER_MID
LOWER_LIP = LOWER_INNER[1:-1] + LOWER_OUTER[1:-1] + LOWER_MID

# Mode amplitudes in units of the mouth width W (corner to corner). A wide-open human mouth has an
# inner-lip gap of about half its width; the chin drops a little less than the lower lip.
MAX_GAP = 0.45  # lower-lip drop at jawOpen = 1
UPPER_LIFT = 0.08  # upper lip rises a little as the mouth opens
CHIN_DROP = 0.30  # extra jaw drop of the skin below the lower lip
NARROW_PUCKER, NARROW_FUNNEL, WIDEN_STRETCH = 0.36, 0.24, 0.10
UNSMILE_IN, UNSMILE_DROP = 0.12, 1.3  # corners come in (x W) and drop (x smile) at full opening
BAND_SCALE = 1.45  # fixed anchors at this multiple of the face-outline radius (keeps collar and neck still)
MIN_MOVE_PX = 0.25  # vertices moving less than this stay put (saves rasterising the still face)
# The warp is rasterised on the frame's own pixel grid of the region (one resampling, no blur) up to
# this size; larger regions get a coarser work grid whose maps are resized, and resizing a map blends
# source positions across the sealed lip line (a thin line of teeth shows). 1024 covers a face filling
# a 1080p frame; the per-frame cost grows only with the moving part's box.
MAX_WORK = 1024
REGION_SCALE = 1.7  # work-region side / face-outline extent


@dataclass
class MouthParams:
    """Mouth and jaw weights in [0, 1], named after the ARKit blendshapes (all zero = closed, neutral)."""

    jawOpen: float = 0.0
    mouthClose: float = 0.0  # lips pressed together while the jaw is open
    mouthFunnel: float = 0.0
    mouthPucker: float = 0.0
    mouthStretch: float = 0.0
    mouthRollLower: float = 0.0
    mouthRollUpper: float = 0.0
    mouthPress: float = 0.0  # lips pressed together: drawn as half a roll of both lips
    eyeBlink: float = 0.0  # both eyes; driven by the idle animation, not by speech

    @classmethod
    def from_blendshapes(cls, names: list[str], values: np.ndarray) -> "MouthParams":
        """Maps a blendshape vector onto the fields; Left/Right pairs are averaged, others ignored."""
        acc: dict[str, list[float]] = {}
        for name, v in zip(names, np.asarray(values, dtype=np.float64).tolist()):
            base = name.removesuffix("Left").removesuffix("Right")
            acc.setdefault(base, []).append(v)
        return cls(**{k: min(1.0, max(0.0, sum(v) / len(v))) for k, v in acc.items() if k in _PARAM_FIELDS})

    def replace(self, **kw: float) -> "MouthParams":
        return dataclasses.replace(self, **kw)


_PARAM_FIELDS = frozenset(f.name for f in dataclasses.fields(MouthParams))


@dataclass
class WorkRegion:
    """Axis-aligned square of the frame (``side`` pixels at x0, y0) sampled on a ``size`` x ``size`` work grid.

    Pixel centres are aligned (as ``cv2.resize`` aligns them), so a map computed on the work grid and
    resized to the square is exactly the identity wherever nothing moves."""

    x0: int
    y0: int
    side: int
    size: int

    @property
    def scale(self) -> float:
        return self.size / self.side

    @property
    def offset(self) -> np.ndarray:
        """Frame position of work coordinate 0."""
        return np.array((self.x0, self.y0)) - 0.5 + 0.5 / self.scale

    def to_work(self, pts: np.ndarray) -> np.ndarray:
        return (pts - self.offset) * self.scale

    def to_frame(self, pts: np.ndarray) -> np.ndarray:
        return pts / self.scale + self.offset


def work_region(landmarks: np.ndarray, frame_hw: tuple[int, int], side: int | None = None,
                max_work: int = MAX_WORK) -> WorkRegion:
    """Square around the face (``side`` frame pixels, default from the face size), on a work grid of at
    most ``max_work`` pixels."""
    oval = landmarks[FACE_OVAL]
    centre = oval.mean(0)
    side = side or int(np.ceil(REGION_SCALE * np.ptp(oval, axis=0).max()))
    h, w = frame_hw
    side = min(side, h, w)
    x0 = int(np.clip(round(centre[0] - side / 2), 0, w - side))
    y0 = int(np.clip(round(centre[1] - side / 2), 0, h - side))
    return WorkRegion(x0, y0, side, min(side, max_work))


def _falloff(pts: np.ndarray, anchors: np.ndarray, sigma: float) -> np.ndarray:
    """exp(-(d / sigma)^2), d = distance from each point to the nearest anchor."""
    d = np.linalg.norm(pts[:, None, :] - anchors[None, :, :], axis=2).min(1)
    return np.exp(-((d / sigma) ** 2))


@dataclass
class FaceRig:
    """Everything about one avatar frame that does not depend on the mouth parameters."""

    region: WorkRegion
    rest: np.ndarray  # (V, 2) float32 work coords: 468 mesh vertices, band anchors, border anchors
    tris: np.ndarray  # (T, 3) int32, Delaunay of ``rest``
    moving: np.ndarray  # (M,) int, triangles with a vertex that some mode moves
    seal: np.ndarray  # (V, 2) base displacement closing the rest pose's lips
    modes: dict[str, np.ndarray]  # unit displacements (V, 2)
    base_map: tuple[np.ndarray, np.ndarray]  # identity remap (work pixel -> frame pixel)
    paste_mask: np.ndarray  # (side, side) float32 feathered support of the deformation, frame scale
    mouth_width: float  # W in work pixels
    axes: np.ndarray  # (2, 2): e_x (corner to corner), e_y (down)
    smile: float  # how far the corners sit above the lip centre, work pixels (>= 0)
    landmarks: np.ndarray  # (478, 2) work coords

    @classmethod
    def build(cls, landmarks: np.ndarray, frame_hw: tuple[int, int], side: int | None = None,
              eyes: bool = True, max_work: int = MAX_WORK) -> "FaceRig":
        lm_frame = np.asarray(landmarks, dtype=np.float64)
        if lm_frame.shape[0] < N_MESH:
            raise ValueError(f"expected FaceMesh landmarks (468 or 478, 2), got {lm_frame.shape}")
        region = work_region(lm_frame, frame_hw, side, max_work)
        lm = region.to_work(lm_frame)
        mesh = lm[:N_MESH]
        s = region.size

        centre_oval = lm[FACE_OVAL].mean(0)
        band = centre_oval + BAND_SCALE * (lm[FACE_OVAL] - centre_oval)
        t = np.linspace(0, s - 1, 9)[:-1]
        zeros, full = np.zeros_like(t), np.full_like(t, s - 1)
        border = np.concatenate([np.stack(p, 1) for p in
                                 ((t, zeros), (full, t), (s - 1 - t, full), (zeros, s - 1 - t))])
        rest = np.concatenate([mesh, band, border])
        # Anchors outside the work square would give triangles nobody sees; keep them inside.
        rest = np.clip(rest, 0, s - 1)
        tris = Delaunay(rest).simplices.astype(np.int32)

        modes, seal, info = _mouth_modes(lm, rest.shape[0])
        if eyes:
            modes["eyeBlink"] = np.zeros_like(seal)
            modes["eyeBlink"][:N_MESH] = eyelid_mode(lm)
        moves = np.abs(seal).max(1) > MIN_MOVE_PX
        for m in modes.values():
            moves |= np.abs(m).max(1) > MIN_MOVE_PX
        moving = np.flatnonzero(moves[tris].any(1))

        gx, gy = np.meshgrid(np.arange(s, dtype=np.float32), np.arange(s, dtype=np.float32))
        off = region.offset.astype(np.float32)
        base_map = (gx / region.scale + off[0], gy / region.scale + off[1])

        support = np.zeros((s, s), np.uint8)
        cv2.fillPoly(support, list(np.round(rest[tris[moving]]).astype(np.int32)), 255)
        paste = cv2.resize(support, (region.side, region.side), interpolation=cv2.INTER_AREA)
        sigma = max(1.0, 0.01 * region.side)
        paste_mask = cv2.GaussianBlur(cv2.dilate(paste, np.ones((3, 3), np.uint8)).astype(np.float32) / 255,
                                      (0, 0), sigma)
        return cls(region, rest.astype(np.float32), tris, moving, seal.astype(np.float32),
                   {k: v.astype(np.float32) for k, v in modes.items()}, base_map,
                   paste_mask, info["W"], info["axes"], info["smile"], lm.astype(np.float32))

    # ---- per frame -------------------------------------------------------------------------------

    def displacement(self, p: MouthParams) -> np.ndarray:
        """(V, 2) vertex displacement for the parameters (the lips sealed at all-zero)."""
        gap = float(np.clip(p.jawOpen - p.mouthClose + 0.25 * p.mouthFunnel, 0.0, 1.0))
        weights = {
            "lips": gap, "jaw": float(np.clip(p.jawOpen, 0, 1)),
            "pucker": p.mouthPucker, "funnel": p.mouthFunnel, "stretch": p.mouthStretch,
            "rollLower": min(1.0, p.mouthRollLower + 0.5 * p.mouthPress),
            "rollUpper": min(1.0, p.mouthRollUpper + 0.5 * p.mouthPress), "eyeBlink": p.eyeBlink,
        }
        d = self.seal.copy()
        for name, w in weights.items():
            if w > 1e-4 and name in self.modes:
                d += np.float32(w) * self.modes[name]
        return d

    def _moving(self, disp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(deformed vertices, the triangles that move: (M, 3) vertex indices)."""
        moved = np.abs(disp).max(1) > MIN_MOVE_PX
        return self.rest + disp, self.tris[self.moving[moved[self.tris[self.moving]].any(1)]]

    def warp_maps(self, disp: np.ndarray, moving: tuple[np.ndarray, np.ndarray] | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
        """Backward piecewise-affine remap (work pixel -> source frame pixel) for deformed vertices
        (``moving``: ``_moving(disp)`` if the caller has it)."""
        q, tri = self._moving(disp) if moving is None else moving
        if len(tri) == 0:
            return self.base_map
        map_x, map_y = self.base_map[0].copy(), self.base_map[1].copy()
        fill_warp_maps(q, self.rest, tri, self.region.scale, self.region.offset, map_x, map_y)
        return map_x, map_y

    def roi_maps(self, disp: np.ndarray, moving: tuple[np.ndarray, np.ndarray] | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
        """The warp maps on the frame's own pixel grid of the region (side, side)."""
        map_x, map_y = self.warp_maps(disp, moving)
        r = self.region
        if r.size != r.side:  # maps are smooth: resizing them loses nothing, resizing pixels would blur
            map_x = cv2.resize(map_x, (r.side, r.side), interpolation=cv2.INTER_LINEAR)
            map_y = cv2.resize(map_y, (r.side, r.side), interpolation=cv2.INTER_LINEAR)
        return map_x, map_y

    def warp(self, frame: np.ndarray, disp: np.ndarray) -> np.ndarray:
        """The deformed region (side, side, 3), sampled once from the full frame at its own resolution."""
        moving = self._moving(disp)
        box = self._changed_box(moving)
        if box is None:  # nothing moves: the still region
            r = self.region
            return np.array(frame[r.y0:r.y0 + r.side, r.x0:r.x0 + r.side])
        return self.remap(frame, self.roi_maps(disp, moving), box)

    def _changed_box(self, moving: tuple[np.ndarray, np.ndarray]) -> tuple[int, int, int, int] | None:
        """(y0, y1, x0, x1), region pixels, outside which ``roi_maps`` is the still frame's map for
        ``moving`` (``_moving(disp)``): the moving triangles' deformed box, one pixel more (the
        raster's 0.75 px halo). Only on the frame's own grid (work scale 1), where the still map
        samples whole pixels, so a copy is the same as resampling; elsewhere the whole paste box.
        None when nothing moves on the frame's grid."""
        if self.region.size != self.region.side:
            return self.paste_box
        q, tri = moving
        if len(tri) == 0:
            return None
        pts = q[tri].reshape(-1, 2)
        (x0, y0), (x1, y1) = np.floor(pts.min(0)).astype(int) - 1, np.ceil(pts.max(0)).astype(int) + 2
        py0, py1, px0, px1 = self.paste_box
        return max(int(y0), py0), min(int(y1), py1), max(int(x0), px0), min(int(x1), px1)

    def remap(self, frame: np.ndarray, maps: tuple[np.ndarray, np.ndarray],
              box: tuple[int, int, int, int] | None = None) -> np.ndarray:
        """Samples the region through ``roi_maps`` inside ``box`` (region pixels; None: the paste
        box); the rest is copied from the frame."""
        r = self.region
        out = np.array(frame[r.y0:r.y0 + r.side, r.x0:r.x0 + r.side])
        y0, y1, x0, x1 = self.paste_box if box is None else box
        if y1 <= y0 or x1 <= x0:
            return out
        # Bicubic keeps about a third more skin detail than bilinear where the skin is shifted by
        # fractions of a pixel.
        out[y0:y1, x0:x1] = cv2.remap(frame, maps[0][y0:y1, x0:x1], maps[1][y0:y1, x0:x1], cv2.INTER_CUBIC,
                                      borderMode=cv2.BORDER_REFLECT)
        return out

    def paste_back(self, frame: np.ndarray, roi_image: np.ndarray) -> np.ndarray:
        """Blends the region image into a copy of the frame over the feathered deformation support."""
        out = frame.copy()
        self.paste_into(out, roi_image)
        return out

    def paste_into(self, out: np.ndarray, roi_image: np.ndarray, origin: tuple[int, int] = (0, 0)) -> None:
        """``paste_back`` in place, into ``out`` = the part of a frame whose corner is at frame
        pixel ``origin`` (x, y); it must contain the paste box."""
        r = self.region
        y0, y1, x0, x1 = self.paste_box
        oy, ox = r.y0 - origin[1], r.x0 - origin[0]
        assert oy + y0 >= 0 and ox + x0 >= 0 and oy + y1 <= out.shape[0] and ox + x1 <= out.shape[1]
        roi = out[oy + y0:oy + y1, ox + x0:ox + x1]
        m = self.paste_mask[y0:y1, x0:x1, None]
        src = roi.astype(np.float32)
        roi[:] = (src + (roi_image[y0:y1, x0:x1] - src) * m + 0.5).astype(np.uint8)

    @functools.cached_property
    def paste_box(self) -> tuple[int, int, int, int]:
        """(y0, y1, x0, x1) of the paste mask's support, frame scale, relative to the region."""
        ys, xs = np.nonzero(self.paste_mask > 1e-3)
        return int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1

    def inner_polygon(self, disp: np.ndarray) -> np.ndarray:
        """Deformed inner-lip polygon (22, 2) in work coords: upper left->right, then lower right->left."""
        q = self.rest[:N_MESH] + disp[:N_MESH]
        return np.concatenate([q[UPPER_INNER], q[LOWER_INNER[::-1]]])

    def to_roi(self, pts: np.ndarray) -> np.ndarray:
        """Work coords -> pixel coords of the region image returned by ``warp``."""
        return self.region.to_frame(pts) - (self.region.x0, self.region.y0)


def _mouth_modes(lm: np.ndarray, n_vertices: int) -> tuple[dict[str, np.ndarray], np.ndarray, dict]:
    """Per-vertex unit displacements of the mouth modes, for the 468 mesh vertices (anchors stay 0)."""
    mesh = lm[:N_MESH]
    left, right = lm[61], lm[291]
    W = float(np.linalg.norm(right - left))
    e_x = (right - left) / W
    e_y = np.array([-e_x[1], e_x[0]])  # image y grows downwards, so this points down the face
    centre = (lm[13] + lm[14]) / 2
    rel = mesh - centre
    u = rel @ e_x / (W / 2)  # -1 at the left corner, +1 at the right
    v = rel @ e_y / (W / 2)

    # Which side of the mouth line each vertex is on, smoothly (cheeks beside the corners get ~0.5).
    mid_line = np.interp(u, ((lm[UPPER_INNER] + lm[LOWER_INNER]) / 2 - centre) @ e_x / (W / 2),
                         ((lm[UPPER_INNER] + lm[LOWER_INNER]) / 2 - centre) @ e_y / (W / 2))
    below = 1 / (1 + np.exp(-(v - mid_line) / 0.06))
    below[UPPER_LIP] = 0.0
    below[LOWER_LIP] = 1.0
    above = 1 - below
    lips_all = lm[UPPER_LIP + LOWER_LIP + [61, 291]]
    near_upper = _falloff(mesh, lm[UPPER_LIP], 0.22 * W) * above
    near_lower = _falloff(mesh, lm[LOWER_LIP], 0.30 * W) * below
    jaw = _falloff(mesh, lm[LOWER_LIP], 0.9 * W) * below
    near_lips = _falloff(mesh, lips_all, 0.35 * W)
    prof = np.clip(1 - np.clip(np.abs(u), 0, 1) ** 2, 0, 1) ** 0.5  # opening profile along the mouth

    # Seal: inner pairs meet at one third of their gap from the upper lip.
    # The gap profile falls to zero at the outer corners (61, 291), not the inner ones: a smile's dark
    # corner pockets lie between the two and must close too.
    gaps = np.maximum((lm[LOWER_INNER[1:-1]] - lm[UPPER_INNER[1:-1]]) @ e_y, 0)
    pair_u = ((lm[LOWER_INNER[1:-1]] + lm[UPPER_INNER[1:-1]]) / 2 - centre) @ e_x / (W / 2)
    # FaceMesh puts the lower lip's corner points (96, 325) a few pixels below the corner cluster
    # (61, 62, 76, 78): sample the gap there too, and reach zero just beyond the corners.
    # Capped by the nearest inner pair's gap, so a closed mouth stays exactly as it is.
    end_gaps = gaps[0], gaps[-1]
    for lower_corner, upper_corner, cap in ((96, (62, 76, 78), end_gaps[0]), (325, (292, 306, 308), end_gaps[1])):
        corner_gap = float((lm[lower_corner] - lm[list(upper_corner)].mean(0)) @ e_y)
        pair_u = np.r_[pair_u, (lm[lower_corner] - centre) @ e_x / (W / 2)]
        gaps = np.r_[gaps, float(np.clip(corner_gap, 0.0, cap))]
    order = np.argsort(pair_u)
    g = np.interp(u, np.r_[-1.1, pair_u[order], 1.1], np.r_[0.0, gaps[order], 0.0], left=0, right=0)
    seal = np.outer(g * (near_upper / 3 - 2 * near_lower / 3), e_y)
    pair_gap = lm[LOWER_INNER] - lm[UPPER_INNER]
    seal[UPPER_INNER] = pair_gap / 3
    seal[LOWER_INNER] = -2 * pair_gap / 3
    seal[[78, 308]] = 0.0

    # Smile: corners above the lip centre; lips un-smile (corners drop and come in) as they open.
    smile = max(0.0, float((centre - (lm[61] + lm[291]) / 2) @ e_y))
    corner_w = _falloff(mesh, lm[[61, 291, 78, 308]], 0.42 * W)
    side = np.sign(u)

    def vec(ax: np.ndarray, ay: np.ndarray) -> np.ndarray:
        return np.outer(ax, e_x) + np.outer(ay, e_y)

    modes = {
        "lips": vec(-side * UNSMILE_IN * W * corner_w,
                    MAX_GAP * W * prof * near_lower - UPPER_LIFT * W * prof * near_upper
                    + UNSMILE_DROP * smile * corner_w),
        "jaw": vec(np.zeros_like(u), CHIN_DROP * W * jaw * (1 - near_lower) * np.clip(1.3 - 0.5 * np.abs(u), 0, 1)),
        "pucker": vec(-np.clip(u, -1, 1) * NARROW_PUCKER * W / 2 * near_lips,
                      0.04 * W * (near_lower - near_upper) * prof),
        "funnel": vec(-np.clip(u, -1, 1) * NARROW_FUNNEL * W / 2 * near_lips, np.zeros_like(u)),
        "stretch": vec(np.clip(u, -1, 1) * WIDEN_STRETCH * W / 2 * near_lips,
                       -0.02 * W * (near_lower - near_upper) * prof),
    }
    # Rolls: the red of the lip turns inwards, so the outer contour moves towards the inner one.
    for name, outer, inner, w in (("rollLower", LOWER_OUTER, LOWER_INNER, near_lower),
                                  ("rollUpper", UPPER_OUTER, UPPER_INNER, near_upper)):
        thick = (lm[inner] - lm[outer]) @ e_y
        t_prof = np.interp(u, (lm[outer] - centre) @ e_x / (W / 2), thick)
        m = vec(np.zeros_like(u), 0.5 * t_prof * w * _falloff(mesh, lm[outer], 0.12 * W))
        m[inner] = 0.0
        modes[name] = m

    pad = np.zeros((n_vertices - N_MESH, 2))
    full = {k: np.concatenate([m, pad]) for k, m in modes.items()}
    return full, np.concatenate([seal, pad]), {"W": W, "axes": np.stack([e_x, e_y]), "smile": smile}
