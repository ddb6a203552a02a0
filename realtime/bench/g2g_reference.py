"""How late each probe burst opens the mouth by its content alone (`syncvid bench realtime`).

A burst that starts with "m" or "s" opens the mouth a few frames after its acoustic onset however
fast the engine is, so the raw glass-to-glass time mixes the engine's delay with the phonetics of
the burst. Each distinct burst is rendered here with no transport and no clock at all: the same
streaming encoder (40 ms pushes; restarted on the frame grid 0.2 s before the onset, as the
server's silence gate restarts it after the probe's gaps), viseme model and renderer the server
runs, and the same landmark detector and threshold as the live probe. The content
delay is the start of the first frame that opens the mouth minus the onset (negative when the model
opens it before the sound), averaged over four positions of the onset within its frame (live, the
onset falls anywhere in a frame). A burst has no well-defined content delay, and is left out (NaN),
when its opening hovers around the threshold: when its delay moves by more than two frames with that
position, or by more than one frame when the threshold moves by ``BASE_NOISE`` either way (the live
probe's baseline, the median opening over the 250 ms before each onset, varies by about that much
from burst to burst: landmark noise on the swaying head after the video codec). The live probe
subtracts the delay per burst, which leaves what the transport and the engine add.
"""

from __future__ import annotations

import numpy as np

from realtime.audio.io import SAMPLE_RATE
from realtime.audio.whisper_loader import load_whisper
from realtime.bench.mouth_open import opening_series
from realtime.face.avatar import default_avatar
from realtime.visemes.windows import WINDOWS

LEAD_S = 1.0  # silence before the onset: frame 25 starts at the onset
TAIL_S = 0.4
PUSH = 640  # 40 ms at 16 kHz, the server's packet cadence
PHASES_S = (0.0, 0.01, 0.02, 0.03)  # onset positions within its frame
MAX_SPREAD_S = 0.08  # over those positions, or the burst's content delay is ambiguous
BASE_NOISE = 0.02  # of the live baseline's opening; a crossing that moves by more than a frame with it is ambiguous


def luma(rgb: np.ndarray) -> np.ndarray:
    """The Y plane (BT.601 weights) the probe reads from decoded frames, from an RGB frame."""
    y = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
    return np.clip(y + 0.5, 0, 255).astype(np.uint8)


def content_delays(bursts: list[np.ndarray], lookahead: str, box, jump: float, fps: int = 25) -> list[float]:
    """Seconds from each burst's onset (48 kHz int16, as the probe plays them) to its first
    mouth-open frame, rendered offline; NaN when the mouth never opens past ``jump`` or the delay
    is ambiguous."""
    # heavy (scipy.signal, torch, OpenCV, numba): `syncvid --help` imports this module
    from scipy.signal import resample_poly

    from realtime.audio.streaming import StreamingAudioEncoder, StreamingWeights
    from realtime.render.embedded import EmbeddedRenderer
    from realtime.session.feed import (
        GATE_CONTEXT_S,  # the session package takes ~30 ms to import
    )

    avatar = default_avatar()
    weights = StreamingWeights(load_whisper())
    w = WINDOWS[lookahead]
    renderer = EmbeddedRenderer(lookahead=lookahead, idle=False)
    onset = int(round(LEAD_S * fps))
    # the live baseline is the rest frames before the onset
    rest_open = float(opening_series([luma(renderer.rest_frame(avatar, 0, renderer.new_state(0)))[box]])[0])
    memo: dict[bytes, float] = {}
    out = []
    for b in bursts:
        key = b.tobytes()
        if key not in memo:
            x = resample_poly(b.astype(np.float32) / 32768.0, 1, 3).astype(np.float32)
            delays = []
            for phase in PHASES_S:  # live, the onset falls anywhere in a frame: average over where
                audio = np.concatenate([np.zeros(int((LEAD_S + phase) * SAMPLE_RATE), np.float32), x,
                                        np.zeros(int(TAIL_S * SAMPLE_RATE), np.float32)])
                # After the probe's silent gap the server has gated its encoder; it restarts it on the
                # frame grid GATE_CONTEXT_S before the onset, with a fresh window: so does this.
                first = int(np.floor((LEAD_S + phase - GATE_CONTEXT_S) * fps))
                enc = StreamingAudioEncoder(weights, fps=fps, extra_lookahead_ms=0, block=(w.past, w.future))
                series = _opening(audio[round(first * SAMPLE_RATE / fps):], enc, renderer, avatar, box)  # frame first + k
                k_on = onset - first
                base = float(np.nanmedian([rest_open, *series[: max(0, k_on - 3)]]))
                k = first_open(series, max(0, k_on - 3), base + jump)
                delays.append((first + k - onset) / fps - phase if k is not None else float("nan"))
            # a burst whose opening hovers at the threshold (first crossing jumping by frames with the
            # onset's position or the baseline) has no well-defined content delay: left out (NaN) of
            # the net figures
            spread = max(delays) - min(delays) if not np.isnan(delays).any() else np.inf
            memo[key] = float(np.mean(delays)) if spread <= MAX_SPREAD_S else float("nan")
        out.append(memo[key])
    return out


def first_open(series: np.ndarray, start: int, threshold: float) -> int | None:
    """Index of the first frame from ``start`` on whose opening exceeds ``threshold``; None when
    there is none, or when a threshold ``BASE_NOISE`` higher or lower would move it by more than one
    frame (the opening hovers around the threshold)."""
    def crossing(th: float) -> int | None:
        hit = np.nonzero(np.nan_to_num(series[start:], nan=-np.inf) > th)[0]
        return start + int(hit[0]) if len(hit) else None

    lo, k, hi = crossing(threshold - BASE_NOISE), crossing(threshold), crossing(threshold + BASE_NOISE)
    return k if lo is not None and hi is not None and hi - lo <= 1 else None


def _opening(audio: np.ndarray, enc, renderer, avatar, box) -> np.ndarray:
    """Mouth opening per frame of ``audio`` (16 kHz) through the live pipeline (a fresh streaming
    encoder ``enc``), without a clock."""
    feats = {}
    for s in range(0, len(audio) - PUSH + 1, PUSH):
        for f in enc.push(audio[s : s + PUSH]):
            feats[f.index] = f.features.numpy()
    idx = np.array(sorted(feats))
    blocks = np.stack([feats[i] for i in idx])
    state = renderer.new_state(0)
    frames: list[np.ndarray] = []
    for s in range(0, len(idx), 4):
        frames += renderer.render_chunk(avatar, idx[s : s + 4], blocks[s : s + 4], state).frames
    return opening_series([luma(f)[box] for f in frames])
