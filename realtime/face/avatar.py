"""The prepared face track both renderers consume: frames, landmarks, LatentSync affines, crops, mask.

An avatar directory holds (T = number of source frames, R = resolution, H x W = frame size):

- ``avatar.json``      metadata (see ``realtime.face.avatar_meta.AvatarMeta``)
- ``frames.npy``       (T, H, W, 3) uint8 RGB, memory-mapped on load
- ``landmarks.npy``    (T, 478, 2) float32 FaceMesh pixel coordinates, NaN where no face was found
- ``points3.npy``      (T, 3, 2) float32 alignment points [image-left brow, image-right brow, nose]
- ``face_affine.npy``  (T, 2, 3) float32 LatentSync's matrix, frame -> 75r x 100r face (210 x 280 at 256)
- ``affine.npy``       (T, 2, 3) float32 frame -> R x R aligned crop (face matrix + the square resize)
- ``crops.npy``        (T, R, R, 3) uint8 aligned crops (all 127 where no face)
- ``mask.png``         LatentSync's mouth mask at R (for inspection; ``Avatar.mask`` is rebuilt exactly)
- ``latents.npy``      optional (T, 2, 4, R/8, R/8) float32 VAE latents [reference, masked], scaled

Frame indices past the end loop forward then backward like LatentSync's ``loop_video``:
0 .. T-1, T-1 .. 0, 0 .. T-1, ...
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from realtime.config import cache_root
from realtime.errors import MediaInputError
from realtime.face.avatar_meta import AVATAR_VERSION, META_FILE, AvatarMeta
from realtime.face.geometry import FaceGeometry, PasteMask, paste_back, paste_mask, to_crop_affine
from realtime.face.mask import fixed_mask
from realtime.face.prepare import load_vae, write_track

log = logging.getLogger(__name__)

_PASTE_CACHE = 64  # soft paste masks kept per avatar (one per source frame; a photo needs one)


def pingpong_index(i: int, n: int) -> int:
    """Source frame of looped index i >= 0: forward, then backward (ends repeated), like LatentSync."""
    if i < 0:
        raise IndexError(f"frame index must be >= 0, got {i}")
    if n <= 1:
        return 0
    k = i % (2 * n)
    return k if k < n else 2 * n - 1 - k


class Avatar:
    """A prepared face track. Cheap to load (arrays are memory-mapped); safe to share across threads."""

    def __init__(self, meta: AvatarMeta, frames: np.ndarray, landmarks: np.ndarray, points3: np.ndarray,
                 face_affine: np.ndarray, crops: np.ndarray, latents: np.ndarray | None = None,
                 directory: Path | None = None):
        t = meta.num_frames
        assert frames.shape[0] == landmarks.shape[0] == face_affine.shape[0] == crops.shape[0] == t, "frame counts differ"
        self.meta = meta
        self.directory = directory
        self.geometry = FaceGeometry(meta.resolution)
        self._frames = frames
        self._landmarks = landmarks
        self._points3 = points3
        self._face_affine = face_affine
        self._crop_affine = np.stack([_crop_affine_or_nan(m, self.geometry) for m in face_affine]) if t else face_affine
        self._crops = crops
        self._latents = latents
        self._has_face = ~np.isnan(face_affine.reshape(t, -1)).any(axis=1)
        self._paste_cache: OrderedDict[int, PasteMask] = OrderedDict()
        self._lock = threading.Lock()

    # ---- loading -------------------------------------------------------------------------------
    @classmethod
    def load(cls, directory: str | Path) -> "Avatar":
        directory = Path(directory)
        meta_path = directory / META_FILE
        if not meta_path.is_file():
            raise MediaInputError(f"{directory} is not a prepared avatar (no {META_FILE}): "
                                  "create it with `syncvid prepare-avatar --image|--video SRC --out DIR`")
        try:
            meta = AvatarMeta.from_dict(json.loads(meta_path.read_text()), str(meta_path))
        except (json.JSONDecodeError, TypeError) as e:
            raise MediaInputError(f"{meta_path} is corrupt ({e}): prepare the avatar again") from e
        if meta.version != AVATAR_VERSION:
            raise MediaInputError(f"avatar {directory} has format version {meta.version}, this engine reads "
                                  f"{AVATAR_VERSION}: prepare it again with `syncvid prepare-avatar`")

        def arr(name: str, mmap: bool = True) -> np.ndarray:
            try:
                return np.load(directory / name, mmap_mode="r" if mmap else None, allow_pickle=False)
            except (OSError, ValueError) as e:
                raise MediaInputError(f"avatar file {directory / name} is missing or corrupt ({e}): "
                                      "prepare the avatar again") from e

        latents = arr("latents.npy") if meta.latents else None
        try:
            return cls(meta, arr("frames.npy"), arr("landmarks.npy", False), arr("points3.npy", False),
                       arr("face_affine.npy", False), arr("crops.npy"), latents, directory)
        except AssertionError as e:
            raise MediaInputError(f"avatar {directory} is inconsistent ({e}): prepare it again") from e

    # ---- properties ----------------------------------------------------------------------------
    @property
    def num_frames(self) -> int:
        return self.meta.num_frames

    @property
    def fps(self) -> float:
        return self.meta.fps

    @property
    def is_photo(self) -> bool:
        return self.meta.kind == "image"

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of the full frames."""
        return tuple(self.meta.frame_size)

    @property
    def resolution(self) -> int:
        return self.meta.resolution

    @property
    def frames_without_face(self) -> list[int]:
        return list(self.meta.frames_without_face)

    @property
    def mask(self) -> np.ndarray:
        """(R, R) float64 LatentSync mouth mask, 1 = keep, 0 = repaint."""
        return fixed_mask(self.resolution, self.meta.mask)

    @property
    def has_latents(self) -> bool:
        return self._latents is not None

    # ---- per-frame access (any i >= 0, ping-pong looped) -----------------------------------------
    def source_index(self, i: int) -> int:
        return pingpong_index(int(i), self.num_frames)

    def frame(self, i: int) -> np.ndarray:
        """(H, W, 3) uint8 RGB (read-only view; copy before modifying)."""
        return self._frames[self.source_index(i)]

    def has_face(self, i: int) -> bool:
        return bool(self._has_face[self.source_index(i)])

    def landmarks(self, i: int) -> np.ndarray | None:
        """(478, 2) float32 FaceMesh (x, y) pixel coordinates in the frame, or None without a face."""
        j = self.source_index(i)
        return np.array(self._landmarks[j]) if self._has_face[j] else None

    def alignment_points(self, i: int) -> np.ndarray | None:
        j = self.source_index(i)
        return np.array(self._points3[j]) if self._has_face[j] else None

    def affine(self, i: int) -> np.ndarray | None:
        """(2, 3) float32 frame -> R x R aligned crop pixels, or None without a face."""
        j = self.source_index(i)
        return self._crop_affine[j].copy() if self._has_face[j] else None

    def face_affine(self, i: int) -> np.ndarray | None:
        """(2, 3) float32 LatentSync's own matrix: frame -> face of ``geometry.face_size`` (210 x 280 at 256)."""
        j = self.source_index(i)
        return self._face_affine[j].copy() if self._has_face[j] else None

    def crop(self, i: int) -> np.ndarray:
        """(R, R, 3) uint8 aligned face crop (all 127 for a frame without a face)."""
        return self._crops[self.source_index(i)]

    def latents(self, i: int) -> np.ndarray:
        """(2, 4, R/8, R/8) float32: [reference latents, masked-image latents], already scaled."""
        if self._latents is None:
            raise MediaInputError("this avatar was prepared without a VAE: run `syncvid prepare-avatar ... --vae DIR`")
        return self._latents[self.source_index(i)]

    def paste_back(self, i: int, crop: np.ndarray, base: np.ndarray | None = None) -> np.ndarray:
        """Full (H, W, 3) uint8 frame with an R x R crop blended back in LatentSync's soft way.

        ``base`` replaces the stored frame as background (e.g. a frame with idle motion applied); a
        frame without a face comes back unchanged.
        """
        j = self.source_index(i)
        frame = self._frames[j] if base is None else base
        if not self._has_face[j]:
            return np.array(frame)
        assert crop.shape == (self.resolution, self.resolution, 3), crop.shape
        return paste_back(frame, crop, self._face_affine[j], self.geometry, self.paste_mask(j))

    def paste_mask(self, source_index: int) -> PasteMask:
        """Soft blend mask of a source frame (cached: paste-back then costs one warp and a blend)."""
        with self._lock:
            m = self._paste_cache.get(source_index)
            if m is not None:
                self._paste_cache.move_to_end(source_index)
                return m
        m = paste_mask(self._face_affine[source_index], self.size, self.geometry)
        with self._lock:
            self._paste_cache[source_index] = m
            while len(self._paste_cache) > _PASTE_CACHE:
                self._paste_cache.popitem(last=False)
        return m

    def __repr__(self) -> str:
        return (f"Avatar({self.meta.kind}, {self.num_frames} frames, {self.size[1]}x{self.size[0]}, "
                f"R={self.resolution}, {self.meta.num_faces} with face, dir={self.directory})")


