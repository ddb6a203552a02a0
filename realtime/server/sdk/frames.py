"""What an avatar-SDK client gets for each output frame: the JSON ``frame`` event and the binary
image and audio messages (header format: ``syncvid_client.wire``). Sans I/O."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
from syncvid_client import wire

from realtime.render.base import FrameEvent
from realtime.server.protocol import SdkOptions, event_message
from realtime.session.live import SlotFrame
from realtime.visemes.phonemes import BLENDSHAPES, SIL, VISEME_BLENDSHAPES, VISEMES

DECIMALS = 4  # of viseme and blendshape values in the JSON (1e-4 is below anything a face shows)
# A frame with no renderer event (rest frames, renderers without visemes): silence, mouth at rest.
REST_VISEMES = {v: float(v == VISEMES[SIL]) for v in VISEMES}


def _rounded(values: dict[str, float]) -> dict[str, float]:
    return {k: round(float(v), DECIMALS) for k, v in values.items()}


def full_visemes(given: dict[str, float] | None) -> dict[str, float]:
    """All 15 visemes (those a renderer left out are 0), rest when it gave none."""
    if not given:
        return REST_VISEMES
    return {v: round(float(given.get(v, 0.0)), DECIMALS) for v in VISEMES}


def implied_blendshapes(visemes: dict[str, float]) -> dict[str, float]:
    """Blendshape weights the viseme probabilities imply (their mix of each viseme's targets), for
    renderers that give visemes only."""
    p = np.array([visemes[v] for v in VISEMES], np.float32)
    return {b: round(float(w), DECIMALS) for b, w in zip(BLENDSHAPES, p @ VISEME_BLENDSHAPES)}


REST_BLENDSHAPES = implied_blendshapes(REST_VISEMES)  # silence's own targets, computed once


class FrameMessages:
    """Builds one session's per-frame messages from its options."""

    def __init__(self, options: SdkOptions, fps: int) -> None:
        self.options, self.fps = options, fps
        self._last: FrameEvent | None = None  # a late or repeated frame shows what the last one did

    def event(self, index: int, frame: SlotFrame, buffered_ms: int) -> dict[str, Any]:
        if frame.kind == "speech":
            self._last = frame.event
        elif frame.kind == "rest":
            self._last = None
        ev = self._last
        fields: dict[str, Any] = {"index": index, "pts": self.pts(index), "speaking": frame.speaking,
                                  "buffered_ms": buffered_ms}
        visemes = full_visemes(ev.visemes if ev is not None else None)
        if self.options.visemes:
            fields["visemes"] = visemes
        if self.options.blendshapes:
            if ev is not None and ev.blendshapes:
                fields["blendshapes"] = _rounded(ev.blendshapes)
            else:  # rest frames (most frames) reuse silence's, computed once
                fields["blendshapes"] = REST_BLENDSHAPES if visemes is REST_VISEMES else implied_blendshapes(visemes)
        return event_message("frame", **fields)

    def pts(self, index: int) -> float:
        return round(index / self.fps, 6)

    def image(self, index: int, rgb: np.ndarray) -> bytes | None:
        """The image message (JPEG or raw RGB), None for ``video: none``. JPEG takes ~1.4 ms at
        512 x 512 on this CPU: call it off the event loop."""
        h, w = rgb.shape[:2]
        if self.options.video == "none":
            return None
        if self.options.video == "raw":
            return wire.pack(wire.Header(wire.Kind.RAW, index, self.pts(index), w, h),
                             np.ascontiguousarray(rgb, np.uint8).tobytes())
        ok, jpeg = cv2.imencode(".jpg", np.ascontiguousarray(rgb[:, :, ::-1]),
                                [cv2.IMWRITE_JPEG_QUALITY, self.options.jpeg_quality])
        if not ok:  # not seen with uint8 RGB; a frame the encoder refuses is a server bug
            raise RuntimeError(f"JPEG encoding of a {w}x{h} frame failed")
        return wire.pack(wire.Header(wire.Kind.JPEG, index, self.pts(index), w, h), jpeg.tobytes())

    def audio(self, index: int, samples: np.ndarray) -> bytes | None:
        """The frame's speech message (PCM16 at the session's rate), None without ``audio_out``."""
        if not self.options.audio_out:
            return None
        return wire.pack(wire.Header(wire.Kind.AUDIO, index, self.pts(index), sample_rate=self.options.sample_rate),
                         np.asarray(samples, "<i2").tobytes())
