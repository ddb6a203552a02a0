"""`syncvid render`: lip-sync an audio file onto a reference video, photo or prepared avatar -> mp4.

With no --unet the embedded CPU renderer is used (works on a fresh install with no weights); with
--unet the LatentSync diffusion renderer (needs --vae too, and --config for the UNet's YAML).
"""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)



def register(sub) -> None:
    from realtime.config import CONFIG_DIR

    default_config = CONFIG_DIR / "unet" / "stage2.yaml"
    p = sub.add_parser(
        "render",
        help="render a lip-synced mp4 from an audio file and a face video/photo/avatar",
        description="Writes an H.264 mp4 with the audio muxed (AAC); one frame per 1/fps of audio. "
        "Without --unet the embedded CPU renderer is used; with --unet, LatentSync's diffusion renderer.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--video", metavar="V", help="reference video (prepared once, cached)")
    src.add_argument("--image", metavar="I", help="reference face photo (prepared once, cached)")
    src.add_argument("--avatar", metavar="DIR", help="avatar directory from `syncvid prepare-avatar`")
    p.add_argument("--audio", required=True, metavar="A", help="speech audio (any format FFmpeg reads)")
    p.add_argument("--out", required=True, metavar="OUT.mp4", help="output video")
    p.add_argument("--unet", metavar="CKPT", help="LatentSync UNet checkpoint (latentsync_unet.pt): diffusion renderer")
    p.add_argument("--config", metavar="CFG", default=str(default_config),
                   help="LatentSync UNet YAML for --unet (default configs/unet/stage2.yaml); "
                   "its data.resolution and run.inference_steps/guidance_scale are the defaults")
    p.add_argument("--vae", metavar="DIR", help="local diffusers VAE folder (sd-vae-ft-mse or TAESD), needed by --unet")
    p.add_argument("--whisper", metavar="CKPT", help="openai-whisper checkpoint (e.g. LatentSync's tiny.pt); "
                   "default: the embedded tiny.en")
    p.add_argument("--steps", type=int, metavar="N", help="sampling steps (diffusion; default from the config, 20)")
    p.add_argument("--guidance", type=float, metavar="G", help="classifier-free guidance (diffusion; default 1.5)")
    p.add_argument("--sampler", choices=("ddim", "lcm", "tcd"), default="ddim", help="diffusion sampler")
    p.add_argument("--deep-cache", type=int, default=1, metavar="N",
                   help="DeepCache: full UNet pass every N steps (1 = off; LatentSync ships 3)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default 0)")
    p.add_argument("--fps", type=float, default=25.0, metavar="F", help="output frame rate (default 25)")
    p.add_argument("--chunk", type=int, default=16, metavar="N", help="frames per renderer call, 1..16 (default 16)")
    p.add_argument("--device", metavar="DEV", help="torch device for the diffusion renderer (default: cuda if present)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _diffusion_renderer(args):
    from realtime.render.diffusion import DiffusionRenderer
    from realtime.render.samplers import SamplerConfig
    from realtime.unet_config import load_unet_config

    config_path = args.config
    cfg = load_unet_config(config_path)
    sampler = SamplerConfig(
        kind=args.sampler,
        steps=args.steps if args.steps is not None else cfg.run.inference_steps,
        guidance=args.guidance if args.guidance is not None else cfg.run.guidance_scale,
        deep_cache_interval=args.deep_cache,
    )
    renderer = DiffusionRenderer.from_files(args.unet, config_path, args.vae, sampler, device=args.device)
    return renderer, cfg.data.resolution


def run(args: argparse.Namespace) -> int:
    from realtime.cli import CLIError
    from realtime.offline.render_file import load_or_prepare_avatar, render_file

    if not 1 <= args.chunk <= 16:
        raise CLIError(f"--chunk must be 1..16 frames, got {args.chunk}")
    if args.fps <= 0:
        raise CLIError(f"--fps must be positive, got {args.fps}")
    if args.steps is not None and not 1 <= args.steps <= 1000:
        raise CLIError(f"--steps must be 1..1000, got {args.steps}")
    from realtime.audio.io import load_audio_native

    audio = load_audio_native(args.audio)  # a bad audio file fails before any model or avatar work
    if args.unet:
        renderer, resolution = _diffusion_renderer(args)
    else:
        from realtime.render.embedded import EmbeddedRenderer

        ignored = [f"--{n}" for n in ("vae", "steps", "guidance") if getattr(args, n) is not None]
        if ignored:
            log.warning("%s only apply to the diffusion renderer (--unet); using the embedded renderer",
                        ", ".join(ignored))
        renderer, resolution = EmbeddedRenderer(), 256
    avatar = load_or_prepare_avatar(video=args.video, image=args.image, avatar_dir=args.avatar,
                                    resolution=resolution, progress=not args.no_progress)
    if args.avatar and avatar.resolution != resolution and args.unet:
        raise CLIError(f"avatar {args.avatar} was prepared at {avatar.resolution} px but the UNet config expects "
                       f"{resolution} px; run `syncvid prepare-avatar --resolution {resolution}`")
    # the decoded file: its own rate and channels go to the output
    report = render_file(renderer, avatar, audio, args.out, fps=args.fps, chunk=args.chunk, seed=args.seed,
                         whisper=args.whisper, progress=not args.no_progress)
    print(f"wrote {report.out}: {report.frames} frames at {report.fps:g} fps ({report.frames / report.fps:.2f} s), "
          f"{renderer.name} renderer, {report.render_seconds:.1f} s "
          f"({report.realtime_factor:.2f}x real time)"
          + (f", {report.frames_without_face} frames without a face passed through" if report.frames_without_face else ""))
    return 0
