"""Errors a user can cause. Each message is one sentence naming the input and what to do."""

import re


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


def weights_load_reason(e: BaseException) -> str:
    """Why ``torch.load(..., weights_only=True)`` refused a file, in a few words for a one-line
    error. Never torch's own text for a file with pickled objects: it spans lines, carries terminal
    escapes and suggests ``weights_only=False``, i.e. running whatever code the file holds."""
    text = str(e)
    if "Unsupported global" in text:
        return "it holds pickled Python objects besides tensors, which are never loaded as they could run code"
    if "Weights only load failed" in text:
        return "its bytes are not a file of tensors that torch.save writes"
    if isinstance(e, EOFError):
        return "it is empty or cut short"
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(e).__name__)
    return re.sub(r"\x1b\[[0-9;]*m", "", first)[:160]
