"""`syncvid bench unet`: LatentSync UNet step time per frame, tiny and full configs.

One "step" is one UNet call on a clip of F frames (batch B: 1 without guidance, 2 with
classifier-free guidance) at a 256-pixel face crop (32 x 32 latents; ``--latent``). Reported per
case: median step time (wall clock and, on CPU, process CPU time, which a busy machine inflates
less), and the per-output-frame figure ``step / F``. Each case runs a full pass and a DeepCache
shallow pass (branch 0, reusing the deep feature of the full pass).

CPU cases run in fp32 with 1 and 2 intra-op threads. The full config on CPU uses few frames
(``--cpu-full-frames``, default 2): a 16-frame call takes minutes there. CUDA cases (when a GPU is
present) run fp16 with 16 frames and batch 2, as LatentSync's inference with guidance does; stage2
at 256 px and stage2_512 at 512 px. Weights are random (timing does not depend on their values).
``--devices cuda`` skips the CPU cases; ``--cuda-batch 1,2`` adds the distilled student's batch (no
CFG); ``--cuda-dtype bf16``, ``--compile`` and ``--channels-last`` apply ``realtime.render.accel``.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import statistics
import time

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per case (after one warm-up)")
    parser.add_argument("--latent", type=int, default=32, help="latent side on CPU (32 = 256-pixel crops)")
    parser.add_argument("--tiny-frames", type=int, default=16)
    parser.add_argument("--cpu-full-frames", type=int, default=2)
    parser.add_argument("--threads", default="1,2", help="CPU intra-op thread counts to try")
    parser.add_argument("--skip-full", action="store_true", help="tiny config only (the full one needs ~6 GB RAM)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--devices", default="cpu,cuda", help="device groups to run: cpu, cuda or both")
    parser.add_argument("--cuda-dtype", choices=("fp16", "bf16"), default="fp16", help="CUDA cases' dtype")
    parser.add_argument("--cuda-batch", default="2", help="CUDA batch sizes (2: CFG; 1: a distilled student)")
    parser.add_argument("--compile", action="store_true", help="CUDA: torch.compile the UNet (warm-up not timed)")
    parser.add_argument("--channels-last", action="store_true", help="CUDA: channels-last convolution weights")


def _model(name: str, device: str, dtype):
    from realtime.bench.random_weights import random_unet  # torch, diffusers; `syncvid --help` imports this

    return random_unet(name, device, dtype)


def _time_case(model, batch: int, frames: int, latent: int, device: str, dtype, repeats: int) -> dict:
    import torch  # torch is heavy; `syncvid --help` imports this module

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 13, frames, latent, latent, generator=gen).to(device, dtype)
    audio = torch.randn(batch, frames, 50, 384, generator=gen).to(device, dtype)
    cuda = device.startswith("cuda")

    def call(**kw):
        if cuda:
            torch.cuda.synchronize()
        w0, c0 = time.perf_counter(), time.process_time()
        out = model(x, 500, audio, **kw)
        if cuda:
            torch.cuda.synchronize()
        return out, time.perf_counter() - w0, time.process_time() - c0

    result = {}
    with torch.inference_mode():
        full, _, _ = call(cache_branch_id=0)  # warm-up, and the deep feature for the shallow pass
        call(cache_branch_id=0, deep_cache=full.deep_cache)
        for mode, kw in (("full", {}), ("shallow", {"cache_branch_id": 0, "deep_cache": full.deep_cache})):
            walls, cpus = [], []
            for _ in range(repeats):
                _, w, c = call(**kw)
                walls.append(w)
                cpus.append(c)
            wall = statistics.median(walls) * 1e3
            result[mode] = {"step_ms": round(wall, 2), "ms_per_frame": round(wall / frames, 2)}
            if not cuda:
                result[mode]["cpu_step_ms"] = round(statistics.median(cpus) * 1e3, 2)
    if cuda:
        result["peak_mem_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return result


def run(args: argparse.Namespace) -> int:
    import torch  # torch is heavy; `syncvid --help` imports this module

    cases = []
    threads = [int(t) for t in args.threads.split(",") if t]
    devices = {d.strip() for d in args.devices.split(",") if d.strip()}
    for name, frames in (("tiny", args.tiny_frames), ("stage2", args.cpu_full_frames)):
        if "cpu" not in devices or (name != "tiny" and args.skip_full):
            continue
        model = _model(name, "cpu", torch.float32)
        for n in threads:
            torch.set_num_threads(n)
            r = _time_case(model, 1, frames, args.latent, "cpu", torch.float32, args.repeats)
            cases.append({"config": name, "device": "cpu", "dtype": "fp32", "threads": n, "batch": 1,
                          "frames": frames, "latent": args.latent, **r})
            print(json.dumps(cases[-1]), flush=True)
        del model
        gc.collect()
    if "cuda" in devices and torch.cuda.is_available():
        from realtime.render.accel import optimize_unet, resolve_dtype

        dtype = resolve_dtype("cuda", args.cuda_dtype)
        for name, latent in (("stage2", 32), ("stage2_512", 64)):
            model = optimize_unet(_model(name, "cuda", dtype), channels_last=args.channels_last, compile=args.compile)
            for batch in (int(b) for b in args.cuda_batch.split(",") if b):
                torch.cuda.reset_peak_memory_stats()
                r = _time_case(model, batch, 16, latent, "cuda", dtype, max(args.repeats, 10))
                cases.append({"config": name, "device": torch.cuda.get_device_name(), "dtype": args.cuda_dtype,
                              "batch": batch, "frames": 16, "latent": latent, "compile": args.compile,
                              "channels_last": args.channels_last, **r})
                print(json.dumps(cases[-1]), flush=True)
            del model
            torch.cuda.empty_cache()
    elif "cuda" in devices:
        log.info("no CUDA device: GPU cases skipped")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(cases, f, indent=1)
    return 0
