import cv2
import numpy as np
import pytest

from realtime.render.mouth_interior import MouthInterior
from realtime.render.mouth_warp import LOWER_OUTER, UPPER_OUTER, FaceRig, MouthParams
from tests.realtime.render.conftest import lip_gap


@pytest.fixture(scope="module")
def rigged(astronaut):
    img, lm = astronaut
    rig = FaceRig.build(lm, img.shape[:2], eyes=False)
    return img, lm, rig, MouthInterior.build(img, rig)


def render(rigged, params: MouthParams) -> np.ndarray:
    img, _, rig, interior = rigged
    disp = rig.displacement(params)
    work = interior.render(rig.warp(img, disp), rig, disp, params)
    return rig.paste_back(img, work)


def mouth_region(lm: np.ndarray, shape, grow: float) -> np.ndarray:
    """Lip hull dilated by ``grow`` mouth widths."""
    width = np.linalg.norm(lm[291] - lm[61])
    m = np.zeros(shape[:2], np.uint8)
    cv2.fillConvexPoly(m, np.round(lm[UPPER_OUTER + LOWER_OUTER]).astype(np.int32), 255)
    k = int(2 * grow * width) | 1
    return cv2.dilate(m, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))) > 0


def test_astronaut_rest_mouth_is_open(facemesh, astronaut):
    assert 0.08 < lip_gap(facemesh, astronaut[0]) < 0.15  # a smile with the teeth showing


def test_neutral_params_close_the_mouth(facemesh, rigged):
    assert lip_gap(facemesh, render(rigged, MouthParams())) < 0.03


@pytest.mark.parametrize("jaw, lo, hi", [(0.35, 0.12, 0.3), (0.8, 0.2, 0.6)])
def test_opening_reads_a_larger_gap(facemesh, rigged, jaw, lo, hi):
    assert lo < lip_gap(facemesh, render(rigged, MouthParams(jawOpen=jaw))) < hi


def test_gap_grows_with_jaw_open(facemesh, rigged):
    gaps = [lip_gap(facemesh, render(rigged, MouthParams(jawOpen=j))) for j in (0.0, 0.2, 0.4, 0.7)]
    assert np.all(np.diff(gaps) > 0.02), gaps


def test_bilabial_close_seals_an_open_jaw(facemesh, rigged):
    assert lip_gap(facemesh, render(rigged, MouthParams(jawOpen=0.5, mouthClose=0.5))) < 0.03


def test_outside_mouth_region_untouched(rigged):
    img, lm, _, _ = rigged
    out = render(rigged, MouthParams())
    outside = ~mouth_region(lm, img.shape, 0.5)
    diff = np.abs(out.astype(np.float32) - img)[outside]
    assert diff.mean() < 1.0
    far = ~mouth_region(lm, img.shape, 2.0)
    assert np.abs(out.astype(np.int16) - img)[far].max() <= 2  # only the feathered resampling edge


def _hf_energy(img: np.ndarray, mask: np.ndarray) -> float:
    """Energy of the detail above a sigma-1.5 Gaussian (pores, freckles, fine shading)."""
    gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32)
    return float(np.mean((gray - cv2.GaussianBlur(gray, (0, 0), 1.5))[mask] ** 2))


def test_skin_texture_preserved(rigged):
    """High-frequency energy of the skin around the mouth (lips excluded) survives the warp."""
    img, lm, _, _ = rigged
    ring = mouth_region(lm, img.shape, 0.8) & ~mouth_region(lm, img.shape, 0.15)
    base = _hf_energy(img, ring)
    # Stretching skin lowers its frequencies, so a wide-open jaw keeps a little less.
    for p, lo in ((MouthParams(), 0.9), (MouthParams(jawOpen=0.4), 0.75), (MouthParams(jawOpen=0.8), 0.6)):
        assert lo < _hf_energy(render(rigged, p), ring) / base < 1.2


