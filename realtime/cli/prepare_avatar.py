"""`syncvid prepare-avatar`: compute a reference video's or photo's face track once and store it."""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)


def register(sub) -> None:
    p = sub.add_parser(
        "prepare-avatar",
        help="detect landmarks, align and crop a reference video or photo into an avatar directory",
        description="Computes per-frame FaceMesh landmarks, LatentSync affine matrices, aligned crops and the "
        "mouth mask (and VAE latents with --vae) once, so rendering never redoes them.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--video", metavar="SRC", help="reference video (re-sampled to 25 fps)")
    src.add_argument("--image", metavar="SRC", help="reference face photo")
    p.add_argument("--out", required=True, metavar="AVATAR_DIR", help="directory to write (replaced if it is an avatar)")
    p.add_argument("--resolution", type=int, choices=(256, 512), default=256,
                   help="aligned crop size: 256 (LatentSync 1.5) or 512 (1.6)")
    p.add_argument("--vae", metavar="DIR", help="local diffusers VAE directory: also store its latents of the crops")
    p.add_argument("--max-frames", type=int, metavar="N", help="use at most N frames of the video (at 25 fps)")
    p.add_argument("--detector", choices=("facemesh", "insightface"), default="facemesh",
                   help="alignment landmarks: FaceMesh (offline default) or InsightFace if its models are local")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from realtime.cli import CLIError
    from realtime.face.avatar import prepare_avatar

    if args.max_frames is not None and args.max_frames < 1:
        raise CLIError(f"--max-frames must be at least 1, got {args.max_frames}")
    kind, source = ("video", args.video) if args.video else ("image", args.image)
    avatar = prepare_avatar(source, args.out, kind=kind, resolution=args.resolution, vae=args.vae,
                            max_frames=args.max_frames, progress=not args.no_progress, detector=args.detector)
    missing = avatar.frames_without_face
    print(f"avatar {args.out}: {avatar.num_frames} frame(s) {avatar.size[1]}x{avatar.size[0]} at {avatar.fps:g} fps, "
          f"crops {avatar.resolution}px, {len(missing)} without a face"
          + (" (passed through unchanged)" if missing else "")
          + (", VAE latents stored" if avatar.has_latents else ""))
    if avatar.meta.num_faces == 0:
        log.warning("no face was found in %s: the avatar renders its frames unchanged", source)
    return 0
