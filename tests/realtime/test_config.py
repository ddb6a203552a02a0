from dataclasses import dataclass, field
from typing import Optional

import pytest

from realtime.config import ConfigError, from_dict, load_config


@dataclass
class Inner:
    steps: int = 4
    scale: float = 1.5


@dataclass
class Outer:
    name: str = "x"
    inner: Inner = field(default_factory=Inner)
    sizes: list[int] = field(default_factory=list)
    pair: tuple[int, int] = (1, 2)
    path: Optional[str] = None


def test_nested_and_int_to_float(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("name: a\ninner:\n  steps: 2\n  scale: 3\nsizes: [1, 2]\npair: [3, 4]\n")
    cfg = load_config(Outer, f)
    assert cfg.inner.steps == 2 and cfg.inner.scale == 3.0 and isinstance(cfg.inner.scale, float)
    assert cfg.sizes == [1, 2] and cfg.pair == (3, 4) and cfg.path is None


def test_unknown_key_names_key_and_file(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("inner:\n  stepz: 2\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*'inner\.stepz'"):
        load_config(Outer, f)


def test_wrong_type_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="'inner.steps' must be int"):
        from_dict(Outer, {"inner": {"steps": "two"}}, source="s.yaml")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Outer, tmp_path / "nope.yaml")


def test_section(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("model:\n  steps: 7\nother: 1\n")
    assert load_config(Inner, f, section="model").steps == 7
    with pytest.raises(ConfigError, match="missing section 'run'"):
        load_config(Inner, f, section="run")


def test_cache_root_follows_env(tmp_path, monkeypatch):
    from pathlib import Path

    from realtime.config import cache_root
    from realtime.face.avatar import default_cache_dir
    from realtime.face.sources import avatar_cache_dir
    from realtime.visemes.train import default_cache_dir as visemes_cache_dir

    monkeypatch.setenv("SYNCVID_CACHE_DIR", str(tmp_path / "c"))
    assert cache_root() == tmp_path / "c"
    assert default_cache_dir() == tmp_path / "c" / "avatars" / "default"
    assert avatar_cache_dir() == tmp_path / "c" / "avatars"
    assert visemes_cache_dir() == tmp_path / "c" / "visemes"
    monkeypatch.delenv("SYNCVID_CACHE_DIR")
    assert cache_root() == Path.home() / ".cache" / "syncvid"
