"""Phone-level forced alignment of real speech with pocketsphinx (offline, its bundled English
model): the reference labels for evaluating the viseme model on human recordings."""

from __future__ import annotations

import re

import numpy as np

from realtime.audio.io import SAMPLE_RATE
from realtime.visemes.phonemes import SIL, arpabet_to_viseme

FRAME_S = 0.01  # pocketsphinx reports times in 10 ms frames


def align_phones(audio: np.ndarray, transcript: str, sample_rate: int = SAMPLE_RATE) -> list[tuple[float, float, str]]:
    """[(start_s, end_s, ARPAbet phone)] of ``audio`` (float mono at 16 kHz) read as ``transcript``.

    pocketsphinx aligns in two passes: words against the given text, then phones within them.
    Raises ValueError when nothing aligns.
    """
    from pocketsphinx import Decoder  # optional (the test extra): only alignment needs it

    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
    dec = Decoder(lm=None, samprate=sample_rate, bestpath=False, loglevel="FATAL")  # bestpath breaks long silences
    words = re.sub(r"[^a-z' ]+", " ", transcript.lower()).split()  # the dictionary has no punctuation
    dec.set_align_text(" ".join(words))
    for first_pass in (True, False):  # words first; after set_alignment(), phones
        dec.start_utt()
        dec.process_raw(pcm, full_utt=True)
        dec.end_utt()
        if first_pass:
            dec.set_alignment()
    out = []
    for word in dec.get_alignment():
        for ph in word:
            out.append((ph.start * FRAME_S, (ph.start + ph.duration) * FRAME_S, ph.name))
    if not out:
        raise ValueError("pocketsphinx could not align the transcript to the audio")
    return out


def phones_to_visemes_ms(phones: list[tuple[float, float, str]], duration_s: float) -> np.ndarray:
    """Viseme per millisecond; time no phone covers is silence."""
    out = np.full(int(duration_s * 1000), SIL, np.int64)
    for start, end, name in phones:
        out[int(round(start * 1000)) : int(round(end * 1000))] = arpabet_to_viseme(name)
    return out


def read_htk_lab(text: str) -> list[tuple[float, float, str]]:
    """HTS full-context .lab lines ("start end context", 100 ns units) -> [(start_s, end_s, phone)].
    The current phone sits between '-' and '+' in the context label; 'pau'/'sil' are silence."""
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        ctx = parts[2]
        phone = ctx.split("-", 1)[1].split("+", 1)[0] if "-" in ctx else ctx
        phone = {"pau": "SIL", "sil": "SIL", "ax": "AH"}.get(phone, phone)
        out.append((int(parts[0]) * 1e-7, int(parts[1]) * 1e-7, phone.upper()))
    return out
