import json
from pathlib import Path

import numpy as np
import pytest

from realtime.face.geometry import (AffineTracker, FaceGeometry, paste_back, paste_mask, similarity_from_points,
                                    to_crop_affine, warp_face)

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "latentsync_affine_template.json"
REF = json.loads(FIXTURE.read_text())
# LatentSync computes the matrices in float32 (torch); translations near 760 carry ~6e-5 rounding.
ATOL = 2.5e-4


@pytest.mark.parametrize("res", [256, 512])
def test_template_and_sizes(res):
    ref = REF[str(res)]
    g = FaceGeometry(res)
    assert g.ratio == pytest.approx(ref["ratio"])
    np.testing.assert_allclose(g.template, ref["face_template_xy"], atol=1e-9)
    assert list(g.face_size) == ref["face_size_wh"]


@pytest.mark.parametrize("res", [256, 512])
def test_worked_example_matrices(res):
    ex = REF[str(res)]["example"]
    g = FaceGeometry(res)
    m, bias = similarity_from_points(np.round(ex["landmarks3_frame0"]), g.template, smooth=False)
    assert bias is None
    np.testing.assert_allclose(m, ex["M_smooth_false_frame0"], atol=ATOL, rtol=0)
    tracker = AffineTracker(g, smooth=True)
    m0 = tracker.update(np.array(ex["landmarks3_frame0"]))
    m1 = tracker.update(np.array(ex["landmarks3_frame1"]))
    assert m0.dtype == np.float32
    np.testing.assert_allclose(m0, ex["M_smooth_true_frame0"], atol=ATOL, rtol=0)
    np.testing.assert_allclose(m1, ex["M_smooth_true_frame1_after_frame0"], atol=ATOL, rtol=0)
    # the smoothing changes only the translation, and by less than a pixel
    np.testing.assert_allclose(m0[:, :2], np.float32(m[:, :2]), atol=1e-6)
    assert 0.01 < np.abs(m0[:, 2] - m[:, 2]).max() < 1.0


def test_no_reflection_for_mirrored_points():
    g = FaceGeometry(256)
    pts = g.template[[1, 0, 2]] / g.ratio * 3 + 100  # left and right swapped
    m, _ = similarity_from_points(pts, g.template, smooth=False)
    assert np.linalg.det(m[:, :2]) > 0


def test_template_points_land_on_template_in_crop():
    g = FaceGeometry(256)
    # a similarity cannot hit three arbitrary points; a scaled, shifted copy of the template maps exactly
    pts = g.template * 1.7 + [40.0, 25.0]
    m, _ = similarity_from_points(pts, g.template, smooth=False)
    np.testing.assert_allclose(np.c_[pts, np.ones(3)] @ m.T, g.template, atol=1e-9)
    a = to_crop_affine(m, g)
    expected = (g.template + 0.5) * [256 / 210, 256 / 280] - 0.5
    np.testing.assert_allclose(np.c_[pts, np.ones(3)] @ a.T.astype(np.float64), expected, atol=1e-3)


def test_warp_fill_value_and_shape():
    g = FaceGeometry(256)
    frame = np.zeros((64, 64, 3), np.uint8)
    m = np.array([[1.0, 0, -1000], [0, 1.0, -1000]], np.float32)  # entirely outside the frame
    crop = warp_face(frame, m, g)
    assert crop.shape == (256, 256, 3) and (crop == 127).all()


@pytest.mark.parametrize("res, limit", [(256, 2.0), (512, 1.0)])
def test_paste_back_roundtrip_on_astronaut(astronaut, astronaut_landmarks, res, limit):
    from realtime.face.landmarks import facemesh_alignment_points

    img, lm = astronaut, astronaut_landmarks
    g = FaceGeometry(res)
    m = AffineTracker(g).update(facemesh_alignment_points(lm))
    crop = warp_face(img, m, g)
    out = paste_back(img, crop, m, g)
    inside = _face_region(lm, img.shape[:2])
    err = np.abs(out.astype(np.float64) - img).mean(axis=2)
    assert err[inside].mean() < limit  # measured 1.41 at 256, 0.68 at 512
    assert err[~inside].mean() < 0.1


def test_paste_mask_matches_full_frame(astronaut_track):
    img, lm, m = astronaut_track
    g = FaceGeometry(256)
    # ROI-restricted mask equals LatentSync's full-frame construction
    pm = paste_mask(m, img.shape[:2], g)
    full = _full_frame_mask(m, img.shape[:2], g)
    roi_full = full[pm.y0 : pm.y1, pm.x0 : pm.x1]
    # (cv2 warps quantise coordinates to 1/32 px, so a shifted origin rounds a few edge weights differently)
    np.testing.assert_allclose(pm.alpha[..., 0], roi_full, atol=3e-3)
    assert full.sum() == pytest.approx(pm.alpha.sum(), rel=1e-4)


def _face_region(lm, hw):
    import cv2

    m = np.zeros(hw, np.uint8)
    cv2.fillConvexPoly(m, cv2.convexHull(lm.astype(np.int32)), 1)
    return m.astype(bool)


def _full_frame_mask(m, hw, g):
    import cv2

    h, w = hw
    inv = cv2.invertAffineTransform(m.astype(np.float64))
    inv_mask = cv2.warpAffine(np.ones(g.face_size[::-1], np.float32), inv, (w, h))
    inv_mask = cv2.erode(inv_mask, np.ones((2, 2), np.uint8))
    w_edge = int(inv_mask.sum() ** 0.5) // 20
    inv_mask = cv2.erode(inv_mask, np.ones((2 * w_edge, 2 * w_edge), np.uint8))
    return cv2.GaussianBlur(inv_mask, (2 * w_edge + 1, 2 * w_edge + 1), 0)
