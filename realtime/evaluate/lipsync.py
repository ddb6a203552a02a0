"""Does the rendered mouth follow the speech? Measured the way a viewer would judge it.

1. A FaceMesh landmark detector reads every frame of the rendered video; the opening is
   the inner-lip gap |p13 - p14| over the eye-corner distance |p33 - p263|.
2. The opening the speech implies comes from phones: pocketsphinx force-aligns the audio to its
   transcript (Whisper transcribes it when no transcript is given) and each ARPAbet phone maps to a
   typical opening (0 for p/b/m and silence, 1 for "aa"), lightly smoothed because articulators move
   continuously.
3. Reported: Pearson correlation of the two series, the lag (within +-3 frames) that maximises it, and
   the share of silent frames measured closed. Silent frames are those inside aligned silences at least
   ``guard`` frames from any speech phone (lips start moving ~100 ms before the sound, so the frames
   right at a boundary are not "silence" for a viewer). "Closed" means a reading below the avatar's own
   closed reading (its rest frame, or the video's 5th percentile) plus ``CLOSED_MARGIN``.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from realtime.audio.io import SAMPLE_RATE, load_audio
from realtime.audio.whisper_loader import load_whisper
from realtime.face.landmarks import FaceMeshDetector
from realtime.visemes.align import align_phones as align_phone_times

log = logging.getLogger(__name__)

# Typical relative inner-lip opening per ARPAbet phone (open vowels 1, bilabials 0).
PHONE_OPENING = {
    "AA": 1.0, "AE": 0.9, "AH": 0.7, "AO": 0.85, "AW": 0.85, "AY": 0.85, "EH": 0.7, "ER": 0.45,
    "EY": 0.6, "IH": 0.45, "IY": 0.35, "OW": 0.65, "OY": 0.7, "UH": 0.45, "UW": 0.35,
    "P": 0.0, "B": 0.0, "M": 0.0, "F": 0.15, "V": 0.15, "W": 0.25, "TH": 0.3, "DH": 0.3,
    "S": 0.2, "Z": 0.2, "SH": 0.25, "ZH": 0.25, "CH": 0.25, "JH": 0.25, "T": 0.35, "D": 0.35,
    "N": 0.35, "L": 0.4, "K": 0.4, "G": 0.4, "NG": 0.4, "R": 0.3, "Y": 0.3, "HH": 0.5, "SIL": 0.0,
}
SILENCE = {"SIL", "+NSN+", "+SPN+", "+BREATH+", "+NOISE+"}
CLOSED_MARGIN = 0.03  # eye-distance units; the warp tests call "closed" a reading below 0.03
MAX_LAG = 3  # frames searched either side
SMOOTH_FRAMES = 1.0  # Gaussian sigma applied to the phone-implied opening


@dataclass
class Phone:
    name: str
    start: float  # seconds
    end: float


@dataclass
class LipSyncReport:
    frames: int
    correlation: float  # at lag 0
    best_lag: int  # frames; positive = the video is late
    best_correlation: float
    silent_frames: int
    silent_closed: float  # fraction of silent frames measured closed
    closed_reading: float
    closed_threshold: float
    undetected_frames: int

    def to_dict(self) -> dict:
        return asdict(self)

    def passes(self) -> bool:
        """The issue's quality bar."""
        return self.correlation >= 0.7 and abs(self.best_lag) <= 1 and self.silent_closed >= 0.95


def align_phones(samples: np.ndarray, transcript: str) -> list[Phone]:
    """Phone-level forced alignment of 16 kHz samples to ``transcript`` (pocketsphinx)."""
    return [Phone(name, start, end) for start, end, name in align_phone_times(samples, transcript)]


def transcribe(samples: np.ndarray) -> str:
    """Whisper (the embedded tiny.en) transcript, for audio given without one."""
    result = load_whisper().transcribe(samples.astype(np.float32), language="en", fp16=False)
    return " ".join(result["text"].split())


