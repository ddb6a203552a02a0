"""`syncvid bench audio`: the streaming Whisper encoder on one CPU core.

For each setting (extra look-ahead x frames per encoder call) it streams real speech in 40 ms
pushes, as a microphone would deliver it, and reports:

- fidelity: per-frame cosine of the streamed (50, 384) blocks to the offline features of the same
  audio (mean and min per clip);
- compute: encoder CPU time (thread time, single thread) as % of the audio's duration;
- delay: each frame's availability minus the arrival of the 40 ms chunk holding the last sample
  it needs (p50 / p95; a simulated real-time clock where each push starts when its chunk has
  arrived and the previous push has finished, and takes its measured CPU time). Also reported
  beyond the nominal look-ahead (frame start + 120 ms + extra), which adds the 40 ms chunking
  and the 12.5 ms the STFT window and convolutions reach past the last step;
- memory: the stream's buffers and the process RSS after 10 s and after a long stream.
"""

from __future__ import annotations

import json
import logging
import platform
import resource
import time
import tracemalloc
from pathlib import Path

import numpy as np

from realtime.audio.features import chunk_features, compute_features, num_video_frames
from realtime.audio.io import SAMPLE_RATE, load_audio
from realtime.audio.whisper_loader import load_whisper
from realtime.cli import CLIError

log = logging.getLogger(__name__)

PUSH_MS = 40
FIXTURES = Path(__file__).resolve().parents[2] / "tests" / "fixtures"
DEFAULT_CLIPS = ("arctic_a0007.wav", "arctic_a0009.wav")


def add_arguments(p) -> None:
    p.add_argument("--audio", nargs="*", metavar="WAV", help="speech files (default: arctic_a0007/a0009 from tests/fixtures and a 35 s concatenation of them)")
    p.add_argument("--extra-ms", default="0,100,200,500", help="comma-separated extra look-ahead values (ms)")
    p.add_argument("--hops", default="1,2", help="comma-separated frames per encoder call")
    p.add_argument("--dtype", choices=["auto", "float32", "bfloat16"], default="auto", help="encoder arithmetic (auto: bf16 where the CPU has it natively)")
    p.add_argument("--repeats", type=int, default=3, help="runs per setting; compute is the median")
    p.add_argument("--memory-minutes", type=float, default=10.0, help="length of the long stream of the memory check (0: skip)")
    p.add_argument("--no-baseline", action="store_true", help="skip the naive-approach comparison row")
    p.add_argument("--light", action="store_true",
                   help="add a row for the light mode an overloaded server switches to (settle steps halved)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")


def _clips(paths):
    if paths:
        return {Path(p).stem: load_audio(p) for p in paths}
    missing = [n for n in DEFAULT_CLIPS if not (FIXTURES / n).is_file()]
    if missing:
        raise CLIError(f"default clips {missing} not found in {FIXTURES}; pass speech files with --audio")
    clips = {Path(n).stem: load_audio(FIXTURES / n) for n in DEFAULT_CLIPS}
    gap = np.zeros(4800, np.float32)  # 0.3 s pauses; 35 s crosses the 30 s window boundary
    long = np.concatenate([x for _ in range(6) for c in clips.values() for x in (c, gap)])[: 35 * SAMPLE_RATE]
    clips["concat35s"] = long
    return clips


