"""The CPU proof of few-step distillation and the streaming-aware comparison (docs/distill.md).

Run: ``python -m realtime.distill.experiment --seeds 0,1,2,3,4 --speech-clips 24 --json out.json``.
``tests/realtime/distill/test_proof.py`` runs ``run_proof`` at one seed.

1. A tiny teacher (``configs/distill/tiny_unet.yaml``) is trained from scratch on synthetic data
   with LatentSync's objective (``realtime.distill.teacher``) and saved in LatentSync's layout.
2. ``syncvid distill``'s trainer distils a student from it with ``configs/distill/tiny.yaml``.
3. On held-out clips and fresh noise, the student's 1- and 2-step outputs and the teacher's own
   1- and 2-step DDIM outputs are compared with the teacher's 20-step output (``evaluate``).

The streaming comparison trains two students from one teacher, on streaming and on offline
features, and evaluates both on streaming features (what serving hands them). Its audio can be real
speech (espeak-ng voices through the real Whisper encoders, mouth opening from the phonemes' jaw
opening) instead of synthetic features.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from realtime.audio.whisper_loader import load_whisper
from realtime.config import CONFIG_DIR
from realtime.distill.config import load_distill_config
from realtime.distill.data import DistillData
from realtime.distill.evaluate import FewStepErrors, eval_batch, few_step_errors, sample
from realtime.distill.synthetic import (
    SpeechClip,
    SyntheticSpec,
    mouth_opening,
    proof_unet_config,
    write_synthetic_data,
)
from realtime.distill.teacher import TeacherTrainConfig, save_teacher, train_teacher
from realtime.distill.train import distill
from realtime.unet_loader import load_unet
from realtime.visemes.dataset import DataConfig, synth_segment, voice_lists
from realtime.visemes.espeak import EspeakSynth
from realtime.visemes.features import offline_blocks, streaming_blocks
from realtime.visemes.phonemes import BLENDSHAPES
from realtime.visemes.windows import FULL

log = logging.getLogger(__name__)

TINY = CONFIG_DIR / "distill" / "tiny.yaml"


@dataclass
class Teacher:
    ckpt: Path
    config: Path
    model: torch.nn.Module
    seconds: float
    loss: float  # mean of the last 20 steps


def make_data(work: Path, seed: int, speech: tuple[list[SpeechClip], list[SpeechClip]] | None = None,
              opening: float = 1.5) -> tuple[Path, Path]:
    """(train, eval) data directories: 8 + 4 synthetic clips, or the given speech clips."""
    train = SyntheticSpec(clips=8, frames=48, seed=seed, opening=opening)
    held = SyntheticSpec(clips=4, frames=48, seed=seed + 100, opening=opening)
    return (write_synthetic_data(work / "train", train, None if speech is None else speech[0]),
            write_synthetic_data(work / "eval", held, None if speech is None else speech[1]))


def make_teacher(work: Path, train_dir: Path, seed: int, steps: int = 200) -> Teacher:
    t0 = time.perf_counter()
    data = DistillData(train_dir, frames=2, kinds=("offline",))
    model, losses = train_teacher(data, proof_unet_config(), TeacherTrainConfig(steps=steps, batch_size=16, seed=seed))
    ckpt, config = save_teacher(model, proof_unet_config(), work / "teacher", resolution=32, frames=2)
    return Teacher(ckpt, config, model, time.perf_counter() - t0, float(np.mean(losses[-20:])))


def make_student(work: Path, teacher: Teacher, train_dir: Path, seed: int, features: str = "streaming",
                 name: str = "student", max_steps: int | None = None):
    cfg = load_distill_config(TINY)
    cfg.train.seed, cfg.student.features = seed, features
    if max_steps:
        cfg.train.max_steps = max_steps
    result = distill(cfg, teacher.ckpt, train_dir, work / name, teacher_config=teacher.config, progress=False)
    return result, load_unet(result.student, result.config)


@dataclass
class ProofResult:
    seed: int
    errors: list[FewStepErrors]  # against the renderer's 20-step teacher ("leading" spacing)
    errors_trailing: list[FewStepErrors]  # against the 20-step grid the student was distilled on
    teacher_seconds: float
    distill_seconds: float
    teacher_loss: float
    student_loss: float
    student: Path
    student_config: Path


def run_proof(work: str | Path, seed: int = 0) -> ProofResult:
    work = Path(work)
    train_dir, eval_dir = make_data(work, seed)
    teacher = make_teacher(work, train_dir, seed)
    result, student = make_student(work, teacher, train_dir, seed)
    ev = DistillData(eval_dir, frames=2)
    errors = few_step_errors(teacher.model, student, ev, seed=seed + 7)
    trailing = few_step_errors(teacher.model, student, ev, seed=seed + 7, reference_spacing="trailing")
    return ProofResult(seed, errors, trailing, teacher.seconds, result.seconds, teacher.loss, result.loss,
                       result.student, result.config)


def espeak_speech(n: int, seconds: float, seed: int) -> list[SpeechClip]:
    """n clips of espeak-ng speech (random voices and sentences) through the embedded Whisper:
    offline and streaming blocks, and the per-frame jaw opening of the phonemes, scaled to [0, 1]."""
    cfg = DataConfig(segment_seconds=seconds)
    voices, _ = voice_lists(cfg)
    synth, model, rng = EspeakSynth(), load_whisper(None), np.random.default_rng(seed)
    jaw = BLENDSHAPES.index("jawOpen")
    clips = []
    for _ in range(n):
        seg = synth_segment(synth, voices, cfg, rng)
        off, live = offline_blocks(model, seg.audio, FULL), streaming_blocks(model, seg.audio, FULL)
        m = min(len(off), len(live), len(seg.targets))
        opening = seg.targets[:m, jaw] / max(1e-6, float(seg.targets[:, jaw].max()))
        clips.append(SpeechClip(opening, off[:m], live[:m]))
    return clips


def streaming_comparison(work: str | Path, seed: int = 0, speech: list[SpeechClip] | None = None,
                         teacher_steps: int = 600, opening: float = 3.0) -> dict:
    """Students trained on streaming or on offline features, both served streaming features, against
    the teacher's 20-step output on offline features: MSE, and the error of the mouth opening the
    output shows (``mouth_opening``, in [0, 1] units), the part the audio decides. The teacher is
    trained longer and the opening made larger than in the proof, so that it follows the audio."""
    work = Path(work)
    pairs = None if speech is None else (speech[len(speech) // 4:], speech[:len(speech) // 4])
    train_dir, eval_dir = make_data(work, seed, pairs, opening)
    teacher = make_teacher(work, train_dir, seed, steps=teacher_steps)
    ev = DistillData(eval_dir, frames=2)
    spec = SyntheticSpec(opening=opening)
    out: dict = {"seed": seed, "audio": "synthetic" if speech is None else f"{len(speech)} espeak-ng clips, Whisper tiny.en"}

    def opening_error(x: torch.Tensor, ref: torch.Tensor) -> float:
        return float((mouth_opening(x, spec) - mouth_opening(ref, spec)).abs().mean())

    batch, noise = eval_batch(ev, 32, seed + 7)  # the windows and noise few_step_errors draws below
    ref = sample(teacher.model, noise, batch["conditioning"], batch["audio_offline"], 20, 1.5)
    live = sample(teacher.model, noise, batch["conditioning"], batch["audio_streaming"], 20, 1.5)
    truth = mouth_opening(batch["target"], spec).flatten()
    out["teacher20_opening_corr"] = float(np.corrcoef(mouth_opening(ref, spec).flatten(), truth)[0, 1])
    out["teacher20_streaming"] = {"mse": float((live - ref).square().mean()), "opening_err": opening_error(live, ref)}
    for features in ("streaming", "offline"):
        _, student = make_student(work, teacher, train_dir, seed, features, name=f"student_{features}")
        errs = few_step_errors(teacher.model, student, ev, seed=seed + 7, student_features="streaming",
                               keep_outputs=True)
        out[f"trained_{features}"] = {f"k{e.steps}": {"mse": e.student, "opening_err": opening_error(
            e.outputs["student"], e.outputs["reference"])} for e in errs}
    return out


def main(argv: list[str] | None = None) -> int:
    import tempfile

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--streaming-seeds", default="0")
    p.add_argument("--speech-clips", type=int, default=24, help="espeak-ng clips for the streaming comparison (0: synthetic)")
    p.add_argument("--skip-proof", action="store_true")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)  # as the tests run
    results: dict = {"proof": [], "streaming": []}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in ([] if args.skip_proof else [int(s) for s in args.seeds.split(",")]):
            r = run_proof(Path(tmp) / f"proof{seed}", seed)
            row = {"seed": seed, "teacher_s": round(r.teacher_seconds, 1), "distill_s": round(r.distill_seconds, 1),
                   "leading": [asdict(e) | {"ratio": e.ratio} for e in r.errors],
                   "trailing": [asdict(e) | {"ratio": e.ratio} for e in r.errors_trailing]}
            results["proof"].append(row)
            print(json.dumps(row), flush=True)
        speech = espeak_speech(args.speech_clips, 4.0, seed=0) if args.speech_clips else None
        for seed in [int(s) for s in args.streaming_seeds.split(",") if s]:
            for clips in ([None, speech] if speech else [None]):
                row = streaming_comparison(Path(tmp) / f"stream{seed}{'s' if clips else ''}", seed, clips)
                results["streaming"].append(row)
                print(json.dumps(row), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
