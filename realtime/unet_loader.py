"""Loading LatentSync UNet checkpoints strictly, with one clear error on any layout mismatch.

``latentsync_unet.pt`` is ``{"state_dict": ..., "global_step": ...}`` (a bare state dict is
accepted too). It is read with ``weights_only=True`` (no pickled code runs) and memory-mapped
when the file format allows, and compared key by key and shape by shape with the model built
from the YAML config on the meta device, before any real memory is allocated.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from realtime.errors import WeightsError, weights_load_reason
from realtime.unet_config import load_unet_config

log = logging.getLogger(__name__)

MAX_LISTED = 10  # keys shown per category before "... and N more"


@dataclass
class KeyReport:
    """Differences between a checkpoint and the model's state dict (after v1.0 renaming)."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    misshaped: list[tuple[str, tuple, tuple]] = field(default_factory=list)  # key, checkpoint, model
    num_keys: int = 0
    num_elements: int = 0

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.misshaped)

    def summary(self, limit: int = MAX_LISTED) -> str:
        """One line: '2 missing (a, b); 1 misshaped (c: checkpoint [..] vs model [..])'."""
        parts = []
        for title, items in (("missing", self.missing), ("unexpected", self.unexpected),
                             ("misshaped", [f"{k}: checkpoint {list(a)} vs model {list(b)}"
                                            for k, a, b in self.misshaped])):
            if items:
                more = f", ... and {len(items) - limit} more" if len(items) > limit else ""
                parts.append(f"{len(items)} {title} ({', '.join(items[:limit])}{more})")
        return "; ".join(parts)

    def lines(self, limit: int = MAX_LISTED) -> list[str]:
        out = []
        for title, items in (("missing", self.missing), ("unexpected", self.unexpected),
                             ("misshaped", [f"{k}: checkpoint {list(a)} vs model {list(b)}"
                                            for k, a, b in self.misshaped])):
            if items:
                out.append(f"{len(items)} {title} key(s):")
                out.extend(f"  {k}" for k in items[:limit])
                if len(items) > limit:
                    out.append(f"  ... and {len(items) - limit} more")
        return out


def compare_keys(checkpoint: Mapping[str, tuple], model: Mapping[str, tuple]) -> KeyReport:
    """checkpoint / model: key -> shape. Checkpoint keys in v1.0 naming are mapped first."""
    from models.unet import rename_v10_key  # models.unet imports torch: `syncvid check-weights --help` stays cheap

    ckpt = {rename_v10_key(k): tuple(s) for k, s in checkpoint.items()}
    report = KeyReport(num_keys=len(ckpt))
    report.missing = sorted(k for k in model if k not in ckpt)
    report.unexpected = sorted(k for k in ckpt if k not in model)
    report.misshaped = sorted((k, ckpt[k], tuple(model[k])) for k in model if k in ckpt and ckpt[k] != tuple(model[k]))
    for s in ckpt.values():
        n = 1
        for d in s:
            n *= d
        report.num_elements += n
    return report


def build_unet(model_config: dict, device="meta"):
    """UNet3DConditionModel from a ``model:`` section; on the meta device it takes well under a second."""
    import torch

    from models.unet import UNet3DConditionModel  # the same

    with torch.device(device):
        return UNet3DConditionModel.from_config(model_config)


def read_state_dict(ckpt_path: str | Path) -> dict:
    """Tensors of a checkpoint file, ``{"state_dict": ...}`` or bare; errors name the file."""
    import pickle

    import torch

    path = Path(ckpt_path)
    if not path.is_file():
        raise WeightsError(f"UNet checkpoint {path} does not exist; pass the path of latentsync_unet.pt")
    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:  # legacy (non-zip) files cannot be memory-mapped
            if "mmap" not in str(e):
                raise
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as e:
        raise WeightsError(f"UNet checkpoint {path} cannot be read as a torch weights file "
                           f"({weights_load_reason(e)}); pass an unmodified latentsync_unet.pt") from None
    sd = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(sd, dict) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise WeightsError(f"UNet checkpoint {path} holds no state dict of tensors; "
                           "pass latentsync_unet.pt ({'state_dict': ...}) or a bare state dict")
    return sd


def check_unet_checkpoint(ckpt_path: str | Path, config_path: str | Path) -> KeyReport:
    """Key/shape parity of a checkpoint against the model its config describes (no weights built)."""
    model = build_unet(load_unet_config(config_path).model_dict(), device="meta")
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    sd = read_state_dict(ckpt_path)
    return compare_keys({k: tuple(v.shape) for k, v in sd.items()}, expected)


def load_unet(ckpt_path: str | Path, config_path: str | Path, device="cpu", dtype=None):
    """UNet3DConditionModel with the checkpoint's weights, in eval mode, on ``device`` / ``dtype``.

    Raises WeightsError listing missing, unexpected and misshaped keys when the file does not match
    the config. v1.0 checkpoints (``audio_cross_attn`` names) load through the model's pre-hook.
    """
    import torch

    config = load_unet_config(config_path)
    model = build_unet(config.model_dict(), device="meta")
    sd = read_state_dict(ckpt_path)
    report = compare_keys({k: tuple(v.shape) for k, v in sd.items()},
                          {k: tuple(v.shape) for k, v in model.state_dict().items()})
    if not report.ok:
        raise WeightsError(f"UNet checkpoint {ckpt_path} does not match config {config_path}; "
                           "pass the config it was trained with: " + report.summary())
    # assign=True adopts the (memory-mapped) tensors instead of copying into meta storage.
    model.load_state_dict(sd, strict=True, assign=True)
    # nn.Module.to: ModelMixin.to warns about fp32-pinned modules, which this model has none of.
    torch.nn.Module.to(model, device=device, dtype=dtype if dtype is not None else torch.float32)
    log.info("loaded UNet %s (%d tensors) with config %s", ckpt_path, report.num_keys, config_path)
    return model.eval()
