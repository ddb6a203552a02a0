import numpy as np
import pytest


@pytest.fixture(scope="session")
def astronaut():
    skimage_data = pytest.importorskip("skimage.data")
    return skimage_data.astronaut()


@pytest.fixture(scope="session")
def astronaut_landmarks(astronaut):
    from realtime.face.landmarks import FaceMeshDetector

    with FaceMeshDetector(static=True) as det:
        lm = det.detect(astronaut)
    assert lm is not None
    return lm


@pytest.fixture(scope="session")
def astronaut_track(astronaut, astronaut_landmarks):
    """(image, FaceMesh landmarks, LatentSync face matrix at 256)."""
    from realtime.face.geometry import AffineTracker, FaceGeometry
    from realtime.face.landmarks import facemesh_alignment_points

    m = AffineTracker(FaceGeometry(256)).update(facemesh_alignment_points(astronaut_landmarks))
    return astronaut, astronaut_landmarks, m
