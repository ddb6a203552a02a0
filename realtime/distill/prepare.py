"""`syncvid prepare-data`: talking-face videos -> the prepared-data layout ``realtime.distill.data`` reads.

Each video goes through the same code as ``syncvid prepare-avatar`` (25 fps resampling, FaceMesh or
InsightFace landmarks, LatentSync's affine alignment and crops, VAE latents of the crop and of the
masked crop) and its audio through both feature paths the engine has: LatentSync's offline Whisper
blocks (what the teacher was trained on) and the live ``StreamingAudioEncoder``'s blocks with its
bounded look-ahead (what the student sees when serving). The face track's full frames are not kept.
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from realtime.audio.features import FEATURE_VERSION, num_video_frames
from realtime.audio.io import load_audio
from realtime.audio.whisper_loader import load_whisper
from realtime.distill.data import DataError, DatasetInfo, write_clip, write_index
from realtime.errors import AudioInputError, MediaInputError
from realtime.face.avatar import prepare_avatar
from realtime.render.vae_loader import load_vae
from realtime.visemes.features import offline_blocks, streaming_blocks
from realtime.visemes.windows import FULL

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v")
FPS = 25.0  # LatentSync's frame rate: the face track resamples to it, the audio blocks are per frame


@dataclass
class PrepareReport:
    clips: list[str] = field(default_factory=list)
    frames: int = 0
    frames_without_face: int = 0
    skipped: list[str] = field(default_factory=list)  # "video: why"


def find_videos(videos_dir: str | Path) -> list[Path]:
    root = Path(videos_dir)
    if not root.is_dir():
        raise DataError(f"videos directory {root} does not exist; pass a folder of talking-face videos")
    videos = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
    if not videos:
        raise DataError(f"no videos ({', '.join(VIDEO_SUFFIXES)}) in {root}; pass a folder of talking-face videos")
    return videos


def clip_name(video: Path, root: Path, taken: set[str]) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(video.relative_to(root).with_suffix("")).replace("/", "__"))
    name, k = stem, 1
    while name in taken:
        k += 1
        name = f"{stem}_{k}"
    taken.add(name)
    return name


def prepare_data(videos_dir: str | Path, out: str | Path, resolution: int = 256, vae: str | Path | None = None,
                 whisper: str | Path | None = None, max_frames: int | None = None, detector: str = "facemesh",
                 progress: bool = True) -> PrepareReport:
    """Prepares every video under ``videos_dir`` into ``out`` (which must be new or empty)."""
    root, out = Path(videos_dir), Path(out)
    videos = find_videos(root)
    if out.exists() and any(out.iterdir()):
        raise DataError(f"{out} is not empty; pass a new --out folder")
    vae_model = load_vae(vae) if vae else None  # a bad VAE folder fails before the slow passes
    model = load_whisper(whisper)
    out.mkdir(parents=True, exist_ok=True)
    report, taken = PrepareReport(), set()
    work = Path(tempfile.mkdtemp(prefix=".prepare-", dir=out))
    try:
        for video in videos:
            try:
                audio = load_audio(video)
                avatar = prepare_avatar(video, work / "track", kind="video", resolution=resolution, vae=vae_model,
                                        max_frames=max_frames, progress=progress, detector=detector)
            except (AudioInputError, MediaInputError) as e:
                log.warning("skipping %s: %s", video, e)
                report.skipped.append(f"{video}: {e}")
                continue
            n = min(avatar.num_frames, num_video_frames(len(audio), FPS))
            if n == 0:
                report.skipped.append(f"{video}: no whole frame of audio and video")
                continue
            blocks = {"offline": offline_blocks(model, audio, FULL, FPS)[:n],
                      "streaming": streaming_blocks(model, audio, FULL, FPS)[:n]}
            faces = np.array([avatar.has_face(i) for i in range(n)])
            latents = np.stack([avatar.latents(i) for i in range(n)]) if avatar.has_latents else None
            name = clip_name(video, root, taken)
            write_clip(out, name, latents, blocks, faces, source=str(video),
                       crops=np.stack([avatar.crop(i) for i in range(n)]))
            report.clips.append(name)
            report.frames += n
            report.frames_without_face += int((~faces).sum())
            log.info("%s: %d frames (%d without a face)", name, n, int((~faces).sum()))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if not report.clips:
        raise DataError(f"none of the {len(videos)} videos in {root} could be prepared: " + "; ".join(report.skipped))
    vae_info = None if vae_model is None else {"class": type(vae_model).__name__,
                                                 "scaling_factor": float(vae_model.config.scaling_factor)}
    write_index(out, DatasetInfo(
        resolution=resolution, latent_size=resolution // 8, fps=FPS, mask="mask", vae=vae_info,
        features={"offline": f"{FEATURE_VERSION}, whisper {whisper or 'embedded tiny.en'}",
                  "streaming": f"StreamingAudioEncoder block (4, 6), {FULL.lookahead_ms:g} ms look-ahead, 40 ms pushes"},
        clips=report.clips))
    return report
