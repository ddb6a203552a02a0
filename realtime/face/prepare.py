"""Avatar preparation: detect landmarks once per frame, align, crop, and store everything on disk.

Frames stream from the decoder straight into ``.npy`` files, so a long video never has to fit in
memory. ``write_track`` fills a fresh directory; ``realtime.face.avatar.prepare_avatar`` writes it
under a temporary name and renames it into place, so readers never see a half-written avatar.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from realtime.errors import MediaInputError, WeightsError
from realtime.face.avatar_meta import META_FILE, AvatarMeta
from realtime.face.geometry import FILL_VALUE, AffineTracker, FaceGeometry, warp_face
from realtime.face.landmarks import NUM_FACEMESH_POINTS, FaceMeshDetector, make_detector
from realtime.face.mask import fixed_mask
from realtime.face.video_io import TRACK_FPS, iter_video_frames, read_image, video_info

log = logging.getLogger(__name__)

_NPY_HEADER_BYTES = 128  # fixed header size so the frame count can be patched in after streaming


class NpyStreamWriter:
    """Appends equally shaped uint8 arrays to an ``.npy`` file whose length is unknown up front."""

    def __init__(self, path: Path):
        self.path = path
        self.count = 0
        self.item_shape: tuple[int, ...] | None = None
        self._f: BinaryIO = open(path, "wb")
        self._f.write(b"\0" * _NPY_HEADER_BYTES)

    def append(self, item: np.ndarray) -> None:
        item = np.ascontiguousarray(item, dtype=np.uint8)
        if self.item_shape is None:
            self.item_shape = item.shape
        elif item.shape != self.item_shape:
            raise MediaInputError(f"frame {self.count} has shape {item.shape}, earlier frames {self.item_shape}: "
                                  "re-encode the video with a constant frame size")
        self._f.write(item.tobytes())
        self.count += 1

    def close(self) -> None:
        shape = (self.count, *(self.item_shape or (0,)))
        header = "{'descr': '|u1', 'fortran_order': False, 'shape': %r, }" % (shape,)
        pad = _NPY_HEADER_BYTES - 10 - len(header) - 1
        assert pad >= 0, "npy header too long"
        raw = b"\x93NUMPY\x01\x00" + (_NPY_HEADER_BYTES - 10).to_bytes(2, "little") + (header + " " * pad + "\n").encode()
        self._f.seek(0)
        self._f.write(raw)
        self._f.close()


def write_track(source: str | Path | np.ndarray, directory: Path, kind: str, resolution: int, vae: Any,
                max_frames: int | None, progress: bool, detector: str, source_name: str | None) -> AvatarMeta:
    """Writes the face track of ``source`` and its ``avatar.json`` into the empty ``directory``."""
    meta = _compute(source, directory, kind, resolution, max_frames, progress, detector)
    if source_name:
        meta.source = source_name
    if vae is not None:
        meta.latents = _encode_latents(vae, directory, meta, progress)
    (directory / META_FILE).write_text(meta.to_json())
    return meta


def _source_frames(source, kind: str, max_frames: int | None):
    """(frame iterator, expected count or None, source name, fps)."""
    if isinstance(source, np.ndarray):
        if source.ndim != 3 or source.shape[2] != 3 or source.dtype != np.uint8:
            raise MediaInputError(f"image array must be (H, W, 3) uint8 RGB, got {source.shape} {source.dtype}")
        return iter([source]), 1, "array", float(TRACK_FPS)
    path = Path(source)
    if kind == "image":
        return iter([read_image(path)]), 1, str(path), float(TRACK_FPS)
    _, duration, _ = video_info(path)
    expected = int(round(duration * TRACK_FPS)) if duration else None
    if max_frames is not None and expected is not None:
        expected = min(expected, max_frames)
    return iter_video_frames(path, TRACK_FPS, max_frames), expected, str(path), float(TRACK_FPS)


def _compute(source, tmp: Path, kind: str, resolution: int, max_frames: int | None, progress: bool,
             detector_name: str) -> AvatarMeta:
    import cv2  # heavy; realtime.face.avatar imports this module and must stay light
    from tqdm import tqdm  # only a preparation shows progress

    frames_iter, expected, name, fps = _source_frames(source, kind, max_frames)
    geometry = FaceGeometry(resolution)
    tracker = AffineTracker(geometry, smooth=True)
    static = kind == "image"
    facemesh = FaceMeshDetector(static=static)
    # FaceMesh landmarks are always stored (the embedded renderer needs its topology); another detector
    # only supplies the alignment points, as InsightFace does in LatentSync.
    aligner = facemesh if detector_name == "facemesh" else make_detector(detector_name, static=static)
    frames_w, crops_w = NpyStreamWriter(tmp / "frames.npy"), NpyStreamWriter(tmp / "crops.npy")
    landmarks, points3, affines, no_face = [], [], [], []
    nan_lm = np.full((NUM_FACEMESH_POINTS, 2), np.nan, np.float32)
    empty_crop = np.full((resolution, resolution, 3), FILL_VALUE, np.uint8)
    bar = tqdm(total=expected, unit="frame", desc="prepare-avatar", disable=not progress)
    try:
        for i, frame in enumerate(frames_iter):
            frames_w.append(frame)
            lm = facemesh.detect(frame)
            p3 = None
            if lm is not None:
                if aligner is facemesh:
                    p3 = facemesh.alignment_points(lm)
                else:
                    other = aligner.detect(frame)
                    p3 = aligner.alignment_points(other) if other is not None else None
            if p3 is None:
                no_face.append(i)
                landmarks.append(nan_lm)
                points3.append(np.full((3, 2), np.nan, np.float32))
                affines.append(np.full((2, 3), np.nan, np.float32))
                crops_w.append(empty_crop)
            else:
                m = tracker.update(p3)
                landmarks.append(lm.astype(np.float32))
                points3.append(p3.astype(np.float32))
                affines.append(m)
                crops_w.append(warp_face(frame, m, geometry))
            bar.update(1)
    finally:
        bar.close()
        frames_w.close()
        crops_w.close()
        facemesh.close()
        if aligner is not facemesh:
            aligner.close()
    t = frames_w.count
    if t == 0:
        raise MediaInputError(f"{name} contains no decodable frames: give a non-empty video or image")
    if static and len(no_face) == t:  # a single photo without a face can never be lip-synced
        raise MediaInputError(f"photo {name} has no face that FaceMesh can find: give a photo with one clearly "
                              "visible, roughly frontal face, at least about 100 px across")
    if no_face:
        log.warning("%s: no face found in %d of %d frames; they pass through unchanged", name, len(no_face), t)
    np.save(tmp / "landmarks.npy", np.stack(landmarks))
    np.save(tmp / "points3.npy", np.stack(points3))
    np.save(tmp / "face_affine.npy", np.stack(affines))
    cv2.imwrite(str(tmp / "mask.png"), np.round(fixed_mask(resolution) * 255).astype(np.uint8))
    h, w = frames_w.item_shape[:2]
    return AvatarMeta(source=name, kind=kind, fps=fps, resolution=resolution, num_frames=t, frame_size=(h, w),
                      num_faces=t - len(no_face), frames_without_face=no_face, detector=detector_name)


def load_vae(path: str | Path):
    """The diffusion path's VAE loader (owned by the renderer), imported lazily."""
    for module in ("realtime.render.vae_loader", "models.vae", "realtime.render.diffusion"):
        try:
            mod = __import__(module, fromlist=["load_vae"])
        except ImportError:
            continue
        if hasattr(mod, "load_vae"):
            return mod.load_vae(path)
    raise WeightsError(f"cannot encode latents with the VAE in {path}: this install has no VAE loader "
                       "(realtime.render.vae_loader.load_vae); prepare the avatar without --vae")


