"""The compiled warp-map rasteriser: exact affine maps inside triangles, coverage rules, pass order."""

import numpy as np

from realtime.render.raster import fill_warp_maps

SQUARE = np.array([[10, 10], [30, 10], [30, 30], [10, 30]], np.float64)
TWO_TRIS = np.array([[0, 1, 2], [0, 2, 3]])


def _maps(size=40, fill=-1.0):
    return np.full((size, size), fill, np.float32), np.full((size, size), fill, np.float32)


def test_translated_square_maps_back_by_the_translation_with_scale_and_offset():
    q = SQUARE + (3.25, -2.5)  # the deformed pose; the map must send it back to SQUARE
    mx, my = _maps()
    fill_warp_maps(q, SQUARE, TWO_TRIS, 2.0, np.array([100.0, 50.0]), mx, my)
    ys, xs = np.mgrid[0:40, 0:40]
    inside = (xs >= 14) & (xs <= 33) & (ys >= 8) & (ys <= 27)  # centres inside the moved square
    np.testing.assert_allclose(mx[inside], (xs[inside] - 3.25) / 2 + 100, atol=1e-4)
    np.testing.assert_allclose(my[inside], (ys[inside] + 2.5) / 2 + 50, atol=1e-4)
    # Beyond half a pixel outside the moved square nothing is written.
    far = (xs < 12) | (xs > 34) | (ys < 7) | (ys > 28)
    assert (mx[far] == -1).all() and (my[far] == -1).all()


def test_scaled_triangle_is_an_exact_affine_map():
    rest = np.array([[0, 0], [20, 0], [0, 20]], np.float64)
    q = rest * 1.5 + 2  # scaled up about the origin, then shifted
    mx, my = _maps()
    fill_warp_maps(q, rest, np.array([[0, 1, 2]]), 1.0, np.zeros(2), mx, my)
    written = mx != -1
    ys, xs = np.nonzero(written)
    assert written.sum() > 400  # ~ 30 * 30 / 2 pixels
    np.testing.assert_allclose(mx[written], (xs - 2) / 1.5, atol=1e-4)
    np.testing.assert_allclose(my[written], (ys - 2) / 1.5, atol=1e-4)


def test_collapsed_triangle_covers_nothing_but_its_neighbours_close_the_seam():
    # Upper and lower triangles squeezed onto one line (sealed lips) with a zero-area one between.
    rest = np.array([[5, 5], [35, 5], [5, 15], [35, 15], [5, 25], [35, 25]], np.float64)
    q = rest.copy()
    q[2:6, 1] = 19.6  # the middle and bottom rows meet on one line between pixel rows: the bottom
    tris = np.array([[0, 1, 2], [1, 3, 2], [2, 3, 4], [3, 5, 4]])  # triangles have zero area
    mx, my = _maps()
    fill_warp_maps(q, rest, tris, 1.0, np.zeros(2), mx, my)
    assert (mx[21:, 10:30] == -1).all()  # the collapsed triangles wrote nothing below the line
    # Row 20 lies 0.4 px below the last covering triangle: covered (the 0.75 px halo), so the
    # seam shows the stretched skin, not the still frame.
    assert (mx[5:21, 6:34] != -1).all()
    np.testing.assert_allclose(my[20, 10:30], 5 + (20 - 5) * (10 / 14.6), atol=1e-3)  # extrapolated


def test_folded_triangles_are_drawn_first_so_proper_ones_win():
    rest = np.array([[10, 10], [30, 10], [10, 30]], np.float64)
    proper = rest + 1.0
    folded = rest[[0, 2, 1]] + 1.0  # same place, opposite winding against its own rest corners
    q = np.concatenate([folded, proper])
    rest2 = np.concatenate([rest[[0, 1, 2]], rest])  # the folded copy's rest winding differs from q's
    tris = np.array([[3, 4, 5], [0, 1, 2]])  # proper listed first: the pass order must still put it last
    mx, my = _maps()
    fill_warp_maps(q, rest2, tris, 1.0, np.zeros(2), mx, my)
    ys, xs = np.nonzero(mx != -1)
    inner = (xs > 13) & (ys > 13) & (xs + ys < 38)
    np.testing.assert_allclose(mx[ys[inner], xs[inner]], xs[inner] - 1.0, atol=1e-4)
    np.testing.assert_allclose(my[ys[inner], xs[inner]], ys[inner] - 1.0, atol=1e-4)


def test_triangles_outside_the_grid_are_clipped():
    rest = np.array([[-10, -10], [60, -10], [-10, 60]], np.float64)
    mx, my = _maps()
    fill_warp_maps(rest, rest, np.array([[0, 1, 2]]), 1.0, np.zeros(2), mx, my)
    ys, xs = np.mgrid[0:40, 0:40]
    inside = xs + ys <= 50  # the hypotenuse is x + y = 50
    np.testing.assert_allclose(mx[inside], xs[inside], atol=1e-4)
    assert (mx[xs + ys > 51] == -1).all()


def test_a_later_triangles_halo_does_not_take_pixels_an_earlier_one_covers():
    # Two bands, the upper one mapped as is, the lower one 100 px down; they meet at y = 20.5.
    q = np.array([[5, 10], [35, 10], [35, 20.5], [5, 20.5], [5, 20.5], [35, 20.5], [35, 30], [5, 30]], np.float64)
    rest = q.copy()
    rest[4:, 1] += 100
    tris = np.array([[0, 1, 2], [0, 2, 3], [4, 5, 6], [4, 6, 7]])
    mx, my = _maps()
    fill_warp_maps(q, rest, tris, 1.0, np.zeros(2), mx, my)
    assert my[20, 15] == 20.0  # inside the upper band, 0.5 px from the lower one (its halo)
    assert my[21, 15] == 121.0
    assert my[31, 15] == -1 and my[30, 15] == 130.0  # the halo only reaches uncovered pixels
    assert my[9, 15] == -1  # 1 px outside: beyond the 0.75 px halo
