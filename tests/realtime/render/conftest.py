"""Fixtures of the embedded-renderer tests: the astronaut photo with its FaceMesh landmarks."""

import numpy as np
import pytest


@pytest.fixture(scope="session")
def facemesh():
    """A still-image FaceMesh detector (the team's wrapper around mediapipe's legacy solution)."""
    pytest.importorskip("mediapipe")
    from realtime.face.landmarks import FaceMeshDetector

    det = FaceMeshDetector(static=True, max_faces=1)
    yield det
    det.close()


@pytest.fixture(scope="session")
def astronaut(facemesh):
    """(frame (512, 512, 3) uint8 RGB, landmarks (478, 2) float)."""
    from skimage import data

    img = data.astronaut()
    lm = facemesh.detect(img)
    assert lm is not None and lm.shape == (478, 2)
    return img, np.asarray(lm, np.float64)


def lip_gap(facemesh, image: np.ndarray) -> float:
    """Inner-lip gap |p13 - p14| over the eye-corner distance |p33 - p263|, as FaceMesh reads it."""
    lm = facemesh.detect(image)
    assert lm is not None, "FaceMesh found no face in the rendered frame"
    return float(np.linalg.norm(lm[13] - lm[14]) / np.linalg.norm(lm[33] - lm[263]))