def test_no_seams_at_the_warp_boundary(rigged):
    img, lm, rig, _ = rigged
    r = rig.region
    edge = np.zeros(img.shape[:2], bool)
    m = rig.paste_mask
    edge[r.y0:r.y0 + r.side, r.x0:r.x0 + r.side] = (m > 0.05) & (m < 0.95)
    assert edge.sum() > 200

    def grad(x):
        g = cv2.cvtColor(x, cv2.COLOR_RGB2GRAY).astype(np.float32)
        return np.hypot(cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1))

    base = grad(img)[edge].mean()
    for p in (MouthParams(), MouthParams(jawOpen=1.0), MouthParams(mouthPucker=1.0, jawOpen=0.3)):
        assert grad(render(rigged, p))[edge].mean() < 1.15 * base


def test_open_mouth_shows_dark_cavity_and_teeth(rigged):
    img, lm, rig, _ = rigged
    out = render(rigged, MouthParams(jawOpen=0.8))
    disp = rig.displacement(MouthParams(jawOpen=0.8))
    poly = rig.region.to_frame(rig.inner_polygon(disp))
    inside = np.zeros(img.shape[:2], np.uint8)
    cv2.fillPoly(inside, [np.round(poly).astype(np.int32)], 255)
    lum = cv2.cvtColor(out, cv2.COLOR_RGB2GRAY)[inside > 0]
    assert inside.sum() / 255 > 150
    assert np.percentile(lum, 25) < 60  # cavity
    assert np.percentile(lum, 95) > 150  # teeth


def test_warp_is_deterministic_and_neutral_is_identity_for_closed_mouth(rigged):
    a = render(rigged, MouthParams(jawOpen=0.3, mouthFunnel=0.2))
    b = render(rigged, MouthParams(jawOpen=0.3, mouthFunnel=0.2))
    assert np.array_equal(a, b)
    # A frame whose lips are already closed gets no seal and no displacement at all.
    img, lm, rig, _ = rigged
    closed_lm = lm.copy()
    closed_lm[[14, 87, 178, 88, 95, 317, 402, 318, 324]] = closed_lm[[13, 82, 81, 80, 191, 312, 311, 310, 415]]
    rig2 = FaceRig.build(closed_lm, img.shape[:2], eyes=False)
    assert np.abs(rig2.displacement(MouthParams())).max() == 0


def test_from_blendshapes_averages_left_right_and_clips():
    names = ["jawOpen", "mouthStretchLeft", "mouthStretchRight", "mouthClose", "browInnerUp"]
    p = MouthParams.from_blendshapes(names, np.array([1.4, 0.2, 0.4, 0.1, 1.0]))
    assert p.jawOpen == 1.0 and p.mouthStretch == pytest.approx(0.3) and p.mouthClose == pytest.approx(0.1)


def test_rig_rejects_wrong_landmark_shape(astronaut):
    with pytest.raises(ValueError):
        FaceRig.build(np.zeros((68, 2)), (512, 512))


@pytest.mark.parametrize("max_work", [1024, 128])  # the frame's own grid; a coarser work grid (maps resized)
def test_warp_resamples_only_the_changed_box_with_the_same_pixels(rigged, max_work):
    img, lm, _, _ = rigged
    rig = FaceRig.build(lm, img.shape[:2], eyes=True, max_work=max_work)
    coarse = rig.region.size != rig.region.side
    assert coarse == (max_work == 128)
    for p in (MouthParams(), MouthParams(jawOpen=0.6, mouthStretch=0.5), MouthParams(mouthPucker=1, eyeBlink=1)):
        disp = rig.displacement(p)
        whole = rig.remap(img, rig.roi_maps(disp))  # the whole paste box resampled
        box = rig._changed_box(rig._moving(disp))
        assert np.array_equal(rig.warp(img, disp), whole)
        if coarse:  # maps resized: the still map is not whole pixels, the whole box is resampled
            assert box == rig.paste_box
        else:  # on the frame's grid the box is the moving part only
            area = lambda b: (b[1] - b[0]) * (b[3] - b[2])  # noqa: E731
            assert area(box) < area(rig.paste_box)
