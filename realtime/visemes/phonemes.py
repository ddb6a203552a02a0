"""Phonemes -> OVR visemes -> ARKit-named mouth targets.

One table per viseme gives the blendshape values used as regression targets and as the
"phone-implied" mouth opening in evaluation. espeak-ng mnemonics (English phoneme table) and
ARPAbet (pocketsphinx / CMUdict) both map onto the same 15 visemes.
"""

from __future__ import annotations

import re

import numpy as np

VISEMES = ("sil", "PP", "FF", "TH", "DD", "kk", "CH", "SS", "nn", "RR", "aa", "E", "ih", "oh", "ou")
VISEME_INDEX = {v: i for i, v in enumerate(VISEMES)}
SIL = 0
PP = VISEME_INDEX["PP"]

BLENDSHAPES = (
    "jawOpen", "mouthClose", "mouthFunnel", "mouthPucker",
    "mouthStretch", "mouthRollLower", "mouthRollUpper", "mouthPress",
)

# Rows follow VISEMES, columns BLENDSHAPES. mouthClose = lips sealed (silence and bilabials);
# jawOpen ranks vowels by openness; funnel/pucker mark rounding; rollLower is the lip tucked
# under the upper teeth for f/v.
#                   jaw  close funnel pucker stretch rollL rollU press
_TABLE = {
    "sil": (0.00, 1.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00),
    "PP":  (0.02, 1.00, 0.00, 0.00, 0.00, 0.30, 0.20, 0.60),
    "FF":  (0.12, 0.30, 0.00, 0.00, 0.15, 0.80, 0.00, 0.00),
    "TH":  (0.20, 0.00, 0.00, 0.00, 0.10, 0.00, 0.00, 0.00),
    "DD":  (0.22, 0.00, 0.00, 0.00, 0.20, 0.00, 0.00, 0.00),
    "kk":  (0.28, 0.00, 0.00, 0.00, 0.15, 0.00, 0.00, 0.00),
    "CH":  (0.18, 0.00, 0.60, 0.30, 0.00, 0.00, 0.00, 0.00),
    "SS":  (0.12, 0.00, 0.00, 0.00, 0.45, 0.00, 0.00, 0.00),
    "nn":  (0.20, 0.00, 0.00, 0.00, 0.15, 0.00, 0.00, 0.00),
    "RR":  (0.22, 0.00, 0.40, 0.50, 0.00, 0.00, 0.00, 0.00),
    "aa":  (0.75, 0.00, 0.00, 0.00, 0.10, 0.00, 0.00, 0.00),
    "E":   (0.45, 0.00, 0.00, 0.00, 0.35, 0.00, 0.00, 0.00),
    "ih":  (0.30, 0.00, 0.00, 0.00, 0.55, 0.00, 0.00, 0.00),
    "oh":  (0.50, 0.00, 0.70, 0.30, 0.00, 0.00, 0.00, 0.00),
    "ou":  (0.25, 0.00, 0.40, 0.85, 0.00, 0.00, 0.00, 0.00),
}
VISEME_BLENDSHAPES = np.array([_TABLE[v] for v in VISEMES], dtype=np.float32)  # (15, K)
JAW_OPEN = VISEME_BLENDSHAPES[:, BLENDSHAPES.index("jawOpen")]

# Coarse classes for evaluation: what a viewer notices first.
COARSE_CLASSES = ("closed", "open", "rounded", "other")
_COARSE = {"sil": 0, "PP": 0, "aa": 1, "E": 1, "ih": 1, "oh": 2, "ou": 2}
VISEME_TO_COARSE = np.array([_COARSE.get(v, 3) for v in VISEMES], dtype=np.int64)

# espeak-ng English mnemonics (after stripping variant marks, see espeak_to_viseme).
_ESPEAK = {
    "_": "sil", "": "sil", ";": "sil", "?": "sil",
    "p": "PP", "b": "PP", "m": "PP",
    "f": "FF", "v": "FF",
    "T": "TH", "D": "TH",
    "t": "DD", "d": "DD",
    "k": "kk", "g": "kk", "N": "kk", "h": "kk", "x": "kk",
    "tS": "CH", "dZ": "CH", "S": "CH", "Z": "CH",
    "s": "SS", "z": "SS",
    "n": "nn", "l": "nn", "@L": "nn",
    "r": "RR", "3": "RR", "3:": "RR", "IR": "RR",
    "a": "aa", "aa": "aa", "A:": "aa", "A@": "aa", "aI": "aa", "aI@": "aa", "aU": "aa", "V": "aa", "0": "aa",
    "@": "E", "a#": "E", "E": "E", "e@": "E", "eI": "E", "e": "E",
    "I": "ih", "i": "ih", "i:": "ih", "i@": "ih", "j": "ih", "y": "ih",
    "O": "oh", "O:": "oh", "O@": "oh", "o@": "oh", "oU": "oh", "OI": "oh", "o": "oh",
    "u:": "ou", "U": "ou", "U@": "ou", "w": "ou", "u": "ou",
}
# trailing digits and marks name variants of the same phoneme (a2, @2, t#, n-, r-, t[, aI3 ...)
_VARIANT = re.compile(r"[0-9#\-\[/!^]+$")


def espeak_to_viseme(name: str) -> int:
    """Viseme index of an espeak-ng phoneme mnemonic; unknown ones fall back on their first letter."""
    name = name.strip()
    if name in _ESPEAK:
        return VISEME_INDEX[_ESPEAK[name]]
    if name.startswith("_"):
        return SIL
    base = _VARIANT.sub("", name)
    if base in _ESPEAK:
        return VISEME_INDEX[_ESPEAK[base]]
    for n in (2, 1):
        if base[:n] in _ESPEAK:
            return VISEME_INDEX[_ESPEAK[base[:n]]]
    return VISEME_INDEX["E"]  # unknown vowel-like symbol: a neutral, half-open mouth


_ARPABET = {
    "SIL": "sil", "SP": "sil", "+SPN+": "sil", "+NSN+": "sil", "+BREATH+": "sil",
    "P": "PP", "B": "PP", "M": "PP", "F": "FF", "V": "FF", "TH": "TH", "DH": "TH",
    "T": "DD", "D": "DD", "K": "kk", "G": "kk", "NG": "kk", "HH": "kk",
    "CH": "CH", "JH": "CH", "SH": "CH", "ZH": "CH", "S": "SS", "Z": "SS",
    "N": "nn", "L": "nn", "R": "RR", "ER": "RR",
    "AA": "aa", "AE": "aa", "AW": "aa", "AY": "aa", "AH": "E", "EH": "E", "EY": "E",
    "IH": "ih", "IY": "ih", "Y": "ih", "AO": "oh", "OW": "oh", "OY": "oh",
    "UH": "ou", "UW": "ou", "W": "ou",
}


def arpabet_to_viseme(phone: str) -> int:
    """Viseme index of an ARPAbet phone (stress digits ignored); fillers and noise are silence."""
    p = phone.strip().upper().rstrip("012")
    if p.startswith("+") or p not in _ARPABET:
        return SIL if p.startswith("+") or p in ("", "SIL") else VISEME_INDEX["E"]
    return VISEME_INDEX[_ARPABET[p]]
