"""Trajectory distillation: the student's DDIM step regresses the guided teacher's ODE solution.

The teacher runs LatentSync's DDIM (eta 0, "trailing" spacing, ``teacher.steps`` steps) with
classifier-free guidance from the renderer's initial noise; its states at the points of the
student's K-step grid are the targets. For each segment ``t_a -> t_b`` of a student grid, one
student pass on the teacher's state at ``t_a`` (no CFG: one UNet call) and a DDIM step must land on
the teacher's state at ``t_b``. The student stays an epsilon-predicting LatentSync UNet sampled by
the renderer's unchanged DDIM sampler at K steps, with guidance folded into its weights.

Every point is taken from ``make_scheduler`` (the renderer's own scheduler), so the grid trained
on is the grid served. See docs/distill.md for why this rather than latent consistency distillation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from realtime.render.samplers import (
    SamplerConfig,
    initial_noise,
    make_scheduler,
    sample_latents,
)

FINAL = -1  # the state after the last DDIM step (alpha = the scheduler's final_alpha_cumprod)


@dataclass(frozen=True)
class Segment:
    steps: int  # the student grid it belongs to (K)
    start: int  # timestep the student is called at
    end: int  # timestep of the state it must produce (FINAL after the last step)


@dataclass
class DistillGrid:
    """The teacher's timesteps, the points kept of its trajectory and the student segments."""

    teacher_steps: int
    student_steps: tuple[int, ...]
    teacher_timesteps: list[int]
    segments: list[Segment]
    points: list[int]  # timesteps (and FINAL) whose teacher states are kept, descending
    alphas: dict[int, float]  # timestep or FINAL -> alpha_cumprod

    @classmethod
    def build(cls, student_steps, teacher_steps: int) -> DistillGrid:
        teacher = make_scheduler(SamplerConfig(steps=teacher_steps, guidance=1.0, timestep_spacing="trailing"))
        t_ts = [int(t) for t in teacher.timesteps]
        acp = teacher.alphas_cumprod
        alphas = {t: float(acp[t]) for t in range(len(acp))}
        alphas[FINAL] = float(teacher.final_alpha_cumprod)
        segments: list[Segment] = []
        for k in sorted({int(s) for s in student_steps}):
            sched = make_scheduler(SamplerConfig(steps=k, guidance=1.0))  # the renderer's K-step grid
            stride = sched.config.num_train_timesteps // k  # DDIM's previous timestep: t - stride
            for t in (int(t) for t in sched.timesteps):
                end = t - stride if t - stride >= 0 else FINAL
                for p in (t, end):
                    if p != FINAL and p not in t_ts:
                        raise ValueError(f"the {k}-step grid point {p} is not on the {teacher_steps}-step teacher grid")
                segments.append(Segment(k, t, end))
        points = sorted({p for s in segments for p in (s.start, s.end)}, key=lambda p: -p if p != FINAL else 1)
        return cls(teacher_steps, tuple(sorted(set(student_steps))), t_ts, segments, points, alphas)


def ddim_step(x: torch.Tensor, eps: torch.Tensor, alpha_t: torch.Tensor, alpha_prev: torch.Tensor) -> torch.Tensor:
    """Deterministic DDIM step (eta 0, epsilon prediction, no clipping): the scheduler's update,
    differentiable and with per-sample alphas (broadcast from (B,))."""
    shape = (-1,) + (1,) * (x.ndim - 1)
    a_t, a_p = alpha_t.reshape(shape).to(x), alpha_prev.reshape(shape).to(x)
    x0 = (x - (1 - a_t).sqrt() * eps) / a_t.sqrt()
    return a_p.sqrt() * x0 + (1 - a_p).sqrt() * eps


Denoiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (x13, t, audio) -> eps


def unet_denoiser(unet: torch.nn.Module) -> Denoiser:
    def call(x: torch.Tensor, t: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        return unet(x, t, encoder_hidden_states=audio).sample
    return call


@torch.no_grad()
def teacher_trajectory(teacher: Denoiser, noise: torch.Tensor, conditioning: torch.Tensor, audio: torch.Tensor,
                       grid: DistillGrid, guidance: float) -> torch.Tensor:
    """The teacher's states at ``grid.points``: (P, B, 4, F, h, w), through the renderer's own
    sampler (``sample_latents``, CFG with all-zero audio) with a denoiser that records its inputs."""
    b = noise.shape[0]
    seen: dict[int, torch.Tensor] = {}

    def record(x13: torch.Tensor, t, audio_in: torch.Tensor, reuse_deep: bool) -> torch.Tensor:
        seen[int(t)] = x13[:b, :4].clone()  # the state the step starts from (DDIM's input scaling is 1)
        return teacher(x13, t, audio_in)

    cfg = SamplerConfig(steps=grid.teacher_steps, guidance=guidance, timestep_spacing="trailing")
    final = sample_latents(record, noise, conditioning, audio, cfg, [0] * b)  # eta 0: the seeds are unused
    seen[FINAL] = final
    return torch.stack([seen[p] for p in grid.points])


def draw_noise(gen: torch.Generator, batch: int, frames: int, latent: int) -> torch.Tensor:
    """(B, 4, F, h, w) renderer-style noise: one (4, h, w) draw per clip repeated over its frames."""
    seeds = torch.randint(0, 2**62, (batch,), generator=gen).tolist()
    return torch.cat([initial_noise(s, (latent, latent), frames) for s in seeds])


def student_loss(student: Denoiser, states: torch.Tensor, conditioning: torch.Tensor, audio: torch.Tensor,
                 grid: DistillGrid, segment_idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean squared error of the student's DDIM step against the teacher's state, one segment per
    sample. states (B, P, 4, F, h, w); segment_idx (B,) into ``grid.segments``.
    Returns (mean loss, per-sample loss (B,) detached)."""
    segs = [grid.segments[int(i)] for i in segment_idx]
    pos = {p: j for j, p in enumerate(grid.points)}
    rows = torch.arange(len(segs))
    x_a = states[rows, torch.tensor([pos[s.start] for s in segs])]
    target = states[rows, torch.tensor([pos[s.end] for s in segs])]
    t = torch.tensor([s.start for s in segs], device=x_a.device)
    a_t = torch.tensor([grid.alphas[s.start] for s in segs], dtype=torch.float64)
    a_p = torch.tensor([grid.alphas[s.end] for s in segs], dtype=torch.float64)
    eps = student(torch.cat([x_a, conditioning], dim=1), t, audio)
    pred = ddim_step(x_a, eps.float(), a_t.to(x_a.device), a_p.to(x_a.device))
    per_sample = (pred - target).square().flatten(1).mean(1)
    return per_sample.mean(), per_sample.detach()


def segment_names(grid: DistillGrid) -> list[str]:
    return [f"k{s.steps}:{s.start}->{'end' if s.end == FINAL else s.end}" for s in grid.segments]


def pick_segments(rng: np.random.Generator, grid: DistillGrid, batch: int) -> torch.Tensor:
    """A step count drawn uniformly, then one of its segments: the 1-step map, the hardest, gets as
    many updates as the whole 4-step grid."""
    by_k = {k: [i for i, s in enumerate(grid.segments) if s.steps == k] for k in grid.student_steps}
    out = []
    for _ in range(batch):
        idx = by_k[grid.student_steps[int(rng.integers(len(grid.student_steps)))]]
        out.append(idx[int(rng.integers(len(idx)))])
    return torch.tensor(out)
