import json

import numpy as np
import pytest
import torch

from realtime.distill.data import DataError, DistillData, split_clips, write_clip
from realtime.distill.synthetic import (
    SyntheticSpec,
    latent_keep_mask,
    write_synthetic_data,
)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return write_synthetic_data(tmp_path_factory.mktemp("data"), SyntheticSpec(clips=3, frames=12, seed=0))


def test_layout_and_batches(synthetic):
    info = json.loads((synthetic / "dataset.json").read_text())
    assert info["format"] == "syncvid-distill-data" and info["version"] == 1
    assert info["resolution"] == 32 and info["latent_size"] == 4 and len(info["clips"]) == 3
    clip = synthetic / "clips" / info["clips"][0]
    assert np.load(clip / "latents.npy").shape == (12, 2, 4, 4, 4)
    assert np.load(clip / "audio_offline.npy").dtype == np.float16
    assert np.load(clip / "audio_streaming.npy").shape == (12, 50, 384)

    data = DistillData(synthetic, frames=4)
    assert data.windows == 3 * 9
    b = data.sample(np.random.default_rng(0), 5)
    assert b["conditioning"].shape == (5, 9, 4, 4, 4) and b["target"].shape == (5, 4, 4, 4, 4)
    assert b["audio_offline"].shape == b["audio_streaming"].shape == (5, 4, 50, 384)
    cond = b["conditioning"]
    keep = latent_keep_mask(32, 4)
    assert torch.equal(cond[:, 0], keep.expand(5, 4, 4, 4))  # mask channel, renderer's nearest resize
    torch.testing.assert_close(cond[:, 5:], b["target"])  # reference = the frame itself, as at inference
    torch.testing.assert_close(cond[:, 1:5], b["target"] * keep)  # masked latents: mouth removed
    other = data.sample(np.random.default_rng(0), 5, other_reference=True)
    assert not torch.equal(other["conditioning"][:, 5:], other["target"])
    assert float((b["audio_offline"] - b["audio_streaming"]).abs().mean()) > 0.01  # the two kinds differ


def test_windows_skip_frames_without_a_face(tmp_path):
    root = write_synthetic_data(tmp_path, SyntheticSpec(clips=1, frames=4))
    lat = np.zeros((10, 2, 4, 4, 4), np.float32)
    faces = np.ones(10, bool)
    faces[4] = False
    audio = {k: np.zeros((10, 50, 384), np.float32) for k in ("offline", "streaming")}
    write_clip(root, "gap", lat, audio, faces, "test")
    data = DistillData(root, frames=3, clips=["gap"])
    assert data.clips[0].starts.tolist() == [0, 1, 5, 6, 7]  # no window covers frame 4


def test_split_keeps_a_training_clip(synthetic):
    info = DistillData(synthetic, frames=2).info
    train, held = split_clips(info, 0.34, seed=0)
    assert len(held) == 1 and len(train) == len(info.clips) - 1 and not set(train) & set(held)
    assert split_clips(info, 0.0, 0) == (info.clips, [])


def test_errors_name_the_directory(tmp_path, synthetic):
    with pytest.raises(DataError, match="does not exist"):
        DistillData(tmp_path / "nothing", frames=2)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no dataset.json"):
        DistillData(tmp_path / "empty", frames=2)
    with pytest.raises(DataError, match="no clip with 500 consecutive frames"):
        DistillData(synthetic, frames=500)
    d = write_synthetic_data(tmp_path / "nolat", SyntheticSpec(clips=1, frames=4))
    (d / "clips" / "synthetic_000" / "latents.npy").unlink()
    with pytest.raises(DataError, match="lacks latents.npy.*--vae"):
        DistillData(d, frames=2)
    (d / "dataset.json").write_text(json.dumps({"format": "syncvid-distill-data", "version": 1, "clips": []}))
    with pytest.raises(DataError, match="holds no clips"):
        DistillData(d, frames=2)


def test_mouth_opening_reads_back_the_opening_the_latents_were_made_with(tmp_path):
    from realtime.distill.synthetic import SpeechClip, mouth_opening

    opening = np.linspace(0, 1, 6).astype(np.float32)
    blocks = np.zeros((6, 50, 384), np.float32)
    spec = SyntheticSpec(opening=2.0)
    root = write_synthetic_data(tmp_path, spec, [SpeechClip(opening, blocks, blocks)])
    data = DistillData(root, frames=6)
    target = data.windows_at([(data.clips[0], 0)])["target"]
    torch.testing.assert_close(mouth_opening(target, spec)[0], torch.from_numpy(opening), atol=1e-5, rtol=0)
