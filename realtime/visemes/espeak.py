"""Speech with exact phoneme timings from Debian's libespeak-ng, through ctypes.

The espeak-ng command line prints phonemes without times, but the library reports every phoneme
as an ``espeakEVENT_PHONEME`` event carrying its sample position when it is initialised with
``espeakINITIALIZE_PHONEME_EVENTS`` and a synchronous synth callback. That gives training labels
aligned to the sample, with no forced aligner in the loop.

libespeak-ng keeps global state, so one process synthesises with one ``EspeakSynth`` at a time.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

# espeak_AUDIO_OUTPUT: AUDIO_OUTPUT_SYNCHRONOUS hands samples to the callback during espeak_Synth.
AUDIO_OUTPUT_SYNCHRONOUS = 2
INITIALIZE_PHONEME_EVENTS = 0x0001
INITIALIZE_DONT_EXIT = 0x8000
POS_CHARACTER = 1
CHARS_UTF8 = 1
# espeak_EVENT_TYPE values
EVENT_LIST_TERMINATED = 0
EVENT_PHONEME = 7
# espeak_PARAMETER values
PARAM_RATE = 1
PARAM_VOLUME = 2
PARAM_PITCH = 3
PARAM_RANGE = 4
PARAM_WORDGAP = 7


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),  # milliseconds
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


class EspeakUnavailable(RuntimeError):
    """libespeak-ng.so.1 is not installed (Debian package espeak-ng / libespeak-ng1)."""


@functools.lru_cache(maxsize=1)
def find_library() -> str | None:
    """Path or soname of libespeak-ng, or None when it is not installed."""
    for name in ("libespeak-ng.so.1", ctypes.util.find_library("espeak-ng")):
        if not name:
            continue
        try:
            ctypes.CDLL(name)
            return name
        except OSError:
            continue
    return None


def available() -> bool:
    return find_library() is not None


@dataclass
class Utterance:
    """Synthesised speech and its phonemes. ``starts`` are sample indices at ``sample_rate``;
    phoneme k lasts from starts[k] to starts[k+1] (the last one to the end of the audio)."""

    audio: np.ndarray  # (n,) float32 in [-1, 1]
    sample_rate: int
    phonemes: list[str]
    starts: np.ndarray  # (P,) int64, non-decreasing


class EspeakSynth:
    """Synthesises text with a chosen voice, rate and pitch, returning audio and phoneme timings."""

    def __init__(self) -> None:
        name = find_library()
        if name is None:
            raise EspeakUnavailable("libespeak-ng.so.1 not found; install Debian's espeak-ng package")
        self._lib = ctypes.CDLL(name)
        self._lib.espeak_Initialize.restype = ctypes.c_int
        self._lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        self._lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self._lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self._lib.espeak_Synth.argtypes = [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
            ctypes.c_uint, ctypes.POINTER(ctypes.c_uint), ctypes.c_void_p,
        ]
        rate = self._lib.espeak_Initialize(
            AUDIO_OUTPUT_SYNCHRONOUS, 0, None, INITIALIZE_PHONEME_EVENTS | INITIALIZE_DONT_EXIT
        )
        if rate <= 0:
            raise EspeakUnavailable(f"espeak_Initialize failed ({rate})")
        self.sample_rate = int(rate)
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[int, str]] = []
        self._n = 0
        # keep a reference: ctypes frees the thunk when the Python object dies
        self._callback = _CALLBACK(self._on_synth)
        self._lib.espeak_SetSynthCallback(self._callback)

    def _on_synth(self, wav, numsamples, events) -> int:
        if numsamples > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(numsamples,)).copy())
        i = 0
        while events[i].type != EVENT_LIST_TERMINATED:
            ev = events[i]
            if ev.type == EVENT_PHONEME:
                self._events.append((int(ev.sample), ev.id.string.decode("ascii", "replace")))
            i += 1
        return 0  # 0 = continue synthesis

    def synthesize(self, text: str, voice: str = "en-us", rate: int = 175, pitch: int = 50,
                   pitch_range: int = 50, word_gap: int = 0) -> Utterance:
        """Speaks ``text``. ``voice`` is an espeak name with optional variant ("en-gb+f3");
        rate in words per minute (80..450), pitch and range 0..100, word_gap in 10 ms units."""
        if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ValueError(f"espeak-ng has no voice {voice!r}")
        for param, value in ((PARAM_RATE, rate), (PARAM_PITCH, pitch), (PARAM_RANGE, pitch_range),
                             (PARAM_WORDGAP, word_gap), (PARAM_VOLUME, 100)):
            self._lib.espeak_SetParameter(param, int(value), 0)
        self._chunks, self._events = [], []
        data = text.encode("utf-8") + b"\0"
        buf = ctypes.create_string_buffer(data)
        err = self._lib.espeak_Synth(buf, len(data), 0, POS_CHARACTER, 0, CHARS_UTF8, None, None)
        if err != 0:
            raise RuntimeError(f"espeak_Synth failed ({err}) on {text!r}")
        self._lib.espeak_Synchronize()
        audio = (np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)).astype(np.float32) / 32768.0
        names = [name for _, name in self._events]
        starts = np.array([s for s, _ in self._events], dtype=np.int64)
        if len(starts):
            starts = np.maximum.accumulate(np.clip(starts, 0, len(audio)))
        return Utterance(audio=audio, sample_rate=self.sample_rate, phonemes=names, starts=starts)
