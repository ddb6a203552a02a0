"""The prepared-data layout `syncvid distill` reads (written by `syncvid prepare-data`), and batches of it.

Layout (format version 1)::

    DIR/dataset.json           {"format", "version", "resolution", "latent_size", "fps", "mask",
                                "vae": {"class", "scaling_factor"}, "features": {...}, "clips": [names]}
    DIR/clips/<name>/clip.json {"source", "frames", "faces": [bool per frame]}
    DIR/clips/<name>/crops.npy           (N, R, R, 3) uint8 aligned 25 fps face crops (optional)
    DIR/clips/<name>/latents.npy         (N, 2, 4, R/8, R/8) [reference, masked] VAE latents, scaled
    DIR/clips/<name>/audio_offline.npy   (N, 50, 384) float16 LatentSync's offline Whisper blocks
    DIR/clips/<name>/audio_streaming.npy (N, 50, 384) float16 the live StreamingAudioEncoder's blocks

The latents are what the renderer feeds the UNet (``prepare-avatar --vae`` stores the same pair);
the keep-mask is LatentSync's fixed mask named in ``dataset.json`` (``realtime.face.mask``).
Every error a user can cause is one ``DataError`` sentence naming the file.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from realtime.errors import SyncVidError
from realtime.face.mask import fixed_mask

log = logging.getLogger(__name__)

FORMAT = "syncvid-distill-data"
VERSION = 1
AUDIO_FILES = {"offline": "audio_offline.npy", "streaming": "audio_streaming.npy"}


class DataError(SyncVidError, ValueError):
    """A prepared-data directory that is missing, empty or inconsistent."""


@dataclass
class DatasetInfo:
    resolution: int
    latent_size: int
    fps: float
    mask: str  # LatentSync mask name (realtime.face.mask)
    vae: dict | None
    features: dict
    clips: list[str]

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, "version": VERSION, **self.__dict__}, indent=1)


def write_clip(root: Path, name: str, latents: np.ndarray | None, audio: dict[str, np.ndarray], faces: np.ndarray,
               source: str, crops: np.ndarray | None = None) -> None:
    """Writes one clip of N frames; ``audio`` maps "offline"/"streaming" to (N, 50, 384) blocks.
    Without ``latents`` (no VAE at preparation) the clip holds crops only and cannot be trained on."""
    n = len(faces)
    assert latents is None or (latents.ndim == 5 and latents.shape[:3] == (n, 2, 4)), \
        f"latents must be (N, 2, 4, h, w), got {None if latents is None else latents.shape}"
    assert all(len(a) == n for a in audio.values()), "every array needs one entry per frame"
    d = root / "clips" / name
    d.mkdir(parents=True, exist_ok=True)
    if latents is not None:
        np.save(d / "latents.npy", np.ascontiguousarray(latents, np.float32))
    for kind, blocks in audio.items():
        np.save(d / AUDIO_FILES[kind], np.ascontiguousarray(blocks, np.float16))  # half the disk, ~1e-3 relative
    if crops is not None:
        np.save(d / "crops.npy", np.ascontiguousarray(crops, np.uint8))
    (d / "clip.json").write_text(json.dumps({"source": source, "frames": n, "faces": [bool(f) for f in faces]}))


def write_index(root: Path, info: DatasetInfo) -> None:
    (root / "dataset.json").write_text(info.to_json())


@dataclass
class Clip:
    name: str
    latents: np.ndarray  # (N, 2, 4, h, w), memory-mapped
    audio: dict[str, np.ndarray]  # kind -> (N, 50, 384), memory-mapped
    starts: np.ndarray  # first frames of the windows whose frames all have a face


class DistillData:
    """A prepared-data directory: random windows of ``frames`` frames as UNet conditioning + audio."""

    def __init__(self, root: str | Path, frames: int, kinds: tuple[str, ...] = ("offline", "streaming"),
                 clips: list[str] | None = None):
        self.root = Path(root)
        self.info = read_info(self.root)
        self.frames = frames
        self.kinds = tuple(dict.fromkeys(kinds))
        names = self.info.clips if clips is None else clips
        self.clips = [c for c in (self._open(n) for n in names) if len(c.starts)]
        if not self.clips:
            raise DataError(f"data directory {self.root} has no clip with {frames} consecutive frames with a face; "
                            "prepare longer talking-face videos or lower data.frames")
        keep = torch.from_numpy(fixed_mask(self.info.resolution, self.info.mask).astype(np.float32))[None, None]
        h = self.info.latent_size
        self.latent_mask = F.interpolate(keep, size=(h, h))[0, 0]  # nearest, as the renderer resizes it
        self.windows = sum(len(c.starts) for c in self.clips)

    def _open(self, name: str) -> Clip:
        d = self.root / "clips" / name
        try:
            meta = json.loads((d / "clip.json").read_text())
            latents = np.load(d / "latents.npy", mmap_mode="r")
            audio = {k: np.load(d / AUDIO_FILES[k], mmap_mode="r") for k in self.kinds}
        except FileNotFoundError as e:
            hint = ("prepare it with `syncvid prepare-data VIDEOS --out DIR --vae VAE_DIR`" if "latents" in str(e)
                    else "prepare it again with `syncvid prepare-data`")
            raise DataError(f"clip {d} lacks {Path(e.filename).name}; {hint}") from None
        except (ValueError, OSError) as e:
            raise DataError(f"clip {d} cannot be read ({e}); prepare it again") from None
        n, h = int(meta["frames"]), self.info.latent_size
        if latents.shape != (n, 2, 4, h, h) or any(a.shape[:1] != (n,) or a.ndim != 3 for a in audio.values()):
            raise DataError(f"clip {d} is inconsistent: latents {latents.shape} and audio "
                            f"{[a.shape for a in audio.values()]} for {n} frames of latent size {h}; prepare it again")
        faces = np.asarray(meta["faces"], bool)
        # windows with a face in every frame: a faceless frame's crop is a grey square
        bad = np.concatenate([[0], np.cumsum(~faces)])
        starts = np.nonzero(bad[self.frames:] - bad[:-self.frames] == 0)[0] if n >= self.frames else np.zeros(0, int)
        return Clip(name, latents, audio, starts)

    def sample(self, rng: np.random.Generator, batch: int, other_reference: bool = False) -> dict[str, torch.Tensor]:
        """``batch`` random windows: conditioning (B, 9, F, h, w) = [mask, masked latents, reference
        latents] as the renderer builds it, target (B, 4, F, h, w) the frames' own latents, and
        audio_<kind> (B, F, 50, 384) float32 for every loaded feature kind.

        The reference is the frame itself, as at inference (the avatar's frame), or with
        ``other_reference`` another random window of the same clip, as LatentSync trains its UNet
        (so that the mouth must come from the audio)."""
        picks, refs = [], []
        for _ in range(batch):
            c = self.clips[int(rng.integers(len(self.clips)))]
            picks.append((c, int(c.starts[int(rng.integers(len(c.starts)))])))
            refs.append((c, int(c.starts[int(rng.integers(len(c.starts)))]) if other_reference else picks[-1][1]))
        return self.windows_at(picks, refs)

    def windows_at(self, picks: list[tuple[Clip, int]], refs: list[tuple[Clip, int]] | None = None) -> dict[str, torch.Tensor]:
        f = self.frames

        def latents(items, j):  # (B, 4, F, h, w) of latent kind j: 0 reference, 1 masked
            arr = np.stack([np.asarray(c.latents[s:s + f, j], np.float32) for c, s in items])
            return torch.from_numpy(arr).transpose(1, 2)

        b, h = len(picks), self.info.latent_size
        mask = self.latent_mask.expand(b, 1, f, h, h)
        target = latents(picks, 0)
        ref = target if refs is None or refs == picks else latents(refs, 0)
        out = {"conditioning": torch.cat([mask, latents(picks, 1), ref], dim=1), "target": target}
        for k in self.kinds:
            out[f"audio_{k}"] = torch.from_numpy(np.stack([np.asarray(c.audio[k][s:s + f], np.float32)
                                                           for c, s in picks]))
        return out


def read_info(root: Path) -> DatasetInfo:
    path = root / "dataset.json"
    if not root.is_dir():
        raise DataError(f"data directory {root} does not exist; create it with `syncvid prepare-data VIDEOS --out {root}`")
    if not path.is_file():
        raise DataError(f"{root} is not a prepared-data directory (no dataset.json); "
                        f"create it with `syncvid prepare-data VIDEOS --out {root}`")
    try:
        raw = json.loads(path.read_text())
    except ValueError as e:
        raise DataError(f"{path} is not valid JSON ({e}); prepare the data again") from None
    if raw.get("format") != FORMAT or raw.get("version") != VERSION:
        raise DataError(f"{path} is not {FORMAT} version {VERSION}; prepare the data again")
    fields = {k: raw.get(k) for k in DatasetInfo.__dataclass_fields__}
    if not fields["clips"]:
        raise DataError(f"data directory {root} holds no clips; prepare it from a folder of talking-face videos")
    return DatasetInfo(**fields)


def split_clips(info: DatasetInfo, eval_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """(train, eval) clip names; at least one clip stays for training."""
    names = list(info.clips)
    n_eval = min(len(names) - 1, round(eval_fraction * len(names))) if eval_fraction > 0 else 0
    order = np.random.default_rng(seed).permutation(len(names))
    held = sorted(names[i] for i in order[:n_eval])
    return [n for n in names if n not in held], held
