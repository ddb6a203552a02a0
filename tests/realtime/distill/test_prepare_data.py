"""`syncvid prepare-data` on a real short talking-face video: the astronaut photo drifting across
the frame with ARCTIC speech muxed in (written by the test)."""

import json

import numpy as np
import pytest

from realtime.cli import main
from realtime.distill.data import DistillData

FRAMES = 12  # 0.48 s at 25 fps


@pytest.fixture(scope="module")
def videos(tmp_path_factory, arctic_audio):
    pytest.importorskip("mediapipe")
    import skimage.data

    from realtime.offline.video_writer import VideoWriter

    root = tmp_path_factory.mktemp("videos")
    (root / "speaker").mkdir()
    img = skimage.data.astronaut()[::2, ::2].copy()  # 256 x 256, the face ~60 px wide
    audio = arctic_audio[8000:8000 + FRAMES * 640]  # speech from 0.5 s on
    with VideoWriter(root / "speaker" / "talk.mp4", 25, audio=audio) as w:
        for i in range(FRAMES):
            w.write(np.roll(img, 2 * i, axis=1))
    (root / "notes.txt").write_text("not a video")
    return root


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory):
    from models.vae import tiny_autoencoder_kl

    path = tmp_path_factory.mktemp("vae") / "vae"
    tiny_autoencoder_kl(0).save_pretrained(path)
    return path


def test_prepare_data_cli(videos, vae_dir, tmp_path, capsys):
    out = tmp_path / "data"
    assert main(["prepare-data", str(videos), "--out", str(out), "--vae", str(vae_dir), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert f"1 clip(s), {FRAMES} frames at 25 fps (0 without a face), 0 video(s) skipped" in printed

    info = json.loads((out / "dataset.json").read_text())
    assert info["clips"] == ["speaker__talk"] and info["resolution"] == 256 and info["latent_size"] == 32
    assert info["vae"] == {"class": "AutoencoderKL", "scaling_factor": 0.18215}
    clip = out / "clips" / "speaker__talk"
    meta = json.loads((clip / "clip.json").read_text())
    assert meta["frames"] == FRAMES and all(meta["faces"])
    assert np.load(clip / "crops.npy").shape == (FRAMES, 256, 256, 3)
    assert np.load(clip / "latents.npy").shape == (FRAMES, 2, 4, 32, 32)
    offline, live = np.load(clip / "audio_offline.npy"), np.load(clip / "audio_streaming.npy")
    assert offline.shape == live.shape == (FRAMES, 50, 384) and offline.dtype == np.float16
    # the streaming encoder's blocks: close to the offline ones, not equal (bounded look-ahead)
    o, s = offline.astype(np.float32), live.astype(np.float32)
    cos = (o * s).sum(-1) / (np.linalg.norm(o, axis=-1) * np.linalg.norm(s, axis=-1))
    assert 0.8 < cos.mean() < 0.9999, cos.mean()

    data = DistillData(out, frames=4)
    b = data.sample(np.random.default_rng(0), 2)
    assert b["conditioning"].shape == (2, 9, 4, 32, 32) and b["audio_streaming"].shape == (2, 4, 50, 384)


def test_prepare_data_errors(tmp_path, videos, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["prepare-data", str(tmp_path / "empty"), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    assert "no videos (.mp4" in capsys.readouterr().err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    assert main(["prepare-data", str(videos), "--out", str(tmp_path / "full"), "--no-progress"]) == 2
    assert "is not empty; pass a new --out" in capsys.readouterr().err
    assert main(["prepare-data", str(videos), "--out", str(tmp_path / "o"), "--max-frames", "0"]) == 2
