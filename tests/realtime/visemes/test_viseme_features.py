import numpy as np
import pytest

from realtime.visemes.features import blocks_from_features, causal_blocks, frame_steps
from realtime.visemes.windows import FULL, LOW


@pytest.fixture(scope="module")
def whisper():
    from realtime.audio.whisper_loader import load_whisper

    return load_whisper()


def _noise(n, seed):
    return (np.random.default_rng(seed).standard_normal(n) * 0.1).astype(np.float32)


def test_frame_steps_match_windows():
    s = frame_steps(LOW, 3, 25.0)
    assert s.tolist() == [list(range(-8, 2)), list(range(-6, 4)), list(range(-4, 6))]


@pytest.mark.parametrize("window", [FULL, LOW])
def test_causal_blocks_never_see_past_the_lookahead(whisper, window):
    a = _noise(16000, 0)
    b = a.copy()
    cut = 8000  # 0.5 s: frames whose window ends at or before step 25 cannot depend on what follows
    b[cut + 400 :] = _noise(len(b) - cut - 400, 1)  # 400 samples = STFT/conv reach past the last step
    ba = causal_blocks(whisper, a, window, context_steps=16)
    bb = causal_blocks(whisper, b, window, context_steps=16)
    assert ba.shape == (25, window.rows, 384)
    ends = frame_steps(window, 25, 25.0)[:, -1] + 1
    safe = ends * 320 <= cut
    assert safe.sum() >= 8
    np.testing.assert_array_equal(ba[safe], bb[safe])
    assert not np.allclose(ba[~safe], bb[~safe])


def test_full_window_cuts_latentsync_blocks():
    from realtime.audio.features import chunk_features

    feats = np.random.default_rng(2).standard_normal((40, 5, 8)).astype(np.float32)
    np.testing.assert_array_equal(blocks_from_features(feats, FULL, 20), chunk_features(feats, 25.0, 20))
    low = blocks_from_features(feats, LOW, 20).reshape(20, 10, 5, 8)
    np.testing.assert_array_equal(low[10, 0], feats[12])  # frame 10: centre step 20, first step 12