def _crop_affine_or_nan(face_affine: np.ndarray, geometry: FaceGeometry) -> np.ndarray:
    if np.isnan(face_affine).any():
        return np.full((2, 3), np.nan, np.float32)
    return to_crop_affine(face_affine, geometry)


def prepare_avatar(source: str | Path | np.ndarray, out_dir: str | Path, kind: str = "video", resolution: int = 256,
                   vae: Any = None, max_frames: int | None = None, progress: bool = True,
                   detector: str = "facemesh", replace: bool = True,
                   source_name: str | None = None) -> Avatar:
    """Computes and stores the face track of a video or photo (see ``realtime.face.prepare``).

    ``source``: a path, or an (H, W, 3) uint8 RGB array for ``kind="image"``. An existing avatar in
    ``out_dir`` is replaced (``replace=False`` keeps a valid one, for racing cache fills). The
    directory is written under a temporary name and renamed into place at the end, so readers (and
    concurrent preparations of the same directory) never see a half-written avatar.
    """
    if kind not in ("video", "image"):
        raise ValueError(f"kind must be 'video' or 'image', got {kind!r}")
    if resolution not in (256, 512):
        raise ValueError(f"resolution must be 256 or 512 (LatentSync's crops), got {resolution}")
    if isinstance(vae, (str, Path)):
        vae = load_vae(vae)  # fail on a bad VAE directory before the slow landmark pass
    out_dir = Path(out_dir)
    _check_out_dir(out_dir)  # before the slow work; again when publishing (another process may race)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        write_track(source, tmp, kind, resolution, vae, max_frames, progress, detector, source_name)
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; an avatar is ordinary user data
        _publish(tmp, out_dir, replace)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return Avatar.load(out_dir)


