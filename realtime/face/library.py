"""A folder of avatars a server offers, each chosen by name (``syncvid serve --avatars DIR``).

Entries of the folder, each named by its folder name or file stem:

- a prepared avatar folder (one holding ``avatar.json``, from ``syncvid prepare-avatar``): kind "prepared"
- a photo (.jpg .jpeg .png .webp .bmp): kind "photo"
- a video (.mp4 .mov .webm .mkv .avi): kind "video"

Photos and videos are prepared on first use into the content-keyed cache of ``face.sources`` (seconds
once; later loads, also after a restart, only read the cache). The server's own avatar is always
there as ``default``. Skipped: hidden entries (a leading dot), names with unprintable characters,
folders that are not prepared avatars, other file types, and symlinks that lead outside the folder.

Name clashes are resolved, in this order: ``default`` is always the server's avatar (an entry named
``default`` is shadowed); a prepared folder wins over a photo, a photo over a video; between two
files of one kind (``anna.jpg``, ``anna.png``) the file name first in sort order wins. Shadowed
entries are logged once.

The folder is scanned again at each ``names()``, ``describe()`` and ``load()`` (one directory
listing: a file dropped in while the server runs is offered at once). A name is only ever looked
up among the scanned names, so no name reaches outside the folder.

Loaded avatars are kept for the next session that asks, at most ``max_loaded`` of them besides the
default, least recently used dropped first (a session keeps its own avatar while it runs). An entry
changed on disk since it was loaded (its file, or the folder's ``avatar.json``) is loaded again.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from realtime.errors import MediaInputError
from realtime.face.avatar import Avatar
from realtime.face.avatar_meta import META_FILE
from realtime.face.sources import load_avatar_source

log = logging.getLogger(__name__)

DEFAULT = "default"
PHOTO_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp"})
VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".webm", ".mkv", ".avi"})
_RANK = {"prepared": 0, "photo": 1, "video": 2}  # which kind wins a name clash
_NAMES_SHOWN = 8  # names an UnknownAvatar message lists before "and N more"


class UnknownAvatar(ValueError):
    """A name that is not one of the library's avatars (the message names it, the folder and the
    available names)."""


@dataclass(frozen=True)
class _Entry:
    name: str
    kind: str  # "prepared" | "photo" | "video"
    path: Path

    def signature(self) -> tuple[int, int]:
        """Changes when the entry is replaced on disk (its file, or a prepared folder's metadata)."""
        st = (self.path / META_FILE if self.kind == "prepared" else self.path).stat()
        return st.st_mtime_ns, st.st_size


@dataclass
class _Loaded:
    avatar: Avatar
    signature: tuple[int, int]


def check_library_dir(root: str | Path) -> Path:
    """``root`` as a Path if it is a folder; else ``MediaInputError`` saying what to pass."""
    p = Path(root).expanduser()
    if not p.is_dir():
        what = "does not exist" if not p.exists() else "is not a folder"
        raise MediaInputError(f"avatar library {p} {what}: pass --avatars DIR (or avatars_dir in the config) "
                              "naming a folder of photos, videos or prepared avatar folders")
    return p


class AvatarLibrary:
    """The avatars a server offers by name. Thread-safe: ``load`` is meant for a worker thread
    (preparing a photo takes seconds), ``get`` for a session being built on the event loop."""

    def __init__(self, root: str | Path | None, default: Avatar, max_loaded: int = 4, resolution: int | None = None,
                 cache_dir: str | Path | None = None) -> None:
        """``default``: the server's avatar (tests pass any ``render.base.AvatarFrames`` stand-in);
        ``resolution``: of photos and videos prepared here (None: the default avatar's, else 256);
        ``cache_dir``: where they are prepared (None: ``face.sources.avatar_cache_dir()``)."""
        if max_loaded < 1:
            raise ValueError(f"max_loaded must be >= 1, got {max_loaded}")
        self.root = check_library_dir(root) if root is not None else None
        self.default = default
        self.max_loaded = max_loaded
        self.resolution = resolution or int(getattr(default, "resolution", 256))
        self.cache_dir = cache_dir
        self._lock = threading.Lock()  # guards _loaded and _gates
        self._loaded: OrderedDict[str, _Loaded] = OrderedDict()
        self._gates: dict[str, threading.Lock] = {}  # per name: one load at a time (bounded by the folder)
        # per photo or video: where it was prepared, so loading it again after it was dropped reads
        # that folder (milliseconds) instead of hashing the file to find its cache entry
        self._prepared: dict[str, tuple[tuple[int, int], Path]] = {}
        self._shadowed: set[Path] = set()  # logged once each

    # ---- the listing -----------------------------------------------------------------------------
    def names(self) -> list[str]:
        """``default`` first, then the folder's avatars in sort order."""
        return [DEFAULT, *self._scan()]

    def describe(self) -> list[dict]:
        """JSON-ready, one per name: ``{"name", "kind": "default"|"prepared"|"photo"|"video", "loaded"}``."""
        with self._lock:
            loaded = set(self._loaded)
        out = [{"name": DEFAULT, "kind": "default", "loaded": True}]
        out += [{"name": e.name, "kind": e.kind, "loaded": e.name in loaded} for e in self._scan().values()]
        return out

    def resolve(self, name: str) -> Path:
        """Where the avatar ``name`` is: its entry in the folder, or the default avatar's folder.
        ``UnknownAvatar`` for anything that is not exactly one of ``names()``."""
        if name == DEFAULT:
            directory = getattr(self.default, "directory", None)
            if directory is None:
                raise LookupError("the default avatar has no folder (a stand-in)")
            return Path(directory)
        return self._entry(name).path

    # ---- loading -----------------------------------------------------------------------------------
    def load(self, name: str) -> Avatar:
        """The avatar ``name``, loaded (and prepared, for a photo or video not yet in the cache) if
        it is not kept already. Blocking: call it from a worker thread. Two threads asking for one
        name load it once. Raises ``UnknownAvatar``, or ``MediaInputError`` for an entry that cannot
        be used (no face in the photo, a corrupt folder)."""
        if name == DEFAULT:
            return self.default
        entry = self._entry(name)
        try:
            signature = entry.signature()
        except OSError:  # removed since the listing
            raise UnknownAvatar(self._unknown_message(name, {})) from None
        with self._lock:
            hit = self._hit(name, signature)
            if hit is not None:
                return hit
            gate = self._gates.setdefault(name, threading.Lock())
        with gate:
            with self._lock:  # loaded by the thread this one waited for
                hit = self._hit(name, signature)
            if hit is not None:
                return hit
            log.info("loading avatar %r from %s", name, entry.path)
            avatar = self._open(entry, signature)
            with self._lock:
                self._loaded[name] = _Loaded(avatar, signature)
                self._loaded.move_to_end(name)
                while len(self._loaded) > self.max_loaded:
                    dropped, _ = self._loaded.popitem(last=False)
                    log.info("avatar %r dropped from memory (at most %d kept)", dropped, self.max_loaded)
            return avatar

    def get(self, name: str) -> Avatar:
        """The avatar ``name``: the one kept in memory at once (no disk access: safe on the event
        loop after ``load``), else ``load(name)``."""
        if name == DEFAULT:
            return self.default
        with self._lock:
            kept = self._loaded.get(name)
            if kept is not None:
                self._loaded.move_to_end(name)
                return kept.avatar
        return self.load(name)

    def loaded(self) -> list[str]:
        """Names kept in memory besides ``default``, least recently used first."""
        with self._lock:
            return list(self._loaded)

    def _hit(self, name: str, signature: tuple[int, int]) -> Avatar | None:
        """Under ``_lock``: the kept avatar of ``name`` if it is still what is on disk."""
        kept = self._loaded.get(name)
        if kept is None:
            return None
        if kept.signature != signature:  # replaced on disk since: load it again
            del self._loaded[name]
            return None
        self._loaded.move_to_end(name)
        return kept.avatar

    def _open(self, entry: _Entry, signature: tuple[int, int]) -> Avatar:
        if entry.kind == "prepared":
            return Avatar.load(entry.path)
        known = self._prepared.get(entry.name)
        if known is not None and known[0] == signature:
            try:
                return Avatar.load(known[1])
            except MediaInputError:  # the cache was cleared: prepare it again
                pass
        avatar = load_avatar_source(entry.path, resolution=self.resolution, cache_dir=self.cache_dir, progress=False)
        if avatar.directory is not None:
            self._prepared[entry.name] = (signature, avatar.directory)
        return avatar

    # ---- the folder --------------------------------------------------------------------------------
    def _entry(self, name: str) -> _Entry:
        entries = self._scan() if _plain_name(name) else {}
        entry = entries.get(name)
        if entry is None:
            raise UnknownAvatar(self._unknown_message(name, entries))
        return entry

    def _unknown_message(self, name: object, entries: dict[str, _Entry]) -> str:
        if self.root is None:
            return (f"avatar {name!r} is not available: this server has no avatar library (start it with "
                    f"--avatars DIR); the only avatar is {DEFAULT!r}")
        names = [DEFAULT, *(entries or self._scan())]
        shown = ", ".join(names[:_NAMES_SHOWN])
        more = f" and {len(names) - _NAMES_SHOWN} more" if len(names) > _NAMES_SHOWN else ""
        return f"avatar {name!r} is not in the avatar library {self.root}: choose one of {shown}{more}"

    def _scan(self) -> dict[str, _Entry]:
        """The folder's avatars by name, in name order (clashes resolved as the module says)."""
        if self.root is None:
            return {}
        try:
            real_root = self.root.resolve()
            with os.scandir(self.root) as it:
                found = [e for e in (_classify(real_root, d) for d in it) if e is not None]
        except OSError as e:
            log.warning("avatar library %s cannot be read (%s); offering the default avatar only", self.root,
                        e.strerror)
            return {}
        found.sort(key=lambda e: (e.name, _RANK[e.kind], e.path.name))
        entries: dict[str, _Entry] = {}
        for e in found:
            if e.name == DEFAULT or e.name in entries:
                if e.path not in self._shadowed:
                    self._shadowed.add(e.path)
                    winner = "the server's own avatar" if e.name == DEFAULT else entries[e.name].path
                    log.warning("avatar library: %s is not offered, the name %r is %s", e.path, e.name, winner)
                continue
            entries[e.name] = e
        return entries


def _plain_name(name: object) -> bool:
    """Could be an entry's name at all: a non-empty string without a path in it (checked before the
    folder is listed; the name must still be one of the listed ones)."""
    return (isinstance(name, str) and bool(name) and name.isprintable() and not name.startswith(".")
            and "/" not in name and "\\" not in name and os.sep not in name and "\0" not in name)


def _classify(real_root: Path, d: os.DirEntry) -> _Entry | None:
    """The avatar an entry of the folder (``real_root``: its resolved path) is, or None (hidden,
    another kind of file, a symlink leading outside the folder)."""
    if d.name.startswith(".") or not d.name.isprintable():
        return None
    path = Path(d.path)
    try:
        if d.is_symlink() and not path.resolve().is_relative_to(real_root):
            log.debug("avatar library: %s leads outside %s; skipped", path, real_root)
            return None
        if d.is_dir():
            return _Entry(d.name, "prepared", path) if (path / META_FILE).is_file() else None
        if not d.is_file():
            return None
    except (OSError, RuntimeError):  # vanished or unreadable while listing; a symlink loop
        return None
    suffix = path.suffix.lower()
    kind = "photo" if suffix in PHOTO_SUFFIXES else "video" if suffix in VIDEO_SUFFIXES else None
    if kind is None or not path.stem or path.stem.startswith("."):
        return None
    return _Entry(path.stem, kind, path)
