import numpy as np

from realtime.visemes.dataset import frame_labels
from realtime.visemes.phonemes import (
    BLENDSHAPES, COARSE_CLASSES, VISEME_BLENDSHAPES, VISEME_TO_COARSE, VISEMES, arpabet_to_viseme, espeak_to_viseme,
)
from realtime.visemes.windows import FULL, LOW, get_window


def name(i):
    return VISEMES[i]


def test_viseme_inventory_and_table():
    assert VISEMES == ("sil", "PP", "FF", "TH", "DD", "kk", "CH", "SS", "nn", "RR", "aa", "E", "ih", "oh", "ou")
    assert VISEME_BLENDSHAPES.shape == (15, len(BLENDSHAPES))
    assert VISEME_BLENDSHAPES.min() >= 0 and VISEME_BLENDSHAPES.max() <= 1
    for required in ("jawOpen", "mouthClose", "mouthFunnel", "mouthPucker", "mouthStretch", "mouthRollLower", "mouthRollUpper"):
        assert required in BLENDSHAPES
    jaw, close = BLENDSHAPES.index("jawOpen"), BLENDSHAPES.index("mouthClose")
    for v in ("sil", "PP"):  # lips sealed, jaw shut
        row = VISEME_BLENDSHAPES[VISEMES.index(v)]
        assert row[close] == 1.0 and row[jaw] <= 0.05
    assert VISEME_BLENDSHAPES[VISEMES.index("aa"), jaw] == VISEME_BLENDSHAPES[:, jaw].max()
    assert [COARSE_CLASSES[c] for c in VISEME_TO_COARSE[[0, 1, 10, 13, 7]]] == ["closed", "closed", "open", "rounded", "other"]


def test_espeak_mnemonics():
    cases = {"p": "PP", "b": "PP", "m": "PP", "f": "FF", "v": "FF", "T": "TH", "D": "TH", "t": "DD", "t#": "DD",
             "k": "kk", "N": "kk", "tS": "CH", "dZ": "CH", "S": "CH", "s": "SS", "z": "SS", "n": "nn", "l": "nn",
             "@L": "nn", "r": "RR", "r-": "RR", "3:": "RR", "A:": "aa", "aI": "aa", "V": "aa", "E": "E", "@": "E",
             "@2": "E", "I": "ih", "i:": "ih", "i@3": "ih", "O:": "oh", "oU": "oh", "u:": "ou", "w": "ou",
             "_": "sil", "_:": "sil"}
    assert {k: name(espeak_to_viseme(k)) for k in cases} == cases


def test_arpabet_phones():
    cases = {"P": "PP", "B": "PP", "M": "PP", "F": "FF", "DH": "TH", "T": "DD", "NG": "kk", "JH": "CH", "Z": "SS",
             "L": "nn", "ER": "RR", "AA1": "aa", "AH0": "E", "IY": "ih", "OW": "oh", "UW": "ou", "W": "ou",
             "SIL": "sil", "+SPN+": "sil"}
    assert {k: name(arpabet_to_viseme(k)) for k in cases} == cases


def test_frame_labels_centre_and_overlap():
    vis = np.zeros(120, np.int64)
    vis[40:70] = 1  # PP from 40 to 70 ms
    vis[70:] = 10  # aa after
    labels, targets = frame_labels(vis, 3)
    assert labels.tolist() == [0, 1, 10]
    jaw = BLENDSHAPES.index("jawOpen")
    np.testing.assert_allclose(targets[1, jaw], (30 * 0.02 + 10 * 0.75) / 40, rtol=1e-6)


def test_windows():
    assert (FULL.past, FULL.future, FULL.rows, FULL.lookahead_ms) == (4, 6, 50, 120.0)
    assert (LOW.past, LOW.future, LOW.rows, LOW.lookahead_ms) == (8, 2, 50, 40.0)
    assert FULL.step_range(10) == (16, 26) and LOW.step_range(10) == (12, 22)
    assert get_window("low") is LOW
