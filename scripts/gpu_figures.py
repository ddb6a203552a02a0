"""Whole diffusion render path on one GPU with LatentSync-size random weights (run by gpu_figures.sh).

For stage2 at 256 px and stage2_512 at 512 px, each step count and each number of sessions batched
into one call, ``DiffusionRenderer.render_crops`` of 16-frame chunks (conditioning, VAE encode of
unseen crops, K UNet steps, VAE decode, blend) is timed after a warm-up, CUDA-synchronised:

- aggregate frames/s = sessions x 16 / call time;
- sessions at 25 fps: the most sessions whose one call per chunk fits in the chunk's duration
  (16 frames = 640 ms; also 4-frame chunks = 160 ms, the server's default max_chunk);
- first frame of a new session: one 1-frame and one 4-frame call on crops never seen (cache miss),
  on the warm renderer.

Weights are random (speed does not depend on them). ``--guidance 1`` is a distilled student (no
CFG batch); 1.5 is LatentSync's own sampling.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch


def timed(fn, repeats: int) -> float:
    """Median seconds of ``fn`` (device-synchronised)."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    out = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def main() -> int:
    from models.vae import sd_vae_ft_mse, taesd
    from realtime.bench.random_weights import random_unet
    from realtime.render.accel import (
        attention_processors,
        optimize_unet,
        resolve_dtype,
        warm_up,
    )
    from realtime.render.diffusion import DiffusionRenderer
    from realtime.render.samplers import SamplerConfig

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", default="stage2:256,stage2_512:512")
    p.add_argument("--steps", default="1,2,4")
    p.add_argument("--sessions", default="1,4,8,16")
    p.add_argument("--guidance", type=float, default=1.0)
    p.add_argument("--vae", choices=("taesd", "sd-vae-ft-mse"), default="taesd")
    p.add_argument("--dtype", choices=("fp16", "bf16"), default="fp16")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json")
    p.add_argument("--device", default="cuda", help="cpu: a smoke run of this script (e.g. --configs tiny:64)")
    args = p.parse_args()
    dev = args.device
    if dev.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("gpu_figures.py needs CUDA (or --device cpu for a smoke run)")
    dtype = resolve_dtype(dev, args.dtype)
    rng = np.random.default_rng(0)
    rows = []
    for item in args.configs.split(","):
        name, res = item.split(":")
        res = int(res)
        unet = optimize_unet(random_unet(name, dev, dtype), channels_last=args.channels_last, compile=args.compile)
        torch.manual_seed(0)
        vae = torch.nn.Module.to(taesd() if args.vae == "taesd" else sd_vae_ft_mse(), dev, dtype).eval()
        for k in (int(s) for s in args.steps.split(",")):
            r = DiffusionRenderer(unet, vae, SamplerConfig(steps=k, guidance=args.guidance), dev, dtype)
            sessions = [int(s) for s in args.sessions.split(",")]
            t0 = time.perf_counter()
            warm_up(r, res, chunks=(16, 4, 1), sessions=sessions)
            warm_s = time.perf_counter() - t0
            row = {"config": name, "resolution": res, "steps": k, "guidance": args.guidance, "vae": args.vae,
                   "dtype": str(dtype).removeprefix("torch."), "compile": args.compile, "channels_last": args.channels_last,
                   "device": torch.cuda.get_device_name() if dev.startswith("cuda") else "cpu", "warm_up_s": round(warm_s, 1), "fps": {}, "call_ms": {}}
            for chunk, budget in ((16, 0.64), (4, 0.16)):
                fits = 0
                for b in sessions:
                    crops = [rng.integers(0, 256, (chunk, res, res, 3), dtype=np.uint8) for _ in range(b)]
                    audio = [rng.standard_normal((chunk, 50, 384)).astype(np.float32) for _ in range(b)]
                    t = timed(lambda: r.render_crops(crops, audio, list(range(b))), args.repeats)  # noqa: B023
                    row["fps"][f"{chunk}x{b}"] = round(b * chunk / t, 1)
                    row["call_ms"][f"{chunk}x{b}"] = round(t * 1000, 1)
                    fits = b if t <= budget else fits
                row[f"sessions_25fps_chunk{chunk}"] = fits
            for chunk in (1, 4):  # a new session: its crops are not in the latent cache yet
                fresh = [[rng.integers(0, 256, (chunk, res, res, 3), dtype=np.uint8)] for _ in range(args.repeats)]
                it = iter(fresh)
                t = timed(lambda: r.render_crops(next(it), [np.zeros((chunk, 50, 384), np.float32)], [0]),  # noqa: B023
                          args.repeats)
                row[f"first_call_ms_chunk{chunk}"] = round(t * 1000, 1)
            if dev.startswith("cuda"):
                row["peak_mem_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
            rows.append(row)
            print(json.dumps(row), flush=True)
        row_attn = dict(attention_processors(unet))
        print(json.dumps({"config": name, "attention": row_attn}), flush=True)
        del unet, vae
        if dev.startswith("cuda"):
            torch.cuda.empty_cache()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
