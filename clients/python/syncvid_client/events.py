"""The typed events :meth:`AvatarClient.events` yields, and their parsing from the server's JSON.

Event names this client does not know (a newer server's) are not an error: they come out as
:class:`OtherEvent` with the message's fields, so callers can ignore or inspect them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .wire import DEFAULT_BUFFER_S, DEFAULT_SAMPLE_RATE, Event


@dataclass(frozen=True, slots=True)
class SessionStarted:
    """The session the server opened (``AvatarClient.started``). Fields the server did not name
    keep the client's request or a neutral value; fields this client does not know are in ``extra``."""

    session: str
    fps: float
    width: int
    height: int
    sample_rate: int  # of the audio sent and returned
    avatar: str
    video: str  # "jpeg", "raw" or "none"
    audio_out: bool
    latency_budget_ms: float
    lookahead: str
    max_buffer_s: float
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, eq=False)
class Frame:
    """One output frame, yielded once its event and all its binary parts arrived.

    ``image``: RGB (height, width, 3) uint8 — raw video, or JPEG decoded with Pillow or OpenCV;
    ``None`` with ``video="none"`` or when no JPEG decoder is installed. Treat it as read-only.
    ``jpeg``: the JPEG bytes as received (``video="jpeg"`` only; kept even when decoded).
    ``audio``: this frame's slice of the speech, int16 mono at the session's rate (``None`` when
    ``audio_out`` is off).
    """

    index: int
    pts: float  # seconds, index / fps
    speaking: bool
    buffered_ms: float  # speech received by the server but not yet played
    visemes: dict[str, float] | None
    blendshapes: dict[str, float] | None
    image: np.ndarray | None
    jpeg: bytes | None
    audio: np.ndarray | None


@dataclass(frozen=True, slots=True)
class PlaybackStarted:
    """The first frame playing utterance ``utterance`` (numbered from 1) has ``pts``."""

    utterance: int
    pts: float


@dataclass(frozen=True, slots=True)
class PlaybackFinished:
    """Utterance ``utterance`` played out (``interrupted`` False) or was cut by an interrupt after
    ``playback_position`` seconds had played (0 for one that never started)."""

    utterance: int
    playback_position: float
    interrupted: bool


@dataclass(frozen=True, slots=True)
class ServerError:
    """An ``error`` message. Non-fatal ones (``buffer_full``...) only come as this event; after a
    fatal one the server closes and :meth:`AvatarClient.events` raises the matching exception."""

    code: str
    message: str


@dataclass(frozen=True, slots=True)
class SessionEnded:
    """The server ended the session (a normal close follows)."""

    reason: str


@dataclass(frozen=True, slots=True)
class OtherEvent:
    """An event name this client does not know; ``data`` holds the message's other fields."""

    event: str
    data: dict[str, Any]


ClientEvent = SessionStarted | Frame | PlaybackStarted | PlaybackFinished | ServerError | SessionEnded | OtherEvent

_SESSION_FIELDS = ("session", "fps", "width", "height", "sample_rate", "avatar", "video", "audio_out",
                   "latency_budget_ms", "lookahead", "max_buffer_s")


def parse_session_started(msg: dict[str, Any], requested: dict[str, Any]) -> SessionStarted:
    """``msg``: the ``session_started`` event; ``requested``: the start options, for fields an
    older server leaves out."""
    return SessionStarted(
        session=str(msg.get("session", "")),
        fps=float(msg.get("fps", 25)),
        width=int(msg.get("width", 0)),
        height=int(msg.get("height", 0)),
        sample_rate=int(msg.get("sample_rate", requested.get("sample_rate", DEFAULT_SAMPLE_RATE))),
        avatar=str(msg.get("avatar", requested.get("avatar", "default"))),
        video=str(msg.get("video", requested.get("video", "jpeg"))),
        audio_out=bool(msg.get("audio_out", requested.get("audio_out", True))),
        latency_budget_ms=float(msg.get("latency_budget_ms", 0.0)),
        lookahead=str(msg.get("lookahead", "")),
        max_buffer_s=float(msg.get("max_buffer_s", DEFAULT_BUFFER_S)),
        extra={k: v for k, v in msg.items() if k not in _SESSION_FIELDS and k not in ("type", "event")},
    )


def parse_control_event(msg: dict[str, Any]) -> ClientEvent:
    """A typed event for a JSON ``event`` message other than ``frame`` and ``session_started``."""
    name = str(msg.get("event", ""))
    if name == Event.PLAYBACK_STARTED.value:
        return PlaybackStarted(int(msg.get("utterance", 0)), float(msg.get("pts", 0.0)))
    if name == Event.PLAYBACK_FINISHED.value:
        return PlaybackFinished(int(msg.get("utterance", 0)), float(msg.get("playback_position", 0.0)),
                                bool(msg.get("interrupted", False)))
    if name == Event.SESSION_ENDED.value:
        return SessionEnded(str(msg.get("reason", "")))
    return OtherEvent(name, {k: v for k, v in msg.items() if k not in ("type", "event")})
