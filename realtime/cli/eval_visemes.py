"""`syncvid eval-visemes`: accuracy of the viseme checkpoints on held-out espeak voices and real speech."""

from __future__ import annotations

from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("eval-visemes", help="evaluate the audio-to-viseme checkpoints")
    p.add_argument("--kind", choices=["full", "low", "both"], default="both")
    p.add_argument("--weights-dir", type=Path, default=None, help="directory with visemes_<kind>.pt (default: committed)")
    p.add_argument("--features", default="streaming,offline",
                   help="comma list of feature kinds for real speech: streaming, offline, causal")
    p.add_argument("--no-espeak", action="store_true", help="skip the held-out espeak voices (slow without a cache)")
    p.add_argument("--cache-dir", type=Path, default=None)
    p.add_argument("--speed", action="store_true", help="only measure per-frame prediction time (one thread)")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    p.set_defaults(func=run)


def run(args) -> int:
    import json

    from realtime.visemes.evaluate import evaluate_checkpoint, measure_speed

    kinds = ["full", "low"] if args.kind == "both" else [args.kind]
    if args.speed:
        speed = {k: measure_speed(k, args.weights_dir / f"visemes_{k}.pt" if args.weights_dir else None) for k in kinds}
        print(json.dumps(speed, indent=2))
        if args.json:
            args.json.write_text(json.dumps(speed, indent=2))
        return 0
    feats = tuple(f.strip() for f in args.features.split(",") if f.strip())
    report = {}
    for kind in kinds:
        path = args.weights_dir / f"visemes_{kind}.pt" if args.weights_dir else None
        report[kind] = evaluate_checkpoint(kind, path, feats, espeak=not args.no_espeak, cache_dir=args.cache_dir)
    cols = ("frames", "accuracy", "coarse_accuracy", "closed_recall_pp", "closed_class_recall_pp", "closed_recall_sil",
            "closed_false_rate_open", "jaw_corr")
    print(f"{'model':5} {'set':32} " + " ".join(f"{c[:14]:>14}" for c in cols))
    for kind, figs in report.items():
        for name, m in figs.items():
            if isinstance(m, dict) and "accuracy" in m:
                print(f"{kind:5} {name:32} " + " ".join(f"{m[c]:14.3f}" if isinstance(m[c], float) else f"{m[c]:14d}" for c in cols))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0
