"""Samplers for the diffusion renderer: diffusers schedulers driven around a denoiser callable.

The UNet knows nothing about the sampler (diffusers' split). What this module adds on top of the
schedulers is what a chunked, multi-session real-time renderer needs:

- LatentSync's DDIM configuration (``configs/scheduler_config.json``) and few-step options (DDIM with
  "trailing" spacing at 1..4 steps, LCM, TCD).
- Classifier-free guidance whose unconditional branch is all-zero audio (LatentSync's choice).
- Chunk-invariant randomness: the initial noise is one (1, 4, 1, h, w) tensor per seed repeated over
  frames (as LatentSync does), and any noise a scheduler injects during a step is drawn per frame from
  generators seeded by (seed, step) only. A frame's noise therefore never depends on how many frames
  share its call, so streaming chunk by chunk equals one offline call.
- DeepCache-style reuse: on "cached" steps the denoiser is asked to reuse the deep UNet features of
  the last full step (``reuse_deep=True``); how that is done is the denoiser's business.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

import torch
from einops import rearrange

from realtime.config import CONFIG_DIR

SCHEDULER_CONFIG = CONFIG_DIR / "scheduler_config.json"  # copy of LatentSync's configs/scheduler_config.json
SAMPLER_KINDS = ("ddim", "lcm", "tcd")
FEW_STEPS_MAX = 4  # at or below this, DDIM switches to trailing spacing so the first step starts at t=999


@dataclass
class SamplerConfig:
    kind: str = "ddim"  # ddim | lcm | tcd
    steps: int = 20  # LatentSync's run.inference_steps
    guidance: float = 1.5  # LatentSync's run.guidance_scale; <= 1 disables CFG (one UNet pass per step)
    eta: float = 0.0  # DDIM eta (0 = deterministic) or TCD gamma
    # "auto": LatentSync's "leading" spacing (steps_offset 1) for >= 5 steps; "trailing" for 1..4 steps,
    # because leading spacing at 1 step would start denoising pure noise at t=1.
    timestep_spacing: str = "auto"
    deep_cache_interval: int = 1  # 1 = off; N = run the full UNet every N steps (LatentSync ships 3)

    def __post_init__(self) -> None:
        if self.kind not in SAMPLER_KINDS:
            raise ValueError(f"sampler kind must be one of {SAMPLER_KINDS}, got {self.kind!r}")
        if not 1 <= self.steps <= 1000:
            raise ValueError(f"sampler steps must be 1..1000, got {self.steps}")
        if self.deep_cache_interval < 1:
            raise ValueError(f"deep_cache_interval must be >= 1, got {self.deep_cache_interval}")


class Denoiser(Protocol):
    def __call__(
        self, x: torch.Tensor, t: torch.Tensor, audio: torch.Tensor, reuse_deep: bool
    ) -> torch.Tensor:
        """x (B, 13, F, h, w), t scalar, audio (B, F, S, 384) -> predicted noise (B, 4, F, h, w)."""


def latentsync_scheduler_config() -> dict:
    cfg = json.loads(Path(SCHEDULER_CONFIG).read_text())
    return {k: v for k, v in cfg.items() if not k.startswith("_")}


def make_scheduler(cfg: SamplerConfig):
    """A fresh scheduler (schedulers are stateful: one per sampling call) with timesteps set."""
    from diffusers import DDIMScheduler, LCMScheduler, TCDScheduler  # diffusers: slow import, sampling only

    base = latentsync_scheduler_config()
    base.pop("skip_prk_steps", None)  # a PNDM-only key in LatentSync's file; the others warn about it
    spacing = cfg.timestep_spacing
    if spacing == "auto":
        spacing = "trailing" if cfg.steps <= FEW_STEPS_MAX else "leading"
    if cfg.kind == "ddim":
        sched = DDIMScheduler.from_config({**base, "timestep_spacing": spacing})
    elif cfg.kind == "lcm":
        sched = LCMScheduler.from_config(base)
    else:
        sched = TCDScheduler.from_config(base)
    sched.set_timesteps(cfg.steps)
    return sched


def initial_noise(seed: int, latent_hw: tuple[int, int], frames: int, channels: int = 4) -> torch.Tensor:
    """LatentSync's noise: one (1, C, 1, h, w) draw from ``seed`` repeated over frames (CPU, fp32).

    Drawn on the CPU so a seed gives the same noise on every device.
    """
    g = torch.Generator().manual_seed(int(seed))
    noise = torch.randn((1, channels, 1, *latent_hw), generator=g)
    return noise.repeat(1, 1, frames, 1, 1)


def step_seed(seed: int, step: int) -> int:
    """Seed of the noise a scheduler injects at ``step`` (independent of chunking and frame index)."""
    return (int(seed) * 1_000_003 + 7_919 * (step + 1)) % (2**63 - 1)


def _frame_generators(seeds: Sequence[int], frames: int, step: int) -> list[torch.Generator]:
    # One generator per (batch element, frame), all of a batch element's seeded alike: every frame
    # gets the same step noise (mirroring the repeated initial noise) whatever the chunk length.
    return [torch.Generator().manual_seed(step_seed(s, step)) for s in seeds for _ in range(frames)]


def guided(eps: torch.Tensor, guidance: float) -> torch.Tensor:
    """Combines a [uncond; cond] batch: uncond + g * (cond - uncond)."""
    uncond, cond = eps.chunk(2)
    return uncond + guidance * (cond - uncond)


@torch.no_grad()
def sample_latents(
    denoise: Denoiser,
    noise: torch.Tensor,
    conditioning: torch.Tensor,
    audio: torch.Tensor,
    cfg: SamplerConfig,
    seeds: Sequence[int],
) -> torch.Tensor:
    """Runs the reverse diffusion for a batch of chunks.

    noise (B, 4, F, h, w): initial latents (``initial_noise`` per batch element); conditioning
    (B, 9, F, h, w): mask, masked-image latents, reference latents (LatentSync's channel order after
    the 4 noisy-latent channels); audio (B, F, S, 384); seeds: one per batch element.
    Returns denoised latents (B, 4, F, h, w).
    """
    b, c, f = noise.shape[:3]
    assert c == 4 and conditioning.shape[:1] + conditioning.shape[2:] == noise.shape[:1] + noise.shape[2:], (
        f"noise {tuple(noise.shape)} and conditioning {tuple(conditioning.shape)} disagree"
    )
    assert audio.shape[:2] == (b, f), f"audio {tuple(audio.shape)} must be (B={b}, F={f}, S, 384)"
    assert len(seeds) == b, f"need one seed per batch element ({b}), got {len(seeds)}"
    sched = make_scheduler(cfg)
    use_cfg = cfg.guidance > 1.0
    if use_cfg:
        conditioning = torch.cat([conditioning, conditioning])
        audio = torch.cat([torch.zeros_like(audio), audio])  # unconditional branch: all-zero audio
    latents = noise * sched.init_noise_sigma
    for j, t in enumerate(sched.timesteps):
        x = sched.scale_model_input(latents, t)
        x = torch.cat([x, x]) if use_cfg else x
        reuse = cfg.deep_cache_interval > 1 and j % cfg.deep_cache_interval != 0
        eps = denoise(torch.cat([x, conditioning], dim=1), t, audio, reuse)
        if use_cfg:
            eps = guided(eps, cfg.guidance)
        # Schedulers act elementwise, so frames can be folded into the batch to give each its generator.
        flat = lambda z: rearrange(z, "b c f h w -> (b f) c h w")  # noqa: E731
        kwargs = {"generator": _frame_generators(seeds, f, j)}
        if cfg.kind in ("ddim", "tcd"):
            kwargs["eta"] = cfg.eta
        out = sched.step(flat(eps), t, flat(latents), **kwargs)
        latents = rearrange(out.prev_sample, "(b f) c h w -> b c f h w", b=b)
    return latents