def _encode(vae: Any, images):
    """Scaled latents of (N, 3, H, W) images in [-1, 1]: the shared encoder when present (same convention)."""
    try:
        from models.vae import encode_latents  # imports torch and diffusers: only with a VAE
    except ImportError:
        encode_latents = None
    if encode_latents is not None:
        return encode_latents(vae, images)
    cfg = vae.config
    scaling, shift = float(cfg.scaling_factor or 1.0), float(getattr(cfg, "shift_factor", 0.0) or 0.0)
    enc = vae.encode(images)
    if hasattr(enc, "latent_dist"):  # AutoencoderKL: deterministic posterior mean instead of a sample
        return (enc.latent_dist.mean - shift) * scaling
    return (enc.latents - shift) * scaling


def _encode_latents(vae: Any, tmp: Path, meta: AvatarMeta, progress: bool, batch: int = 8) -> dict[str, Any]:
    """Stores [reference, masked] latents per frame, as LatentSync's pipeline feeds its UNet."""
    import torch  # only preparations with a VAE need it
    from tqdm import tqdm  # only a preparation shows progress

    crops = np.load(tmp / "crops.npy", mmap_mode="r")
    mask = torch.from_numpy(fixed_mask(meta.resolution, meta.mask).astype(np.float32))
    param = next(vae.parameters())
    cfg = getattr(vae, "config", None)
    scaling = float(getattr(cfg, "scaling_factor", 1.0) or 1.0)
    shift = float(getattr(cfg, "shift_factor", 0.0) or 0.0)
    out = None
    with torch.no_grad():
        for s in tqdm(range(0, len(crops), batch), desc="vae latents", disable=not progress):
            x = torch.from_numpy(np.array(crops[s : s + batch])).permute(0, 3, 1, 2).float() / 127.5 - 1.0
            both = torch.cat([x, x * mask]).to(param.device, param.dtype)  # masked: repaint region -> 0 (grey)
            lat = _encode(vae, both).float().cpu().numpy()
            n = x.shape[0]
            pair = np.stack([lat[:n], lat[n:]], axis=1)  # (n, 2, 4, h, w)
            if out is None:
                out = np.lib.format.open_memmap(tmp / "latents.npy", mode="w+", dtype=np.float32,
                                                shape=(len(crops), *pair.shape[1:]))
            out[s : s + n] = pair
    out.flush()
    del out
    return {"vae": type(vae).__name__, "scaling_factor": scaling, "shift_factor": shift,
            "order": ["reference", "masked"], "posterior": "mean"}
