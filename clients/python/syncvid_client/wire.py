"""The avatar SDK's wire format on ``/ws``: message names, option names and the header of every
binary message the server sends. The one home of these constants: the server imports them from
here, so client and server cannot disagree. numpy-free and I/O-free.

Binary server -> client message = a 24-byte little-endian header, then the payload::

    offset size  field
    0      2     magic b"SV"
    2      1     kind: 1 = JPEG image, 2 = raw RGB image (height x width x 3 uint8), 3 = audio (PCM16 mono)
    3      1     header version (1)
    4      4     frame index (uint32), the ``index`` of the frame event it belongs to
    8      8     pts (float64 seconds), equal to that frame event's ``pts``
    16     2     width (uint16; 0 for audio)
    18     2     height (uint16; 0 for audio)
    20     4     sample rate (uint32; 0 for images)

Client -> server binary messages carry no header: they are PCM16 little-endian mono at the
session's ``sample_rate``.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

MAGIC = b"SV"
VERSION = 1
HEADER = struct.Struct("<2sBBIdHHI")
HEADER_SIZE = HEADER.size  # 24

# Input sample rates a session accepts (resampled by the server to the engine's).
SAMPLE_RATES = (8000, 16000, 22050, 24000, 44100, 48000)
DEFAULT_SAMPLE_RATE = 16000
VIDEO_FORMATS = ("jpeg", "raw", "none")
DEFAULT_BUFFER_S = 120.0  # speech a session buffers ahead of playback (server: limits.sdk_buffer_s)


class Kind(enum.IntEnum):
    JPEG = 1
    RAW = 2
    AUDIO = 3


@dataclass(frozen=True)
class Header:
    kind: Kind
    index: int
    pts: float
    width: int = 0
    height: int = 0
    sample_rate: int = 0


class WireError(ValueError):
    """A binary message that is not in this format."""


def pack(header: Header, payload: bytes) -> bytes:
    return HEADER.pack(MAGIC, int(header.kind), VERSION, header.index, header.pts, header.width, header.height,
                       header.sample_rate) + payload


def unpack(message: bytes) -> tuple[Header, memoryview]:
    """(header, payload) of one binary server message; WireError if it is not one."""
    if len(message) < HEADER_SIZE:
        raise WireError(f"binary message of {len(message)} bytes is shorter than the {HEADER_SIZE}-byte header")
    magic, kind, version, index, pts, width, height, rate = HEADER.unpack_from(message)
    if magic != MAGIC:
        raise WireError(f"binary message does not start with {MAGIC!r}")
    if version != VERSION:
        raise WireError(f"binary message header version {version}; this client reads version {VERSION}")
    try:
        k = Kind(kind)
    except ValueError:
        raise WireError(f"unknown binary message kind {kind}") from None
    return Header(k, index, pts, width, height, rate), memoryview(message)[HEADER_SIZE:]


# Message and event names (the JSON "type" and "event" fields).
class Event(str, enum.Enum):
    SESSION_STARTED = "session_started"
    FRAME = "frame"
    PLAYBACK_STARTED = "playback_started"
    PLAYBACK_FINISHED = "playback_finished"
    SESSION_ENDED = "session_ended"
    INTERRUPTED = "interrupted"
