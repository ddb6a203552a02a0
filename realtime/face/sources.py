"""Where an avatar comes from: a prepared folder, or a photo or video prepared on first use.

A photo or video is prepared once into a content-keyed cache (``~/.cache/syncvid/avatars``, or
``$SYNCVID_CACHE_DIR/avatars``), so the next run with the same file starts at once. Used by
``syncvid render``, ``syncvid serve --avatar`` and the evaluators.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path

from realtime.config import cache_root
from realtime.errors import MediaInputError
from realtime.face.avatar import Avatar, prepare_avatar
from realtime.face.avatar_meta import META_FILE

log = logging.getLogger(__name__)

# Still-image file types (lower case); any other file is decoded as a video.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"})


def avatar_cache_dir() -> Path:
    return cache_root() / "avatars"


def file_digest(path: Path) -> str:
    """First 16 hex digits of the file's SHA-256 (the cache key of what was prepared from it)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def source_kind(path: str | Path) -> str:
    """``"image"`` for a still-image file name, else ``"video"``."""
    return "image" if Path(path).suffix.lower() in IMAGE_SUFFIXES else "video"


def prepared_from_file(source: str | Path, kind: str, resolution: int = 256, cache_dir: str | Path | None = None,
                       progress: bool = True) -> Avatar:
    """The avatar of a video or photo file, prepared once into the content-keyed cache."""
    src = Path(source).expanduser()
    if not src.is_file():
        raise MediaInputError(f"{kind} {src} {'is a folder' if src.is_dir() else 'does not exist'}; pass an "
                              "existing file")
    try:
        digest = file_digest(src)
    except OSError as e:
        raise MediaInputError(f"{kind} {src} cannot be read ({e.strerror}); check its permissions") from None
    root = Path(cache_dir) if cache_dir is not None else avatar_cache_dir()
    directory = root / f"{kind}-{digest}-{resolution}"
    try:
        avatar = Avatar.load(directory)
        if avatar.resolution == resolution:
            log.info("using the prepared avatar cached in %s", directory)
            return avatar
    except MediaInputError:
        pass
    # announced once done: a file that cannot be prepared gets its error as the only line a run prints
    log.debug("preparing the avatar from %s into %s", src, directory)
    t0 = time.monotonic()
    directory.parent.mkdir(parents=True, exist_ok=True)
    avatar = prepare_avatar(src, directory, kind=kind, resolution=resolution, progress=progress, replace=False)
    log.info("prepared the avatar from %s into %s in %.1f s (once; later runs reuse it)", src, directory,
             time.monotonic() - t0)
    return avatar


def load_avatar_source(path: str | Path, resolution: int = 256, cache_dir: str | Path | None = None,
                       progress: bool = True) -> Avatar:
    """An avatar from ``path``: a prepared folder (``syncvid prepare-avatar``), or a photo or video
    file prepared on first use and cached."""
    p = Path(path).expanduser()
    if p.is_dir():
        if not (p / META_FILE).is_file():
            raise MediaInputError(f"avatar {p} is a folder but not a prepared avatar (no {META_FILE}): pass a "
                                  "photo or video file, or a folder made by `syncvid prepare-avatar`")
        return Avatar.load(p)
    if not p.exists():
        raise MediaInputError(f"avatar {p} does not exist: pass a face photo, a video, or a folder made by "
                              "`syncvid prepare-avatar`")
    return prepared_from_file(p, source_kind(p), resolution=resolution, cache_dir=cache_dir, progress=progress)
