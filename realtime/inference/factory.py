"""Builds the renderers and streaming encoders, the same way in the server (inference "thread")
and in the inference process: one place that knows which renderer and which Whisper weights a
session of each look-ahead gets."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from realtime.config import CONFIG_DIR, ConfigError
from realtime.errors import WeightsError
from realtime.visemes.windows import WINDOWS

log = logging.getLogger(__name__)


@dataclass
class DiffusionConfig:
    """The diffusion renderer (``renderer: diffusion``): LatentSync's files from local paths, and
    its sampling. Low-latency sessions (lookahead "low") keep the embedded renderer: LatentSync's
    audio window needs 120 ms of future audio."""

    unet: str | None = None  # LatentSync's UNet checkpoint (latentsync_unet.pt)
    unet_config: str | None = None  # its YAML; None: configs/unet/stage2.yaml
    vae: str | None = None  # local diffusers VAE folder (stabilityai/sd-vae-ft-mse or madebyollin/taesd)
    whisper: str | None = None  # openai-whisper checkpoint for its features (LatentSync's tiny.pt); None: embedded tiny.en
    sampler: str = "ddim"  # ddim | lcm | tcd
    steps: int = 4  # few-step sampling for real time (LatentSync's offline default is 20)
    guidance: float = 1.5  # classifier-free guidance; <= 1 halves the UNet work
    deep_cache: int = 1  # full UNet pass every N steps (1 = off)
    low_quality_steps: int = 2  # steps at degradation level 2 and above (state quality "low")
    device: str = "auto"  # auto: cuda if present, else cpu (fp32; far from real time)

    def __post_init__(self) -> None:
        if self.sampler not in ("ddim", "lcm", "tcd"):
            raise ConfigError(f"diffusion.sampler must be ddim, lcm or tcd, got {self.sampler!r}")
        if not 1 <= self.steps <= 1000 or not 1 <= self.low_quality_steps <= self.steps:
            raise ConfigError(f"diffusion.steps must be 1..1000 and diffusion.low_quality_steps 1..steps, got "
                              f"{self.steps} and {self.low_quality_steps}")
        if self.deep_cache < 1:
            raise ConfigError(f"diffusion.deep_cache must be >= 1, got {self.deep_cache}")


def renderer_kind(renderer: str, lookahead: str) -> str:
    """The renderer sessions of ``lookahead`` use: the configured one, except that low-latency
    sessions always use the embedded renderer (LatentSync's audio window needs 120 ms ahead)."""
    return "embedded" if lookahead == "low" else renderer


def make_renderer(renderer: str, lookahead: str, diffusion: DiffusionConfig | None = None) -> Any:
    """Builds the renderer ``renderer_kind`` names (loads weights: seconds, or minutes for a
    5 GB UNet). Used by the in-process engine and by the inference process alike."""
    from realtime.render.embedded import EmbeddedRenderer  # renderers import cv2, torch: only where models load

    if renderer_kind(renderer, lookahead) == "diffusion":
        from realtime.render.diffusion import DiffusionRenderer  # torch, diffusers: only a diffusion server
        from realtime.render.samplers import SamplerConfig  # the same

        d = diffusion or DiffusionConfig()
        sampler = SamplerConfig(kind=d.sampler, steps=d.steps, guidance=d.guidance, deep_cache_interval=d.deep_cache)
        unet_config = d.unet_config or str(CONFIG_DIR / "unet" / "stage2.yaml")
        r = DiffusionRenderer.from_files(d.unet, unet_config, d.vae, sampler,
                                         device=None if d.device == "auto" else d.device)
        r.low_quality_steps = d.low_quality_steps
        if d.whisper is None:  # the viseme model reads tiny.en features: only when the sessions get those
            # the lighter renderer of the top degradation level; no idle motion, as the diffusion frames
            r.fallback = EmbeddedRenderer(lookahead="full", idle=False)
        return r

    return EmbeddedRenderer(lookahead=lookahead)


def whisper_path(renderer: str, lookahead: str, diffusion: DiffusionConfig | None) -> str | None:
    """The Whisper checkpoint whose features the sessions of ``lookahead`` get: the diffusion
    renderer's (``diffusion.whisper``) where it renders them, else the embedded tiny.en (None)."""
    if diffusion is not None and renderer_kind(renderer, lookahead) == "diffusion":
        return diffusion.whisper
    return None


def check_diffusion_files(d: DiffusionConfig) -> None:
    """Fails at once, naming the key and its flag, when a file the diffusion renderer needs is not
    there (before an inference process spends seconds loading the others)."""
    for key, flag, path, want in (("unet", "--unet", d.unet, "file"), ("unet_config", "--unet-config", d.unet_config, "file"),
                                  ("vae", "--vae", d.vae, "dir"), ("whisper", None, d.whisper, "file")):
        if path is None:
            continue
        p = Path(path).expanduser()
        if not (p.is_dir() if want == "dir" else p.is_file()):
            how = f"diffusion.{key}" + (f" / {flag}" if flag else "")
            raise WeightsError(f"{how}: {path} is not an existing {'folder' if want == 'dir' else 'file'}; "
                               "give a local path (nothing is downloaded)")


def make_stream_encoder(weights: Any, lookahead: str, fps: int) -> Any:
    """A session's streaming encoder over shared ``weights`` (``StreamingWeights``). Its block is
    the viseme model's window, (4, 6) steps full and (8, 2) low: in low-latency mode [c-8, c+2)
    needs 40 ms of future audio. ``catch_up``: a speech onset re-encodes 0.2 s of context in one
    call instead of 3-4 (session.feed)."""
    from realtime.audio.streaming import StreamingAudioEncoder  # torch: the server process imports it lazily

    w = WINDOWS[lookahead]
    return StreamingAudioEncoder(weights, fps=fps, extra_lookahead_ms=0, block=(w.past, w.future), catch_up=True)
