"""Random-init stand-ins for the diffusion renderer's files, for timing without the checkpoints.

A UNet built from one of LatentSync's configs (``configs/unet/<name>.yaml``) with random weights
does exactly the work the trained one does, so step times, engine latency and sessions per GPU
measured with it are the real architecture's. Its pictures are noise and its lips do not follow
the speech: figures that read the picture (glass-to-glass, A/V at the receiver) are void with it.

``random_unet(name, device, dtype)`` builds the model in memory (``syncvid bench unet``);
``write_random_diffusion(name, out_dir)`` writes the files ``syncvid serve --renderer diffusion``
loads (``syncvid bench realtime --random-weights NAME``). ``name`` "tiny" is the test preset.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import yaml

from models.unet import UNet3DConditionModel, tiny_config
from models.unet.motion_module import SinusoidalPositionalEncoding
from models.vae import sd_vae_ft_mse, tiny_autoencoder_kl
from realtime.config import REPO_ROOT
from realtime.unet_config import load_unet_config

log = logging.getLogger(__name__)


def unet_config_path(name: str) -> Path:
    """``configs/unet/<name>.yaml``; a clear error listing the shipped names otherwise."""
    folder = REPO_ROOT / "configs" / "unet"
    path = folder / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(["tiny"] + sorted(p.stem for p in folder.glob("*.yaml")))
        raise ValueError(f"unknown UNet config {name!r}: use one of {known}")
    return path


def random_unet(name: str, device: str = "cpu", dtype: torch.dtype = torch.float32, seed: int = 0):
    """A random-init UNet3DConditionModel of a named config, in eval mode, on ``device``."""
    if name == "tiny":
        model = UNet3DConditionModel.from_config(tiny_config()).randomize_(seed)
        return torch.nn.Module.to(model, device, dtype).eval()
    cfg = load_unet_config(unet_config_path(name)).model_dict()
    with torch.device("meta"):  # no memory until the parameters are filled on the target device
        model = UNet3DConditionModel.from_config(cfg)
    model = model.to_empty(device=device)
    gen = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.02, generator=gen)
        for module in model.modules():  # positional tables were left uninitialised by to_empty
            if isinstance(module, SinusoidalPositionalEncoding):
                module.pe.copy_(SinusoidalPositionalEncoding(module.pe.shape[-1], module.pe.shape[1]).pe)
    return torch.nn.Module.to(model, dtype=dtype).eval()


def write_random_diffusion(name: str, out_dir: str | Path, seed: int = 0) -> dict[str, str]:
    """Writes ``unet.pt`` (LatentSync's ``{"state_dict": ...}`` layout, fp16 on disk: the loader
    casts to the serving dtype), the UNet's YAML and ``vae/`` (sd-vae-ft-mse's architecture, or the
    tiny test VAE for "tiny") into ``out_dir``; returns the paths as ``diffusion.unet``,
    ``diffusion.unet_config`` and ``diffusion.vae`` take them. stage2 is ~2.5 GB on disk."""
    config = None if name == "tiny" else unet_config_path(name)  # an unknown name fails before writing
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if config is None:
        config = out / "unet.yaml"
        config.write_text(yaml.safe_dump({"model": tiny_config()}))
    log.info("writing a random-init %s UNet to %s ...", name, out)
    model = random_unet(name, "cpu", torch.float32, seed)
    state = {k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    del model
    torch.save({"state_dict": state}, out / "unet.pt")
    del state
    torch.manual_seed(seed)
    vae = tiny_autoencoder_kl(seed) if name == "tiny" else sd_vae_ft_mse().eval()
    vae.save_pretrained(out / "vae")
    return {"unet": str(out / "unet.pt"), "unet_config": str(config), "vae": str(out / "vae")}
