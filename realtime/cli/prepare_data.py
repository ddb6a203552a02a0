"""`syncvid prepare-data VIDEOS_DIR --out DIR`: talking-face videos -> the layout `syncvid distill` reads."""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)


def register(sub) -> None:
    p = sub.add_parser(
        "prepare-data",
        help="turn a folder of talking-face videos into distillation training data",
        description="Per video: 25 fps aligned face crops and VAE latents (the prepare-avatar face track), "
        "LatentSync's offline audio features and the streaming encoder's, in the layout `syncvid distill` reads.",
    )
    p.add_argument("videos", metavar="VIDEOS_DIR", help="folder of videos with speech (searched recursively)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (new or empty)")
    p.add_argument("--resolution", type=int, choices=(256, 512), default=256, help="crop size (LatentSync 1.5: 256)")
    p.add_argument("--vae", metavar="DIR", help="local diffusers VAE folder: store latents (needed to train)")
    p.add_argument("--whisper", metavar="CKPT", help="Whisper checkpoint of the teacher's features "
                   "(LatentSync's tiny.pt; default: the embedded tiny.en)")
    p.add_argument("--max-frames", type=int, metavar="N", help="use at most N frames (at 25 fps) of each video")
    p.add_argument("--detector", choices=("facemesh", "insightface"), default="facemesh", help="alignment landmarks")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from realtime.cli import CLIError
    from realtime.distill.prepare import prepare_data

    if args.max_frames is not None and args.max_frames < 1:
        raise CLIError(f"--max-frames must be at least 1, got {args.max_frames}")
    if not args.vae:
        log.warning("no --vae: crops and audio features are stored, but `syncvid distill` needs latents; "
                    "prepare again with --vae DIR to train")
    r = prepare_data(args.videos, args.out, resolution=args.resolution, vae=args.vae, whisper=args.whisper,
                     max_frames=args.max_frames, detector=args.detector, progress=not args.no_progress)
    print(f"prepared {args.out}: {len(r.clips)} clip(s), {r.frames} frames at 25 fps "
          f"({r.frames_without_face} without a face), {len(r.skipped)} video(s) skipped"
          + (" (" + "; ".join(r.skipped) + ")" if r.skipped else ""))
    return 0
