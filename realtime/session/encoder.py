"""The streaming encoder as a session sees it: audio in, per-frame feature blocks out.

Implemented by ``audio.streaming.StreamingAudioEncoder`` (models in this process) and by
``inference.process.EncoderProxy`` (models in the inference process), which can also render the
frames a push completes in the same round trip (``FusedEncoder``)."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

from realtime.inference.messages import Drawn, DrawSpec


class StreamEncoder(Protocol):
    light: bool  # the cheap kind of encoder call (degraded sessions)

    def reset(self) -> None:
        """The next push starts a new stream (its frame 0 at the pushed audio's start)."""

    def push(self, samples: np.ndarray) -> list[Any]:
        """16 kHz float32 audio in; the frames it completes out, as ``FrameFeatures`` or
        ``(index, block)`` (see ``as_block``)."""

    def release(self) -> None:
        """Frees the encoder's state where it lives elsewhere (nothing for a local one)."""


@runtime_checkable
class FusedEncoder(Protocol):
    """An encoder that renders the frames a push completes in the same call (``EncoderProxy``)."""

    def push_render(self, samples: np.ndarray, draw: DrawSpec) -> tuple[list[Any], Drawn | None]: ...


def as_block(item: Any) -> tuple[int, np.ndarray]:
    """``(index, (50, 384) float32 block)`` of one encoder output: an ``(index, block)`` pair (the
    proxy, test stand-ins) or a ``FrameFeatures`` (index, features tensor)."""
    if isinstance(item, tuple):
        idx, block = item
    else:
        idx, block = item.index, item.features
    if not isinstance(block, np.ndarray):  # a torch tensor from the in-process encoder
        block = block.detach().cpu().numpy()
    return int(idx), np.asarray(block, dtype=np.float32)
