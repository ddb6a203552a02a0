import hashlib

import numpy as np
import pytest

from realtime.face.mask import MASK_NAMES, fixed_mask, mask_image, repaint_indicator

# (zero pixels, sha256 of the 256x256 uint8 indicator, 1 where the PNG is 0) from latentsync_masks.md
EXPECTED = {
    "mask": (26673, "8cf0fff00a26878685930de10b44e8fd2debc1493c488f1163d9abb5bc3a7a41"),
    "mask2": (22119, "77d05510ea8197015951517d78b2666b9af055219052c0214fc2ecb4582cb6b7"),
    "mask3": (12651, "53551f97e7f7f457fd42629a9a07f0a7af7f3dacba62d65cc9b0bd021b1c3ed1"),
    "mask4": (38303, "2c0e374fb65eb3c1baab2022c1db2730e2ead57f83819e920012442e065e7108"),
}


@pytest.mark.parametrize("name", MASK_NAMES)
def test_indicator_counts_and_hashes(name):
    ind = repaint_indicator(name)
    count, digest = EXPECTED[name]
    assert ind.shape == (256, 256) and ind.dtype == np.uint8
    assert int(ind.sum()) == count
    assert hashlib.sha256(np.ascontiguousarray(ind).tobytes()).hexdigest() == digest


def test_mask_bounding_box_and_image():
    rows, cols = np.nonzero(repaint_indicator("mask"))
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (95, 242, 9, 247)
    img = mask_image("mask")
    assert img.shape == (256, 256, 3) and set(np.unique(img)) == {0, 255}
    assert (img[..., 0] == img[..., 2]).all()
    assert img[110, 120, 0] == 255  # the nose strip stays


def test_fixed_mask_256_is_binary():
    m = fixed_mask(256)
    assert m.sum() == 38863.0
    assert set(np.unique(m)) == {0.0, 1.0}


def test_fixed_mask_512_matches_latentsync():
    m = fixed_mask(512)
    assert m.shape == (512, 512) and m.dtype == np.float64
    assert 0.0 <= m.min() and m.max() <= 1.0
    assert int((m == 0).sum()) == 102152 and int((m == 1).sum()) == 150806
    assert m.sum() == pytest.approx(155449.1529411765, abs=1e-6)
    # exact float64 bytes of LatentSync's load_fixed_mask with opencv 4.9 (Lanczos kernel unchanged since)
    assert hashlib.sha256(m.tobytes()).hexdigest() == "12c541400142f9bd895de9345216dfc25aaa41b18e48565f9f844158ca73ba91"


def test_unknown_mask_name():
    with pytest.raises(ValueError, match="unknown mask"):
        repaint_indicator("mask5")
