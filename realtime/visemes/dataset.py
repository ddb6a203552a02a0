"""Training and evaluation data for the viseme model: espeak-ng speech with exact phoneme timing,
augmented, labelled per video frame, turned into the per-frame Whisper blocks that run live.

Audio and labels are cheap; the Whisper features are not, so a built set is cached on disk
(float16 blocks in .npy files) keyed by the data config, seed, window and encoder identity.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from math import gcd
from pathlib import Path

import numpy as np

from realtime.audio.io import SAMPLE_RATE
from realtime.visemes.phonemes import SIL, VISEME_BLENDSHAPES, espeak_to_viseme
from realtime.visemes.text import random_sentence
from realtime.visemes.windows import LookaheadWindow

log = logging.getLogger(__name__)

FRAME_MS = 40  # 25 fps
DATA_VERSION = 1  # bump when the synthesis or labelling code changes meaning
# espeak marks voiceless stops at their burst; the lips are already shut during the silent
# closure before it, which espeak books to the previous phoneme.
_VOICELESS_STOPS = ("p", "t", "k", "tS")


@dataclass
class DataConfig:
    minutes: float = 15.0  # training audio, silences included
    eval_minutes: float = 1.5  # held-out voices, encoded by the streaming encoder
    segment_seconds: float = 20.0  # utterances are packed into segments of about this length
    train_accents: list[str] = field(default_factory=lambda: [
        "en-us", "en", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd"])
    # "" = the accent's own default voice
    train_variants: list[str] = field(default_factory=lambda: [
        "", "m1", "m2", "m3", "m4", "m5", "m7", "f1", "f2", "f3", "f5", "klatt", "klatt2", "klatt4",
        "klatt6", "Alex", "Andy", "Gene", "Lee", "Mike", "adam", "anika", "aunty", "caleb", "edward",
        "iven", "max", "paul", "robert", "steph", "travis", "zac"])
    eval_accents: list[str] = field(default_factory=lambda: ["en-029"])  # Caribbean, never trained on
    eval_variants: list[str] = field(default_factory=lambda: ["f4", "m6", "klatt3", "Annie", "david", "linda"])
    rate: tuple[int, int] = (110, 290)  # words per minute
    pitch: tuple[int, int] = (20, 90)
    pitch_range: tuple[int, int] = (20, 90)
    silence_s: tuple[float, float] = (0.0, 1.2)  # pause inserted between utterances
    gain_db: tuple[float, float] = (-26.0, 3.0)
    noise_prob: float = 0.7
    snr_db: tuple[float, float] = (8.0, 40.0)
    eq_prob: float = 0.5  # random one-pole low/high shelf: microphone and channel colour
    reverb_prob: float = 0.3
    context_steps: list[int] = field(default_factory=lambda: [16, 24, 32])  # causal encoder context
    offline_prob: float = 0.4  # full window: share of training segments with offline features (rest causal)
    # Low window: offline features would smuggle future audio into its 40 ms window through the
    # encoder's bidirectional attention, and the model learns to rely on it; keep them out.
    offline_prob_low: float = 0.0


@dataclass
class Segment:
    audio: np.ndarray  # (n,) float32 16 kHz
    labels: np.ndarray  # (N,) int64 viseme at each frame's centre
    targets: np.ndarray  # (N, K) float32 blendshape targets, overlap-weighted over the frame
    voice: str


def voice_lists(cfg: DataConfig) -> tuple[list[str], list[str]]:
    """(training voices, held-out voices). Held out: every eval accent and every eval variant."""
    def name(accent, variant):
        return f"{accent}+{variant}" if variant else accent

    train = [name(a, v) for a in cfg.train_accents for v in cfg.train_variants]
    held = [name(a, v) for a in cfg.eval_accents for v in cfg.train_variants + cfg.eval_variants]
    held += [name(a, v) for a in cfg.train_accents for v in cfg.eval_variants]
    return train, held


def _closure_start(audio: np.ndarray, sr: int, start: int, floor: int) -> int:
    """Earliest sample before ``start`` (not before ``floor``) of the near-silent stretch ending there."""
    hop = sr // 200  # 5 ms
    lo = max(floor, start - int(0.15 * sr))
    seg = audio[lo:start]
    if len(seg) < hop:
        return start
    n = len(seg) // hop
    rms = np.sqrt(np.mean(seg[len(seg) - n * hop :].reshape(n, hop) ** 2, axis=1))
    thr = max(0.03 * float(np.sqrt(np.mean(audio**2)) + 1e-12), 1e-4)
    k = n
    while k > 0 and rms[k - 1] < thr:
        k -= 1
    return start - (n - k) * hop


def utterance_visemes_ms(utt) -> np.ndarray:
    """Viseme per millisecond of an espeak ``Utterance`` (closures of voiceless stops included)."""
    sr, n = utt.sample_rate, len(utt.audio)
    starts = [int(s) for s in utt.starts]
    for k, ph in enumerate(utt.phonemes):
        if ph.rstrip("#[") in _VOICELESS_STOPS and k > 0:
            starts[k] = _closure_start(utt.audio, sr, starts[k], starts[k - 1] + int(0.02 * sr))
    n_ms = int(n * 1000 // sr)
    out = np.full(n_ms, SIL, np.int64)
    for k, ph in enumerate(utt.phonemes):
        a = starts[k] * 1000 // sr
        b = (starts[k + 1] * 1000 // sr) if k + 1 < len(starts) else n_ms
        if b > a:
            out[a:b] = espeak_to_viseme(ph)
    return out


def frame_labels(vis_ms: np.ndarray, n_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Frame i spans [40i, 40i+40) ms: label at its centre, targets averaged over it."""
    need = n_frames * FRAME_MS
    v = np.concatenate([vis_ms, np.full(max(0, need - len(vis_ms)), SIL, np.int64)])[:need]
    per = v.reshape(n_frames, FRAME_MS)
    labels = per[:, FRAME_MS // 2].copy()
    targets = VISEME_BLENDSHAPES[per].mean(axis=1)
    return labels, targets.astype(np.float32)


def _resample_to_16k(x: np.ndarray, sr: int) -> np.ndarray:
    from scipy.signal import resample_poly  # scipy.signal is slow to import: only synthesis needs it

    if sr == SAMPLE_RATE:
        return x.astype(np.float32)
    g = gcd(SAMPLE_RATE, sr)
    return resample_poly(x, SAMPLE_RATE // g, sr // g).astype(np.float32)


def augment(audio: np.ndarray, cfg: DataConfig, rng: np.random.Generator) -> np.ndarray:
    """Level, channel colour, room and noise: the ways real recordings differ from espeak."""
    from scipy.signal import lfilter  # scipy.signal is slow to import: only synthesis needs it

    x = audio.astype(np.float64)
    if rng.random() < cfg.eq_prob:
        a = float(rng.uniform(0.3, 0.95))
        lp = lfilter([1 - a], [1, -a], x)
        x = lp if rng.random() < 0.5 else x - 0.8 * lp  # dull or thin
    if rng.random() < cfg.reverb_prob:
        t60 = float(rng.uniform(0.15, 0.6))
        n = int(t60 * SAMPLE_RATE)
        ir = rng.standard_normal(n) * np.exp(-6.9 * np.arange(n) / n)
        ir[0] = 1.0 / float(rng.uniform(0.05, 0.3))  # direct path dominates
        from scipy.signal import fftconvolve  # scipy.signal is slow to import: only synthesis needs it

        x = fftconvolve(x, ir / np.abs(ir).sum() * 4)[: len(x)]
    peak = np.abs(x).max() + 1e-9
    x = x / peak * 10 ** (float(rng.uniform(*cfg.gain_db)) / 20)
    if rng.random() < cfg.noise_prob:
        noise = rng.standard_normal(len(x))
        if rng.random() < 0.5:  # pinkish
            noise = lfilter([1.0], [1, -0.95], noise)
        speech_pow = np.mean(x**2) + 1e-12
        snr = float(rng.uniform(*cfg.snr_db))
        x = x + noise * np.sqrt(speech_pow / (np.mean(noise**2) + 1e-12) / 10 ** (snr / 10))
    return np.clip(x, -1, 1).astype(np.float32)


def synth_segment(synth, voices: list[str], cfg: DataConfig, rng: np.random.Generator) -> Segment:
    """Utterances in one random voice, with pauses between them, about ``segment_seconds`` long."""
    voice = voices[int(rng.integers(len(voices)))]
    audio, vis = [], []
    total_ms = 0
    lead = int(rng.uniform(0, 600))
    audio.append(np.zeros(lead * 16, np.float32))
    vis.append(np.full(lead, SIL, np.int64))
    total_ms += lead
    while total_ms < cfg.segment_seconds * 1000:
        utt = synth.synthesize(
            random_sentence(rng), voice,
            rate=int(rng.integers(*cfg.rate)), pitch=int(rng.integers(*cfg.pitch)),
            pitch_range=int(rng.integers(*cfg.pitch_range)),
        )
        v = utterance_visemes_ms(utt)
        a = _resample_to_16k(utt.audio, utt.sample_rate)[: len(v) * 16]
        v = v[: len(a) // 16]
        a = a[: len(v) * 16]
        gap = int(rng.uniform(*cfg.silence_s) * 1000) if rng.random() < 0.8 else 0
        audio += [a, np.zeros(gap * 16, np.float32)]
        vis += [v, np.full(gap, SIL, np.int64)]
        total_ms += len(v) + gap
    audio = augment(np.concatenate(audio), cfg, rng)
    vis_ms = np.concatenate(vis)
    n_frames = len(audio) * 25 // SAMPLE_RATE
    labels, targets = frame_labels(vis_ms, n_frames)
    return Segment(audio=audio, labels=labels, targets=targets, voice=voice)


@dataclass
class FrameSet:
    """Frames of many segments, concatenated; ``bounds[k]:bounds[k+1]`` is segment k."""

    blocks: np.ndarray  # (N, rows, 384) float16 (memory-mapped when loaded from the cache)
    labels: np.ndarray  # (N,)
    targets: np.ndarray  # (N, K)
    bounds: np.ndarray  # (S + 1,)


def cache_key(cfg: DataConfig, seed: int, split: str, window: LookaheadWindow, encoder_id: str) -> str:
    blob = json.dumps({"data": asdict(cfg), "seed": seed, "split": split, "window": asdict(window),
                       "encoder": encoder_id, "version": DATA_VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def load_cached(path: Path) -> FrameSet | None:
    try:
        meta = np.load(path / "meta.npz")
        blocks = np.load(path / "blocks.npy", mmap_mode="r")
        fs = FrameSet(blocks, meta["labels"], meta["targets"], meta["bounds"])
        if not (len(fs.blocks) == len(fs.labels) == len(fs.targets) == int(fs.bounds[-1])):
            raise ValueError("inconsistent lengths")
        return fs
    except Exception as e:  # a half-written or corrupt entry is rebuilt, never trusted
        if path.exists():
            log.warning("ignoring unusable viseme cache entry %s (%s)", path, e)
        return None


def save_cached(path: Path, fs: FrameSet) -> None:
    path.mkdir(parents=True, exist_ok=True)
    tmp = path / "blocks.tmp.npy"
    np.save(tmp, fs.blocks)
    np.savez(path / "meta.tmp.npz", labels=fs.labels, targets=fs.targets, bounds=fs.bounds)
    tmp.replace(path / "blocks.npy")
    (path / "meta.tmp.npz").replace(path / "meta.npz")
