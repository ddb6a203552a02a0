"""YAML configuration files mapped onto typed dataclasses.

Unknown keys are an error naming the key and the file, so a typo never silently falls back to a
default. Nested dataclasses, Optional fields, lists/tuples of plain values and dicts are supported.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from realtime.errors import SyncVidError

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO_ROOT / "configs"


CACHE_ENV = "SYNCVID_CACHE_DIR"


def cache_root() -> Path:
    """Root of the engine's on-disk caches (avatars, viseme training sets): ``$SYNCVID_CACHE_DIR``,
    else ``~/.cache/syncvid``."""
    root = os.environ.get(CACHE_ENV)
    return Path(root).expanduser() if root else Path.home() / ".cache" / "syncvid"


class ConfigError(SyncVidError, ValueError):
    """A configuration file or mapping does not fit the expected schema."""


def _strip_optional(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _convert(value: Any, tp: Any, where: str, source: str) -> Any:
    if value is None:
        return None
    tp = _strip_optional(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: '{where}' must be a mapping, got {type(value).__name__}")
        return from_dict(tp, value, source=source, prefix=where)
    origin = typing.get_origin(tp)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: '{where}' must be a list, got {type(value).__name__}")
        args = typing.get_args(tp)
        item_tp = args[0] if args else Any
        items = [_convert(v, item_tp, f"{where}[{i}]", source) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool) and not isinstance(value, tp):
        raise ConfigError(f"{source}: '{where}' must be {tp.__name__}, got {value!r}")
    return value


def from_dict(cls: type[T], data: dict, source: str = "<dict>", prefix: str = "") -> T:
    """Builds dataclass ``cls`` from ``data``; unknown keys raise ConfigError naming key and source."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in names]
    if unknown:
        key = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        raise ConfigError(
            f"{source}: unknown key '{key}' (valid keys here: {', '.join(sorted(names))})"
        )
    kwargs = {}
    for k, v in data.items():
        where = f"{prefix}.{k}" if prefix else k
        kwargs[k] = _convert(v, hints[k], where, source)
    try:
        return cls(**kwargs)
    except TypeError as e:  # missing required fields
        raise ConfigError(f"{source}: {e}") from None


def load_yaml(path: str | Path) -> dict:
    """Reads a YAML mapping; a missing or malformed file is one clear error naming it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; pass an existing YAML file")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    return data


def load_config(cls: type[T], path: str | Path, section: str | None = None) -> T:
    """Loads ``path`` (or one top-level ``section`` of it) into dataclass ``cls``."""
    data = load_yaml(path)
    if section is not None:
        if section not in data:
            raise ConfigError(f"{path}: missing section '{section}'")
        data = data[section]
    return from_dict(cls, data, source=str(path), prefix=section or "")


def to_dict(obj: Any) -> dict:
    return dataclasses.asdict(obj)
