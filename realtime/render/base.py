"""The one renderer interface both paths (embedded landmark warp, LatentSync diffusion) implement.

The offline pipeline (`syncvid render`) and the real-time server both call ``Renderer.render_chunk``
with 1..16 frames at a time; rendering a clip chunk by chunk gives the same frames as one call over
the whole clip with the same seed (per-session state lives in the ``RenderState`` the caller keeps).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np

MAX_CHUNK = 16  # LatentSync's UNet covers 16 frames per call; the embedded path accepts the same bound.

# Per-frame audio block: 10 Whisper encoder steps x 5 taps, flattened step-major -> (50, 384).
AUDIO_BLOCK_SHAPE = (50, 384)


@dataclass
class RenderState:
    """Per-session renderer state (smoothing history, RNG, idle-motion phase). Never shared."""

    seed: int = 0
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class RenderedChunk:
    frames: list[np.ndarray]  # each (H, W, 3) uint8 RGB, full avatar frame size
    # Optional per-frame side outputs (viseme probabilities, blendshape weights) for avatar SDK clients.
    events: list[dict[str, Any]] = field(default_factory=list)


class Renderer(ABC):
    """Turns (avatar frame indices, per-frame audio feature blocks) into output frames."""

    name: str = "renderer"

    @abstractmethod
    def new_state(self, seed: int = 0) -> RenderState:
        """Fresh per-session state."""

    @abstractmethod
    def render_chunk(
        self,
        avatar: Any,  # realtime.face.avatar.Avatar
        frame_indices: np.ndarray,  # (N,) int, indices into the (ping-pong looped) avatar track
        audio_blocks: np.ndarray,  # (N, 50, 384) float32, or (N, S, 384) for low-latency windows
        state: RenderState,
    ) -> RenderedChunk:
        """Renders N = len(frame_indices) frames, 1 <= N <= MAX_CHUNK."""

    def rest_frame(self, avatar: Any, frame_index: int, state: RenderState) -> np.ndarray:
        """Frame with the mouth closed and at rest (silence); default: the avatar frame itself."""
        return avatar.frame(frame_index)

    def warm_up(self, avatar: Any) -> None:
        """Loads models and compiles kernels now (a server start), not on a session's first frame."""
        self.rest_frame(avatar, 0, self.new_state(0))


def check_chunk(frame_indices: np.ndarray, audio_blocks: np.ndarray) -> None:
    n = len(frame_indices)
    if not 1 <= n <= MAX_CHUNK:
        raise ValueError(f"chunk length must be 1..{MAX_CHUNK} frames, got {n}")
    if audio_blocks.ndim != 3 or audio_blocks.shape[0] != n or audio_blocks.shape[2] != 384:
        raise ValueError(f"audio_blocks must be ({n}, S, 384), got {tuple(audio_blocks.shape)}")
