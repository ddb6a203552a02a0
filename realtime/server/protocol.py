"""The /ws session protocol, sans I/O: text/bytes in, typed events out, replies as dicts.

No sockets or asyncio here, so every rule is unit-tested on strings and bytes. The first message
decides the session kind (``offer`` -> WebRTC, ``start`` -> avatar SDK); control messages
(``interrupt``, ``close``) may follow on the same socket. Every error a client can cause becomes an
``{"type": "error", "code": ..., "message": ...}`` reply; fatal ones also name a close code.
See docs/protocol.md.
"""

from __future__ import annotations

import enum
import json
import time
from dataclasses import dataclass, field
from typing import Any

from syncvid_client import wire

from realtime.server.ratelimit import TokenBucket

# WebSocket close codes (RFC 6455 section 7.4.1), the subset this server uses.
CLOSE_NORMAL = 1000
CLOSE_UNSUPPORTED = 1003  # a valid request for something this server does not do yet
CLOSE_POLICY = 1008  # protocol violation by the client (bad first message, wrong order)
CLOSE_INTERNAL = 1011  # the server failed while serving this session
CLOSE_TRY_AGAIN = 1013  # session cap reached; the client may retry later

MAX_SDP_CHARS = 64 * 1024  # a real offer is a few kB; anything larger is not an SDP

# Session options a client may set in the first message (all optional).
MAX_SEED = 2**32 - 1  # idle-motion seed (numpy seeds are non-negative)
# Control messages per connection (a token bucket): a client sends a few a minute; a flood of them
# would take the event loop from every session. Over the limit the connection is closed (1008).
CONTROL_RATE_PER_S = 50.0
CONTROL_BURST = 100.0
MAX_AVATAR_NAME = 200  # characters of an avatar name (a file or folder name in the library)
# Options each first message may carry (all optional), with their JSON types.
COMMON_OPTIONS: dict[str, type] = {"low_latency": bool, "seed": int, "avatar": str}
# stats: a `stats` event every second (the page's live figures)
OFFER_OPTIONS: dict[str, type] = {**COMMON_OPTIONS, "stats": bool}
START_OPTIONS: dict[str, type] = {**COMMON_OPTIONS, "sample_rate": int, "video": str, "jpeg_quality": int,
                                  "visemes": bool, "blendshapes": bool, "audio_out": bool}
DEFAULT_JPEG_QUALITY = 80


class ErrorCode(str, enum.Enum):
    BAD_JSON = "bad_json"
    BAD_MESSAGE = "bad_message"  # valid JSON but not an object, or a field has the wrong type
    UNKNOWN_TYPE = "unknown_type"
    MISSING_FIELD = "missing_field"
    BAD_OPTION = "bad_option"
    UNEXPECTED = "unexpected_message"  # valid message in the wrong session state
    SESSION_CAP = "session_cap"
    NOT_SUPPORTED = "not_supported"
    INTERNAL = "internal_error"
    RATE_LIMITED = "rate_limited"  # more control messages than CONTROL_RATE_PER_S (burst CONTROL_BURST)
    UNKNOWN_AVATAR = "unknown_avatar"  # options.avatar names no avatar of the library
    BUFFER_FULL = "buffer_full"  # an SDK session's speech buffer is full: the chunk was dropped
    BAD_AUDIO = "bad_audio"  # odd-length PCM16, or a sample rate the server does not accept
    SLOW_CONSUMER = "slow_consumer"  # an SDK client stopped reading its frames


class SessionKind(str, enum.Enum):
    WEBRTC = "webrtc"
    SDK = "sdk"


class State(enum.Enum):
    AWAITING_FIRST = "awaiting_first"
    ACTIVE = "active"
    CLOSED = "closed"


@dataclass(frozen=True)
class Offer:
    sdp: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SdkOptions:
    """What an avatar-SDK client asked for in ``start`` (docs/protocol.md has the table)."""

    sample_rate: int = wire.DEFAULT_SAMPLE_RATE
    video: str = "jpeg"  # jpeg | raw | none
    jpeg_quality: int = DEFAULT_JPEG_QUALITY
    visemes: bool = True
    blendshapes: bool = True
    audio_out: bool = True
    avatar: str = "default"
    low_latency: bool = False
    seed: int = 0


@dataclass(frozen=True)
class Start:
    options: SdkOptions = field(default_factory=SdkOptions)


@dataclass(frozen=True)
class EndOfUtterance:
    pass


@dataclass(frozen=True)
class Interrupt:
    pass


