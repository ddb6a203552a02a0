import dataclasses

import numpy as np
import pytest
import torch
import yaml
from scipy.io import wavfile

from realtime.cli import main


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("SYNCVID_CACHE_DIR", str(tmp_path / "cache"))
    yield


def _wav(path, seconds=1.0, rate=16000):
    t = np.arange(int(seconds * rate)) / rate
    x = 0.3 * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)) * np.sin(2 * np.pi * 180 * t)
    wavfile.write(path, rate, (x * 32767).astype(np.int16))
    return path


def _probe(path):
    import av

    with av.open(str(path)) as c:
        v = c.streams.video[0]
        return dict(frames=sum(1 for _ in c.decode(video=0)), fps=float(v.average_rate),
                    audio=[s.codec_context.name for s in c.streams.audio], duration=c.duration / 1e6,
                    size=(v.codec_context.width, v.codec_context.height))


def _embedded_weights_missing():
    try:
        from realtime.visemes.runtime import weights_path
    except ImportError:
        return True
    return not weights_path("full").is_file()


@pytest.mark.skipif(_embedded_weights_missing(), reason="the embedded renderer's viseme weights are not committed yet")
def test_render_embedded_on_default_avatar(tmp_path, default_avatar, capsys):
    out = tmp_path / "out.mp4"
    assert main(["render", "--avatar", str(default_avatar.directory), "--audio", str(_wav(tmp_path / "a.wav")),
                 "--out", str(out), "--no-progress"]) == 0
    assert "25 frames at 25 fps" in capsys.readouterr().out
    info = _probe(out)
    assert info["frames"] == 25 and info["fps"] == 25 and info["audio"] == ["aac"]
    assert info["duration"] == pytest.approx(1.0, abs=0.1)


def test_render_passes_fps_chunk_and_seed_on(tmp_path, default_avatar, capsys, monkeypatch):
    """--fps, --chunk and --seed reach the renderer (10 fps on 1 s of audio: 10 frames, in chunks of 3)."""
    from realtime.render.embedded import EmbeddedRenderer

    calls = []
    real = EmbeddedRenderer.render_chunk
    monkeypatch.setattr(EmbeddedRenderer, "render_chunk",
                        lambda self, a, idx, b, state: calls.append((len(idx), state.seed)) or real(self, a, idx, b, state))
    out = tmp_path / "out.mp4"
    assert main(["render", "--avatar", str(default_avatar.directory), "--audio", str(_wav(tmp_path / "a.wav")),
                 "--out", str(out), "--no-progress", "--fps", "10", "--chunk", "3", "--seed", "7"]) == 0
    assert "10 frames at 10 fps" in capsys.readouterr().out
    assert calls == [(3, 7), (3, 7), (3, 7), (1, 7)]
    assert _probe(out)["fps"] == 10


@pytest.mark.skipif(_embedded_weights_missing(), reason="the embedded renderer's viseme weights are not committed yet")
def test_render_image_fresh_install_form(tmp_path):
    """`syncvid render --image FACE --audio A --out OUT.mp4` with no other argument."""
    import cv2
    import skimage.data

    img = tmp_path / "face.png"
    cv2.imwrite(str(img), cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR))
    out = tmp_path / "out.mp4"
    assert main(["render", "--image", str(img), "--audio", str(_wav(tmp_path / "a.wav", 0.5)), "--out", str(out)]) == 0
    assert _probe(out)["frames"] == 12
    assert any((tmp_path / "cache" / "avatars").iterdir())  # prepared once into the cache


def test_unet_without_vae_says_what_is_missing(tmp_path, capsys):
    rc = main(["render", "--image", "face.png", "--audio", str(_wav(tmp_path / "a.wav", 0.1)), "--out",
               str(tmp_path / "o.mp4"), "--unet", str(tmp_path / "latentsync_unet.pt")])
    err = capsys.readouterr().err
    assert rc == 2 and "--vae" in err and "latentsync_unet.pt" in err and len(err.strip().splitlines()) == 1


def test_missing_vae_dir_is_named(tmp_path, capsys):
    rc = main(["render", "--image", "face.png", "--audio", str(_wav(tmp_path / "a.wav", 0.1)), "--out",
               str(tmp_path / "o.mp4"), "--unet", "u.pt", "--vae", str(tmp_path / "sd-vae-ft-mse")])
    assert rc == 2 and "sd-vae-ft-mse" in capsys.readouterr().err


def test_missing_audio_fails_first(tmp_path, capsys):
    rc = main(["render", "--image", "face.png", "--audio", str(tmp_path / "speech.wav"), "--out", "o.mp4"])
    assert rc == 2 and "speech.wav" in capsys.readouterr().err


def test_bad_chunk(tmp_path, capsys):
    assert main(["render", "--image", "f.png", "--audio", "a.wav", "--out", "o.mp4", "--chunk", "17"]) == 2
    assert "--chunk" in capsys.readouterr().err


