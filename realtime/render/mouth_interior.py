"""Mouth interior drawn inside the deformed inner-lip polygon: shaded cavity, teeth, tongue.

Layers, back to front: a dark cavity that gets darker towards the back (the middle of the opening),
a tongue hint and lower-teeth hint that appear as the mouth opens wider, and the upper teeth carried by
the upper jaw (they move with the upper lip). Where the avatar shows its own teeth at rest (a smiling
photo) those real pixels are used; elsewhere the teeth are synthesised in the real teeth's colour with
soft shading (darker towards the corners and under the lip). The whole layer is composited with an
anti-aliased polygon mask, so the lip edge has no seam. All arrays cover only the mouth's bounding box.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from realtime.render.easing import smoothstep
from realtime.render.mouth_warp import LOWER_INNER, UPPER_INNER, FaceRig, MouthParams

DEFAULT_TEETH_RGB = (238.0, 221.0, 210.0)  # warm off-white; next to pink lips a neutral white reads green-grey
CAVITY_EDGE_RGB = np.array((112.0, 44.0, 50.0), np.float32)
CAVITY_BACK_RGB = np.array((30.0, 10.0, 13.0), np.float32)
TONGUE_RGB = np.array((150.0, 62.0, 68.0), np.float32)
UPPER_TEETH_H = 0.15  # visible upper incisor height / mouth width
LOWER_TEETH_H = 0.07
SEAM_DARKEN = 0.35  # how much darker the line between closed lips is than the lips
TOOTH_EDGES_U = (0.0, 0.21, -0.21, 0.4, -0.4)  # gaps between teeth, in corner units


@dataclass
class MouthInterior:
    """Per-avatar-frame teeth source: the rest image of the region and where real teeth show in it."""

    rest_roi: np.ndarray  # (side, side, 3) float32, the unwarped region of the frame
    teeth_alpha: np.ndarray  # (side, side) float32, soft mask of visible real teeth at rest
    teeth_rgb: np.ndarray  # (3,) float32

    @classmethod
    def build(cls, frame: np.ndarray, rig: FaceRig) -> "MouthInterior":
        r = rig.region
        rest = np.asarray(frame[r.y0:r.y0 + r.side, r.x0:r.x0 + r.side], np.float32)
        s = r.side
        hole = np.zeros((s, s), np.uint8)
        poly = rig.to_roi(rig.inner_polygon(np.zeros_like(rig.seal)))
        cv2.fillPoly(hole, [np.round(poly * 8).astype(np.int32)], 255, cv2.LINE_AA, shift=3)
        hole = cv2.erode(hole, np.ones((3, 3), np.uint8))
        # Teeth: bright and unsaturated compared with the lips and the cavity around them.
        hsv = cv2.cvtColor(np.clip(rest, 0, 255).astype(np.uint8), cv2.COLOR_RGB2HSV).astype(np.float32)
        teeth = (hole > 128) & (hsv[..., 2] > 120) & (hsv[..., 1] < 110)
        teeth_rgb = np.median(rest[teeth], axis=0) if teeth.sum() > 15 else np.array(DEFAULT_TEETH_RGB)
        alpha = cv2.GaussianBlur(teeth.astype(np.float32), (0, 0), 0.8) * (hole / 255.0)
        return cls(rest, alpha.astype(np.float32), np.asarray(teeth_rgb, np.float32))

    def render(self, work: np.ndarray, rig: FaceRig, disp: np.ndarray, params: MouthParams) -> np.ndarray:
        """Draws the interior into the region image ``work`` from ``rig.warp`` (in place; returned)."""
        q = rig.to_roi(rig.rest[:468] + disp[:468])  # deformed vertices, region pixels
        up, lo = q[UPPER_INNER], q[LOWER_INNER]
        gap_c = float(np.linalg.norm(lo[5] - up[5]))
        W = rig.mouth_width / rig.region.scale
        self._lip_seam(work, q, gap_c, W)
        if gap_c < 0.6 and float(np.max((lo - up)[:, 1])) < 0.6:
            return work  # sealed: nothing visible between the lips
        s = work.shape[0]
        poly = np.concatenate([up, lo[::-1]])
        x0, y0 = np.floor(poly.min(0)).astype(int) - 2
        x1, y1 = np.ceil(poly.max(0)).astype(int) + 3
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, s), min(y1, s)
        if x1 - x0 < 2 or y1 - y0 < 2:
            return work
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        cv2.fillPoly(mask, [np.round((poly - (x0, y0)) * 8).astype(np.int32)], 255, cv2.LINE_AA, shift=3)
        alpha = mask.astype(np.float32) / 255.0
        if alpha.max() == 0:
            return work

        xs = np.arange(x0, x1, dtype=np.float32)
        ys = np.arange(y0, y1, dtype=np.float32)[:, None]
        ou, ol = np.argsort(up[:, 0]), np.argsort(lo[:, 0])
        y_up = np.interp(xs, up[ou, 0], up[ou, 1]).astype(np.float32)[None]
        y_lo = np.interp(xs, lo[ol, 0], lo[ol, 1]).astype(np.float32)[None]
        h = np.maximum(y_lo - y_up, 0.5)
        xc = float(up[5, 0] + lo[5, 0]) / 2
        u = np.clip((xs - xc) / (0.5 * float(np.linalg.norm(q[308] - q[78])) + 1e-3), -1, 1)[None]
        t = np.clip((ys - y_up) / h, 0, 1)  # 0 at the upper lip, 1 at the lower lip
        openness = float(smoothstep(gap_c, 0.0, 0.35 * W, np.float32))

        # Cavity: darkest at the back, i.e. in the middle of a wide opening.
        depth = (1 - (2 * t - 1) ** 2) * (1 - u**2) * openness
        layer = CAVITY_EDGE_RGB + (CAVITY_BACK_RGB - CAVITY_EDGE_RGB) * np.sqrt(depth)[..., None]

        # Tongue: a low, rounded hump resting behind the lower teeth.
        tongue_a = float(smoothstep(gap_c, 0.12 * W, 0.32 * W, np.float32))
        if tongue_a > 0:
            yc, ay = y_lo - 0.18 * h, 0.35 * h
            e = 1 - (u / 0.5) ** 2 - ((ys - yc) / ay) ** 2
            a = np.sqrt(np.clip(e, 0, 1)) * tongue_a * 0.9
            shade = 0.75 + 0.25 * np.clip((yc - ys) / ay + 0.5, 0, 1)
            layer += (TONGUE_RGB * shade[..., None] - layer) * a[..., None]

        # Lower teeth: a shadowed hint above the lower lip, only when open wide.
        low_a = float(smoothstep(gap_c, 0.18 * W, 0.4 * W, np.float32))
        if low_a > 0:
            band = LOWER_TEETH_H * W * np.sqrt(1 - u**2)
            a = smoothstep(ys - (y_lo - band), 0, 1.2, np.float32) * low_a * 0.5
            a = a * (1 - smoothstep(np.abs(u), 0.35, 0.7, np.float32))
            layer += (self.teeth_rgb * 0.62 - layer) * a[..., None]

        # Upper teeth, carried by the upper lip (the upper jaw does not move when speaking).
        band = UPPER_TEETH_H * W * np.sqrt(1 - u**2) + 0.5
        dy = ys - y_up
        a_up = 1 - smoothstep(dy - band, -0.6, 0.6, np.float32)
        a_up = a_up * (1 - smoothstep(np.abs(u), 0.78, 0.98, np.float32))
        shade = (0.72 + 0.28 * (1 - u**2)) * (1 - 0.3 * np.exp(-dy / (0.035 * W)))
        for eu in TOOTH_EDGES_U:  # faint gaps between teeth; fades down the tooth
            shade = shade * (1 - 0.07 * np.exp(-(((u - eu) * W / 2) / 0.6) ** 2) * (0.4 + 0.6 * t))
        teeth = self.teeth_rgb * shade[..., None]
        if self.teeth_alpha.max() > 0:
            shift = disp[13] / rig.region.scale  # real teeth move with the upper lip's centre
            m = np.float32([[1, 0, shift[0] - x0], [0, 1, shift[1] - y0]])
            size = (x1 - x0, y1 - y0)
            real = cv2.warpAffine(self.rest_roi, m, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            ra = cv2.warpAffine(self.teeth_alpha, m, size, flags=cv2.INTER_LINEAR)
            teeth += (real - teeth) * ra[..., None]
            a_up = np.maximum(a_up, ra)
        layer += (teeth - layer) * a_up[..., None]

        roi = work[y0:y1, x0:x1].astype(np.float32)
        work[y0:y1, x0:x1] = np.clip(roi + (layer - roi) * alpha[..., None] + 0.5, 0, 255).astype(np.uint8)
        return work

    @staticmethod
    def _lip_seam(work: np.ndarray, q: np.ndarray, gap_c: float, W: float) -> None:
        """Closed lips meet in a soft dark line; drawing it hides the resampled seam where they were
        pulled together (and the corner pockets of a smile). Fades out as the lips part."""
        strength = SEAM_DARKEN * (1 - float(smoothstep(gap_c, 0.0, 0.12 * W, np.float32)))
        if strength <= 0.01:
            return
        line = np.concatenate([q[[61]], (q[UPPER_INNER] + q[LOWER_INNER]) / 2, q[[291]]])
        s = work.shape[0]
        x0, y0 = np.maximum(np.floor(line.min(0)).astype(int) - 3, 0)
        x1, y1 = np.minimum(np.ceil(line.max(0)).astype(int) + 4, s)
        if x1 - x0 < 2 or y1 - y0 < 2:
            return
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        cv2.polylines(mask, [np.round((line - (x0, y0)) * 8).astype(np.int32)], False, 255, 1, cv2.LINE_AA, shift=3)
        m = cv2.GaussianBlur(mask.astype(np.float32) / 255, (0, 0), 0.5 + 0.01 * W)
        roi = work[y0:y1, x0:x1].astype(np.float32)
        work[y0:y1, x0:x1] = np.clip(roi * (1 - strength * m[..., None]) + 0.5, 0, 255).astype(np.uint8)
