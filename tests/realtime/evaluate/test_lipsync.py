import numpy as np
import pytest

from realtime.evaluate.lipsync import Phone, implied_opening, score


def test_implied_opening_maps_phones_and_marks_speech():
    phones = [Phone("SIL", 0.0, 0.2), Phone("AA", 0.2, 0.4), Phone("M", 0.4, 0.5), Phone("SIL", 0.5, 1.0)]
    opening, speech = implied_opening(phones, 25, 25.0)
    assert speech.tolist() == [False] * 5 + [True] * 8 + [False] * 12
    assert opening[7] > 0.8 and opening[:3].max() < 0.05 and opening[-5:].max() < 0.05
    assert opening[11] < opening[7]  # the bilabial pulls the opening down


def test_score_finds_lag_and_counts_closed_silence():
    rng = np.random.default_rng(0)
    implied = np.clip(np.sin(np.arange(200) / 3.0), 0, None)
    speech = implied > 0
    speech[:20] = False
    implied[:20] = 0
    gaps = 0.01 + 0.2 * np.roll(implied, 2) + 0.002 * rng.standard_normal(200)  # video 2 frames late
    rep = score(gaps, implied, speech, closed_reading=0.01, guard=2)
    assert rep.best_lag == 2 and rep.best_correlation > 0.95 and rep.correlation < rep.best_correlation
    assert rep.silent_closed == pytest.approx(1.0)
    assert not rep.passes()  # lag 2 is outside the bar
    gaps_open = gaps.copy()
    gaps_open[:20] = 0.1
    assert score(gaps_open, implied, speech, closed_reading=0.01, guard=2).silent_closed < 0.9


def test_pocketsphinx_aligns_real_speech(arctic_audio):
    pytest.importorskip("pocketsphinx")
    from realtime.evaluate.lipsync import align_phones

    phones = align_phones(arctic_audio, "and you always want to see it in the superlative degree")
    names = [p.name for p in phones]
    assert names[0] == "SIL" and names[-1] == "SIL" and "P" in names
    assert 35 <= len(phones) <= 45
    assert all(b.start >= a.start for a, b in zip(phones, phones[1:]))
    assert phones[-1].end == pytest.approx(4.0, abs=0.05)
