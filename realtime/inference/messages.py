"""What the server and the inference process say to each other: one frozen dataclass per request
and per answer, named fields instead of positions. No I/O here; ``shm_channel.Region`` packs them
(pickle protocol 5, arrays out of band), and the child dispatches on the request's type.

Requests (server -> child), each answered by exactly one answer:

- ``EncodeRequest``: a session's audio for its streaming encoder (-> ``EncodeAnswer``); with
  ``draw`` it also renders the speech frames the push completes (the fused push, which saves a
  round trip per frame).
- ``RenderRequest``: one chunk of frames with the session's renderer state (-> ``RenderAnswer``).
- ``RestRequest``: the rest (idle, mouth closed) frame of an avatar index (-> ``RestAnswer``).
- ``ReleaseRequest``: a closed session's encoder or renderer state (-> ``Released``).

Renders and rest frames name the session's avatar by its prepared folder (``avatar``, see
``avatar_key``; None: the child's default avatar, ``ChildSpec.avatar_dir``); the child loads the
others on first use and keeps a few (``child.ChildAvatars``).

Any request may be answered by ``Failed`` instead: the error, raised again in the caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Union

import numpy as np

Quality = Literal["full", "low", "lighter"]  # the renderer hint of a degradation level (session.config.Degradation)


def avatar_key(avatar: Any) -> str | None:
    """What names ``avatar`` to the child: its prepared folder (``face.avatar.Avatar.directory``),
    or None (the child's default) for an avatar without one (a test stand-in)."""
    directory = getattr(avatar, "directory", None)
    return str(directory) if directory is not None else None


@dataclass(frozen=True)
class DrawFrame:
    """A frame to render right after the push that completes it."""

    encoder_index: int  # index of its block among the encoder's frames since its last reset
    avatar_index: int
    deadline: float  # monotonic seconds; not rendered once past (inf: no deadline)


@dataclass(frozen=True)
class DrawSpec:
    state_id: int  # the session's renderer state in the child
    seed: int
    frames: tuple[DrawFrame, ...]
    quality: Quality
    avatar: str | None = None  # the session's avatar (avatar_key); None: the child's default

    @property
    def first_deadline(self) -> float:
        return min(f.deadline for f in self.frames)


@dataclass(frozen=True)
class EncodeRequest:
    encoder_id: int
    lookahead: str  # "full" | "low": which weights and audio window
    samples: np.ndarray  # (n,) float32, 16 kHz mono
    reset: bool  # start the encoder afresh before this audio (a new one is made if it does not exist)
    light: bool  # the cheap kind of encoder call (degraded)
    draw: DrawSpec | None = None


@dataclass(frozen=True)
class RenderRequest:
    state_id: int
    lookahead: str
    seed: int
    frame_indices: np.ndarray  # (N,) int64 avatar indices
    audio_blocks: np.ndarray  # (N, S, 384) float32
    quality: Quality = "full"
    deadline: float = 0.0  # monotonic seconds of the chunk's first slot (earliest deadline first)
    avatar: str | None = None  # the session's avatar (avatar_key); None: the child's default


@dataclass(frozen=True)
class RestRequest:
    lookahead: str
    seed: int
    frame_index: int
    avatar: str | None = None  # the session's avatar (avatar_key); None: the child's default


@dataclass(frozen=True)
class ReleaseRequest:
    kind: Literal["encoder", "render"]
    id: int


Request = Union[EncodeRequest, RenderRequest, RestRequest, ReleaseRequest]


@dataclass(frozen=True)
class Drawn:
    """Frames rendered with a push, and the time it took."""

    frames: tuple[tuple[int, np.ndarray, Any], ...]  # (encoder index, image, its FrameEvent or None)
    seconds: float


@dataclass(frozen=True)
class EncodeAnswer:
    blocks: tuple[tuple[int, np.ndarray], ...]  # (encoder frame index, (50, 384) float32 block)
    drawn: Drawn | None = None


@dataclass(frozen=True)
class RenderAnswer:
    frames: tuple[np.ndarray, ...]  # (H, W, 3) uint8 RGB
    events: tuple[Any, ...] = ()  # per frame: its render.base.FrameEvent, or None


@dataclass(frozen=True)
class RestAnswer:
    frame: np.ndarray


@dataclass(frozen=True)
class Released:
    pass


@dataclass(frozen=True)
class Failed:
    error: BaseException


Answer = Union[EncodeAnswer, RenderAnswer, RestAnswer, Released, Failed]


@dataclass(frozen=True)
class ChildSpec:
    """What the inference process loads (sent once, when it is started)."""

    avatar_dir: str | None  # None: the default avatar
    renderer: str  # "embedded" | "diffusion"
    fps: int
    nice: int | None
    diffusion: Any = None  # factory.DiffusionConfig (renderer "diffusion")
    max_avatars: int = 4  # other avatars (than avatar_dir's) kept loaded, least recently used dropped


# The child's first message on its first pipe, once: its models are loaded, or they could not be.
@dataclass(frozen=True)
class Ready:
    info: str  # load time, nice value, heap: for the server's log
    attached: bool  # whether it mapped the shared-memory regions (else everything goes in band)


@dataclass(frozen=True)
class StartFailed:
    reason: str
