"""`syncvid eval-sync`: judge a video's lip sync with LatentSync's StableSyncNet (LSE-D/LSE-C style, offset)."""

from __future__ import annotations

import argparse
import json
import logging

log = logging.getLogger(__name__)


def register(sub) -> None:
    p = sub.add_parser(
        "eval-sync",
        help="lip-sync confidence, distance and A/V offset of a video (needs StableSyncNet weights)",
        description="Aligns the face of every frame (25 fps), embeds 16-frame lower-face windows and their "
        "Wav2Lip mel windows with StableSyncNet, and searches the A/V offset over +/-15 frames. Prints the "
        "offset (positive: video lags audio), LSE-D style distance and LSE-C style confidence.",
    )
    p.add_argument("--video", required=True, metavar="V", help="video to judge")
    p.add_argument("--audio", metavar="A", help="audio to judge it against (default: the video's own sound track)")
    p.add_argument("--syncnet", metavar="CKPT", help="LatentSync's checkpoints/stable_syncnet.pt (required)")
    p.add_argument("--config", metavar="CFG", help="LatentSync SyncNet YAML (default: syncnet_16_pixel_attn)")
    p.add_argument("--max-offset", type=int, default=15, metavar="N", help="offset search range in frames (15)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--json", metavar="OUT", help="also write the scores as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import tempfile

    import numpy as np

    from realtime.audio.io import load_audio
    from realtime.cli import CLIError
    from realtime.evaluate.sync import evaluate, load_syncnet
    from realtime.face.avatar import prepare_avatar

    if args.max_offset < 0:
        raise CLIError(f"--max-offset must be >= 0, got {args.max_offset}")
    model = load_syncnet(args.syncnet, args.config, device=args.device)  # fails fast without weights
    samples = load_audio(args.audio or args.video)
    with tempfile.TemporaryDirectory(prefix="syncvid-eval-") as tmp:
        avatar = prepare_avatar(args.video, tmp, kind="video", resolution=256, progress=False)
        crops = np.stack([avatar.crop(i) for i in range(avatar.num_frames)])
        missing = len(avatar.frames_without_face)
    if missing:
        log.warning("%d of %d frames have no detectable face; their windows are judged on a gray crop",
                    missing, len(crops))
    try:
        score = evaluate(model, crops, samples, max_offset=args.max_offset, device=args.device)
    except ValueError as e:
        raise CLIError(f"{args.video}: {e}") from None
    print(f"{args.video}: offset {score.offset:+d} frames, LSE-D {score.lse_d:.4f}, LSE-C {score.lse_c:.4f} "
          f"({score.windows} windows of 16 frames)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"video": args.video, **score.as_dict()}, f, indent=1)
    return 0

