"""VAE constructors for the diffusion path: diffusers ``AutoencoderKL`` (sd-vae-ft-mse) and ``AutoencoderTiny``.

LatentSync encodes and decodes with ``stabilityai/sd-vae-ft-mse``; TAESD (``AutoencoderTiny``) is the
fast drop-in with the same 4-channel latent space. Pure tensor code: loading weights from a local
directory lives in ``realtime.render.vae_loader``. Random-init tiny presets keep tests fast.

Latent convention (both VAEs): ``latents = (z - shift) * scale`` on encode and the inverse on decode,
with sd-vae-ft-mse's scale 0.18215 and shift 0; TAESD already works in the scaled space (scale 1).
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import AutoencoderKL, AutoencoderTiny

# stabilityai/sd-vae-ft-mse's config.json (the SD-1.x VAE; 8x spatial downsampling, 4 latent channels).
SD_VAE_FT_MSE_CONFIG: dict[str, Any] = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    act_fn="silu",
    latent_channels=4,
    norm_num_groups=32,
    sample_size=256,
    scaling_factor=0.18215,  # LatentSync's vae.config.scaling_factor
    shift_factor=0.0,  # LatentSync subtracts/adds shift_factor; sd-vae-ft-mse has none
)

# madebyollin/taesd's config (diffusers AutoencoderTiny defaults), same 4-channel latent space.
TAESD_CONFIG: dict[str, Any] = dict(
    encoder_block_out_channels=(64, 64, 64, 64),
    decoder_block_out_channels=(64, 64, 64, 64),
    num_encoder_blocks=(1, 3, 3, 3),
    num_decoder_blocks=(3, 3, 3, 1),
    latent_channels=4,
    scaling_factor=1.0,
    shift_factor=0.0,
)


def sd_vae_ft_mse(**overrides: Any) -> AutoencoderKL:
    """Random-init AutoencoderKL with sd-vae-ft-mse's architecture (83 M parameters)."""
    return AutoencoderKL(**{**SD_VAE_FT_MSE_CONFIG, **overrides})


def taesd(**overrides: Any) -> AutoencoderTiny:
    """Random-init AutoencoderTiny (TAESD, 2.4 M parameters)."""
    return AutoencoderTiny(**{**TAESD_CONFIG, **overrides})


def tiny_autoencoder_kl(seed: int = 0) -> AutoencoderKL:
    """Test preset: same topology (8x downsampling, 4 latent channels, scale 0.18215), tiny widths."""
    torch.manual_seed(seed)
    return sd_vae_ft_mse(block_out_channels=(8, 8, 16, 16), layers_per_block=1, norm_num_groups=4).eval()


def tiny_autoencoder_tiny(seed: int = 0) -> AutoencoderTiny:
    """Test preset of TAESD: 8x downsampling, 4 latent channels, 8-channel blocks."""
    torch.manual_seed(seed)
    return taesd(
        encoder_block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        num_encoder_blocks=(1, 1, 1, 1),
        num_decoder_blocks=(1, 1, 1, 1),
    ).eval()


def vae_scale_factor(vae: AutoencoderKL | AutoencoderTiny) -> int:
    """Spatial downsampling of the latent space (8 for both real VAEs)."""
    if isinstance(vae, AutoencoderTiny):
        return 2 ** (len(vae.config.encoder_block_out_channels) - 1)
    return 2 ** (len(vae.config.block_out_channels) - 1)


def _scale_shift(vae: AutoencoderKL | AutoencoderTiny) -> tuple[float, float]:
    return float(vae.config.scaling_factor), float(vae.config.shift_factor or 0.0)


def encode_latents(vae: AutoencoderKL | AutoencoderTiny, images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) in [-1, 1] -> scaled latents (N, 4, H/8, W/8).

    Uses the posterior mean, not a sample: LatentSync samples with the pipeline's generator, which
    would tie every frame's latents to how many frames came before it in the call (chunking). The
    sd-vae-ft-mse posterior std is tiny next to the mean, so the mean is the deterministic stand-in.
    """
    assert images.ndim == 4 and images.shape[1] == 3, f"expected (N, 3, H, W), got {tuple(images.shape)}"
    scale, shift = _scale_shift(vae)
    if isinstance(vae, AutoencoderTiny):
        z = vae.encode(images).latents
    else:
        z = vae.encode(images).latent_dist.mean
    return (z - shift) * scale


def decode_latents(vae: AutoencoderKL | AutoencoderTiny, latents: torch.Tensor) -> torch.Tensor:
    """Scaled latents (N, 4, h, w) -> images (N, 3, 8h, 8w), nominally in [-1, 1] (not clamped)."""
    assert latents.ndim == 4, f"expected (N, 4, h, w), got {tuple(latents.shape)}"
    scale, shift = _scale_shift(vae)
    return vae.decode(latents / scale + shift).sample
