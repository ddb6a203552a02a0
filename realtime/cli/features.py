"""`syncvid features AUDIO --fps 25 --out FEATS.npz`: LatentSync audio features of a file.

Writes ``features`` (T, 5, 384) and ``chunks`` (N, 50, 384), N = whole video frames of the audio.
``--streaming`` pushes the audio through the streaming encoder in ``--chunk-ms`` pieces instead.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

log = logging.getLogger(__name__)


def register(sub) -> None:
    p = sub.add_parser("features", help="compute LatentSync audio features of an audio file")
    p.add_argument("audio", metavar="AUDIO", help="audio or video file (wav, mp3, flac, ogg, m4a, mp4, ...)")
    p.add_argument("--fps", type=float, default=25.0, help="video frame rate of the chunks (default 25)")
    p.add_argument("--out", required=True, metavar="FEATS.npz", help="output .npz with arrays features and chunks")
    p.add_argument("--streaming", action="store_true", help="use the streaming encoder (live-audio numerics)")
    p.add_argument("--chunk-ms", type=float, default=40.0, metavar="N", help="push size for --streaming in ms (default 40)")
    p.add_argument("--extra-lookahead-ms", type=float, default=0.0, metavar="MS",
                   help="--streaming: wait this much more future audio per frame (fidelity for latency; default 0)")
    p.add_argument("--whisper", metavar="CKPT", default=None, help="openai-whisper .pt checkpoint or CTranslate2 model.bin/dir (default: embedded tiny.en)")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the feature cache")
    p.add_argument("--cache-dir", metavar="DIR", default=None, help="feature cache directory (default $SYNCVID_CACHE_DIR or ~/.cache/syncvid/features)")
    p.set_defaults(func=run)


def _as_pair(item):
    """A streaming emission -> (frame index, (50, C) float32 array).

    Accepts the encoder's ``FrameFeatures`` (``.index``, ``.features``) or a plain (index, block)."""
    import numpy as np

    if hasattr(item, "index") and hasattr(item, "features"):
        i, block = item.index, item.features
    else:
        i, block = item
    if hasattr(block, "detach"):
        block = block.detach().cpu().numpy()
    return int(i), np.asarray(block, dtype=np.float32)


def _streaming(model, samples, fps: float, chunk_ms: float, extra_lookahead_ms: float):
    """Push ``samples`` in ``chunk_ms`` pieces; rebuild (T, 5, C) from the emitted blocks."""
    import numpy as np

    from realtime.audio.features import STEPS_PER_BLOCK, frame_step_indices, num_steps, num_video_frames
    from realtime.audio.io import SAMPLE_RATE
    from realtime.cli import CLIError

    try:
        from realtime.audio.streaming import StreamingAudioEncoder
    except ImportError as e:
        raise CLIError(f"--streaming needs realtime.audio.streaming.StreamingAudioEncoder, which is not available ({e}); run without --streaming") from None
    if not 10 <= chunk_ms <= 1000:
        raise CLIError(f"--chunk-ms {chunk_ms:g} is outside 10..1000 ms")
    enc = StreamingAudioEncoder(model, fps=fps, extra_lookahead_ms=extra_lookahead_ms)
    step = max(1, int(round(chunk_ms * SAMPLE_RATE / 1000)))
    emitted: dict[int, np.ndarray] = {}
    for start in range(0, len(samples), step):
        for item in enc.push(samples[start : start + step]):
            i, block = _as_pair(item)
            emitted[i] = block
    for item in enc.flush():
        i, block = _as_pair(item)
        emitted[i] = block
    n = num_video_frames(len(samples), fps)
    missing = [i for i in range(n) if i not in emitted]
    if missing:
        raise CLIError(f"the streaming encoder emitted no block for {len(missing)} of {n} frames (first {missing[0]})")
    chunks = np.stack([emitted[i] for i in range(n)]) if n else np.zeros((0, 50, model.dims.n_audio_state), np.float32)
    # Each step's taps as seen by the latest frame whose block covers it (blocks overlap).
    T = num_steps(len(samples))
    C = chunks.shape[-1]
    taps = chunks.shape[1] // STEPS_PER_BLOCK if n else 5
    features = np.zeros((T, taps, C), np.float32)
    for i in range(n):
        idx = frame_step_indices(i, fps, T)
        features[idx] = chunks[i].reshape(STEPS_PER_BLOCK, taps, C)
    return features, chunks


def run(args) -> int:
    import numpy as np

    from realtime.audio.cache import FeatureCache
    from realtime.audio.features import Audio2Feature, chunk_features, num_video_frames
    from realtime.audio.io import SAMPLE_RATE, load_audio
    from realtime.audio.whisper_loader import load_whisper, model_identity
    from realtime.cli import CLIError

    if not args.fps > 0:
        raise CLIError(f"--fps must be positive, got {args.fps:g}")
    out = Path(args.out)
    if not out.parent.exists():
        raise CLIError(f"output directory {str(out.parent)!r} does not exist")
    t0 = time.perf_counter()
    samples = load_audio(args.audio)
    model = load_whisper(args.whisper)
    t_load = time.perf_counter()
    if args.streaming:
        features, chunks = _streaming(model, samples, args.fps, args.chunk_ms, args.extra_lookahead_ms)
    else:
        cache = None if args.no_cache else FeatureCache(args.cache_dir)
        a2f = Audio2Feature(model, cache=cache, model_id=model_identity(args.whisper) if cache else None)
        features = a2f.audio2feat(samples)
        chunks = chunk_features(features, args.fps, num_video_frames(len(samples), args.fps))
    t_feat = time.perf_counter()
    with open(out, "wb") as f:  # a file object keeps the name exactly as given (no added .npz)
        np.savez(f, features=features, chunks=chunks)
    log.info(
        "%s: %.2f s of audio -> features %s, chunks %s at %g fps (load %.2f s, features %.2f s) -> %s",
        args.audio, len(samples) / SAMPLE_RATE, features.shape, chunks.shape, args.fps, t_load - t0, t_feat - t_load, out,
    )
    return 0
