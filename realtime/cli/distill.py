"""`syncvid distill`: few-step student UNet from a LatentSync teacher (docs/distill.md)."""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)


def register(sub) -> None:
    p = sub.add_parser(
        "distill",
        help="distil a 1-4-step student UNet from a LatentSync teacher checkpoint",
        description="Trajectory distillation: the student's DDIM steps learn to land where the teacher's "
        "guided 20-step DDIM trajectory goes, with guidance folded in. Writes OUT/student.pt and "
        "OUT/student.yaml, loadable by `syncvid render --unet/--config` and `syncvid serve`.",
    )
    p.add_argument("--teacher", required=True, metavar="CKPT", help="teacher UNet checkpoint (latentsync_unet.pt)")
    p.add_argument("--data", required=True, metavar="DIR", help="prepared data from `syncvid prepare-data`")
    p.add_argument("--config", required=True, metavar="YAML", help="distillation config (configs/distill/*.yaml)")
    p.add_argument("--teacher-config", metavar="YAML", help="the teacher's UNet YAML (default: teacher.config)")
    p.add_argument("--out", metavar="DIR", help="output directory (default: train.output_dir)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--max-steps", type=int, metavar="N", help="override train.max_steps")
    p.add_argument("--device", metavar="DEV", help="override train.device (cpu, cuda, cuda:1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from realtime.cli import CLIError
    from realtime.distill.config import load_distill_config
    from realtime.distill.train import distill

    cfg = load_distill_config(args.config)
    if args.max_steps is not None:
        if args.max_steps < 1:
            raise CLIError(f"--max-steps must be at least 1, got {args.max_steps}")
        cfg.train.max_steps = args.max_steps
    if args.device:
        cfg.train.device = args.device
    out = args.out or cfg.train.output_dir
    result = distill(cfg, args.teacher, args.data, out, resume=args.resume, teacher_config=args.teacher_config,
                     progress=not args.no_progress)
    print(f"student {result.student} ({result.config}): {result.steps} steps in {result.seconds:.1f} s, "
          f"loss {result.loss:.4f}" + (f", held-out loss {result.eval_loss:.4f}" if result.eval_loss is not None else "")
          + f"; sample it with --steps {cfg.serve_steps} --guidance 1")
    return 0
