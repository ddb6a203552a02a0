"""`syncvid bench mouth`: frames per second of the embedded renderer on one CPU core.

On scikit-image's astronaut photo (512 x 512, the default avatar), with a 256 x 256 face region
(``--side``; 0 = the renderer's own choice from the face size) pasted back onto the 512 x 512 frame.
A seeded speech-like sequence of mouth parameters (with blinks) is rendered repeatedly; each stage is
timed per frame in thread CPU time (so a busy machine does not inflate it; the wall-clock total is
reported beside it) and the median over all frames and repeats is reported:

- warp: parameters -> vertex displacement -> piecewise-affine maps (rasterised triangle ids)
- remap: one bicubic ``cv2.remap`` of the region's deformable part from the frame
- interior: cavity, teeth, tongue inside the deformed lips
- paste: feathered blend of the region into a copy of the frame
- idle: head sway (``cv2.warpAffine`` of the whole frame), photos only
- visemes: the viseme model per frame (chunks of 1 and 16 frames)
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from realtime.face.landmarks import FaceMeshDetector


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--side", type=int, default=256, help="face region side in frame pixels (0 = automatic)")
    parser.add_argument("--frames", type=int, default=200, help="frames per repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-visemes", action="store_true", help="skip the viseme model timing")
    parser.add_argument("--visemes-dir", metavar="DIR", help="folder with visemes_full.pt / visemes_low.pt "
                        "(default: the shipped checkpoints)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")


def speech_like_params(n: int, seed: int = 0):
    """Seeded parameter track: syllable-rate jaw motion, occasional bilabials, rounding, a blink."""
    # OpenCV and numba (via mouth_warp) are heavy; `syncvid --help` imports this module
    from realtime.render.mouth_warp import MouthParams

    rng = np.random.default_rng(seed)
    t = np.arange(n) / 25.0
    jaw = np.clip(0.45 + 0.4 * np.sin(2 * np.pi * 4.0 * t + rng.uniform(0, 6)) + 0.1 * rng.standard_normal(n), 0, 1)
    out = []
    for i in range(n):
        out.append(MouthParams(
            jawOpen=float(jaw[i]), mouthClose=float(jaw[i]) if i % 11 == 0 else 0.0,
            mouthFunnel=float(rng.uniform(0, 0.4)), mouthPucker=float(rng.uniform(0, 0.3)),
            mouthStretch=float(rng.uniform(0, 0.3)), eyeBlink=1.0 if i % 75 in (0, 1, 2) else 0.0))
    return out


def _median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1e3


def run(args: argparse.Namespace) -> int:
    # heavy (OpenCV, scikit-image, torch, numba); `syncvid --help` imports this module
    import cv2
    import skimage.data
    import torch

    from realtime.render.idle import IdleMotion
    from realtime.render.mouth_interior import MouthInterior
    from realtime.render.mouth_warp import FaceRig

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    img = skimage.data.astronaut()
    with FaceMeshDetector(static=True) as det:
        lm = det.detect(img)
    t0 = time.perf_counter()
    rig = FaceRig.build(lm, img.shape[:2], side=args.side or None, eyes=True)
    interior = MouthInterior.build(img, rig)
    build_ms = (time.perf_counter() - t0) * 1e3
    idle = IdleMotion(0)
    params = speech_like_params(args.frames)
    stages: dict[str, list[float]] = {k: [] for k in ("warp", "remap", "interior", "paste", "idle", "total")}
    wall: list[float] = []
    clock = time.thread_time  # CPU time of this thread: other jobs on the machine do not inflate it
    for _ in range(args.repeats):
        for i, p in enumerate(params):
            w0 = time.perf_counter()
            t = [clock()]
            disp = rig.displacement(p)
            maps = rig.roi_maps(disp)
            t.append(clock())
            work = rig.remap(img, maps)
            t.append(clock())
            interior.render(work, rig, disp, p)
            t.append(clock())
            out = rig.paste_back(img, work)
            t.append(clock())
            idle.move_head(out, i / 25.0, (256.0, 300.0))
            t.append(clock())
            wall.append(time.perf_counter() - w0)
            for k, a, b in zip(("warp", "remap", "interior", "paste", "idle"), t, t[1:]):
                stages[k].append(b - a)
            stages["total"].append(t[-1] - t[0])
    results = {f"{k}_ms": _median_ms(v) for k, v in stages.items()}
    results["fps_without_idle"] = 1e3 / (results["total_ms"] - results["idle_ms"])
    results["fps"] = 1e3 / results["total_ms"]
    results["wall_total_ms"] = _median_ms(wall)  # inflated when other jobs share the cores
    results["wall_fps"] = 1e3 / results["wall_total_ms"]
    results["rig_build_ms"] = build_ms
    results["region_side"] = rig.region.side
    results["work_size"] = rig.region.size

    if not args.no_visemes:
        try:
            results.update(_viseme_timing(args.visemes_dir))
        except (ImportError, OSError) as e:  # the viseme model is optional for this benchmark
            results["visemes"] = f"unavailable ({e})"

    print(f"embedded renderer, astronaut 512x512, region {rig.region.side}x{rig.region.side} "
          f"(work grid {rig.region.size}), one core, median over {args.repeats} x {args.frames} frames:")
    for k, v in results.items():
        print(f"  {k:28s} {v:8.2f}" if isinstance(v, float) else f"  {k:28s} {v}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


def _viseme_timing(directory: str | None) -> dict[str, float]:
    # heavy (OpenCV, numba, the viseme model's torch)
    from realtime.render.embedded import EmbeddedRenderer

    out = {}
    for kind in ("full", "low"):
        weights = str(Path(directory) / f"visemes_{kind}.pt") if directory else None
        r = EmbeddedRenderer(lookahead=kind, weights=weights)
        pred = r.predictor
        rows = getattr(pred, "block_rows", 50)
        rng = np.random.default_rng(0)
        for chunk in (1, 16):
            state = r.new_state(0)
            blocks = rng.standard_normal((chunk, rows, 384)).astype(np.float32)
            r.predict(blocks, state)
            times = []
            for _ in range(20):
                t = time.thread_time()
                r.predict(blocks, state)
                times.append((time.thread_time() - t) / chunk)
            out[f"visemes_{kind}_chunk{chunk}_ms_per_frame"] = _median_ms(times)
    return out


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    add_arguments(p)
    raise SystemExit(run(p.parse_args()))
