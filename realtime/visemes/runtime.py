"""Streaming viseme prediction for one session: per-frame Whisper blocks in, viseme
probabilities and ARKit-named mouth blendshapes out.

The model's GRU looks only at past frames and the exponential smoother only at the previous
output, so feeding a stream in chunks of any size gives the same values as one call on the whole.
"""

from __future__ import annotations

import functools
import logging
from importlib import resources
from pathlib import Path

import numpy as np

from realtime.errors import WeightsError, weights_load_reason
from realtime.visemes.phonemes import BLENDSHAPES, PP, SIL, VISEMES
from realtime.visemes.windows import LookaheadWindow, get_window

log = logging.getLogger(__name__)

KINDS = ("full", "low")


def weights_path(kind: str) -> Path:
    """Committed checkpoint of look-ahead ``kind`` ("full" or "low") inside the installed package."""
    if kind not in KINDS:
        raise ValueError(f"unknown viseme model kind {kind!r}; use one of {KINDS}")
    return Path(str(resources.files("models.weights").joinpath(f"visemes_{kind}.pt")))


@functools.lru_cache(maxsize=4)
def _load(path: str):
    import torch  # the renderer and server import this module; torch loads with the first model

    from models.visemes import model_from_checkpoint  # imports torch

    p = Path(path)
    if not p.is_file():
        raise WeightsError(f"viseme weights {p} not found; run `syncvid train-visemes --out DIR` and pass DIR's file")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
        model = model_from_checkpoint(ckpt)
    except Exception as e:  # a truncated or foreign file
        raise WeightsError(f"viseme weights {p} could not be loaded ({weights_load_reason(e)}); retrain them with "
                           "`syncvid train-visemes`") from None
    for q in model.parameters():
        q.requires_grad_(False)
    window = get_window(ckpt["window"]["name"])
    return model, window, ckpt


class VisemePredictor:
    """One session's predictor. The model is shared between sessions (cached per file); the GRU
    state and the smoother belong to this object.

    ``smoothing``: weight of the previous blendshape values in the output smoother (0 = off).
    Closing the mouth is never slowed down (``mouthClose`` rising, ``jawOpen`` falling pass at
    half the smoothing) so bilabials still seal the lips within a frame.
    """

    def __init__(self, model, window: LookaheadWindow, smoothing: float = 0.3, info: dict | None = None):
        self.model = model
        self.window = window
        self.smoothing = float(smoothing)
        self.info = info or {}
        self.viseme_names = VISEMES
        self.blendshape_names = BLENDSHAPES
        self.reset()

    @classmethod
    def load(cls, kind: str = "full", path: str | Path | None = None, smoothing: float = 0.3) -> "VisemePredictor":
        model, window, ckpt = _load(str(path or weights_path(kind)))
        return cls(model, window, smoothing, info={k: ckpt.get(k) for k in ("window", "figures", "encoder")})

    @property
    def rows(self) -> int:
        """Rows of the per-frame block this model expects (50 = LatentSync's 10 steps x 5 taps)."""
        return self.model.cfg.steps * self.model.cfg.n_taps

    def reset(self) -> None:
        """Start a new utterance/stream: forget the past (after an interrupt, for example)."""
        self._state = None
        self._last = None

    def predict(self, blocks) -> dict:
        """blocks (N, rows, 384) for the next N frames -> dict with ``probs`` (N, 15),
        ``blendshapes`` (N, K) in [0, 1], ``visemes`` (N names), and the name lists."""
        import torch  # loaded already by _load; kept out of this module's import

        x = torch.as_tensor(np.asarray(blocks, dtype=np.float32))
        if x.ndim != 3 or x.shape[1:] != (self.rows, self.model.cfg.n_state):
            raise ValueError(f"blocks must be (N, {self.rows}, {self.model.cfg.n_state}), got {tuple(x.shape)}")
        n = x.shape[0]
        if n == 0:
            return self._pack(np.zeros((0, len(VISEMES)), np.float32), np.zeros((0, len(BLENDSHAPES)), np.float32))
        with torch.inference_mode():
            out = self.model(x[None], self._state)
        self._state = out.state
        probs = torch.softmax(out.logits[0], -1).numpy()
        raw = out.blendshapes[0].numpy()
        blend = np.empty_like(raw)
        a = self.smoothing
        close, jaw = BLENDSHAPES.index("mouthClose"), BLENDSHAPES.index("jawOpen")
        last = self._last
        for i in range(n):
            if last is None or a <= 0:
                last = raw[i].copy()
            else:
                w = np.full(raw.shape[1], a, np.float32)
                if raw[i, close] > last[close]:
                    w[close] = a / 2
                if raw[i, jaw] < last[jaw]:
                    w[jaw] = a / 2
                last = w * last + (1 - w) * raw[i]
            blend[i] = last
        self._last = last
        return self._pack(probs, blend)

    def _pack(self, probs: np.ndarray, blend: np.ndarray) -> dict:
        return {
            "probs": probs,
            "blendshapes": blend,
            "visemes": [VISEMES[k] for k in probs.argmax(-1)] if len(probs) else [],
            "viseme_names": VISEMES,
            "blendshape_names": BLENDSHAPES,
        }


def is_closed(result: dict, threshold: float = 0.5) -> np.ndarray:
    """(N,) bool: frames where the mouth should be shut (mouthClose >= threshold)."""
    return result["blendshapes"][:, BLENDSHAPES.index("mouthClose")] >= threshold


__all__ = ["VisemePredictor", "weights_path", "is_closed", "KINDS", "SIL", "PP"]
