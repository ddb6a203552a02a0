"""Per-frame Whisper feature blocks for the viseme model, for any look-ahead window.

Two ways to compute them:

- ``offline_blocks``: LatentSync's features of the whole clip (30 s windows, the encoder sees the
  whole window in both directions), cut per frame with ``window``. For the full window this is
  exactly LatentSync's per-frame block.
- ``causal_blocks``: what a streaming encoder can know when the frame is emitted: for each frame
  the encoder runs on a short window of ``context_steps`` steps that *ends* at the frame's last
  step, at absolute positions, so nothing after the frame's look-ahead leaks in through the
  bidirectional attention. Training on these keeps the low-latency model honest (offline
  features would smuggle future audio into its 40 ms window).
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F

from realtime.audio.features import compute_features, num_video_frames
from realtime.audio.features import log_mel as _log_mel
from realtime.audio.streaming import StreamingAudioEncoder
from realtime.visemes.windows import LookaheadWindow

log = logging.getLogger(__name__)

MEL_PER_STEP = 2
MAX_POSITIONS = 1500  # Whisper's encoder positions (30 s)


def frame_count(num_samples: int, fps: float = 25.0) -> int:
    return num_video_frames(num_samples, fps)


def log_mel(audio: np.ndarray) -> torch.Tensor:
    """Whisper's normalised log-mel (80, M) of unpadded 16 kHz audio (LatentSync's way)."""
    return _log_mel(audio).float()


def frame_steps(window: LookaheadWindow, n_frames: int, fps: float) -> np.ndarray:
    """(n_frames, window.steps) unclamped encoder step indices."""
    c = np.array([window.centre_step(i, fps) for i in range(n_frames)], dtype=np.int64)
    return c[:, None] + np.arange(-window.past, window.future)[None, :]


def offline_blocks(model, audio: np.ndarray, window: LookaheadWindow, fps: float = 25.0) -> np.ndarray:
    """(N, window.rows, 384) float32 from LatentSync-exact offline features."""
    return blocks_from_features(compute_features(model, audio), window, frame_count(len(audio), fps), fps)


def blocks_from_features(feats: np.ndarray, window: LookaheadWindow, n_frames: int, fps: float = 25.0) -> np.ndarray:
    """Whole-clip features (T, 5, C) -> (n_frames, window.rows, C), steps clamped to [0, T-1]."""
    idx = np.clip(frame_steps(window, n_frames, fps), 0, feats.shape[0] - 1)
    return feats[idx].reshape(n_frames, window.rows, feats.shape[-1])


@torch.inference_mode()
def causal_blocks(model, audio: np.ndarray, window: LookaheadWindow, fps: float = 25.0,
                  context_steps: int = 24, pos_offset: int = 0, batch: int = 96,
                  mel: torch.Tensor | None = None) -> np.ndarray:
    """(N, window.rows, 384) float32: each frame encoded from the ``context_steps`` steps ending at
    its last step (fewer at the start), positions ``pos_offset + step``."""
    encoder = model.encoder
    if mel is None:
        mel = log_mel(audio)
    n = frame_count(len(audio), fps)
    steps = frame_steps(window, n, fps)  # (N, S)
    W = max(context_steps, window.steps)
    ends = steps[:, -1] + 1  # exclusive
    starts = np.maximum(ends - W, 0)
    need = int(ends.max()) * MEL_PER_STEP if n else 0
    if mel.shape[-1] < need:  # look-ahead past the end of the audio: LatentSync's 0.0 log-mel pad
        mel = F.pad(mel, (0, need - mel.shape[-1]), value=0.0)
    if pos_offset + (int(ends.max()) if n else 0) > MAX_POSITIONS:
        raise ValueError(f"audio too long for absolute positions: {int(ends.max())} steps + offset {pos_offset} > {MAX_POSITIONS}")
    C = encoder.positional_embedding.shape[1]
    out = np.zeros((n, window.steps, 1 + len(encoder.blocks), C), np.float32)
    lengths = ends - starts
    for L in np.unique(lengths):
        frames = np.nonzero(lengths == L)[0]
        for b0 in range(0, len(frames), batch):
            fr = frames[b0 : b0 + batch]
            mels = torch.stack([mel[:, MEL_PER_STEP * s : MEL_PER_STEP * e] for s, e in zip(starts[fr], ends[fr])])
            x = F.gelu(encoder.conv1(mels))
            x = F.gelu(encoder.conv2(x)).permute(0, 2, 1)  # (B, L, C)
            pos = torch.from_numpy(pos_offset + starts[fr][:, None] + np.arange(L)[None, :])
            x = x + encoder.positional_embedding[pos]
            taps = [x]
            for block in encoder.blocks:
                x = block(x)
                taps.append(x)
            t = torch.stack(taps, dim=2).numpy()  # (B, L, 5, C)
            # block steps relative to each window start; steps before 0 clamp to step 0 (LatentSync)
            rel = np.clip(steps[fr], 0, None) - starts[fr][:, None]
            out[fr] = t[np.arange(len(fr))[:, None], rel]
    return out.reshape(n, window.rows, C)


@torch.inference_mode()
def streaming_blocks(model, audio: np.ndarray, window: LookaheadWindow, fps: float = 25.0,
                     push_samples: int = 640) -> np.ndarray:
    """(N, window.rows, 384) float32 from the live ``StreamingAudioEncoder``, fed ``push_samples``
    at a time then flushed: exactly the blocks the server hands the viseme model."""
    enc = StreamingAudioEncoder(model, fps=fps, block=(window.past, window.future))
    frames = []
    audio = np.asarray(audio, np.float32)
    for s in range(0, len(audio), push_samples):
        frames += enc.push(audio[s : s + push_samples])
    frames += enc.flush()
    C = model.dims.n_audio_state if hasattr(model, "dims") else 384
    if not frames:
        return np.zeros((0, window.rows, C), np.float32)
    return torch.stack([f.features for f in frames]).float().numpy()
