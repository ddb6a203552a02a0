"""Python client of the syncvid avatar SDK: stream speech to a syncvid server over WebSocket and get
back, per output frame, the lip-synced image, viseme and blendshape weights and the matching slice
of audio. Light by design: websockets and numpy only (Pillow or OpenCV, if installed, decode JPEG).

    async with AvatarClient("ws://127.0.0.1:8080/ws", sample_rate=24000) as client:
        await client.send_audio(pcm16_bytes)
        await client.end_utterance()
        async for event in client.events():
            ...
"""

from .audio import LinearResampler
from .client import AvatarClient
from .errors import (
    BadAudioError,
    BufferFullError,
    ConnectError,
    ConnectionClosedError,
    NotSupportedError,
    ProtocolViolation,
    SessionCapError,
    SlowConsumerError,
    SyncVidError,
    UnknownAvatarError,
    error_for,
)
from .events import (
    ClientEvent,
    Frame,
    OtherEvent,
    PlaybackFinished,
    PlaybackStarted,
    ServerError,
    SessionEnded,
    SessionStarted,
)

__version__ = "0.1.0"

__all__ = [
    "AvatarClient",
    "BadAudioError",
    "BufferFullError",
    "ClientEvent",
    "ConnectError",
    "ConnectionClosedError",
    "Frame",
    "LinearResampler",
    "NotSupportedError",
    "OtherEvent",
    "PlaybackFinished",
    "PlaybackStarted",
    "ProtocolViolation",
    "ServerError",
    "SessionCapError",
    "SessionEnded",
    "SessionStarted",
    "SlowConsumerError",
    "SyncVidError",
    "UnknownAvatarError",
    "__version__",
    "error_for",
]
