"""Disk cache of offline audio features, keyed by audio content and model identity.

An entry is ``<key>.npz`` holding ``features`` and a ``checksum`` (sha256 of the key and the
feature bytes). Reads trust nothing: an entry that fails to load, names another key, has the
wrong shape or dtype, non-finite values or a wrong checksum is deleted and reported as a miss,
so the caller recomputes it. Writes go to a temporary file in the same directory and are
renamed into place, so a crash never leaves a half-written entry under a real key.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path

import numpy as np

from realtime.audio.features import FEATURE_VERSION
from realtime.config import CACHE_ENV

log = logging.getLogger(__name__)

DEFAULT_DIR = Path("~/.cache/syncvid/features")


def default_cache_dir() -> Path:
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else DEFAULT_DIR.expanduser()


def audio_digest(samples: np.ndarray) -> str:
    """sha256 of the decoded 16 kHz float32 samples: the same sound in any container is one entry."""
    return hashlib.sha256(np.ascontiguousarray(samples, dtype=np.float32).tobytes()).hexdigest()


def cache_key(samples: np.ndarray, model_id: str, version: str = FEATURE_VERSION) -> str:
    h = hashlib.sha256()
    for part in (audio_digest(samples), model_id, version):
        h.update(part.encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()


def _checksum(key: str, features: np.ndarray) -> str:
    h = hashlib.sha256(key.encode("utf-8"))
    h.update(str(features.shape).encode("ascii"))
    h.update(np.ascontiguousarray(features, dtype=np.float32).tobytes())
    return h.hexdigest()


class FeatureCache:
    """Feature cache in ``directory`` (default ``$SYNCVID_CACHE_DIR`` or ``~/.cache/syncvid/features``)."""

    def __init__(self, directory: str | os.PathLike | None = None):
        self.directory = Path(directory).expanduser() if directory is not None else default_cache_dir()

    def path_for(self, key: str) -> Path:
        return self.directory / f"{key}.npz"

    def _discard(self, path: Path, why: str) -> None:
        log.warning("discarding feature cache entry %s: %s", path, why)
        try:
            path.unlink()
        except OSError:
            pass

    def get(self, samples: np.ndarray, model_id: str, expected_steps: int | None = None) -> np.ndarray | None:
        """Cached (T, taps, C) features for this audio and model, or None (then recompute and ``put``)."""
        key = cache_key(samples, model_id)
        path = self.path_for(key)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                features = np.asarray(z["features"])
                stored_key = str(z["key"])
                stored_sum = str(z["checksum"])
        except Exception as e:  # noqa: BLE001 - any unreadable entry is simply a miss
            self._discard(path, f"unreadable ({type(e).__name__}: {e})")
            return None
        if stored_key != key:
            self._discard(path, "belongs to another key")
            return None
        if features.dtype != np.float32 or features.ndim != 3:
            self._discard(path, f"unexpected array {features.dtype} {features.shape}")
            return None
        if expected_steps is not None and features.shape[0] != expected_steps:
            self._discard(path, f"has {features.shape[0]} steps, expected {expected_steps}")
            return None
        if _checksum(key, features) != stored_sum:
            self._discard(path, "checksum mismatch")
            return None
        if not np.all(np.isfinite(features)):
            self._discard(path, "non-finite values")
            return None
        log.debug("feature cache hit %s", path)
        return features

    def put(self, samples: np.ndarray, model_id: str, features: np.ndarray) -> Path | None:
        """Store features atomically. A cache that cannot be written is logged, never fatal."""
        key = cache_key(samples, model_id)
        path = self.path_for(key)
        features = np.ascontiguousarray(features, dtype=np.float32)
        tmp = None
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{key[:16]}.", suffix=".tmp", dir=self.directory)
            with os.fdopen(fd, "wb") as f:
                np.savez(f, features=features, key=np.array(key), checksum=np.array(_checksum(key, features)))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            tmp = None
            return path
        except OSError as e:
            log.warning("could not write feature cache entry %s: %s", path, e)
            return None
        finally:
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
