"""The one renderer interface both paths (embedded landmark warp, LatentSync diffusion) implement.

The offline pipeline (`syncvid render`) and the real-time server both call ``Renderer.render_chunk``
with 1..16 frames at a time; rendering a clip chunk by chunk gives the same frames as one call over
the whole clip with the same seed (per-session state lives in the ``RenderState`` the caller keeps).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

import numpy as np

MAX_CHUNK = 16  # LatentSync's UNet covers 16 frames per call; the embedded path accepts the same bound.

# Per-frame audio block: 10 Whisper encoder steps x 5 taps, flattened step-major -> (50, 384).
AUDIO_BLOCK_SHAPE = (50, 384)

# The renderer hint of a session's degradation level: "low" samples fewer diffusion steps,
# "lighter" hands the diffusion path's frames to the embedded renderer; the embedded one ignores it.
Quality = Literal["full", "low", "lighter"]


class AvatarFrames(Protocol):
    """What sessions and the renderer interface read of an avatar (``face.avatar.Avatar``)."""

    def frame(self, i: int) -> np.ndarray:
        """(H, W, 3) uint8 RGB of avatar frame ``i`` (any i >= 0: the track loops)."""

    def source_index(self, i: int) -> int:
        """The stored frame that frame ``i`` shows."""

    def has_face(self, i: int) -> bool: ...


@dataclass
class RenderState:
    """Per-session renderer state. Never shared. A renderer that keeps more (smoothing history,
    idle-motion phase, a CUDA stream) subclasses it and makes it in ``new_state``."""

    seed: int = 0
    quality: Quality = "full"  # set by the session before each chunk
    deadline: float = 0.0  # monotonic seconds of the chunk's first slot (a remote renderer serves EDF)
    remote_id: int | None = None  # the state lives in the inference process under this id


@dataclass(frozen=True)
class FrameEvent:
    """What a renderer knows of a frame besides its pixels, for avatar-SDK clients."""

    frame: int  # avatar frame index
    face: bool = True  # False: no face was found there, the frame passed through
    visemes: dict[str, float] | None = None  # the 15 viseme probabilities (visemes.phonemes.VISEMES)
    blendshapes: dict[str, float] | None = None  # ARKit blendshape weights


@dataclass
class RenderedChunk:
    frames: list[np.ndarray]  # each (H, W, 3) uint8 RGB, full avatar frame size
    events: list[FrameEvent] = field(default_factory=list)  # one per frame where the renderer has them

    def frame_events(self) -> list[FrameEvent | None]:
        """One event per frame: the renderer's, or None for each frame when it gives none."""
        return list(self.events) if len(self.events) == len(self.frames) else [None] * len(self.frames)


@dataclass
class ChunkRequest:
    """One session's chunk in a multi-session batch (``BatchRenderer.render_batch``)."""

    avatar: AvatarFrames
    frame_indices: np.ndarray
    audio_blocks: np.ndarray
    state: RenderState


class Renderer(ABC):
    """Turns (avatar frame indices, per-frame audio feature blocks) into output frames."""

    name: str = "renderer"

    @abstractmethod
    def new_state(self, seed: int = 0) -> RenderState:
        """Fresh per-session state."""

    @abstractmethod
    def render_chunk(
        self,
        avatar: AvatarFrames,
        frame_indices: np.ndarray,  # (N,) int, indices into the (ping-pong looped) avatar track
        audio_blocks: np.ndarray,  # (N, 50, 384) float32, or (N, S, 384) for low-latency windows
        state: RenderState,
    ) -> RenderedChunk:
        """Renders N = len(frame_indices) frames, 1 <= N <= MAX_CHUNK."""

    def rest_frame(self, avatar: AvatarFrames, frame_index: int, state: RenderState) -> np.ndarray:
        """Frame with the mouth closed and at rest (silence); default: the avatar frame itself."""
        return avatar.frame(frame_index)

    def warm_up(self, avatar: AvatarFrames) -> None:
        """Loads models and compiles kernels now (a server start), not on a session's first frame."""
        self.rest_frame(avatar, 0, self.new_state(0))

    def release(self, state: RenderState) -> None:
        """Frees what a closed session's state holds outside this process (nothing by default)."""


@runtime_checkable
class BatchRenderer(Protocol):
    """A renderer that serves several sessions' chunks in one call (the diffusion renderer: one
    UNet batch); the inference process batches for it."""

    def render_batch(self, requests: list[ChunkRequest]) -> list[RenderedChunk]: ...


def check_chunk(frame_indices: np.ndarray, audio_blocks: np.ndarray) -> None:
    n = len(frame_indices)
    if not 1 <= n <= MAX_CHUNK:
        raise ValueError(f"chunk length must be 1..{MAX_CHUNK} frames, got {n}")
    if audio_blocks.ndim != 3 or audio_blocks.shape[0] != n or audio_blocks.shape[2] != 384:
        raise ValueError(f"audio_blocks must be ({n}, S, 384), got {tuple(audio_blocks.shape)}")
