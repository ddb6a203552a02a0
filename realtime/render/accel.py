"""Inference speed options for the diffusion path on CUDA, each falling back cleanly on the CPU.

- ``resolve_dtype``: fp16 (LatentSync's weight dtype) or bf16 on CUDA; fp32 on the CPU whatever is
  asked, since half-precision math there is slow or missing.
- ``optimize_unet``: channels-last convolution weights, and ``torch.compile`` of the UNet in place
  (``nn.Module.compile``: the module keeps its type and ``forward`` signature, so the renderer's
  DeepCache detection still works). Compiling is for CUDA; on the CPU it is skipped with a warning.
- ``attention_processors``: which attention implementation every attention layer uses (all of
  LatentSync's UNet goes through PyTorch's scaled-dot-product attention, ``AttnProcessor2_0``).
- ``warm_up``: one ``render_crops`` call per (chunk, sessions) shape bucket before serving, so
  compilation, cuDNN algorithm search and allocator growth are paid before the first session.

The renderer itself is unchanged: ``DiffusionRenderer(optimize_unet(unet, ...), vae, sampler,
device, resolve_dtype(device, "bf16"))`` uses all of it.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def resolve_dtype(device: str | torch.device, name: str = "auto") -> torch.dtype:
    """``auto``: fp16 on CUDA, fp32 elsewhere. bf16 falls back to fp16 on GPUs without it."""
    device = torch.device(device)
    if name != "auto" and name not in DTYPES:
        raise ValueError(f"dtype must be auto, fp16, bf16 or fp32, got {name!r}")
    if device.type != "cuda":
        if name not in ("auto", "fp32"):
            log.warning("%s needs CUDA; running fp32 on %s", name, device)
        return torch.float32
    if name == "bf16" and not torch.cuda.is_bf16_supported():
        log.warning("this GPU has no bf16; using fp16")
        return torch.float16
    return DTYPES.get(name, torch.float16)


def optimize_unet(unet: torch.nn.Module, *, channels_last: bool = False, compile: bool = False,
                  compile_mode: str = "max-autotune-no-cudagraphs", force_compile: bool = False) -> torch.nn.Module:
    """Applies the options in place and returns the same module. ``compile`` compiles for static
    shapes (``dynamic=False``): each (batch, frames, size) bucket compiles once, in ``warm_up``."""
    if channels_last:
        unet.to(memory_format=torch.channels_last)  # 4-D conv weights; convs then pick NHWC kernels
    if compile:
        device = next(unet.parameters()).device
        if device.type != "cuda" and not force_compile:
            log.warning("torch.compile is used on CUDA only; running the UNet eagerly on %s", device)
        else:
            unet.compile(dynamic=False, mode=compile_mode)
    return unet


def attention_processors(model: torch.nn.Module) -> Counter:
    """Processor class name -> count over the model's attention layers."""
    return Counter(type(m.processor).__name__ for m in model.modules() if hasattr(m, "processor"))


def warm_up(renderer: Any, resolution: int, chunks: Iterable[int] = (16,), sessions: Iterable[int] = (1,),
            steps: Iterable[int] | None = None) -> dict[tuple[int, int, int], float]:
    """Renders random crops once per (chunk, sessions) bucket and per step count of ``steps`` (as
    degraded sessions sample fewer); returns (steps, chunk, sessions) -> seconds, compilation included."""
    import dataclasses

    rng = np.random.default_rng(0)
    timings = {}
    base = renderer.sampler
    try:
        for k in (list(steps) if steps else [base.steps]):
            renderer.sampler = dataclasses.replace(base, steps=k)
            for f in chunks:
                for b in sessions:
                    crops = [rng.integers(0, 256, (f, resolution, resolution, 3), dtype=np.uint8) for _ in range(b)]
                    audio = [rng.standard_normal((f, 50, 384)).astype(np.float32) for _ in range(b)]
                    t0 = time.perf_counter()
                    renderer.render_crops(crops, audio, list(range(b)))
                    timings[(k, f, b)] = time.perf_counter() - t0
    finally:
        renderer.sampler = base
    log.info("warm-up: %s", ", ".join(f"{k} steps, {f} frames x {b}: {s:.2f} s" for (k, f, b), s in timings.items()))
    return timings
