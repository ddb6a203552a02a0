"""Pairs each frame event with its binary parts by frame index; no I/O (messages in, events out).

Events come out in the order their JSON messages arrived; a frame waits until its image (unless
``video="none"``) and its audio (unless ``audio_out`` is off) have arrived, in whatever order, and
so do the events behind it. Memory stays bounded: a frame still incomplete once a frame event
``window`` indices newer has arrived is dropped (counted in ``dropped``), and at most
``4 * window + 8`` frames' parts are held at once.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from .events import ClientEvent, Frame, ServerError, parse_control_event
from .wire import Kind, unpack

log = logging.getLogger(__name__)

DEFAULT_WINDOW = 4  # frames (160 ms at 25 fps): how long a frame may wait for a late part


@dataclass(slots=True)
class _Parts:
    event: dict[str, Any] | None = None
    jpeg: bytes | None = None
    image: np.ndarray | None = None
    audio: np.ndarray | None = None
    has_image: bool = False
    has_audio: bool = False


class FrameAssembler:
    """Feed it the server's messages (``feed_event`` for parsed JSON events other than
    ``session_started``, ``feed_binary`` for binary messages); take events with ``pop_ready``."""

    def __init__(self, video: str = "jpeg", audio_out: bool = True, window: int = DEFAULT_WINDOW) -> None:
        self.video, self.audio_out, self.window = video, audio_out, window
        self.dropped = 0  # frames dropped incomplete
        self._parts: dict[int, _Parts] = {}
        self._order: deque[int | ClientEvent] = deque()  # frame indices (waiting) and ready events
        self._newest = -1  # highest frame-event index seen
        self._done = -1  # highest frame index delivered or dropped

    def configure(self, video: str, audio_out: bool) -> None:
        """What the session sends (``session_started``), which decides when a frame is complete."""
        self.video, self.audio_out = video, audio_out

    def feed_event(self, msg: dict[str, Any]) -> None:
        """A JSON ``event`` message (``frame``, ``playback_*``, ``session_ended``, unknown ones)."""
        if msg.get("event") != "frame":
            self._order.append(parse_control_event(msg))
            return
        index = int(msg["index"])
        if index <= self._done:
            log.debug("frame event %d arrived after its frame was delivered or dropped; ignored", index)
            return
        self._slot(index).event = msg
        self._order.append(index)
        self._newest = max(self._newest, index)
        self._bound()

    def feed_error(self, code: str, message: str) -> None:
        self._order.append(ServerError(code, message))

    def feed_binary(self, data: bytes) -> None:
        """A binary server message (header + payload); ``wire.WireError`` if it is not one."""
        header, payload = unpack(data)
        if header.index <= self._done:
            log.debug("binary part of frame %d arrived after the frame was delivered or dropped", header.index)
            return
        parts = self._slot(header.index)
        if header.kind == Kind.AUDIO:
            parts.audio = np.frombuffer(payload, dtype="<i2").astype(np.int16, copy=False)
            parts.has_audio = True
        elif header.kind == Kind.JPEG:
            parts.jpeg = bytes(payload)
            parts.has_image = True
        else:  # Kind.RAW
            expected = header.width * header.height * 3
            if len(payload) != expected:
                log.warning("raw image of frame %d has %d bytes, not %dx%dx3; dropped", header.index,
                            len(payload), header.height, header.width)
                return
            parts.image = np.frombuffer(payload, dtype=np.uint8).reshape(header.height, header.width, 3)
            parts.has_image = True
        self._bound()

    def pop_ready(self) -> list[ClientEvent]:
        """The events ready now, in order."""
        out: list[ClientEvent] = []
        while self._order:
            head = self._order[0]
            if not isinstance(head, int):
                out.append(self._order.popleft())
                continue
            parts = self._parts.get(head)
            if parts is not None and self._complete(parts):
                self._order.popleft()
                del self._parts[head]
                self._done = max(self._done, head)
                out.append(self._frame(parts))
            elif parts is None or head < self._newest - self.window:
                self._order.popleft()
                self._drop(head)
            else:
                break
        self._bound()
        return out

    def flush(self) -> list[ClientEvent]:
        """At the end of the session: every event still held, frames that cannot complete dropped."""
        out = self.pop_ready()
        while self._order:
            head = self._order.popleft()
            if isinstance(head, int):
                self._drop(head)
            else:
                out.append(head)
            out.extend(self.pop_ready())
        self._parts.clear()
        return out

    # ---- internals ----------------------------------------------------------------------------
    def _slot(self, index: int) -> _Parts:
        parts = self._parts.get(index)
        if parts is None:
            parts = self._parts[index] = _Parts()
        return parts

    def _complete(self, parts: _Parts) -> bool:
        return (parts.event is not None and (parts.has_image or self.video == "none")
                and (parts.has_audio or not self.audio_out))

    def _drop(self, index: int) -> None:
        if self._parts.pop(index, None) is not None or index > self._done:
            self.dropped += 1
            log.warning("frame %d dropped: its parts did not all arrive", index)
        self._done = max(self._done, index)

    def _bound(self) -> None:
        """Forget parts that can no longer complete in time (binaries without an event included)."""
        limit = 4 * self.window + 8
        oldest_useful = max(self._done + 1, self._newest - self.window)  # frame events come in index order
        stale = [i for i, p in self._parts.items() if p.event is None and i < oldest_useful]
        for i in stale:
            del self._parts[i]
        while len(self._parts) > limit:  # a waiting frame evicted here is counted when it reaches the head
            del self._parts[min(self._parts)]

    def _frame(self, parts: _Parts) -> Frame:
        ev = parts.event or {}
        return Frame(
            index=int(ev["index"]),
            pts=float(ev.get("pts", 0.0)),
            speaking=bool(ev.get("speaking", False)),
            buffered_ms=float(ev.get("buffered_ms", 0.0)),
            visemes=ev.get("visemes"),
            blendshapes=ev.get("blendshapes"),
            image=parts.image,
            jpeg=parts.jpeg,
            audio=parts.audio,
        )