def _cosines(a, b):
    a = a.reshape(len(a), -1).astype(np.float64)
    b = b.reshape(len(b), -1).astype(np.float64)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def stream_once(weights, audio, fps=25.0, push_ms=PUSH_MS, **kw):
    """Stream ``audio`` in ``push_ms`` pushes; returns (blocks (N, rows, C), stats dict)."""
    import torch  # torch is heavy; `syncvid --help` imports this module

    from realtime.audio.streaming import StreamingAudioEncoder  # imports torch

    enc = StreamingAudioEncoder(weights, fps=fps, **kw)
    step = int(SAMPLE_RATE * push_ms / 1000)
    frames, cpu, delays, beyond = [], 0.0, [], []
    done = 0.0  # simulated time the previous push finished
    for start in range(0, len(audio), step):
        chunk = audio[start : start + step]
        t0 = time.thread_time()
        out = enc.push(chunk)
        dt = time.thread_time() - t0
        cpu += dt
        arrival = (start + len(chunk)) / SAMPLE_RATE
        done = max(arrival, done) + dt
        for f in out:
            need_chunk_end = min(len(audio), -(-f.needed_samples // step) * step) / SAMPLE_RATE
            delays.append(done - need_chunk_end)
            beyond.append(done - (f.index / fps + enc.lookahead_ms / 1000))
        frames += out
    t0 = time.thread_time()
    frames += enc.flush()
    cpu += time.thread_time() - t0
    blocks = torch.stack([f.features for f in frames]).numpy() if frames else np.zeros((0,))
    stats = dict(cpu_s=cpu, duration_s=len(audio) / SAMPLE_RATE, delays=delays, beyond=beyond, calls=enc.encoder_calls, steps=enc.steps_encoded)
    return blocks, stats


def _measure(weights, clips, offline, repeats, **kw):
    fid, cpu_runs, delays, beyond, per_step = {}, [], [], [], []
    for r in range(repeats):
        cpu = dur = 0.0
        for name, audio in clips.items():
            blocks, st = stream_once(weights, audio, **kw)
            cpu += st["cpu_s"]
            dur += st["duration_s"]
            if r == 0:
                cos = _cosines(blocks, offline[name])
                fid[name] = (float(cos.mean()), float(cos.min()))
                per_step.append(st["steps"] / max(1, st["duration_s"] * 50))
            delays += st["delays"]
            beyond += st["beyond"]
        cpu_runs.append(100 * cpu / dur)
    ms = lambda xs, q: float(np.percentile(xs, q) * 1000) if xs else float("nan")  # noqa: E731
    return dict(
        fidelity=fid,
        mean_cos=float(np.mean([m for m, _ in fid.values()])),
        min_cos=float(min(m for _, m in fid.values())),
        cpu_pct=float(np.median(cpu_runs)),
        cpu_pct_min=float(min(cpu_runs)),
        encodes_per_step=float(np.mean(per_step)),
        delay_p50_ms=ms(delays, 50),
        delay_p95_ms=ms(delays, 95),
        beyond_lookahead_p50_ms=ms(beyond, 50),
        beyond_lookahead_p95_ms=ms(beyond, 95),
    )


def _memory(weights, minutes):
    from realtime.audio.streaming import StreamingAudioEncoder  # imports torch

    rng = np.random.default_rng(0)
    second = (rng.standard_normal(SAMPLE_RATE) * 0.1).astype(np.float32)
    # hop_frames=5 keeps a 10-minute run short; buffer sizes do not depend on the hop.
    enc = StreamingAudioEncoder(weights, hop_frames=5)
    rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # noqa: E731 (MB, Linux: KB)
    for _ in range(10):
        enc.push(second)
    at10 = dict(state_bytes=enc.state_nbytes(), max_rss_mb=rss())
    tracemalloc.start()
    for _ in range(int(minutes * 60) - 10):
        enc.push(second)
    py_growth = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return dict(
        seconds_long=int(minutes * 60),
        state_bytes_10s=at10["state_bytes"],
        state_bytes_long=enc.state_nbytes(),
        max_rss_mb_10s=at10["max_rss_mb"],
        max_rss_mb_long=rss(),
        python_alloc_growth_bytes=py_growth,
        frames=enc.next_frame,
    )


def run(args) -> int:
    import torch  # torch is heavy; `syncvid --help` imports this module

    from realtime.audio.streaming import StreamingWeights  # imports torch

    torch.set_num_threads(1)
    extras = [float(x) for x in args.extra_ms.split(",") if x.strip()]
    hops = [int(x) for x in args.hops.split(",") if x.strip()]
    dtype = {"auto": None, "float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    model = load_whisper()
    weights = StreamingWeights(model, dtype=dtype)
    clips = _clips(args.audio)
    offline = {n: chunk_features(compute_features(model, a), 25, num_video_frames(len(a), 25)) for n, a in clips.items()}
    rows = []
    for extra in extras:
        for hop in hops:
            r = _measure(weights, clips, offline, args.repeats, extra_lookahead_ms=extra, hop_frames=hop)
            rows.append(dict(setting="rolling cache", extra_ms=extra, hop_frames=hop, dtype=str(weights.dtype), **r))
            log.info("extra %g ms, hop %d: done", extra, hop)
    if args.light:
        from realtime.audio.streaming import DEFAULT_SETTLE_STEPS  # imports torch

        r = _measure(weights, clips, offline, args.repeats, settle_steps=DEFAULT_SETTLE_STEPS // 2)
        rows.append(dict(setting="light (server degraded)", extra_ms=0.0, hop_frames=1, dtype=str(weights.dtype), **r))
    if not args.no_baseline:
        # The first experiment's approach: past keys/values at absolute positions, each frame's 10
        # steps recomputed, fp32, no stand-in future.
        f32 = StreamingWeights(model, dtype=torch.float32)
        r = _measure(f32, clips, offline, args.repeats, settle_steps=10, virtual_future_steps=0)
        rows.append(dict(setting="naive (recompute 10 steps, fp32)", extra_ms=0.0, hop_frames=1, dtype="torch.float32", **r))
    memory = _memory(weights, args.memory_minutes) if args.memory_minutes > 0 else None
    result = dict(
        date=time.strftime("%Y-%m-%d"),
        machine=f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} thread, torch {torch.__version__}",
        push_ms=PUSH_MS,
        clips={n: round(len(a) / SAMPLE_RATE, 2) for n, a in clips.items()},
        rows=rows,
        memory=memory,
    )
    _print(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


def _print(res) -> None:
    names = list(res["clips"])
    print(f"streaming audio encoder, {res['push_ms']} ms pushes, {res['machine']}, {res['date']}")
    print("clips: " + ", ".join(f"{n} ({d} s)" for n, d in res["clips"].items()))
    head = f"{'setting':34} {'extra':>5} {'hop':>3} " + " ".join(f"{n.replace('arctic_', '')[:10]:>10}" for n in names)
    print(head + f" {'min cos':>7} {'cpu %':>6} {'enc/step':>8} {'delay p50/p95 ms':>17} {'beyond LA p50/p95':>17}")
    for r in res["rows"]:
        cos = " ".join(f"{r['fidelity'][n][0]:>10.4f}" for n in names)
        print(
            f"{r['setting']:34} {r['extra_ms']:>5.0f} {r['hop_frames']:>3} {cos} {r['min_cos']:>7.3f} {r['cpu_pct']:>6.1f}"
            f" {r['encodes_per_step']:>8.1f} {r['delay_p50_ms']:>8.1f}/{r['delay_p95_ms']:<8.1f}"
            f" {r['beyond_lookahead_p50_ms']:>8.1f}/{r['beyond_lookahead_p95_ms']:<8.1f}"
        )
    m = res["memory"]
    if m:
        print(
            f"memory: stream buffers {m['state_bytes_10s'] / 1e6:.2f} MB after 10 s, {m['state_bytes_long'] / 1e6:.2f} MB after {m['seconds_long']} s;"
            f" max RSS {m['max_rss_mb_10s']:.0f} -> {m['max_rss_mb_long']:.0f} MB; Python allocations grew {m['python_alloc_growth_bytes'] / 1e3:.1f} kB"
        )