def _check_out_dir(out_dir: Path) -> None:
    """An existing ``out_dir`` must be an avatar (replaced) or empty: never someone's other files."""
    if out_dir.is_dir() and not (out_dir / META_FILE).is_file() and any(out_dir.iterdir()):
        raise MediaInputError(f"{out_dir} exists and is not an avatar directory: choose an empty or new --out")


def _publish(tmp: Path, out_dir: Path, replace: bool = True) -> None:
    """Renames the finished directory into place; an existing avatar there is replaced, or, with
    ``replace=False`` (cache fills racing each other), kept when it loads."""
    if out_dir.exists() and not replace:
        try:
            Avatar.load(out_dir)
            return
        except MediaInputError:
            pass
    if out_dir.exists():
        _check_out_dir(out_dir)
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}-{time.monotonic_ns()}")
        os.rename(out_dir, old)
        shutil.rmtree(old, ignore_errors=True)
    try:
        os.rename(tmp, out_dir)
    except OSError:
        # another process published the same directory first (concurrent first use): keep theirs
        if not (out_dir / META_FILE).is_file():
            raise


def default_cache_dir() -> Path:
    return cache_root() / "avatars" / "default"


def default_avatar(cache_dir: str | Path | None = None, resolution: int = 256) -> Avatar:
    """scikit-image's public-domain astronaut photo, prepared on first use and cached.

    Preparation writes to a temporary directory renamed into place, so concurrent first uses never see
    a half-written avatar; a stale or corrupt cache is prepared again.
    """
    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if resolution != 256:
        directory = directory.with_name(f"{directory.name}_{resolution}")
    try:
        avatar = Avatar.load(directory)
        if avatar.resolution == resolution and avatar.meta.num_faces == 1:
            return avatar
    except MediaInputError as e:
        if directory.exists():
            log.warning("default avatar cache %s is unusable (%s); preparing it again", directory, e)
    import skimage.data  # scikit-image is slow to import: only a first use prepares the photo

    log.info("preparing the default avatar (astronaut photo) in %s", directory)
    return prepare_avatar(skimage.data.astronaut(), directory, kind="image", resolution=resolution, progress=False,
                          replace=False, source_name="skimage.data.astronaut (public domain photo)")
