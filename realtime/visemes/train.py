"""Reproducible training of the viseme model on espeak-ng speech (``syncvid train-visemes``)."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from models.visemes import VisemeModel, VisemeModelConfig, checkpoint_dict
from realtime.audio.features import SAMPLES_PER_STEP
from realtime.audio.io import SAMPLE_RATE
from realtime.audio.whisper_loader import load_whisper, model_identity
from realtime.config import cache_root
from realtime.visemes.dataset import DataConfig, FrameSet, cache_key, load_cached, save_cached, synth_segment, voice_lists
from realtime.visemes.espeak import EspeakSynth
from realtime.visemes.features import causal_blocks, offline_blocks, streaming_blocks
from realtime.visemes.metrics import evaluate_frames
from realtime.visemes.windows import LookaheadWindow, get_window

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    steps: int = 1500
    batch: int = 32  # sequences per step
    seq_len: int = 32  # frames per sequence (1.28 s): enough for the GRU to learn coarticulation
    lr: float = 2.0e-3
    weight_decay: float = 0.01
    warmup: int = 100
    label_smoothing: float = 0.05
    blend_weight: float = 4.0  # L1 on blendshapes vs cross-entropy on visemes
    closed_weight: float = 2.0  # class weight of sil and PP: closing the mouth matters most
    threads: int = 1  # one thread: on a shared 2-core machine a second one mostly waits


@dataclass
class VisemeTrainingConfig:
    seed: int = 1234
    data: DataConfig = field(default_factory=DataConfig)
    model: VisemeModelConfig = field(default_factory=VisemeModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def default_cache_dir() -> Path:
    return cache_root() / "visemes"


def build_frames(cfg: VisemeTrainingConfig, split: str, window: LookaheadWindow, whisper,
                 cache_dir: Path, progress: bool = True) -> FrameSet:
    """Synthesises, augments and encodes ``split`` ("train" or "eval": held-out voices), cached."""
    path = cache_dir / f"{split}-{window.name}-{cache_key(cfg.data, cfg.seed, split, window, model_identity())}"
    cached = load_cached(path)
    if cached is not None:
        log.info("using cached %s/%s frames from %s", split, window.name, path)
        return cached
    d = cfg.data
    train_voices, held_voices = voice_lists(d)
    voices = train_voices if split == "train" else held_voices
    minutes = d.minutes if split == "train" else d.eval_minutes
    # The audio depends on (seed, split) only, so both windows see the same speech.
    rng = np.random.default_rng([cfg.seed, 0 if split == "train" else 1])
    synth = EspeakSynth()
    blocks, labels, targets, bounds = [], [], [], [0]
    total = 0.0
    bar = tqdm(total=round(minutes * 60), unit="s audio", desc=f"{split}/{window.name} data", disable=not progress)
    k = 0
    while total < minutes * 60:
        seg = synth_segment(synth, voices, d, rng)
        frng = np.random.default_rng([cfg.seed, 0 if split == "train" else 1, 7 if window.name == "full" else 8, k])
        n_steps = len(seg.audio) // SAMPLES_PER_STEP + window.future + 1
        if split == "eval":
            b = streaming_blocks(whisper, seg.audio, window)  # what the server feeds the model
        elif frng.random() < (d.offline_prob if window.name == "full" else d.offline_prob_low):
            b = offline_blocks(whisper, seg.audio, window)
        else:
            ctx = int(frng.choice(d.context_steps))
            offset = int(frng.integers(0, max(1, 1500 - n_steps)))
            b = causal_blocks(whisper, seg.audio, window, context_steps=ctx, pos_offset=offset)
        n = min(len(b), len(seg.labels))
        blocks.append(b[:n].astype(np.float16))
        labels.append(seg.labels[:n])
        targets.append(seg.targets[:n])
        bounds.append(bounds[-1] + n)
        dur = len(seg.audio) / SAMPLE_RATE
        total += dur
        bar.update(round(dur))
        k += 1
    bar.close()
    fs = FrameSet(np.concatenate(blocks), np.concatenate(labels), np.concatenate(targets), np.array(bounds))
    save_cached(path, fs)
    return load_cached(path) or fs


def _sample_batch(reduced: np.ndarray, fs: FrameSet, rng: np.random.Generator, batch: int, seq_len: int):
    """Random windows of ``seq_len`` consecutive frames, never across segment boundaries."""
    lens = np.diff(fs.bounds)
    ok = np.nonzero(lens >= seq_len)[0]
    segs = rng.choice(ok, size=batch, p=lens[ok] / lens[ok].sum())
    starts = np.array([fs.bounds[s] + rng.integers(0, lens[s] - seq_len + 1) for s in segs])
    idx = starts[:, None] + np.arange(seq_len)[None, :]  # (B, L)
    return reduced[idx], fs.labels[idx], fs.targets[idx]


def reduce_frames(model, fs: FrameSet, rng: np.random.Generator, fit_frames: int = 4000, chunk: int = 2048) -> np.ndarray:
    """Fits the model's fixed PCA on a sample of frames and returns all frames reduced."""
    sample = np.sort(rng.choice(len(fs.labels), size=min(fit_frames, len(fs.labels)), replace=False))
    kept = model.fit_reduction(torch.from_numpy(np.asarray(fs.blocks[sample], np.float32)))
    log.info("PCA keeps %s of the variance per tap", np.round(kept.numpy(), 3).tolist())
    out = []
    with torch.no_grad():
        for lo in range(0, len(fs.labels), chunk):
            out.append(model.reduce(torch.from_numpy(np.asarray(fs.blocks[lo : lo + chunk], np.float32))).numpy())
    return np.concatenate(out)