def test_render_tiny_diffusion_end_to_end(tmp_path, default_avatar, capsys):
    """--unet/--config/--vae with a tiny random UNet (tiny preset) and a tiny VAE saved in diffusers format."""
    unet_mod = pytest.importorskip("models.unet")
    from models.vae import tiny_autoencoder_kl

    torch.manual_seed(0)
    unet = unet_mod.UNet3DConditionModel.from_config(unet_mod.tiny_config())
    torch.save({"state_dict": unet.state_dict(), "global_step": 0}, tmp_path / "unet.pt")
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump({"model": unet_mod.tiny_config(), "data": {"resolution": 256},
                                   "run": {"inference_steps": 1, "guidance_scale": 1.5}}))
    tiny_autoencoder_kl().save_pretrained(tmp_path / "vae")
    out = tmp_path / "o.mp4"
    rc = main(["render", "--avatar", str(default_avatar.directory), "--audio", str(_wav(tmp_path / "a.wav", 0.24)),
               "--out", str(out), "--unet", str(tmp_path / "unet.pt"), "--config", str(cfg), "--vae",
               str(tmp_path / "vae"), "--no-progress", "--seed", "3"])
    printed = capsys.readouterr()
    assert rc == 0, printed.err
    assert "diffusion renderer" in printed.out
    info = _probe(out)
    assert info["frames"] == 6 and info["audio"] == ["aac"] and info["size"] == default_avatar.size[::-1]


def test_eval_sync_needs_weights(tmp_path, capsys):
    assert main(["eval-sync", "--video", "v.mp4"]) == 2
    assert "--syncnet" in capsys.readouterr().err
    assert main(["eval-sync", "--video", "v.mp4", "--syncnet", str(tmp_path / "stable_syncnet.pt")]) == 2
    assert "stable_syncnet.pt" in capsys.readouterr().err


def test_eval_sync_tiny_end_to_end(tmp_path, capsys):
    """A 20-frame face video judged by a tiny random StableSyncNet saved as LatentSync does."""
    import json
    from fractions import Fraction

    import av
    import skimage.data

    from models.syncnet import StableSyncNet, tiny_config

    img = skimage.data.astronaut()[::2, ::2].copy()
    video = tmp_path / "v.mp4"
    with av.open(str(video), "w") as out:
        stream = out.add_stream("libx264", rate=Fraction(25))
        stream.width, stream.height, stream.pix_fmt = 256, 256, "yuv420p"
        for i in range(20):
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.roll(img, i % 3, axis=0), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    torch.manual_seed(0)
    torch.save({"state_dict": StableSyncNet(tiny_config()).state_dict()}, tmp_path / "syncnet.pt")
    cfg = tmp_path / "syncnet.yaml"
    cfg.write_text(yaml.safe_dump({"model": dataclasses.asdict(tiny_config()),
                                   "data": {"num_frames": 16, "resolution": 256, "latent_space": False}}))
    rc = main(["eval-sync", "--video", str(video), "--audio", str(_wav(tmp_path / "a.wav", 0.8)),
               "--syncnet", str(tmp_path / "syncnet.pt"), "--config", str(cfg), "--max-offset", "2",
               "--json", str(tmp_path / "s.json")])
    assert rc == 0, capsys.readouterr().err
    assert "LSE-D" in capsys.readouterr().out
    scores = json.loads((tmp_path / "s.json").read_text())
    assert scores["windows"] == 5 and len(scores["distances"]) == 5 and -2 <= scores["offset_frames"] <= 2


def test_render_keeps_the_input_audio_rate_and_channels(tmp_path, default_avatar, arctic_audio):
    """The engine reads 16 kHz mono; the file written keeps the speech at 44.1 kHz stereo."""
    import av

    from realtime.audio.io import resample

    t = np.arange(44100) / 44100
    left = resample(arctic_audio[:16000], 16000, 44100) + 0.05 * np.sin(2 * np.pi * 12000 * t)  # + a 12 kHz tone
    right = 0.5 * left
    wav = tmp_path / "stereo44.wav"
    wavfile.write(wav, 44100, (np.stack([left, right], axis=1) * 32767).astype(np.int16))
    out = tmp_path / "out.mp4"
    assert main(["render", "--avatar", str(default_avatar.directory), "--audio", str(wav), "--out", str(out),
                 "--no-progress"]) == 0
    with av.open(str(out)) as c:
        a = c.streams.audio[0]
        assert (a.rate, a.channels) == (44100, 2)
        decoded = np.concatenate([f.to_ndarray() for f in c.decode(audio=0)], axis=1)  # (2, n) planar float
    assert decoded.shape[1] == pytest.approx(44100, abs=2048)  # 25 frames = 1 s, plus AAC priming
    # both channels survive as they were: the right one is half the left, not a mix of the two
    ratio = np.sqrt((decoded[1] ** 2).mean() / (decoded[0] ** 2).mean())
    assert ratio == pytest.approx(0.5, abs=0.03)
    # the 12 kHz tone (which 16 kHz audio cannot carry) is still there, at its level
    def band(x):
        spectrum = np.abs(np.fft.rfft(x[2048:2048 + 32768] * np.hanning(32768)))
        return np.sqrt((spectrum[np.abs(np.fft.rfftfreq(32768, 1 / 44100) - 12000) < 30] ** 2).sum())

    assert band(decoded[0]) / band(np.pad(left, (0, 2048))) == pytest.approx(1.0, abs=0.2)
