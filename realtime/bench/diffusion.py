"""Timings of the diffusion rendering path around the UNet (run: ``python -m realtime.bench.diffusion``).

Measures, single-threaded on the CPU by default (medians over repeats, warm-up excluded):
- VAE encode (reference + masked crop) and decode per frame: sd-vae-ft-mse and TAESD architectures
  (random weights: the cost does not depend on the values);
- the whole ``DiffusionRenderer.render_chunk`` per frame with the tiny UNet preset (everything but
  the real UNet's cost: conditioning, sampler, decode, blend, paste-back);
- the mp4 writer (H.264 + AAC) in frames per second at 512 x 512.
"""

from __future__ import annotations

import argparse
import json
import tempfile

import numpy as np
import torch

from models.unet import UNet3DConditionModel, tiny_config
from models.vae import decode_latents, encode_latents, sd_vae_ft_mse, taesd, tiny_autoencoder_kl
from realtime.audio.io import SAMPLE_RATE
from realtime.bench.timing import median_seconds
from realtime.offline.video_writer import VideoWriter
from realtime.render.diffusion import DiffusionRenderer
from realtime.render.samplers import SamplerConfig


def bench_vae(kind: str, resolution: int, frames: int, repeats: int) -> dict:
    torch.manual_seed(0)
    vae = (sd_vae_ft_mse() if kind == "sd-vae-ft-mse" else taesd()).eval()
    x = torch.rand((2 * frames, 3, resolution, resolution)) * 2 - 1  # reference + masked per frame
    with torch.no_grad():
        z = encode_latents(vae, x)
        enc = median_seconds(lambda: encode_latents(vae, x), repeats)
        dec = median_seconds(lambda: decode_latents(vae, z[:frames]), repeats)
    return {"vae": kind, "resolution": resolution, "encode_ms_per_frame": 1000 * enc / frames,
            "decode_ms_per_frame": 1000 * dec / frames}


def bench_renderer(resolution: int, chunk: int, steps: int, guidance: float, repeats: int) -> dict:
    torch.manual_seed(0)
    unet = UNet3DConditionModel.from_config(tiny_config()).eval()
    r = DiffusionRenderer(unet, tiny_autoencoder_kl(), SamplerConfig(steps=steps, guidance=guidance))
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (chunk, resolution, resolution, 3), dtype=np.uint8)
    audio = rng.standard_normal((chunk, 50, 384)).astype(np.float32)
    t = median_seconds(lambda: r.render_crops([crops], [audio], [0]), repeats)
    return {"renderer": "tiny UNet + tiny VAE", "resolution": resolution, "chunk": chunk, "steps": steps,
            "guidance": guidance, "ms_per_frame": 1000 * t / chunk}


def bench_writer(size: int, frames: int, repeats: int, tmp: str) -> dict:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    video = [np.roll(base, 4 * i, axis=1) for i in range(frames)]
    audio = (0.1 * rng.standard_normal(int(frames / 25 * SAMPLE_RATE))).astype(np.float32)

    def run():
        with VideoWriter(f"{tmp}/bench.mp4", 25, audio=audio) as w:
            for f in video:
                w.write(f)

    t = median_seconds(run, repeats)
    return {"writer": "H.264 crf 18 veryfast + AAC", "size": size, "fps": frames / t}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", help="write the results here too")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = [
        bench_vae("sd-vae-ft-mse", 256, 2, args.repeats),
        bench_vae("taesd", 256, 8, args.repeats),
        bench_renderer(256, 16, 1, 1.5, args.repeats),
        bench_renderer(256, 16, 4, 1.5, args.repeats),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        results.append(bench_writer(512, 50, args.repeats, tmp))
    for r in results:
        print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in r.items()}))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"threads": args.threads, "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