def train_model(cfg: VisemeTrainingConfig, train: FrameSet, progress: bool = True):
    """Returns the trained model (eval mode) and a dict of training figures."""
    t = cfg.train
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng([cfg.seed, 99])
    model = VisemeModel(cfg.model)
    reduced = reduce_frames(model, train, rng)
    opt = torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / t.warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / t.steps))))
    weights = torch.ones(cfg.model.n_visemes)
    weights[:2] = t.closed_weight  # sil, PP
    model.train()
    bar = tqdm(range(t.steps), desc="train", disable=not progress)
    ema = None
    for step in bar:
        x, labels, targets = _sample_batch(reduced, train, rng, t.batch, t.seq_len)
        out = model(torch.from_numpy(x), reduced=True)
        y = torch.from_numpy(labels)
        ce = F.cross_entropy(out.logits.flatten(0, 1), y.flatten(), weight=weights, label_smoothing=t.label_smoothing)
        l1 = (out.blendshapes - torch.from_numpy(targets)).abs().mean()
        loss = ce + t.blend_weight * l1
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        acc = (out.logits.argmax(-1) == y).float().mean().item()
        ema = acc if ema is None else 0.98 * ema + 0.02 * acc
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}", acc=f"{ema:.3f}")
    model.eval()
    return model, {"final_loss": float(loss.item()), "train_acc_ema": float(ema)}


def run_training(cfg: VisemeTrainingConfig, out_dir: Path, windows: list[str], cache_dir: Path | None = None,
                 progress: bool = True) -> dict:
    """Builds data and trains one checkpoint per window into ``out_dir/visemes_<window>.pt``."""
    torch.set_num_threads(cfg.train.threads)
    cache_dir = cache_dir or default_cache_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    whisper = load_whisper()
    report = {}
    for name in windows:
        window = get_window(name)
        t0 = time.time()
        train = build_frames(cfg, "train", window, whisper, cache_dir, progress)
        held = build_frames(cfg, "eval", window, whisper, cache_dir, progress)
        t1 = time.time()
        model, figures = train_model(cfg, train, progress)
        t2 = time.time()
        metrics = evaluate_frames(model, held)
        figures.update(frames=int(len(train.labels)), data_seconds=t1 - t0, train_seconds=t2 - t1,
                       heldout=metrics)
        path = out_dir / f"visemes_{name}.pt"
        torch.save(checkpoint_dict(model, {
            "window": asdict(window), "training_config": asdict(cfg), "encoder": model_identity(),
            "figures": figures}), path)
        log.info("%s: %d frames, data %.0f s, training %.0f s, held-out accuracy %.3f -> %s", name,
                 len(train.labels), t1 - t0, t2 - t1, metrics["accuracy"], path)
        report[name] = figures
    return report