def implied_opening(phones: list[Phone], n_frames: int, fps: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame opening implied by the phones (smoothed) and a speech mask; frame i is at i / fps."""
    from scipy.ndimage import gaussian_filter1d  # scipy.ndimage is slow to import: only scoring needs it

    t = np.arange(n_frames) / fps
    value = np.zeros(n_frames)
    speech = np.zeros(n_frames, bool)
    for p in phones:
        sel = (t >= p.start) & (t < p.end)
        name = p.name.rstrip("012")
        value[sel] = PHONE_OPENING.get(name, 0.35)
        speech[sel] = name not in SILENCE
    return gaussian_filter1d(value, SMOOTH_FRAMES, mode="nearest"), speech


def measure_gaps(frames, tracking: bool = False) -> np.ndarray:
    """Inner-lip gap / eye-corner distance per frame (NaN where FaceMesh finds no face).

    Each frame is read on its own by default: in tracking mode FaceMesh carries its previous answer
    forward and reads a sealed mouth as 0.03 open for a second after speech (seen on the astronaut)."""
    out = []
    with FaceMeshDetector(static=not tracking, max_faces=1) as det:
        for f in frames:
            lm = det.detect(np.ascontiguousarray(f))
            out.append(np.nan if lm is None else
                       float(np.linalg.norm(lm[13] - lm[14]) / np.linalg.norm(lm[33] - lm[263])))
    return np.asarray(out)


def read_video(path: str | Path) -> tuple[list[np.ndarray], float]:
    import av  # PyAV (FFmpeg) is heavy: only reading a video needs it

    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        fps = float(stream.average_rate or 25)
        return [f.to_ndarray(format="rgb24") for f in c.decode(stream)], fps


def pad_with_room_tone(samples: np.ndarray, seconds: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Adds ``seconds`` of the clip's own quietest 100 ms (its room tone, tiled) before and after it:
    longer real silences to test that the mouth stays shut, without inventing a noise model."""
    win = sample_rate // 10
    if seconds <= 0 or len(samples) < win:
        return samples
    rms = np.sqrt(np.convolve(samples.astype(np.float64) ** 2, np.ones(win) / win, mode="valid"))
    start = int(np.argmin(rms[::win // 4]) * (win // 4))
    if rms[start] > 0.05 * np.percentile(rms, 90):  # room tone sits >= 26 dB under the speech
        raise ValueError("the clip has no quiet 100 ms to take its room tone from; evaluate it without padding")
    tone = samples[start:start + win]
    pad = np.tile(tone, int(np.ceil(seconds * sample_rate / win)))[: int(seconds * sample_rate)]
    return np.concatenate([pad, samples, pad]).astype(np.float32)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.std(a[ok]) == 0 or np.std(b[ok]) == 0:
        return float("nan")
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


def score(gaps: np.ndarray, implied: np.ndarray, speech: np.ndarray, closed_reading: float | None = None,
          guard: int = 2) -> LipSyncReport:
    """Correlation, best lag and silent-frame closure of measured ``gaps`` against the phones."""
    n = min(len(gaps), len(implied))
    gaps, implied, speech = gaps[:n], implied[:n], speech[:n]
    lags = {}
    for lag in range(-MAX_LAG, MAX_LAG + 1):  # gaps[i + lag] against implied[i]
        if lag >= 0:
            lags[lag] = _pearson(gaps[lag:], implied[: n - lag])
        else:
            lags[lag] = _pearson(gaps[: n + lag], implied[-lag:])
    best = max(lags, key=lambda k: -np.inf if np.isnan(lags[k]) else lags[k])
    if closed_reading is None:
        closed_reading = float(np.nanpercentile(gaps, 5))
    threshold = closed_reading + CLOSED_MARGIN
    near_speech = np.convolve(speech.astype(float), np.ones(2 * guard + 1), mode="same") > 0
    silent = ~near_speech & np.isfinite(gaps)
    closed = float(np.mean(gaps[silent] < threshold)) if silent.any() else float("nan")
    return LipSyncReport(n, lags[0], int(best), lags[best], int(silent.sum()), closed, closed_reading, threshold,
                         int(np.isnan(gaps).sum()))


def evaluate_video(video: str | Path, audio, transcript: str | None = None, closed_reading: float | None = None,
                   guard: int = 2) -> tuple[LipSyncReport, np.ndarray, np.ndarray, np.ndarray]:
    """Scores a rendered video against its audio: the report, measured gaps, implied opening, speech mask."""
    samples = load_audio(audio)
    frames, fps = read_video(video)
    text = transcript or transcribe(samples)
    log.info("aligning to %r", text)
    implied, speech = implied_opening(align_phones(samples, text), len(frames), fps)
    gaps = measure_gaps(frames)
    return score(gaps, implied, speech, closed_reading, guard), gaps, implied, speech
