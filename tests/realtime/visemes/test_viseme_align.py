from pathlib import Path

import numpy as np
import pytest

from realtime.visemes.align import phones_to_visemes_ms, read_htk_lab
from realtime.visemes.phonemes import PP, SIL, VISEMES

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


def test_pocketsphinx_phone_alignment_of_real_speech():
    pytest.importorskip("pocketsphinx")
    from realtime.audio.io import load_audio
    from realtime.visemes.align import align_phones

    audio = load_audio(FIXTURES / "arctic_a0007.wav")
    phones = align_phones(audio, "and you always want to see it in the superlative degree")
    names = [p[2] for p in phones]
    assert 38 <= len(phones) <= 45
    starts = np.array([p[0] for p in phones])
    assert np.all(np.diff(starts) > 0)
    assert phones[0][2] == "SIL" and phones[-1][2] == "SIL"
    assert abs(phones[-1][1] - len(audio) / 16000) < 0.05
    assert "P" in names  # superlative
    vis = phones_to_visemes_ms(phones, len(audio) / 16000)
    assert vis[100] == SIL and (vis == PP).sum() > 100  # leading silence; the /p/ of "superlative"


def test_arctic_lab_labels():
    phones = read_htk_lab((FIXTURES / "arctic_a0009_phone.lab").read_text())
    assert [p[2] for p in phones[:4]] == ["SIL", "HH", "IY", "T"]
    assert phones[0][0] == 0.0 and phones[1][0] == pytest.approx(0.13)
    vis = phones_to_visemes_ms(phones, phones[-1][1])
    p_start, p_end, _ = next(p for p in phones if p[2] == "P")  # sharply
    assert np.all(vis[int(p_start * 1000) + 1 : int(p_end * 1000) - 1] == PP)
    assert VISEMES[vis[-5]] == "sil"
