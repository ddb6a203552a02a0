"""`syncvid features`: output arrays, cache reuse, clear one-line errors."""

import importlib.util
import subprocess
import sys
import wave

import numpy as np

from realtime.cli import main


def test_features_writes_arrays_matching_latentsync(tmp_path, arctic_wav, latentsync_reference, embedded_whisper):
    out = tmp_path / "feats.npz"
    cache = tmp_path / "cache"
    assert main(["features", str(arctic_wav), "--fps", "25", "--out", str(out), "--cache-dir", str(cache)]) == 0
    with np.load(out) as z:
        feats, chunks = z["features"], z["chunks"]
    assert feats.shape == (200, 5, 384) and chunks.shape == (100, 50, 384)
    ref = latentsync_reference
    assert np.abs(feats - ref["feature_array"]).max() <= 1e-3
    assert np.abs(chunks - ref["feature_array"][ref["chunk_indices"][:100]].reshape(100, 50, 384)).max() <= 1e-3
    assert len(list(cache.glob("*.npz"))) == 1
    # second run at another fps reuses the cache entry
    out30 = tmp_path / "feats30"
    assert main(["features", str(arctic_wav), "--fps", "30", "--out", str(out30), "--cache-dir", str(cache)]) == 0
    with np.load(out30) as z:  # the exact name given, no ".npz" appended
        assert z["chunks"].shape == (120, 50, 384)
        np.testing.assert_array_equal(z["features"], feats)
    assert len(list(cache.glob("*.npz"))) == 1


def test_no_cache_writes_nothing(tmp_path, arctic_wav, monkeypatch, embedded_whisper):
    monkeypatch.setenv("SYNCVID_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["features", str(arctic_wav), "--out", str(tmp_path / "f.npz"), "--no-cache"]) == 0
    assert not (tmp_path / "cache").exists()


def test_bad_audio_is_one_line_error(tmp_path, capsys):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF....not audio at all")
    assert main(["features", str(bad), "--out", str(tmp_path / "f.npz")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("syncvid features: error:") and str(bad) in err and "\n" not in err


def test_missing_whisper_checkpoint_is_one_line_error(tmp_path, arctic_wav, capsys):
    ckpt = tmp_path / "tiny.pt"
    assert main(["features", str(arctic_wav), "--out", str(tmp_path / "f.npz"), "--whisper", str(ckpt)]) == 2
    err = capsys.readouterr().err.strip()
    assert str(ckpt) in err and "\n" not in err


def test_console_script_reports_missing_file(tmp_path):
    missing = tmp_path / "missing.wav"
    r = subprocess.run([sys.executable, "-c", "import sys; from realtime.cli import main; sys.exit(main())", "features", str(missing), "--out", str(tmp_path / "x.npz")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [f"syncvid features: error: audio file '{missing}' does not exist; check the path"]


def test_streaming_flag(tmp_path, arctic_wav, capsys, embedded_whisper):
    # 1.5 s of the clip keeps the test short; fidelity itself is the streaming encoder's own test
    clip = tmp_path / "clip.wav"
    with wave.open(str(arctic_wav)) as src, wave.open(str(clip), "wb") as dst:
        dst.setparams(src.getparams())
        dst.writeframes(src.readframes(24000))
    out = tmp_path / "s.npz"
    rc = main(["features", str(clip), "--out", str(out), "--streaming", "--chunk-ms", "100"])
    if importlib.util.find_spec("realtime.audio.streaming") is None:
        assert rc == 2
        assert "StreamingAudioEncoder" in capsys.readouterr().err
        return
    assert rc == 0
    assert main(["features", str(clip), "--out", str(tmp_path / "o.npz"), "--no-cache"]) == 0
    with np.load(out) as z, np.load(tmp_path / "o.npz") as o:
        assert z["features"].shape == o["features"].shape == (75, 5, 384)
        assert z["chunks"].shape == o["chunks"].shape == (37, 50, 384)
        chunks, offline = z["chunks"], o["chunks"]
    assert np.isfinite(chunks).all()
    # close to the offline chunks, not equal: streaming lacks the future context
    cos = (chunks * offline).sum(-1) / (np.linalg.norm(chunks, axis=-1) * np.linalg.norm(offline, axis=-1) + 1e-9)
    assert cos.mean() > 0.8
