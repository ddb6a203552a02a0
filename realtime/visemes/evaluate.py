"""Evaluation of the viseme model: held-out espeak voices and real human speech.

The figures per frame are ``realtime.visemes.metrics``'s.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from realtime.audio.io import SAMPLE_RATE, load_audio
from realtime.audio.whisper_loader import load_whisper
from realtime.config import from_dict
from realtime.visemes import espeak as es
from realtime.visemes.align import align_phones, phones_to_visemes_ms, read_htk_lab
from realtime.visemes.dataset import frame_labels
from realtime.visemes.features import causal_blocks, frame_count, offline_blocks, streaming_blocks
from realtime.visemes.metrics import JAW, evaluate_frames, frame_metrics, run_model
from realtime.visemes.runtime import VisemePredictor, _load, weights_path
from realtime.visemes.train import VisemeTrainingConfig, build_frames, default_cache_dir

log = logging.getLogger(__name__)

FIXTURES = Path(__file__).resolve().parents[2] / "tests" / "fixtures"


@dataclass(frozen=True)
class RealClip:
    name: str
    transcript: str
    lab: str | None = None  # CMU ARCTIC's own phone labels, when shipped beside the clip


# CMU ARCTIC (slt and bdl speakers), free licence, see tests/fixtures/arctic_COPYING.txt.
REAL_CLIPS = (
    RealClip("arctic_a0007.wav", "and you always want to see it in the superlative degree"),
    RealClip("arctic_a0009.wav", "he turned sharply and faced gregson across the table", "arctic_a0009_phone.lab"),
)


def real_clip_frames(clip: RealClip, fixtures: Path = FIXTURES, aligner: str = "pocketsphinx"):
    """(audio, labels (N,), jaw targets (N,)) of a real clip, labels from forced alignment
    (``aligner="lab"`` uses ARCTIC's shipped labels instead)."""
    audio = load_audio(fixtures / clip.name)
    if aligner == "lab":
        phones = read_htk_lab((fixtures / clip.lab).read_text())
    else:
        phones = align_phones(audio, clip.transcript)
    n = frame_count(len(audio))
    labels, targets = frame_labels(phones_to_visemes_ms(phones, len(audio) / SAMPLE_RATE), n)
    return audio, labels, targets[:, JAW]


def clip_blocks(whisper, audio: np.ndarray, window, features: str) -> np.ndarray:
    if features == "offline":
        return offline_blocks(whisper, audio, window)
    if features == "streaming":
        return streaming_blocks(whisper, audio, window)
    return causal_blocks(whisper, audio, window, context_steps=48)


def evaluate_real(model, whisper, window, features: str = "causal", fixtures: Path = FIXTURES,
                  aligner: str = "pocketsphinx") -> dict:
    """Metrics over all REAL_CLIPS pooled (frames concatenated, each clip its own stream)."""
    logits, blend, labels, jaw = [], [], [], []
    for clip in REAL_CLIPS:
        if aligner == "lab" and clip.lab is None:
            continue
        audio, lab, jt = real_clip_frames(clip, fixtures, aligner)
        b = clip_blocks(whisper, audio, window, features)
        n = min(len(b), len(lab))
        lg, bl = run_model(model, b[:n])
        logits.append(lg)
        blend.append(bl)
        labels.append(lab[:n])
        jaw.append(jt[:n])
    return frame_metrics(np.concatenate(logits), np.concatenate(blend), np.concatenate(labels), np.concatenate(jaw))


def evaluate_checkpoint(kind: str, path: Path | None = None, features: tuple[str, ...] = ("streaming", "offline"),
                        espeak: bool = True, cache_dir: Path | None = None) -> dict:
    """All figures of one checkpoint: held-out espeak voices (streaming features, as trained and
    cached) and real speech with each feature kind, labels from pocketsphinx and, for clips that
    ship them, from CMU ARCTIC's own phone labels."""
    model, window, ckpt = _load(str(path or weights_path(kind)))
    whisper = load_whisper()
    out: dict = {"window": ckpt["window"], "lookahead_ms": window.lookahead_ms}
    for feat in features:
        out[f"real_{feat}"] = evaluate_real(model, whisper, window, feat)
        out[f"real_{feat}_arcticlab"] = evaluate_real(model, whisper, window, feat, aligner="lab")
    if espeak:
        if es.available():
            cfg = from_dict(VisemeTrainingConfig, ckpt["training_config"], source=f"{kind} checkpoint")
            held = build_frames(cfg, "eval", window, whisper, cache_dir or default_cache_dir(), progress=False)
            out["heldout_espeak_streaming"] = evaluate_frames(model, held)
        else:
            log.warning("libespeak-ng missing: held-out espeak voices not evaluated")
    return out


def measure_speed(kind: str, path: Path | None = None, frames: int = 300, seed: int = 0) -> dict:
    """Per-frame latency of ``VisemePredictor.predict`` on one thread: frame-by-frame calls (as the
    server makes them) and one batched call; medians over ``frames`` calls after a warm-up."""
    torch.set_num_threads(1)
    p = VisemePredictor.load(kind, path)
    x = np.random.default_rng(seed).standard_normal((frames, p.rows, 384)).astype(np.float32)
    for i in range(20):
        p.predict(x[i : i + 1])
    times = []
    for i in range(frames):
        t = time.perf_counter()
        p.predict(x[i : i + 1])
        times.append(time.perf_counter() - t)
    t = time.perf_counter()
    p.predict(x)
    batched = (time.perf_counter() - t) / frames
    return {"per_frame_median_ms": float(np.median(times) * 1e3), "per_frame_p90_ms": float(np.percentile(times, 90) * 1e3),
            "batched_ms_per_frame": batched * 1e3}
