"""Loads a VAE (AutoencoderKL or AutoencoderTiny) from a local diffusers-format directory, never the hub."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from realtime.errors import WeightsError

log = logging.getLogger(__name__)

WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")


def vae_class_name(vae_dir: str | Path) -> str:
    """'AutoencoderKL' or 'AutoencoderTiny' as named by the directory's config.json."""
    vae_dir = Path(vae_dir)
    if not vae_dir.is_dir():
        raise WeightsError(
            f"VAE directory {vae_dir} does not exist; pass --vae with a local diffusers-format folder "
            "(config.json + diffusion_pytorch_model.safetensors) of stabilityai/sd-vae-ft-mse or madebyollin/taesd"
        )
    cfg_path = vae_dir / "config.json"
    if not cfg_path.is_file():
        raise WeightsError(f"VAE directory {vae_dir} has no config.json; it must be a diffusers-format VAE folder")
    try:
        name = json.loads(cfg_path.read_text()).get("_class_name", "AutoencoderKL")
    except json.JSONDecodeError as e:
        raise WeightsError(f"{cfg_path} is not valid JSON ({e}); re-download or re-save the VAE folder") from None
    if name not in ("AutoencoderKL", "AutoencoderTiny"):
        raise WeightsError(f"{cfg_path} names {name!r}; expected AutoencoderKL or AutoencoderTiny")
    if not any((vae_dir / f).is_file() for f in WEIGHT_FILES):
        raise WeightsError(f"VAE directory {vae_dir} has no weights file ({' or '.join(WEIGHT_FILES)})")
    return name


def load_vae(vae_dir: str | Path, device: str = "cpu", dtype=None):
    """Loads the VAE in ``vae_dir`` in eval mode on ``device`` (fp32 unless ``dtype`` is given)."""
    # torch and diffusers are heavy: importing this module (and vae_class_name) stays cheap
    import torch
    from diffusers import AutoencoderKL, AutoencoderTiny

    name = vae_class_name(vae_dir)
    cls = AutoencoderKL if name == "AutoencoderKL" else AutoencoderTiny
    try:
        vae = cls.from_pretrained(str(vae_dir), local_files_only=True, torch_dtype=dtype or torch.float32)
    except (OSError, ValueError, RuntimeError) as e:
        raise WeightsError(f"cannot load the VAE in {vae_dir} as {name}: {e}") from None
    log.info("loaded %s from %s", name, vae_dir)
    return vae.to(device).eval()
