"""How close few-step sampling comes to the teacher's full sampling, through the renderer's sampler.

For held-out windows and fresh noise, every output is a ``sample_latents`` call exactly as
``DiffusionRenderer`` makes it (renderer noise, DDIM, CFG with all-zero audio):

- reference: the teacher at ``teacher_steps`` (20, LatentSync's default, "leading" spacing as
  ``syncvid render`` uses it) with guidance g and the teacher's (offline) features;
- teacher K: the teacher's own K-step DDIM ("trailing" spacing) with guidance g;
- student K: the student's K-step DDIM without CFG, on the student's features.

Errors are mean squared differences of the final latents (B, 4, F, h, w), over the whole latent
and over the repainted (mouth) region alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from realtime.distill.data import DistillData
from realtime.distill.trajectory import draw_noise
from realtime.render.samplers import SamplerConfig, sample_latents


@dataclass
class FewStepErrors:
    steps: int
    student: float  # MSE(student K, teacher reference)
    teacher: float  # MSE(teacher K, teacher reference)
    student_mouth: float
    teacher_mouth: float
    outputs: dict | None = None  # "reference", "student", "teacher" latents, with keep_outputs
    @property
    def ratio(self) -> float:
        """How many times closer the student is than the teacher's own K-step output."""
        return self.teacher / self.student


def eval_batch(data: DistillData, windows: int, seed: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The held-out windows and renderer-style noise ``few_step_errors`` uses for ``seed``."""
    rng, gen = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
    batch = data.sample(rng, windows)
    return batch, draw_noise(gen, windows, data.frames, data.info.latent_size)


@torch.no_grad()
def sample(model: torch.nn.Module, noise: torch.Tensor, conditioning: torch.Tensor, audio: torch.Tensor,
           steps: int, guidance: float, spacing: str = "auto") -> torch.Tensor:
    """``model``'s output through the renderer's sampler (DDIM, eta 0)."""
    cfg = SamplerConfig(steps=steps, guidance=guidance, timestep_spacing=spacing)
    return sample_latents(_sampler(model), noise, conditioning, audio, cfg, [0] * len(noise))


def _sampler(model: torch.nn.Module):
    def call(x, t, audio, reuse_deep):
        return model(x, t, encoder_hidden_states=audio).sample
    return call


@torch.no_grad()
def few_step_errors(teacher: torch.nn.Module, student: torch.nn.Module, data: DistillData, *, windows: int = 32,
                    seed: int = 1234, steps=(1, 2), guidance: float = 1.5, teacher_steps: int = 20,
                    teacher_features: str = "offline", student_features: str = "streaming",
                    reference_spacing: str = "auto", keep_outputs: bool = False) -> list[FewStepErrors]:
    """Errors at each of ``steps``; ``reference_spacing`` "auto" is the renderer's ("leading" at 20
    steps), "trailing" the grid the student was distilled on."""
    batch, noise = eval_batch(data, windows, seed)
    cond, seeds = batch["conditioning"], [0] * windows  # eta 0: no noise is injected after the first draw
    a_t, a_s = batch[f"audio_{teacher_features}"], batch[f"audio_{student_features}"]
    t_fn, s_fn = _sampler(teacher), _sampler(student)
    ref = sample_latents(t_fn, noise, cond, a_t, SamplerConfig(steps=teacher_steps, guidance=guidance,
                                                                        timestep_spacing=reference_spacing), seeds)
    repaint = (1 - data.latent_mask)[None, None, None]  # (1, 1, 1, h, w)
    share = float(repaint.mean())

    def errors(x: torch.Tensor) -> tuple[float, float]:
        sq = (x - ref).square()
        return float(sq.mean()), float((sq * repaint).mean() / share)

    out = []
    for k in steps:
        student_out = sample_latents(s_fn, noise, cond, a_s, SamplerConfig(steps=k, guidance=1.0), seeds)
        teacher_out = sample_latents(t_fn, noise, cond, a_t, SamplerConfig(steps=k, guidance=guidance), seeds)
        s, t = errors(student_out), errors(teacher_out)
        kept = {"reference": ref, "student": student_out, "teacher": teacher_out} if keep_outputs else None
        out.append(FewStepErrors(k, s[0], t[0], s[1], t[1], kept))
    return out
