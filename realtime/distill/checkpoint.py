"""UNet checkpoints in LatentSync's layout, their YAML files, and the trainer's resumable state.

A saved UNet is ``{"state_dict": ..., "global_step": N}`` next to a UNet YAML whose ``model:``
section built it, so ``realtime.unet_loader.load_unet`` (``syncvid render --unet/--config``,
``syncvid serve``) loads it like ``latentsync_unet.pt``. The optimizer, RNG states and trajectory
pool go to a separate ``.state.pt`` file so the weights file stays LatentSync's.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import torch
import yaml

log = logging.getLogger(__name__)

STEP_FILE = re.compile(r"^step_(\d+)\.pt$")


def save_unet(path: str | Path, model: torch.nn.Module, global_step: int = 0) -> Path:
    """fp32 weights in LatentSync's checkpoint layout, written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().float().cpu() if v.is_floating_point() else v.cpu() for k, v in model.state_dict().items()}
    _atomic_save({"state_dict": state, "global_step": int(global_step)}, path)
    return path


def write_unet_yaml(path: str | Path, base: dict, *, inference_steps: int, guidance_scale: float,
                    header: str = "") -> Path:
    """A LatentSync UNet YAML: ``base`` (a parsed YAML or ``{"model": ...}``) with ``run.inference_steps``
    and ``run.guidance_scale`` set (the defaults of ``syncvid render --steps/--guidance``)."""
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    data["run"] = {**data.get("run", {}), "inference_steps": int(inference_steps),
                   "guidance_scale": float(guidance_scale)}
    text = yaml.safe_dump(data, sort_keys=False)
    path = Path(path)
    path.write_text("".join(f"# {line}\n" for line in header.splitlines()) + text)
    return path


def save_state(path: Path, state: dict) -> None:
    _atomic_save(state, path)


def load_state(path: Path) -> dict:
    # optimizer moments, generator states, the numpy RNG dict, the pool: plain containers and tensors
    return torch.load(path, map_location="cpu", weights_only=True)


def step_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """(step, path) of ``step_N.pt`` files that have their state file, oldest first."""
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        m = STEP_FILE.match(p.name)
        if m and state_path(p).is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def state_path(ckpt: Path) -> Path:
    return ckpt.with_name(ckpt.stem + ".state.pt")


def prune(folder: Path, keep: int) -> None:
    for _, p in step_checkpoints(folder)[:-keep]:
        for f in (p, state_path(p)):
            f.unlink(missing_ok=True)


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)