@dataclass(frozen=True)
class Close:
    reason: str = ""


@dataclass(frozen=True)
class Report:
    """Client-side measurement fed into /metrics (e.g. glass-to-glass latency it observed)."""

    glass_to_glass_ms: float


@dataclass(frozen=True)
class AudioChunk:
    """Binary message of an SDK session: PCM16 little-endian mono samples."""

    pcm16: bytes


@dataclass(frozen=True)
class ProtocolError:
    code: ErrorCode
    message: str
    close_code: int | None = None  # set when the session must end

    def to_message(self) -> dict[str, Any]:
        return error_message(self.code, self.message)


Event = Offer | Start | Interrupt | EndOfUtterance | Close | Report | AudioChunk | ProtocolError


def error_message(code: ErrorCode, message: str) -> dict[str, Any]:
    return {"type": "error", "code": code.value, "message": message}


def answer_message(sdp: str) -> dict[str, Any]:
    return {"type": "answer", "sdp": sdp}


def event_message(name: str, **fields: Any) -> dict[str, Any]:
    return {"type": "event", "event": name, **fields}


def encode(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"))


def _shown(name: str) -> str:
    """A client's name quoted in an error: its first 40 characters, control characters and non-ASCII
    escaped, so the message stays one printable line (in logs and close reasons too)."""
    return ascii(name[:40])


def _parse_options(raw: Any, known: dict[str, type]) -> dict[str, Any] | ProtocolError:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        return ProtocolError(ErrorCode.BAD_OPTION, "'options' must be a JSON object")
    for key, value in raw.items():
        tp = known.get(key)
        if tp is None:
            names = ", ".join(sorted(known))
            return ProtocolError(ErrorCode.BAD_OPTION, f"unknown option {_shown(key)} (known: {names})")
        if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
            return ProtocolError(ErrorCode.BAD_OPTION, f"option '{key}' must be {tp.__name__}")
    seed, avatar = raw.get("seed", 0), raw.get("avatar", "default")
    if not 0 <= seed <= MAX_SEED:
        return ProtocolError(ErrorCode.BAD_OPTION, f"option 'seed' must be from 0 to {MAX_SEED}")
    if not 0 < len(avatar) <= MAX_AVATAR_NAME:
        return ProtocolError(ErrorCode.BAD_OPTION, f"option 'avatar' must be a name of 1 to {MAX_AVATAR_NAME} "
                             "characters (GET /avatars lists them)")
    return dict(raw)


def _sdk_options(raw: Any) -> SdkOptions | ProtocolError:
    opts = _parse_options(raw, START_OPTIONS)
    if isinstance(opts, ProtocolError):
        return opts
    rate = opts.get("sample_rate", wire.DEFAULT_SAMPLE_RATE)
    if rate not in wire.SAMPLE_RATES:
        return ProtocolError(ErrorCode.BAD_AUDIO, f"sample_rate {rate} is not accepted; send PCM16 at one of "
                             f"{', '.join(map(str, wire.SAMPLE_RATES))} Hz")
    if opts.get("video", "jpeg") not in wire.VIDEO_FORMATS:
        return ProtocolError(ErrorCode.BAD_OPTION, f"option 'video' must be one of {', '.join(wire.VIDEO_FORMATS)}")
    if not 1 <= opts.get("jpeg_quality", DEFAULT_JPEG_QUALITY) <= 100:
        return ProtocolError(ErrorCode.BAD_OPTION, "option 'jpeg_quality' must be from 1 to 100")
    return SdkOptions(**opts)


def parse_text(text: str) -> Event:
    """One text message -> one event (a ProtocolError when the message is malformed)."""
    try:
        msg = json.loads(text)
    except (ValueError, RecursionError):  # ValueError: JSONDecodeError, or an integer too long to convert
        return ProtocolError(ErrorCode.BAD_JSON, "message is not valid JSON")
    if not isinstance(msg, dict):
        return ProtocolError(ErrorCode.BAD_MESSAGE, "message must be a JSON object")
    kind = msg.get("type")
    if not isinstance(kind, str):
        return ProtocolError(ErrorCode.MISSING_FIELD, "message needs a string field 'type'")
    if kind == "offer":
        sdp = msg.get("sdp")
        if not isinstance(sdp, str) or not sdp.strip():
            return ProtocolError(ErrorCode.MISSING_FIELD, "'offer' needs a non-empty string field 'sdp'")
        if len(sdp) > MAX_SDP_CHARS:
            return ProtocolError(ErrorCode.BAD_MESSAGE, f"'sdp' is {len(sdp)} characters; an offer has at most "
                                 f"{MAX_SDP_CHARS} (a browser's is a few thousand)")
        if not sdp.lstrip().startswith("v=0"):
            return ProtocolError(ErrorCode.BAD_MESSAGE, "'sdp' is not a session description (must start with v=0)")
        opts = _parse_options(msg.get("options"), OFFER_OPTIONS)
        return opts if isinstance(opts, ProtocolError) else Offer(sdp=sdp, options=opts)
    if kind == "start":
        sdk = _sdk_options(msg.get("options"))
        return sdk if isinstance(sdk, ProtocolError) else Start(options=sdk)
    if kind in ("interrupt", "clear_buffer"):  # clear_buffer: the name agent frameworks use
        return Interrupt()
    if kind == "end_of_utterance":
        return EndOfUtterance()
    if kind == "close":
        reason = msg.get("reason", "")
        return Close(reason=reason if isinstance(reason, str) else "")
    if kind == "report":
        v = msg.get("glass_to_glass_ms")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 60000:
            return ProtocolError(ErrorCode.BAD_MESSAGE, "'report' needs a number 'glass_to_glass_ms' in [0, 60000)")
        return Report(glass_to_glass_ms=float(v))
    return ProtocolError(
        ErrorCode.UNKNOWN_TYPE,
        f"unknown message type {_shown(kind)} (expected offer, start, interrupt, clear_buffer, end_of_utterance, "
        "report or close)",
    )


class SessionProtocol:
    """State machine of one /ws connection. Feed it messages; it returns the events to act on.

    Rules: the first message must be ``offer`` or ``start`` (anything else, or a malformed first
    message, ends the connection with CLOSE_POLICY); a second offer/start is an error that does
    not end the session; binary messages are only valid in SDK sessions; after ``close`` or an
    error with a close code nothing more is accepted.
    """

    def __init__(self, now=time.monotonic) -> None:
        self.state = State.AWAITING_FIRST
        self.kind: SessionKind | None = None
        self._rate = TokenBucket(CONTROL_RATE_PER_S, CONTROL_BURST, now)

    def receive_text(self, text: str) -> Event:
        if self.state is State.ACTIVE and not self._rate.take():  # checked before any parsing
            self.state = State.CLOSED
            return ProtocolError(ErrorCode.RATE_LIMITED, f"more than {CONTROL_RATE_PER_S:.0f} messages a second "
                                 f"(bursts of {CONTROL_BURST:.0f}); the connection is closed", close_code=CLOSE_POLICY)
        event = parse_text(text)
        if self.state is State.CLOSED:
            return ProtocolError(ErrorCode.UNEXPECTED, "session is closed")
        if self.state is State.AWAITING_FIRST:
            if isinstance(event, ProtocolError):  # a closing error ends the session: nothing after it is accepted
                self.state = State.CLOSED
                return ProtocolError(event.code, event.message, close_code=CLOSE_POLICY)
            if isinstance(event, Offer):
                self.kind, self.state = SessionKind.WEBRTC, State.ACTIVE
            elif isinstance(event, Start):
                self.kind, self.state = SessionKind.SDK, State.ACTIVE
            elif isinstance(event, Close):
                self.state = State.CLOSED
            else:
                self.state = State.CLOSED
                return ProtocolError(
                    ErrorCode.UNEXPECTED,
                    "the first message must be 'offer' (WebRTC) or 'start' (avatar SDK)",
                    close_code=CLOSE_POLICY,
                )
            return event
        if isinstance(event, (Offer, Start)):
            return ProtocolError(ErrorCode.UNEXPECTED, f"session already started; '{type(event).__name__.lower()}' ignored")
        if isinstance(event, Close):
            self.state = State.CLOSED
        return event

    def receive_bytes(self, data: bytes) -> Event:
        if self.state is not State.ACTIVE or self.kind is not SessionKind.SDK:
            close = CLOSE_POLICY if self.state is State.AWAITING_FIRST else None
            if close:
                self.state = State.CLOSED
            return ProtocolError(
                ErrorCode.UNEXPECTED, "binary audio is only accepted after a 'start' message", close_code=close
            )
        if len(data) % 2:
            return ProtocolError(ErrorCode.BAD_AUDIO, f"binary audio of {len(data)} bytes: PCM16 needs an even "
                                 "number of bytes (2 per sample); the chunk was dropped")
        return AudioChunk(pcm16=bytes(data))
