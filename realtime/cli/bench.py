"""`syncvid bench NAME`: benchmarks. Each lives in ``realtime.bench.NAME`` with
``add_arguments(parser)`` and ``run(args) -> int``; results go to stdout (and --json)."""

from __future__ import annotations

from realtime.cli import optional_module

BENCHMARKS = {
    "audio": "streaming audio encoder: compute per stream, emission delay, memory",
    "realtime": "server on loopback: engine / glass-to-glass latency, A/V offset, sessions",
    "sdk": "avatar-SDK sessions on loopback: first frame, interrupt, pacing, sessions",
    "pipecat": "pipecat video service on loopback: TTS frame -> first image, interruption -> last speech image",
    "livekit": "LiveKit video generator on loopback: audio -> first frame, clear_buffer -> playback_finished",
    "soak": "session churn: server memory, fds, threads and teardown time over many sessions",
    "hold": "a few sessions kept speaking for minutes: fps, late frames, latency, A/V offset, memory drift",
    "unet": "UNet step time per frame (tiny and full configs)",
    "mouth": "embedded mouth renderer frames per second",
    "face": "landmarks, alignment warp and paste-back per frame; avatar preparation",
}


def register(sub) -> None:
    p = sub.add_parser("bench", help="run a benchmark")
    bsub = p.add_subparsers(dest="bench", metavar="NAME")
    for name, help_ in BENCHMARKS.items():
        mod = optional_module(f"realtime.bench.{name}")
        if mod is None:
            continue
        bp = bsub.add_parser(name, help=help_)
        mod.add_arguments(bp)
        bp.set_defaults(func=mod.run)
    p.set_defaults(func=lambda args: p.print_help() or 2)
