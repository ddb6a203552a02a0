"""`syncvid distill` configuration: ``configs/distill/*.yaml`` mapped onto typed dataclasses.

Unknown keys are an error naming the key and the file (``realtime.config.from_dict``). Paths in the
file are taken as given, else relative to the repository (``configs/unet/stage2.yaml`` works from
any directory).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from realtime.config import REPO_ROOT, ConfigError, load_config

NUM_TRAIN_TIMESTEPS = 1000  # LatentSync's DDPM schedule length (configs/scheduler_config.json)
FEATURE_KINDS = ("offline", "streaming")
DTYPES = ("auto", "fp32", "bf16", "fp16")


@dataclass
class TeacherConfig:
    config: str = "configs/unet/stage2.yaml"  # the teacher checkpoint's UNet YAML (its `model:` section)
    guidance: float = 1.5  # LatentSync's guidance_scale: the CFG the student learns to reproduce in one pass
    steps: int = 20  # teacher DDIM steps ("trailing") along each trajectory: LatentSync's inference count
    features: str = "offline"  # audio features the teacher sees: LatentSync's offline Whisper blocks


@dataclass
class StudentConfig:
    # Step counts the one student is trained for; each must divide teacher.steps, so that every
    # point of its DDIM grid lies on the teacher's trajectory. The largest is the student YAML's
    # run.inference_steps (render's default).
    steps: list[int] = field(default_factory=lambda: [1, 2, 4])
    features: str = "streaming"  # streaming: what the live engine hands it (bounded look-ahead); offline
    init: str = "teacher"  # teacher: start from the teacher's weights (all official distillations do)


@dataclass
class DataConfig:
    frames: int = 16  # frames per clip window (LatentSync's num_frames; motion modules attend across them)
    eval_fraction: float = 0.0  # share of clips held out for the loss on unseen clips (0: none)


@dataclass
class TrainConfig:
    output_dir: str = "runs/distill"  # --out overrides
    batch_size: int = 1  # clip windows per step
    lr: float = 1.0e-5  # LatentSync's fine-tuning rate
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    max_steps: int = 20000
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3  # older step checkpoints are deleted
    log_every: int = 10  # steps between lines of train_log.jsonl
    seed: int = 0
    device: str = "auto"  # auto: cuda if present, else cpu
    dtype: str = "auto"  # autocast dtype; auto: bf16 on CUDA, fp32 on CPU (half math on CPU is slow)
    # Teacher trajectories cost teacher.steps x 2 (CFG) UNet passes without gradient: 0 computes
    # fresh ones for every batch; N keeps a pool of N and replaces pool_refresh of them per step.
    pool_size: int = 0
    pool_refresh: int = 0


@dataclass
class DistillConfig:
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        t, s, tr = self.teacher, self.student, self.train
        if not s.steps or any(k < 1 for k in s.steps):
            raise ConfigError(f"student.steps must be a non-empty list of step counts >= 1, got {s.steps}")
        if NUM_TRAIN_TIMESTEPS % t.steps:
            raise ConfigError(f"teacher.steps must divide {NUM_TRAIN_TIMESTEPS} (e.g. 20 or 25), got {t.steps}")
        bad = [k for k in s.steps if t.steps % k]
        if bad:
            raise ConfigError(f"student.steps {bad} do not divide teacher.steps {t.steps}: their DDIM grid would "
                              "leave the teacher's trajectory; use divisors of it (1, 2, 4 or 5 for 20)")
        for key, value in (("teacher.features", t.features), ("student.features", s.features)):
            if value not in FEATURE_KINDS:
                raise ConfigError(f"{key} must be one of {FEATURE_KINDS}, got {value!r}")
        if s.init != "teacher":
            raise ConfigError(f"student.init must be 'teacher', got {s.init!r}")
        if self.data.frames < 1 or not 0.0 <= self.data.eval_fraction < 1.0:
            raise ConfigError("data.frames must be >= 1 and data.eval_fraction in [0, 1)")
        if tr.dtype not in DTYPES:
            raise ConfigError(f"train.dtype must be one of {DTYPES}, got {tr.dtype!r}")
        for name in ("batch_size", "max_steps", "checkpoint_every", "keep_checkpoints", "log_every"):
            if getattr(tr, name) < 1:
                raise ConfigError(f"train.{name} must be >= 1, got {getattr(tr, name)}")
        if tr.pool_size < 0 or not 0 <= tr.pool_refresh <= tr.pool_size:
            raise ConfigError(f"train.pool_size must be >= 0 and train.pool_refresh 0..pool_size, got "
                              f"{tr.pool_size} and {tr.pool_refresh}")
        if 0 < tr.pool_size < tr.batch_size:
            raise ConfigError(f"train.pool_size {tr.pool_size} is smaller than train.batch_size {tr.batch_size}")

    @property
    def serve_steps(self) -> int:
        """The step count written into the student's YAML (run.inference_steps)."""
        return max(self.student.steps)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def load_distill_config(path: str | Path) -> DistillConfig:
    """``configs/distill/*.yaml`` -> DistillConfig; unknown keys and bad values raise ConfigError."""
    try:
        return load_config(DistillConfig, path)
    except ConfigError as e:
        if str(path) in str(e):
            raise
        raise ConfigError(f"{path}: {e}") from None


def resolve_path(path: str | Path) -> Path:
    """``path`` as given when it exists, else relative to the repository root (shipped configs)."""
    p = Path(path).expanduser()
    if p.exists() or p.is_absolute():
        return p
    repo = REPO_ROOT / p
    return repo if repo.exists() else p
