import json

import pytest
import torch

from models.vae import (
    SD_VAE_FT_MSE_CONFIG,
    decode_latents,
    encode_latents,
    sd_vae_ft_mse,
    taesd,
    tiny_autoencoder_kl,
    tiny_autoencoder_tiny,
    vae_scale_factor,
)
from realtime.errors import WeightsError
from realtime.render.vae_loader import load_vae


def test_full_size_architectures_on_meta():
    with torch.device("meta"):
        kl = sd_vae_ft_mse()
        tiny = taesd()
    assert kl.config.scaling_factor == 0.18215 and (kl.config.shift_factor or 0.0) == 0.0
    assert sum(p.numel() for p in kl.parameters()) == 83_653_863  # sd-vae-ft-mse
    assert sum(p.numel() for p in tiny.parameters()) == 2_445_063  # TAESD
    assert vae_scale_factor(kl) == 8 and vae_scale_factor(tiny) == 8


@pytest.mark.parametrize("make", [tiny_autoencoder_kl, tiny_autoencoder_tiny])
def test_tiny_round_trip_shapes_and_scaling(make):
    vae = make()
    x = torch.rand((2, 3, 64, 64), generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        z = encode_latents(vae, x)
        y = decode_latents(vae, z)
    assert z.shape == (2, 4, 8, 8) and y.shape == (2, 3, 64, 64)
    if make is tiny_autoencoder_kl:
        with torch.no_grad():
            mean = vae.encode(x).latent_dist.mean
        torch.testing.assert_close(z, mean * 0.18215)
    # deterministic: the posterior mean, no sampling
    with torch.no_grad():
        assert torch.equal(encode_latents(vae, x), z)


@pytest.mark.parametrize("make", [tiny_autoencoder_kl, tiny_autoencoder_tiny])
def test_load_from_local_dir(tmp_path, make):
    vae = make()
    vae.save_pretrained(tmp_path / "vae")
    loaded = load_vae(tmp_path / "vae")
    assert type(loaded) is type(vae)
    x = torch.zeros((1, 3, 32, 32))
    with torch.no_grad():
        torch.testing.assert_close(encode_latents(loaded, x), encode_latents(vae, x))


def test_missing_dir_names_it(tmp_path):
    missing = tmp_path / "no_such_vae"
    with pytest.raises(WeightsError, match="no_such_vae"):
        load_vae(missing)


def test_dir_without_weights(tmp_path):
    d = tmp_path / "vae"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL", **{
        k: list(v) if isinstance(v, tuple) else v for k, v in SD_VAE_FT_MSE_CONFIG.items()}}))
    with pytest.raises(WeightsError, match="no weights file"):
        load_vae(d)
    (d / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel"}))
    with pytest.raises(WeightsError, match="UNet2DModel"):
        load_vae(d)
