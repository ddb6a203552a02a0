"""Typed exceptions of the client: one per server error code a caller may want to handle apart,
plus the connection-level failures. Every one is a :class:`SyncVidError` carrying the server's
``code`` and ``message`` (or the client's own code for failures that have no server message)."""

from __future__ import annotations


class SyncVidError(Exception):
    """An error reported by the server (``{"type": "error", "code", "message"}``) or by the client."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{message} ({code})" if message else code)
        self.code = code
        self.message = message


class UnknownAvatarError(SyncVidError):
    """``unknown_avatar``: the server's avatar library has no avatar of that name (see ``GET /avatars``)."""


class BufferFullError(SyncVidError):
    """``buffer_full``: more than the server's buffer limit (``max_buffer_s``) of speech is waiting;
    the chunk was dropped, the session goes on."""


class BadAudioError(SyncVidError):
    """``bad_audio``: a sample rate or PCM the server does not accept."""


class SessionCapError(SyncVidError):
    """``session_cap``: the server already serves its maximum number of sessions; try again later."""


class SlowConsumerError(SyncVidError):
    """``slow_consumer``: the client did not read its events fast enough and was cut off."""


class NotSupportedError(SyncVidError):
    """``not_supported``: this server does not serve avatar-SDK sessions."""


class ProtocolViolation(SyncVidError):
    """The client and the server disagree about the protocol: a message the server refused
    (``bad_json``, ``bad_message``, ``missing_field``, ``unknown_type``, ``bad_option``,
    ``unexpected_message``, ``rate_limited``) or a server message this client cannot read."""


class ConnectError(SyncVidError):
    """No session could be opened: nothing listens at the URL, the handshake was refused, or no
    ``session_started`` came within ``open_timeout``."""

    def __init__(self, message: str) -> None:
        super().__init__("connect_failed", message)


class ConnectionClosedError(SyncVidError):
    """The connection closed abnormally without an error message explaining why."""

    def __init__(self, close_code: int, reason: str = "") -> None:
        text = f"the connection closed with code {close_code}" + (f": {reason}" if reason else "")
        super().__init__("connection_closed", text)
        self.close_code = close_code
        self.reason = reason


_BY_CODE: dict[str, type[SyncVidError]] = {
    "unknown_avatar": UnknownAvatarError,
    "buffer_full": BufferFullError,
    "bad_audio": BadAudioError,
    "session_cap": SessionCapError,
    "slow_consumer": SlowConsumerError,
    "not_supported": NotSupportedError,
    "bad_json": ProtocolViolation,
    "bad_message": ProtocolViolation,
    "missing_field": ProtocolViolation,
    "unknown_type": ProtocolViolation,
    "bad_option": ProtocolViolation,
    "unexpected_message": ProtocolViolation,
    "rate_limited": ProtocolViolation,
}


def error_for(code: str, message: str) -> SyncVidError:
    """The exception for a server error code; a plain :class:`SyncVidError` for codes without a
    class of their own (``internal_error`` and any code newer than this client)."""
    return _BY_CODE.get(code, SyncVidError)(code, message)
