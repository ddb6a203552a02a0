"""Training a small teacher with LatentSync's denoising objective, for the CPU proof of distillation.

LatentSync's UNet is trained to predict the noise added to a frame's latents given the mask, the
masked frame, a *different* reference frame of the same video and the frame's audio; the audio is
sometimes dropped (all zeros) so classifier-free guidance has an unconditional branch. This is that
objective without LatentSync's pixel-space losses (SyncNet, LPIPS, TREPA), which need the VAE
decoder; it is for tiny synthetic teachers, not for fine-tuning the official one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from models.unet import UNet3DConditionModel
from realtime.distill.checkpoint import save_unet, write_unet_yaml
from realtime.distill.data import DistillData
from realtime.render.samplers import SamplerConfig, make_scheduler

log = logging.getLogger(__name__)


@dataclass
class TeacherTrainConfig:
    steps: int = 300
    batch_size: int = 32
    lr: float = 2e-3  # a 0.2 M-parameter model from scratch, not LatentSync's 1e-5 fine-tuning
    audio_dropout: float = 0.15  # share of samples trained unconditionally (CFG's branch)
    seed: int = 0
    init_seed: int = 0  # UNet weights (randomize_: LatentSync zero-initialises both ends)


def train_teacher(data: DistillData, model_config: dict, cfg: TeacherTrainConfig,
                  progress: bool = False) -> tuple[UNet3DConditionModel, list[float]]:
    """A UNet trained from random weights on ``data`` (offline features); returns it in eval mode
    and the per-step losses."""
    torch.manual_seed(cfg.seed)
    model = UNet3DConditionModel.from_config(model_config).randomize_(cfg.init_seed).train()
    acp = make_scheduler(SamplerConfig(steps=1, guidance=1.0)).alphas_cumprod.float()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=0.1)
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    losses = []
    for _ in tqdm(range(cfg.steps), desc="teacher", disable=not progress):
        batch = data.sample(rng, cfg.batch_size, other_reference=True)
        x0, b = batch["target"], cfg.batch_size
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, len(acp), (b,), generator=gen)
        a = acp[t].reshape(b, 1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        audio = batch["audio_offline"]
        keep = (torch.rand(b, generator=gen) >= cfg.audio_dropout).float().reshape(b, 1, 1, 1)
        pred = model(torch.cat([xt, batch["conditioning"]], dim=1), t, encoder_hidden_states=audio * keep).sample
        loss = (pred - noise).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    log.info("teacher: loss %.4f (first 10 steps) -> %.4f (last 10)", np.mean(losses[:10]), np.mean(losses[-10:]))
    return model.eval().requires_grad_(False), losses


def save_teacher(model: UNet3DConditionModel, model_config: dict, out_dir: str | Path, resolution: int,
                 frames: int, guidance: float = 1.5, steps: int = 20) -> tuple[Path, Path]:
    """``teacher.pt`` + ``teacher.yaml`` (``model_config`` as its ``model:`` section) in LatentSync's
    layout; returns their paths."""
    out = Path(out_dir)
    ckpt = save_unet(out / "teacher.pt", model)
    base = {"model": model_config, "data": {"resolution": resolution, "num_frames": frames}}
    yaml_path = write_unet_yaml(out / "teacher.yaml", base, inference_steps=steps, guidance_scale=guidance,
                                header="tiny teacher trained on synthetic data (realtime.distill.teacher)")
    return ckpt, yaml_path
