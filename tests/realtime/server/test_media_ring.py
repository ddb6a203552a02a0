"""AudioRing (realtime.server.media): absolute-index reads against a plain list model."""

import numpy as np

from realtime.session.timeline import AudioRing


def test_reads_match_a_model_across_wraps_overwrites_and_clears():
    rng = np.random.default_rng(3)
    ring = AudioRing(rate=100, seconds=1.0)  # capacity 100 samples
    model: list[float] = []  # every sample ever written, by absolute index
    valid_from = 0
    for step in range(400):
        if step % 37 == 36:
            ring.clear()
            valid_from = len(model)
        n = int(rng.integers(1, 160))  # sometimes more than the capacity at once
        x = rng.standard_normal(n).astype(np.float32)
        if step % 11 == 5:
            ring.write_silence(n)
            x = np.zeros(n, np.float32)
        else:
            ring.write(x)
        model += list(x)
        assert ring.end == len(model)
        start = int(rng.integers(max(0, len(model) - 250), len(model) + 30))  # old, live and future
        length = int(rng.integers(0, 180))
        want = np.zeros(length, np.float32)
        for k in range(length):
            j = start + k
            if max(valid_from, len(model) - 100) <= j < len(model):
                want[k] = model[j]
        np.testing.assert_array_equal(ring.read(start, length), want)
