"""Feature cache: hits, misses per model, and corrupt entries recomputed, never trusted."""

import os

import numpy as np
import pytest

from realtime.audio import cache as cache_mod
from realtime.audio import features as features_mod
from realtime.audio.cache import FeatureCache, cache_key, default_cache_dir
from realtime.audio.features import Audio2Feature

AUDIO = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
FEATS = np.random.default_rng(1).standard_normal((50, 5, 8)).astype(np.float32)


def test_roundtrip_and_keys(tmp_path):
    c = FeatureCache(tmp_path)
    assert c.get(AUDIO, "m1") is None
    path = c.put(AUDIO, "m1", FEATS)
    assert path.exists() and path.parent == tmp_path
    np.testing.assert_array_equal(c.get(AUDIO, "m1", expected_steps=50), FEATS)
    assert c.get(AUDIO, "m2") is None  # other model
    assert c.get(AUDIO[:-1], "m1") is None  # other audio
    assert cache_key(AUDIO, "m1") != cache_key(AUDIO, "m1", version="other")
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary files left


def test_default_dir_from_env(monkeypatch, tmp_path):
    monkeypatch.setenv("SYNCVID_CACHE_DIR", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    assert FeatureCache().directory == tmp_path / "c"
    monkeypatch.delenv("SYNCVID_CACHE_DIR")
    assert default_cache_dir() == cache_mod.DEFAULT_DIR.expanduser()


def _tamper_values(path):
    with np.load(path) as z:
        d = {k: z[k] for k in z.files}
    d["features"] = d["features"].copy()
    d["features"][3, 2, 1] += 0.5
    with open(path, "wb") as f:
        np.savez(f, **d)


def _wrong_shape(path):
    with np.load(path) as z:
        d = {k: z[k] for k in z.files}
    d["features"] = d["features"][:40]
    with open(path, "wb") as f:
        np.savez(f, **d)


@pytest.mark.parametrize("corrupt", [
    lambda p: p.write_bytes(b"garbage"),
    lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]),
    lambda p: p.write_bytes(b""),
    _tamper_values,
    _wrong_shape,
], ids=["garbage", "truncated", "empty", "tampered", "wrong-shape"])
def test_corrupt_entries_are_discarded(tmp_path, corrupt):
    c = FeatureCache(tmp_path)
    path = c.put(AUDIO, "m1", FEATS)
    corrupt(path)
    assert c.get(AUDIO, "m1", expected_steps=50) is None
    assert not path.exists()


def test_unwritable_cache_is_not_fatal(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert FeatureCache(blocker / "sub").put(AUDIO, "m1", FEATS) is None


def test_audio2feature_uses_cache_and_recomputes_corrupt(tmp_path, monkeypatch, arctic_audio):
    import torch
    from whisper.model import ModelDimensions, Whisper

    torch.manual_seed(0)
    tiny = Whisper(ModelDimensions(80, 1500, 16, 2, 2, 10, 4, 16, 2, 1)).eval()  # real context, tiny width
    calls = []
    real = features_mod.compute_features

    def counting(model, audio, dtype=None):
        calls.append(len(audio))
        return real(model, audio, dtype)

    monkeypatch.setattr(features_mod, "compute_features", counting)
    c = FeatureCache(tmp_path)
    a2f = Audio2Feature(tiny, cache=c, model_id="whisper:test")
    first = a2f.audio2feat(arctic_audio)
    second = a2f.audio2feat(arctic_audio)
    assert len(calls) == 1
    np.testing.assert_array_equal(first, second)
    (entry,) = list(tmp_path.glob("*.npz"))
    size = os.path.getsize(entry)
    entry.write_bytes(entry.read_bytes()[: size // 2])
    third = a2f.audio2feat(arctic_audio)
    assert len(calls) == 2
    np.testing.assert_array_equal(first, third)
    assert os.path.getsize(entry) == size  # rewritten whole
    assert first.shape == (200, 3, 16)
