import numpy as np
import pytest
import torch

from models.syncnet import StableSyncNet, SyncNetConfig, tiny_config
from realtime.errors import WeightsError
from realtime.evaluate.sync import (
    MEL_WINDOW,
    evaluate,
    load_syncnet,
    load_syncnet_config,
    mel_filters,
    mel_window_start,
    offset_search,
    video_windows,
    wav2lip_mel,
)


def test_full_architecture_shapes_on_meta():
    with torch.device("meta"):
        net = StableSyncNet()
        v, a = net(torch.empty(2, 48, 128, 256), torch.empty(2, 1, 80, 52))
    assert v.shape == a.shape == (2, 2048)
    sd = net.state_dict()
    assert len(sd) == 266 and sum(t.numel() for t in sd.values()) == 401_306_080
    # LatentSync's names: resnet and attention blocks interleaved in one list
    assert "audio_encoder.down_blocks.4.attn.to_q.bias" in sd
    assert "visual_encoder.down_blocks.7.ff.net.0.proj.weight" in sd
    assert tuple(sd["audio_encoder.down_blocks.8.downsample_conv.weight"].shape) == (2048, 2048, 3, 3)


def test_tiny_unit_embeddings():
    torch.manual_seed(0)
    net = StableSyncNet(tiny_config()).eval()
    with torch.no_grad():
        v, a = net(torch.randn(3, 48, 128, 256), torch.randn(3, 1, 80, 52))
    assert v.shape == a.shape == (3, 32)
    torch.testing.assert_close(v.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(a.norm(dim=1), torch.ones(3))


@pytest.mark.parametrize("planted", [-7, 0, 3, 15])
def test_offset_search_finds_planted_offset(planted):
    rng = np.random.default_rng(1)
    n, d = 60, 16
    emb = rng.standard_normal((n + 40, d))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    # video window i shows the sound of audio window i - planted (the video lags by `planted` frames)
    video = emb[20:20 + n] + 0.05 * rng.standard_normal((n, d))
    audio = emb[20 + planted:20 + planted + n]
    score = offset_search(video, audio, max_offset=15)
    assert score.offset == planted
    assert score.lse_d < 0.3 and score.lse_c > 1.0
    assert score.distances.shape == (31,)


def test_offset_sign_convention():
    # audio window j carries the content of video window j + 2: the video lags the audio by 2 frames
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((50, 8))
    video = emb[2:42]  # video[i] = emb[i + 2]
    audio = emb[:40]  # audio[j] = emb[j]: video i matches audio i + 2, the sound comes later
    assert offset_search(video, audio).offset == -2


def test_wav2lip_mel():
    sr = 16000
    t = np.arange(sr) / sr
    x = 0.5 * np.sin(2 * np.pi * 1000 * t)
    mel = wav2lip_mel(x)
    assert mel.shape == (80, 81) and mel.dtype == np.float32  # 1 + 16000 // 200 frames
    assert mel.min() >= -4 and mel.max() <= 4
    centres = np.argmax(mel_filters(), axis=1) * 20.0  # bin spacing 16000 / 800 = 20 Hz
    assert abs(centres[int(np.argmax(mel[:, 40]))] - 1000) <= 60
    assert wav2lip_mel(np.zeros(sr)).max() == -4.0  # silence floors at -4
    assert mel_window_start(16) == 51 and MEL_WINDOW == 52


def test_wav2lip_mel_matches_librosa_golden(arctic_audio):
    """Golden values from LatentSync's audio.melspectrogram with librosa 0.10.1 on arctic_a0007.wav
    (computed once outside the project; our numpy version matched it to 1.5e-7 max abs)."""
    mel = wav2lip_mel(arctic_audio).astype(np.float64)
    assert mel.shape == (80, 321)
    assert mel.sum() == pytest.approx(-46959.104, abs=0.05)
    np.testing.assert_allclose(mel[::10, 100], [-0.82902, -1.39789, -0.18336, 0.61913, -0.66451, -0.90621,
                                                -0.42856, -2.16619], atol=1e-4)
    np.testing.assert_allclose(mel.mean(axis=0)[::40], [-2.78651, -1.33318, -1.49318, -1.02643, -1.24117,
                                                        -0.49915, -2.588, -3.04305, -3.35012], atol=1e-4)


def test_video_windows_layout():
    crops = np.zeros((18, 256, 256, 3), np.uint8)
    crops[:, 128:, :, 0] = np.arange(18)[:, None, None] * 10  # red of the lower half = 10 * frame
    w = video_windows(crops)
    assert w.shape == (3, 48, 128, 256)
    # frame-major channels: channel 3 * f is frame (start + f)'s red
    assert w[1, 3 * 5, 0, 0] == pytest.approx(60 / 127.5 - 1)
    assert w[1, 3 * 5 + 1, 0, 0] == pytest.approx(-1)


def test_evaluate_tiny_end_to_end():
    torch.manual_seed(0)
    net = StableSyncNet(tiny_config()).eval()
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (24, 256, 256, 3), dtype=np.uint8)
    score = evaluate(net, crops, rng.standard_normal(16000).astype(np.float32) * 0.1, max_offset=3)
    assert score.windows == 9 and score.distances.shape == (7,)
    assert -3 <= score.offset <= 3 and 0 <= score.lse_d <= 2


def test_checkpoint_round_trip_and_errors(tmp_path):
    with pytest.raises(WeightsError, match="--syncnet"):
        load_syncnet(None)
    with pytest.raises(WeightsError, match="no_such.pt"):
        load_syncnet(tmp_path / "no_such.pt")
    cfg_path = tmp_path / "syncnet_tiny.yaml"
    import yaml
    from dataclasses import asdict
    cfg_path.write_text(yaml.safe_dump({"model": asdict(tiny_config()), "data": {"latent_space": False,
                                                                                  "num_frames": 16}}))
    assert load_syncnet_config(cfg_path) == tiny_config()
    net = StableSyncNet(tiny_config())
    torch.save({"state_dict": net.state_dict(), "global_step": 1}, tmp_path / "s.pt")
    loaded = load_syncnet(tmp_path / "s.pt", cfg_path)
    for k, v in net.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)
    with pytest.raises(WeightsError, match="missing"):  # tiny weights against the full default config
        load_syncnet(tmp_path / "s.pt")


def test_default_config_is_16_pixel_attn():
    cfg = SyncNetConfig()
    assert cfg.audio_encoder.downsample_factors[-1] == [2, 3] and cfg.visual_encoder.in_channels == 48
