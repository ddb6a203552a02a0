"""Synthetic talking-face data in the prepared-data layout, for the CPU proof of distillation.

Everything lives in latent space (no VAE): a clip has a smooth face background that the
conditioning shows, and a mouth region whose content is (a) an opening driven by a speech envelope
that the audio features encode and (b) a texture whose sign no input predicts. (b) makes the data
genuinely multimodal, so that a 1-step DDIM sample collapses to the blurry mean while 20 steps
pick a sharp mode: the gap few-step distillation has to close.

Audio blocks have LatentSync's layout (50 rows = 10 encoder steps x 5 taps, 384 wide) around the
frame's centre step ``2 i``. The "streaming" blocks mimic what a bounded look-ahead encoder gets
wrong: the most recent steps mix in an older envelope value and carry more noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from realtime.distill.config import resolve_path
from realtime.distill.data import DatasetInfo, write_clip, write_index
from realtime.face.mask import fixed_mask
from realtime.unet_config import load_unet_config

PROOF_UNET_YAML = "configs/distill/tiny_unet.yaml"
STEPS_PER_FRAME = 2  # 50 encoder steps/s at 25 fps
PAST, FUTURE, TAPS, WIDTH = 4, 6, 5, 384  # LatentSync's block: steps [c-4, c+6), 5 taps, Whisper tiny


@dataclass
class SyntheticSpec:
    clips: int = 8
    frames: int = 48  # frames per clip
    latent: int = 4  # latent side; crops would be 8x larger (32 px)
    seed: int = 0
    opening: float = 1.5  # mouth-opening pattern amplitude (the audio-driven part)
    texture: float = 1.0  # amplitude of the unpredictable mouth texture (+1 or -1 per frame)
    feature_scale: float = 3.0
    feature_noise: float = 0.05
    stream_lag: int = 3  # steps of the stale envelope mixed into the recent streaming steps
    stream_mix: float = 0.5  # share of it at the newest step
    stream_noise: float = 0.3


def latent_keep_mask(resolution: int, latent: int) -> torch.Tensor:
    keep = torch.from_numpy(fixed_mask(resolution).astype(np.float32))[None, None]
    return F.interpolate(keep, size=(latent, latent))[0, 0]  # nearest, as the renderer


def envelope(rng: np.random.Generator, steps: int) -> np.ndarray:
    """A speech-like opening in [0, 1] at 50 steps/s: a few 1-4 Hz components through a sigmoid."""
    t = np.arange(steps) / 50.0
    z = sum(rng.uniform(0.5, 1.5) * np.sin(2 * np.pi * rng.uniform(1, 4) * t + rng.uniform(0, 2 * np.pi))
            for _ in range(3))
    return 1 / (1 + np.exp(-2.0 * z))


def audio_blocks(env: np.ndarray, frames: int, taps: np.ndarray, noise: np.ndarray, spec: SyntheticSpec,
                 streaming: bool) -> np.ndarray:
    """(frames, 50, 384): row (d, k) = scale * env[c + d] * taps[k] + noise, d in [-4, 6)."""
    out = np.empty((frames, PAST + FUTURE, TAPS, WIDTH), np.float32)
    last = len(env) - 1
    for i in range(frames):
        c = STEPS_PER_FRAME * i
        for j, d in enumerate(range(-PAST, FUTURE)):
            s = int(np.clip(c + d, 0, last))
            value = env[s]
            extra = 0.0
            if streaming:
                recent = np.clip((d + PAST) / (PAST + FUTURE - 1), 0, 1)  # 0 oldest .. 1 newest step
                mix = spec.stream_mix * recent
                value = (1 - mix) * value + mix * env[max(0, s - spec.stream_lag)]
                extra = spec.stream_noise * recent
            out[i, j] = spec.feature_scale * value * taps + (spec.feature_noise + extra) * noise[s]
    return out.reshape(frames, (PAST + FUTURE) * TAPS, WIDTH)


def anatomy(latent: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """What every synthetic data set shares: the latent keep-mask (h, w), the mouth-opening and
    texture patterns (4, h, w) (zero outside the mouth) and the 5 audio tap directions (5, 384)."""
    keep = latent_keep_mask(latent * 8, latent)
    rng = np.random.default_rng(12345)
    taps = rng.standard_normal((TAPS, WIDTH)).astype(np.float32) / np.sqrt(WIDTH) * 4
    p_open, p_tex = torch.from_numpy(rng.standard_normal((2, 4, latent, latent)).astype(np.float32)) * (1 - keep)
    return keep, p_open, p_tex, torch.from_numpy(taps)


def mouth_opening(latents: torch.Tensor, spec: SyntheticSpec) -> torch.Tensor:
    """The mouth opening in [0, 1] units that rendered latents (B, 4, F, h, w) show, per frame
    (B, F): least squares on the opening and texture patterns jointly."""
    _, p_open, p_tex, _ = anatomy(latents.shape[-1])
    basis = torch.stack([p_open.flatten(), p_tex.flatten()], dim=1)  # (4hw, 2)
    x = latents.transpose(1, 2).flatten(2)  # (B, F, 4hw)
    coef = x @ torch.linalg.pinv(basis).T  # (B, F, 2)
    return coef[..., 0] / spec.opening + 0.5


@dataclass
class SpeechClip:
    """Real speech for the synthetic faces: a per-frame mouth opening in [0, 1] and the audio's
    feature blocks of both kinds (N, 50, 384)."""

    opening: np.ndarray
    offline: np.ndarray
    streaming: np.ndarray


def write_synthetic_data(root: str | Path, spec: SyntheticSpec, speech: list[SpeechClip] | None = None) -> Path:
    """Writes clips into ``root`` in the layout ``DistillData`` reads; returns root. Without
    ``speech``: ``spec.clips`` clips of a synthetic envelope and features; with it, one clip per
    item, whose mouth follows ``opening`` and whose audio blocks are the given ones."""
    root = Path(root)
    rng = np.random.default_rng(spec.seed)
    h, resolution = spec.latent, spec.latent * 8
    keep, p_open, p_tex, taps = (a.numpy() for a in anatomy(h))
    names = []
    for c in range(spec.clips if speech is None else len(speech)):
        if speech is None:
            steps = STEPS_PER_FRAME * spec.frames + FUTURE + 1
            env = envelope(rng, steps)
            noise = rng.standard_normal((steps, TAPS, WIDTH)).astype(np.float32)
            opening = env[STEPS_PER_FRAME * np.arange(spec.frames)]  # the frame's centre step
            audio = {"offline": audio_blocks(env, spec.frames, taps, noise, spec, streaming=False),
                     "streaming": audio_blocks(env, spec.frames, taps, noise, spec, streaming=True)}
        else:
            opening = np.asarray(speech[c].opening, np.float32)
            audio = {"offline": speech[c].offline, "streaming": speech[c].streaming}
        n = len(opening)
        coarse = torch.from_numpy(rng.standard_normal((1, 4, 2, 2)).astype(np.float32))
        face = (F.interpolate(coarse, size=(h, h), mode="bilinear", align_corners=False)[0].numpy() * 0.8
                + 0.2 * rng.standard_normal((4, h, h)).astype(np.float32))
        sign = rng.choice([-1.0, 1.0], size=n)
        mouth = (spec.opening * (opening[:, None, None, None] - 0.5) * p_open
                 + spec.texture * sign[:, None, None, None] * p_tex)
        x0 = (keep * face + (1 - keep) * mouth).astype(np.float32)  # (N, 4, h, w)
        latents = np.stack([x0, keep * x0], axis=1)  # [reference, masked]
        name = f"synthetic_{c:03d}"
        write_clip(root, name, latents, audio, np.ones(n, bool), source="synthetic")
        names.append(name)
    features = ({"offline": "synthetic", "streaming": "synthetic, stale recent steps"} if speech is None else
                {"offline": "given", "streaming": "given"})
    write_index(root, DatasetInfo(resolution=resolution, latent_size=h, fps=25.0, mask="mask", vae=None,
                                  features=features, clips=names))
    return root


def proof_unet_config() -> dict:
    """The proof teacher's ``model:`` section (``configs/distill/tiny_unet.yaml``)."""
    return load_unet_config(resolve_path(PROOF_UNET_YAML)).model_dict()
