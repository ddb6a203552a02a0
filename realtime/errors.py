"""Errors a user can cause. Each message is one sentence naming the input and what to do."""


class SyncVidError(Exception):
    """Base class of user-facing errors; the CLI prints them as one line."""


class AudioInputError(SyncVidError, ValueError):
    """Audio that cannot be read or used (empty, truncated, unreadable, non-finite)."""


class WeightsError(SyncVidError, FileNotFoundError):
    """Model weights missing or not matching the expected layout."""


class MediaInputError(SyncVidError, ValueError):
    """An image or video that cannot be read or used."""


class ServerStartError(SyncVidError, RuntimeError):
    """The server could not start (its inference process failed to load the models)."""
