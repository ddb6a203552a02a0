from fractions import Fraction
from pathlib import Path

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


@pytest.fixture(scope="session")
def media():
    """Writers of synthetic test media (written into tmp_path, never committed)."""
    import types

    return types.SimpleNamespace(write_video=write_video, shifted_astronaut_frames=shifted_astronaut_frames)


def write_video(path: Path, frames: list[np.ndarray], fps: int = 25) -> Path:
    import av

    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"crf": "12", "preset": "ultrafast"}
        for img in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def shifted_astronaut_frames(img: np.ndarray, n: int, blank: tuple[int, ...] = ()) -> list[np.ndarray]:
    """The astronaut photo drifting 2 px per frame to the right and down; ``blank`` frames are flat grey."""
    frames = []
    for i in range(n):
        if i in blank:
            frames.append(np.full_like(img, 100))
            continue
        m = np.array([[1.0, 0.0, 2.0 * i], [0.0, 1.0, 1.0 * i]])
        import cv2

        frames.append(cv2.warpAffine(img, m, img.shape[1::-1], borderMode=cv2.BORDER_REPLICATE))
    return frames
