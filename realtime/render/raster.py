"""The piecewise-affine warp maps of a deformed triangle mesh, rasterised in one compiled pass.

For every moving triangle the pixels whose centres lie in its deformed pose (or within HALO of it,
where no triangle covers them) get the source position its affine maps them to (barycentric weights
of the deformed corners applied to the rest corners), then the work -> frame conversion. Doing this per pixel in one jitted loop replaces a few hundred
``cv2.fillConvexPoly`` calls, a batched 3x3 solve and a per-pixel gather: 1.6 -> ~0.3 ms per frame
on this project's 2-core reference CPU, which is most of the embedded renderer's per-frame cost.

numba is already a dependency of openai-whisper; the compiled kernel is cached next to this file
(``cache=True``), so only the first use on a machine pays the compile (about 1 s; loading it later takes 0.3 s).
"""

from __future__ import annotations

import numba
import numpy as np

MIN_AREA = 0.05  # twice the area, px^2: collapsed triangles (sealed lips) cover no pixel
HALO = 0.75  # px: reaches every pixel an edge passes through (a diagonal's centre is 0.71 px off)


@numba.njit(cache=True, nogil=True)
def _fill(q, rest, tris, scale, off_x, off_y, map_x, map_y):  # pragma: no cover - compiled
    h, w = map_x.shape
    # Who wrote each pixel: 1/2 a folded triangle's halo/inside, 3/4 a proper one's. A pixel goes
    # to the highest rank, and among equals to the later triangle.
    rank = np.zeros((h, w), np.uint8)
    inv = 1.0 / scale
    # Folded triangles (extreme parameter mixes) first, so that proper ones overwrite them: where they
    # alone cover a pixel, a mirrored sample of the neighbourhood beats a hole showing the still frame.
    for proper_pass in range(2):
        for t in range(tris.shape[0]):
            a, b, c = tris[t, 0], tris[t, 1], tris[t, 2]
            ax, ay, bx, by, cx, cy = q[a, 0], q[a, 1], q[b, 0], q[b, 1], q[c, 0], q[c, 1]
            area = (bx - ax) * (cy - ay) - (cx - ax) * (by - ay)
            if abs(area) <= MIN_AREA:
                continue
            rest_area = ((rest[b, 0] - rest[a, 0]) * (rest[c, 1] - rest[a, 1])
                         - (rest[c, 0] - rest[a, 0]) * (rest[b, 1] - rest[a, 1]))
            if ((area > 0) == (rest_area > 0)) != (proper_pass == 1):
                continue
            s = 1.0 / area
            # Conservative cover: pixels whose centre lies within HALO outside an edge count too, but
            # only where no triangle covers them itself, so a seam where two triangles meet over a
            # collapsed one (the sealed lips) leaves no pixel showing the still frame.
            la = HALO * np.hypot(cx - bx, cy - by) / abs(area)
            lb = HALO * np.hypot(ax - cx, ay - cy) / abs(area)
            lc = HALO * np.hypot(bx - ax, by - ay) / abs(area)
            x0 = max(int(np.ceil(min(ax, bx, cx) - HALO)), 0)
            x1 = min(int(np.floor(max(ax, bx, cx) + HALO)), w - 1)
            y0 = max(int(np.ceil(min(ay, by, cy) - HALO)), 0)
            y1 = min(int(np.floor(max(ay, by, cy) + HALO)), h - 1)
            for y in range(y0, y1 + 1):
                for x in range(x0, x1 + 1):
                    # barycentric weights of (x, y) in the deformed triangle
                    l0 = ((bx - x) * (cy - y) - (cx - x) * (by - y)) * s
                    l1 = ((cx - x) * (ay - y) - (ax - x) * (cy - y)) * s
                    l2 = 1.0 - l0 - l1
                    if l0 < -la or l1 < -lb or l2 < -lc:
                        continue
                    r = 2 * proper_pass + (2 if l0 >= 0 and l1 >= 0 and l2 >= 0 else 1)
                    if r < rank[y, x]:
                        continue
                    rank[y, x] = r
                    rx = l0 * rest[a, 0] + l1 * rest[b, 0] + l2 * rest[c, 0]
                    ry = l0 * rest[a, 1] + l1 * rest[b, 1] + l2 * rest[c, 1]
                    map_x[y, x] = rx * inv + off_x
                    map_y[y, x] = ry * inv + off_y


def fill_warp_maps(q: np.ndarray, rest: np.ndarray, tris: np.ndarray, scale: float, offset: np.ndarray,
                   map_x: np.ndarray, map_y: np.ndarray) -> None:
    """Writes, in place, the backward map (work pixel -> frame pixel) of each triangle ``tris`` (M, 3)
    deformed to ``q`` (V, 2) from ``rest`` (V, 2) into ``map_x``/``map_y`` (the work grid, float32);
    pixels no kept triangle covers keep their values (the still frame's map)."""
    _fill(np.ascontiguousarray(q, np.float64), np.ascontiguousarray(rest, np.float64),
          np.ascontiguousarray(tris, np.int64), float(scale), float(offset[0]), float(offset[1]), map_x, map_y)
