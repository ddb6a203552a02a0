"""Offline rendering (``syncvid render``): audio file + avatar -> lip-synced H.264/AAC mp4.

audio -> Whisper features (T, 5, 384) -> per-frame blocks (N, 50, 384), N = floor(duration * fps)
-> ``Renderer.render_chunk`` over chunks of up to 16 frames (the same call the real-time server
makes; chunks start at multiples of the chunk length, so a stream with the same chunk length gives
the same frames) -> frames streamed into the mp4 with the audio (trimmed to N / fps) muxed as AAC.
Memory stays bounded for long audio: only one chunk of frames is held at a time.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from realtime.audio.cache import FeatureCache
from realtime.audio.features import Audio2Feature, chunk_features, num_video_frames
from realtime.audio.io import SAMPLE_RATE, DecodedAudio, load_audio, load_audio_native
from realtime.errors import AudioInputError, MediaInputError
from realtime.face.avatar import Avatar
from realtime.face.sources import prepared_from_file
from realtime.offline.video_writer import VideoWriter
from realtime.render.base import MAX_CHUNK, Renderer

log = logging.getLogger(__name__)


@dataclass
class RenderReport:
    out: Path
    frames: int
    fps: float
    audio_seconds: float
    frames_without_face: int
    render_seconds: float  # wall time of feature extraction + rendering + encoding

    @property
    def realtime_factor(self) -> float:
        """Render time / clip duration (below 1 is faster than real time)."""
        return self.render_seconds / max(self.frames / self.fps, 1e-9)


def load_or_prepare_avatar(video: str | None = None, image: str | None = None, avatar_dir: str | None = None,
                           resolution: int = 256, cache_dir: str | Path | None = None, progress: bool = True) -> Avatar:
    """An ``Avatar`` from a prepared directory, or a video/photo prepared once into a content-keyed cache."""
    if avatar_dir is not None:
        return Avatar.load(avatar_dir)
    kind, source = ("video", video) if video is not None else ("image", image)
    if source is None:
        raise MediaInputError("no avatar given: pass --video, --image or --avatar")
    return prepared_from_file(source, kind, resolution=resolution, cache_dir=cache_dir, progress=progress)


def audio_blocks_for(renderer: Renderer, features: np.ndarray, fps: float, num_frames: int) -> np.ndarray:
    """Per-frame audio blocks the renderer consumes (the embedded low-latency predictor has its own)."""
    predictor = getattr(renderer, "predictor", None)
    if predictor is not None and hasattr(predictor, "blocks"):
        return predictor.blocks(features, fps, num_frames)
    return chunk_features(features, fps, num_frames)


def render_file(renderer: Renderer, avatar: Avatar, audio: str | Path | DecodedAudio | np.ndarray, out: str | Path,
                fps: float = 25.0, chunk: int = MAX_CHUNK, seed: int = 0, whisper: str | None = None,
                features: np.ndarray | None = None, progress: bool = True, feature_cache: bool = True) -> RenderReport:
    """Renders ``audio`` onto ``avatar`` into the mp4 ``out``; returns what was written.

    ``features``: precomputed (T, 5, 384) Whisper taps (skips the encoder); otherwise they come from
    ``whisper`` (an openai-whisper checkpoint path; None = the embedded tiny.en) through the feature cache.
    """
    if not 1 <= chunk <= MAX_CHUNK:
        raise ValueError(f"chunk must be 1..{MAX_CHUNK} frames, got {chunk}")
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    t0 = time.perf_counter()
    if isinstance(audio, np.ndarray):
        samples = load_audio(audio)
        native, native_rate, name = samples, SAMPLE_RATE, "the audio"
    else:  # the output keeps the file's own rate and channels; the engine reads 16 kHz mono
        decoded = audio if isinstance(audio, DecodedAudio) else load_audio_native(audio)
        samples = decoded.engine_input()
        native, native_rate, name = decoded.samples, decoded.rate, decoded.name
    n = num_video_frames(len(samples), fps)
    if n == 0:
        raise AudioInputError(f"audio {name} is shorter than one video frame at {fps:g} fps; pass longer audio")
    if features is None:
        cache = None
        if feature_cache:
            cache = FeatureCache()
        features = Audio2Feature(whisper_path=whisper, cache=cache).audio2feat(samples)
    blocks = audio_blocks_for(renderer, features, fps, n)
    state = renderer.new_state(seed)
    no_face = 0
    # LatentSync trims the audio to the rendered frames' duration; so do we, so A/V lengths agree.
    audio_out = native[..., : int(round(n / fps * native_rate))]
    with VideoWriter(out, fps, audio=audio_out, audio_rate=native_rate) as writer, \
            tqdm(total=n, unit="frame", desc="render", disable=not progress) as bar:
        for s in range(0, n, chunk):
            idx = np.arange(s, min(s + chunk, n))
            result = renderer.render_chunk(avatar, idx, blocks[idx], state)
            no_face += sum(1 for i in idx if not avatar.has_face(int(i)))
            for frame in result.frames:
                writer.write(frame)
            bar.update(len(idx))
    report = RenderReport(Path(out), n, float(fps), len(samples) / SAMPLE_RATE, no_face, time.perf_counter() - t0)
    if no_face:
        log.warning("%d of %d frames had no detectable face and were passed through unchanged", no_face, n)
    return report
