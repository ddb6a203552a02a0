"""Per-frame figures of the viseme model (25 fps), used by training and by evaluation.

15-class accuracy; coarse accuracy over closed (sil, PP) / open (aa, E, ih) / rounded (oh, ou) /
other; closed-mouth recall (predicted mouthClose >= 0.5) on p/b/m frames and on silence frames, and
on p/b/m frames by top viseme (PP or sil, which the renderer also seals the lips on); Pearson
correlation of predicted jawOpen with the opening the reference phones imply (the viseme table's
jawOpen averaged over each frame).
"""

from __future__ import annotations

import numpy as np

from realtime.visemes.phonemes import BLENDSHAPES, PP, SIL, VISEME_TO_COARSE

CLOSE = BLENDSHAPES.index("mouthClose")
JAW = BLENDSHAPES.index("jawOpen")


def frame_metrics(logits: np.ndarray, blend: np.ndarray, labels: np.ndarray, jaw_target: np.ndarray) -> dict:
    pred = logits.argmax(-1)
    closed = blend[:, CLOSE] >= 0.5
    pp, sil = labels == PP, labels == SIL
    jaw = blend[:, JAW]
    corr = float(np.corrcoef(jaw, jaw_target)[0, 1]) if jaw.std() > 0 and jaw_target.std() > 0 else float("nan")
    return {
        "frames": int(len(labels)),
        "accuracy": float((pred == labels).mean()),
        "coarse_accuracy": float((VISEME_TO_COARSE[pred] == VISEME_TO_COARSE[labels]).mean()),
        "closed_recall_pp": float(closed[pp].mean()) if pp.any() else float("nan"),
        # the renderer also seals the lips on p(PP): frames whose top viseme is PP or sil
        "closed_class_recall_pp": float(np.isin(pred[pp], (PP, SIL)).mean()) if pp.any() else float("nan"),
        "closed_recall_sil": float(closed[sil].mean()) if sil.any() else float("nan"),
        "closed_false_rate_open": float(closed[~(pp | sil)].mean()) if (~(pp | sil)).any() else float("nan"),
        "jaw_corr": corr,
    }


def run_model(model, blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Whole sequence (N, rows, 384) through the model -> (logits (N, 15), blendshapes (N, K))."""
    import torch  # the metrics themselves need only numpy

    with torch.inference_mode():
        out = model(torch.from_numpy(np.asarray(blocks, np.float32))[None])
    return out.logits[0].numpy(), out.blendshapes[0].numpy()


def evaluate_frames(model, fs) -> dict:
    """Metrics over a FrameSet, each segment run as one stream."""
    logits, blend = [], []
    for k in range(len(fs.bounds) - 1):
        lo, hi = int(fs.bounds[k]), int(fs.bounds[k + 1])
        lg, bl = run_model(model, fs.blocks[lo:hi])
        logits.append(lg)
        blend.append(bl)
    return frame_metrics(np.concatenate(logits), np.concatenate(blend), np.asarray(fs.labels),
                         np.asarray(fs.targets)[:, JAW])
