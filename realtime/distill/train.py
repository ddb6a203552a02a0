"""`syncvid distill`: the training loop (checkpoints, resume, progress bar, JSONL loss log).

Output directory::

    OUT/distill.yaml                  the configuration used (a resumed run must match it)
    OUT/train_log.jsonl               one line per log_every steps: loss, per-segment losses, lr, time
    OUT/checkpoints/step_N.pt         student weights in LatentSync's layout (loadable as they are)
    OUT/checkpoints/step_N.state.pt   optimizer, RNG states, trajectory pool: what --resume needs
    OUT/student.pt, OUT/student.yaml  the final student and its UNet YAML (guidance 1, K steps)

``syncvid render --unet OUT/student.pt --config OUT/student.yaml`` then samples it with K DDIM
steps and no CFG pass; in ``syncvid serve`` set ``diffusion.steps: K`` and ``diffusion.guidance: 1``.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from tqdm import tqdm

from realtime.config import ConfigError
from realtime.distill import checkpoint as ck
from realtime.distill.config import DistillConfig, resolve_path
from realtime.distill.data import DataError, DistillData, read_info, split_clips
from realtime.distill.trajectory import (
    DistillGrid,
    draw_noise,
    pick_segments,
    segment_names,
    student_loss,
    teacher_trajectory,
    unet_denoiser,
)
from realtime.errors import WeightsError
from realtime.unet_config import load_latentsync_yaml, load_unet_config
from realtime.unet_loader import load_unet

log = logging.getLogger(__name__)

# keys a resumed run may change: they do not alter what is learnt
RESUMABLE = {"max_steps", "checkpoint_every", "keep_checkpoints", "log_every", "output_dir", "device"}
EVAL_WINDOWS = 8  # held-out windows whose loss is logged (fixed trajectories)


@dataclass
class DistillResult:
    student: Path
    config: Path
    steps: int
    loss: float  # mean training loss of the last log interval
    eval_loss: float | None
    seconds: float


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def autocast_dtype(name: str, device: torch.device) -> torch.dtype:
    """bf16 autocast on CUDA by default; CPU runs fp32 whatever is asked (half math is slow there)."""
    if device.type != "cuda":
        if name not in ("auto", "fp32"):
            log.warning("train.dtype %s needs CUDA; training in fp32 on %s", name, device)
        return torch.float32
    return {"auto": torch.bfloat16, "bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[name]


class Distiller:
    """One distillation run; ``run()`` trains to ``train.max_steps`` from scratch or the last checkpoint."""

    def __init__(self, cfg: DistillConfig, teacher_ckpt: str | Path, data_dir: str | Path, out_dir: str | Path,
                 resume: bool = False, teacher_config: str | Path | None = None, progress: bool = True):
        cfg = copy.deepcopy(cfg)
        if teacher_config:
            cfg.teacher.config = str(teacher_config)  # distill.yaml records the YAML actually used
        self.cfg, self.out, self.progress = cfg, Path(out_dir), progress
        self.ckpt_dir = self.out / "checkpoints"
        self.teacher_ckpt = Path(teacher_ckpt)
        if not self.teacher_ckpt.is_file():
            raise WeightsError(f"teacher checkpoint {teacher_ckpt} does not exist; pass --teacher with LatentSync's "
                               "latentsync_unet.pt (or another UNet checkpoint of the teacher config)")
        self.teacher_yaml = resolve_path(teacher_config or cfg.teacher.config)
        model = load_unet_config(self.teacher_yaml).model  # a bad teacher YAML fails before any weights load
        longest = model.motion_module_kwargs.temporal_position_encoding_max_len
        if model.use_motion_module and cfg.data.frames > longest:
            raise ConfigError(f"data.frames {cfg.data.frames} exceeds the {longest} frames the teacher's motion "
                              f"modules can attend over ({self.teacher_yaml}); use at most {longest}")
        info = read_info(Path(data_dir))
        train_clips, self.eval_clips = split_clips(info, cfg.data.eval_fraction, cfg.train.seed)
        kinds = (cfg.teacher.features, cfg.student.features)
        self.data = DistillData(data_dir, cfg.data.frames, kinds, clips=train_clips)
        self.eval_data = DistillData(data_dir, cfg.data.frames, kinds, clips=self.eval_clips) if self.eval_clips else None
        self.grid = DistillGrid.build(cfg.student.steps, cfg.teacher.steps)
        self.start_step = self._check_out_dir(resume)
        self.device = pick_device(cfg.train.device)
        self.amp = autocast_dtype(cfg.train.dtype, self.device)
        self.rng = np.random.default_rng(cfg.train.seed)
        self.gen = torch.Generator().manual_seed(cfg.train.seed)
        self.pool: dict[str, torch.Tensor] | None = None

    # ---- setup -------------------------------------------------------------------------------------
    def _check_out_dir(self, resume: bool) -> int:
        saved = self.out / "distill.yaml"
        found = ck.step_checkpoints(self.ckpt_dir)
        if not resume:
            if found or saved.exists():
                raise ConfigError(f"{self.out} already holds a distillation run; pass --resume to continue it "
                                  "or choose another --out")
            return 0
        if not found:
            raise ConfigError(f"--resume: {self.ckpt_dir} holds no checkpoint to resume from; run without --resume")
        old = yaml.safe_load(saved.read_text()) if saved.is_file() else {}
        new = self.cfg.to_dict()
        for section, values in new.items():
            for key, value in values.items():
                if key not in RESUMABLE and old.get(section, {}).get(key) != value:
                    raise ConfigError(f"--resume: {section}.{key} is {value!r} but the run in {self.out} used "
                                      f"{old.get(section, {}).get(key)!r}; resume with the same config or use a new --out")
        return found[-1][0]

    def _load_models(self) -> None:
        dev = self.device
        self.teacher = load_unet(self.teacher_ckpt, self.teacher_yaml, device=dev).requires_grad_(False)
        self.student = load_unet(self.teacher_ckpt, self.teacher_yaml, device=dev).train()  # student.init: teacher
        tr = self.cfg.train
        self.opt = torch.optim.AdamW(self.student.parameters(), lr=tr.lr, weight_decay=tr.weight_decay)

    def _autocast(self):
        if self.amp == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp)

    # ---- trajectories ------------------------------------------------------------------------------
    def _trajectories(self, data: DistillData, n: int, rng: np.random.Generator | None = None,
                      gen: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """n fresh teacher trajectories on random windows: states (n, P, 4, F, h, w), conditioning,
        and the student's audio (the teacher's is only needed here)."""
        batch = data.sample(rng or self.rng, n)
        noise = draw_noise(gen or self.gen, n, data.frames, data.info.latent_size).to(self.device)
        cond = batch["conditioning"].to(self.device)
        with self._autocast():
            states = teacher_trajectory(unet_denoiser(self.teacher), noise, cond,
                                        batch[f"audio_{self.cfg.teacher.features}"].to(self.device), self.grid,
                                        self.cfg.teacher.guidance)
        return {"states": states.float().transpose(0, 1).contiguous(), "conditioning": cond,
                "audio": batch[f"audio_{self.cfg.student.features}"].to(self.device)}

    def _batch(self) -> dict[str, torch.Tensor]:
        tr = self.cfg.train
        if not tr.pool_size:
            return self._trajectories(self.data, tr.batch_size)
        idx = torch.from_numpy(self.rng.choice(tr.pool_size, size=tr.batch_size, replace=False))
        return {k: v[idx.to(v.device)] for k, v in self.pool.items()}

    def _refresh_pool(self, step: int) -> None:
        n = self.cfg.train.pool_refresh
        if self.pool is None or not n:
            return
        fresh = self._trajectories(self.data, n)
        start = (step * n) % self.cfg.train.pool_size  # the oldest entries, round robin
        idx = (torch.arange(n) + start) % self.cfg.train.pool_size
        for k in self.pool:
            self.pool[k][idx.to(self.pool[k].device)] = fresh[k]

    # ---- checkpoints -------------------------------------------------------------------------------
    def _save(self, step: int, elapsed: float) -> None:
        path = ck.save_unet(self.ckpt_dir / f"step_{step:07d}.pt", self.student, step)
        pool = None if self.pool is None else {k: v.cpu() for k, v in self.pool.items()}
        ck.save_state(ck.state_path(path), {"step": step, "optimizer": self.opt.state_dict(), "elapsed": elapsed,
                                            "rng": self.rng.bit_generator.state, "gen": self.gen.get_state(),
                                            "pool": pool, "eval_clips": self.eval_clips})
        ck.prune(self.ckpt_dir, self.cfg.train.keep_checkpoints)
        log.info("checkpoint %s", path)

    def _restore(self) -> float:
        _, path = ck.step_checkpoints(self.ckpt_dir)[-1]
        sd = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
        self.student.load_state_dict(sd, strict=True)
        state = ck.load_state(ck.state_path(path))
        self.opt.load_state_dict(state["optimizer"])
        self.rng.bit_generator.state = state["rng"]
        self.gen.set_state(state["gen"])
        if state["pool"] is not None:
            self.pool = {k: v.to(self.device) for k, v in state["pool"].items()}
        _truncate_log(self.out / "train_log.jsonl", state["step"])
        log.info("resumed from %s (step %d)", path, state["step"])
        return float(state["elapsed"])

    # ---- the loop ----------------------------------------------------------------------------------
    def run(self) -> DistillResult:
        cfg, tr = self.cfg, self.cfg.train
        self._load_models()  # a checkpoint that does not fit its YAML fails before OUT is created
        self.out.mkdir(parents=True, exist_ok=True)
        elapsed = self._restore() if self.start_step else 0.0
        (self.out / "distill.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        if tr.pool_size and self.pool is None:
            self.pool = self._trajectories(self.data, tr.pool_size)
        eval_set = None
        if self.eval_data is not None:  # its own random streams: a resumed run draws the same set
            seed = tr.seed + 1
            eval_set = self._trajectories(self.eval_data, EVAL_WINDOWS, np.random.default_rng(seed),
                                          torch.Generator().manual_seed(seed))
        names = segment_names(self.grid)
        window: list[tuple[float, torch.Tensor, torch.Tensor]] = []
        last_loss, eval_loss, t0 = float("nan"), None, time.perf_counter() - elapsed
        bar = tqdm(total=tr.max_steps, initial=self.start_step, desc="distill", unit="step", disable=not self.progress)
        step = done = self.start_step
        try:
            for step in range(self.start_step + 1, tr.max_steps + 1):
                batch = self._batch()
                segs = pick_segments(self.rng, self.grid, tr.batch_size)
                with self._autocast():
                    loss, per = student_loss(unet_denoiser(self.student), batch["states"], batch["conditioning"],
                                             batch["audio"], self.grid, segs)
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.student.parameters(), tr.max_grad_norm)
                self.opt.step()
                self._refresh_pool(step)
                done = step
                window.append((float(loss.detach()), per.cpu(), segs))
                bar.update(1)
                if step % tr.log_every == 0 or step == tr.max_steps:
                    last_loss = float(np.mean([w[0] for w in window]))
                    if eval_set is not None:
                        eval_loss = self._eval_loss(eval_set)
                    bar.set_postfix(loss=f"{last_loss:.4f}")
                    _append_log(self.out / "train_log.jsonl", step, last_loss, eval_loss, window, names,
                                self.opt.param_groups[0]["lr"], time.perf_counter() - t0)
                    window = []
                if step % tr.checkpoint_every == 0 or step == tr.max_steps:
                    self._save(step, time.perf_counter() - t0)
        except KeyboardInterrupt:
            saved = [n for n, _ in ck.step_checkpoints(self.ckpt_dir)]
            if done > self.start_step and done not in saved:  # keep what was learnt: --resume goes on from here
                self._save(done, time.perf_counter() - t0)
            raise
        finally:
            bar.close()
        student = ck.save_unet(self.out / "student.pt", self.student, step)
        yaml_path = ck.write_unet_yaml(
            self.out / "student.yaml", load_latentsync_yaml(self.teacher_yaml), inference_steps=cfg.serve_steps,
            guidance_scale=1.0,
            header=(f"Student distilled by `syncvid distill` from {self.teacher_ckpt} ({self.teacher_yaml}):\n"
                    f"DDIM at {', '.join(map(str, sorted(cfg.student.steps)))} steps, teacher guidance "
                    f"{cfg.teacher.guidance:g} folded in (sample it with guidance 1), "
                    f"{cfg.student.features} audio features."))
        return DistillResult(student, yaml_path, step, last_loss, eval_loss, time.perf_counter() - t0)

    @torch.no_grad()
    def _eval_loss(self, ev: dict[str, torch.Tensor]) -> float:
        """Mean loss over every segment of the held-out trajectories."""
        self.student.eval()
        total = []
        for i in range(len(self.grid.segments)):
            segs = torch.full((EVAL_WINDOWS,), i)
            with self._autocast():
                loss, _ = student_loss(unet_denoiser(self.student), ev["states"], ev["conditioning"], ev["audio"],
                                       self.grid, segs)
            total.append(float(loss))
        self.student.train()
        return float(np.mean(total))


def _append_log(path: Path, step: int, loss: float, eval_loss: float | None, window, names, lr: float,
                seconds: float) -> None:
    per = torch.cat([w[1] for w in window])
    segs = torch.cat([w[2] for w in window])
    by_segment = {names[i]: round(float(per[segs == i].mean()), 6) for i in range(len(names)) if (segs == i).any()}
    line = {"step": step, "loss": round(loss, 6), "segments": by_segment, "lr": lr, "seconds": round(seconds, 2)}
    if eval_loss is not None:
        line["eval_loss"] = round(eval_loss, 6)
    with path.open("a") as f:
        f.write(json.dumps(line) + "\n")


def _truncate_log(path: Path, step: int) -> None:
    """Drops log lines past the checkpoint a run resumes from (written before an interruption)."""
    if path.is_file():
        lines = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= step]
        path.write_text("".join(ln + "\n" for ln in lines))


def distill(cfg: DistillConfig, teacher_ckpt, data_dir, out_dir, **kwargs) -> DistillResult:
    """Builds a ``Distiller`` (all inputs checked first) and runs it."""
    return Distiller(cfg, teacher_ckpt, data_dir, out_dir, **kwargs).run()


__all__ = ["DataError", "DistillResult", "Distiller", "distill"]
