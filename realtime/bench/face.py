"""`syncvid bench face` (or ``python -m realtime.bench.face``): face-track costs per frame.

Measures, on scikit-image's astronaut photo (512 x 512) and a synthetic drifting video made from it:
FaceMesh in static-image mode (photos) and in tracking mode (videos), the LatentSync warp + crop, the
soft paste mask, and paste-back with a cached mask (what renderers pay per frame). Medians of repeats.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

from realtime.bench.timing import median_seconds
from realtime.face.geometry import AffineTracker, FaceGeometry, paste_back, paste_mask, warp_face
from realtime.face.landmarks import FaceMeshDetector, facemesh_alignment_points


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repeats", type=int, default=30, help="timed repeats per measurement")
    parser.add_argument("--frames", type=int, default=100, help="frames of the synthetic tracking video")
    parser.add_argument("--resolution", type=int, default=256, choices=(256, 512))
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")


def _median_ms(fn, repeats: int, warmup: int = 2) -> float:
    return median_seconds(fn, repeats, warmup) * 1e3


def run(args: argparse.Namespace) -> int:
    # heavy (OpenCV, scikit-image): `syncvid --help` imports this module
    import cv2
    import skimage.data

    cv2.setNumThreads(1)
    img = skimage.data.astronaut()
    geometry = FaceGeometry(args.resolution)
    results: dict[str, float] = {}
    with FaceMeshDetector(static=True) as det:
        results["facemesh_static_ms"] = _median_ms(lambda: det.detect(img), args.repeats)
        lm = det.detect(img)
    # tracking: the photo drifting 1 px per frame (subpixel content changes every frame)
    frames = [cv2.warpAffine(img, np.float64([[1, 0, 0.7 * i], [0, 1, 0.4 * i]]), (512, 512),
                             borderMode=cv2.BORDER_REPLICATE) for i in range(args.frames)]
    with FaceMeshDetector(static=False) as det:
        det.detect(frames[0])
        times = []
        for f in frames[1:]:
            t = time.perf_counter()
            found = det.detect(f)
            times.append(time.perf_counter() - t)
            assert found is not None
    results["facemesh_tracking_ms"] = statistics.median(times) * 1e3
    m = AffineTracker(geometry).update(facemesh_alignment_points(lm))
    results["warp_crop_ms"] = _median_ms(lambda: warp_face(img, m, geometry), args.repeats)
    results["paste_mask_ms"] = _median_ms(lambda: paste_mask(m, img.shape[:2], geometry), args.repeats)
    crop = warp_face(img, m, geometry)
    pm = paste_mask(m, img.shape[:2], geometry)
    results["paste_back_cached_ms"] = _median_ms(lambda: paste_back(img, crop, m, geometry, pm), args.repeats)
    print(f"face track, astronaut 512x512, crop {args.resolution}, median of {args.repeats} "
          f"(tracking: {args.frames - 1} frames), cv2 single-threaded:")
    for k, v in results.items():
        print(f"  {k:24s} {v:8.2f} ms")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    add_arguments(p)
    raise SystemExit(run(p.parse_args()))
