"""`syncvid train-visemes`: train the audio-to-viseme checkpoints on espeak-ng speech."""

from __future__ import annotations

from pathlib import Path

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "visemes.yaml"


def register(sub) -> None:
    p = sub.add_parser("train-visemes", help="train the audio-to-viseme model (espeak-ng speech, CPU)")
    p.add_argument("--out", required=True, type=Path, help="output directory for visemes_<window>.pt")
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="training YAML (default: configs/visemes.yaml)")
    p.add_argument("--minutes", type=float, default=None, help="override data.minutes (training speech)")
    p.add_argument("--seed", type=int, default=None, help="override the seed")
    p.add_argument("--lookahead", choices=["full", "low", "both"], default="both", help="which checkpoint(s)")
    p.add_argument("--cache-dir", type=Path, default=None, help="feature cache (default ~/.cache/syncvid/visemes)")
    p.set_defaults(func=run)


def run(args) -> int:
    import json
    import time

    from realtime.cli import CLIError
    from realtime.config import ConfigError, load_config
    from realtime.errors import SyncVidError
    from realtime.visemes import espeak
    from realtime.visemes.train import VisemeTrainingConfig, run_training

    try:  # the config first: a typo in it is worth knowing before installing anything
        cfg = load_config(VisemeTrainingConfig, args.config)
    except ConfigError as e:
        raise CLIError(str(e)) from None
    if not espeak.available():
        raise SyncVidError("libespeak-ng.so.1 is not installed; install Debian's espeak-ng package "
                           "(apt-get install espeak-ng) to train visemes")
    if args.minutes is not None:
        cfg.data.minutes = float(args.minutes)
    if args.seed is not None:
        cfg.seed = int(args.seed)
    windows = ["full", "low"] if args.lookahead == "both" else [args.lookahead]
    t0 = time.time()
    report = run_training(cfg, args.out, windows, cache_dir=args.cache_dir)
    report["total_seconds"] = time.time() - t0
    (args.out / "train_report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return 0
