import numpy as np
import pytest

from realtime.errors import WeightsError
from realtime.face.landmarks import (EYE_OUTER_CORNERS, INNER_LIP_BOTTOM, INNER_LIP_TOP, MOUTH_CORNERS,
                                     NUM_FACEMESH_POINTS, FaceMeshDetector, InsightFaceDetector,
                                     facemesh_alignment_points, make_detector)


def test_facemesh_finds_astronaut_face(astronaut_landmarks):
    lm = astronaut_landmarks
    assert lm.shape == (NUM_FACEMESH_POINTS, 2) and lm.dtype == np.float32
    # the astronaut's face sits around x 170..280, y 60..200 of the 512 x 512 photo
    left, right = lm[MOUTH_CORNERS[0]], lm[MOUTH_CORNERS[1]]
    assert 190 < left[0] < 215 and 232 < right[0] < 258
    assert 130 < left[1] < 150 and 130 < right[1] < 150
    top, bottom = lm[INNER_LIP_TOP], lm[INNER_LIP_BOTTOM]
    assert left[0] < top[0] < right[0] and abs(top[0] - bottom[0]) < 3
    # she smiles with her teeth showing: the inner lips are apart, below the mouth corners
    eye_dist = np.linalg.norm(lm[EYE_OUTER_CORNERS[0]] - lm[EYE_OUTER_CORNERS[1]])
    assert 45 < eye_dist < 80
    assert 0.05 < (bottom[1] - top[1]) / eye_dist < 0.2
    assert top[1] > left[1]


def test_alignment_points_order_and_geometry(astronaut_landmarks):
    p = facemesh_alignment_points(astronaut_landmarks)
    assert p.shape == (3, 2)
    brow_l, brow_r, nose = p
    assert brow_l[0] < nose[0] < brow_r[0]  # [image-left brow, image-right brow, nose]
    assert nose[1] > max(brow_l[1], brow_r[1]) + 15
    # template proportions: brow distance 41, nose 20 below the brow line (ratio ~0.49)
    ratio = (nose[1] - (brow_l[1] + brow_r[1]) / 2) / np.linalg.norm(brow_r - brow_l)
    assert 0.35 < ratio < 0.8


def test_no_face_returns_none():
    with FaceMeshDetector(static=True) as det:
        assert det.detect(np.full((128, 128, 3), 90, np.uint8)) is None


def test_tracking_mode_matches_static(astronaut, astronaut_landmarks):
    with FaceMeshDetector(static=False) as det:
        first = det.detect(astronaut)
        second = det.detect(astronaut)  # tracked from the previous frame's landmarks
    assert first is not None and second is not None
    assert np.abs(first - astronaut_landmarks).mean() < 1.5
    assert np.abs(second - astronaut_landmarks).mean() < 3.0


def test_insightface_missing_is_clear_error(tmp_path):
    try:
        import insightface  # noqa: F401
    except ImportError:
        with pytest.raises(WeightsError, match="InsightFace is not installed"):
            make_detector("insightface")
    else:
        with pytest.raises(WeightsError, match="models not found"):
            InsightFaceDetector(root=tmp_path)


def test_unknown_detector():
    with pytest.raises(ValueError, match="unknown landmark detector"):
        make_detector("dlib")
