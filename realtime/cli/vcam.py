"""`syncvid vcam`: the avatar as a virtual camera for conferencing apps (docs/vcam.md)."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from realtime.vcam import VcamError

if TYPE_CHECKING:  # types only: the command module stays cheap to import
    from realtime.server.config import RealtimeConfig
    from realtime.session.shared import Engine
    from realtime.vcam.camera import CameraSink
    from realtime.vcam.inputs import AudioSource
    from realtime.vcam.sound import SpeakerOutput

log = logging.getLogger(__name__)

MAX_SIDE = 4096
MIN_DELAY_MS, MAX_DELAY_MS = -100.0, 2000.0  # earlier than -100 ms the speech has not arrived yet


def parse_size(text: str) -> tuple[int, int]:
    """``WxH`` -> (width, height): even sides (4:2:0 video) of 16..4096 pixels."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not WxH (for example 1280x720)") from None
    if not (16 <= w <= MAX_SIDE and 16 <= h <= MAX_SIDE) or w % 2 or h % 2:
        raise argparse.ArgumentTypeError(f"{text!r}: each side must be an even number of pixels from 16 to {MAX_SIDE}")
    return w, h


def parse_fps(text: str) -> int:
    try:
        fps = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of frames per second") from None
    if not 1 <= fps <= 60:
        raise argparse.ArgumentTypeError(f"{fps} is outside 1..60 frames per second")
    return fps


def parse_delay(text: str) -> float:
    """``auto`` -> 0 (the engine's own latency, nothing added); a number -> milliseconds added."""
    if text.strip().lower() == "auto":
        return 0.0
    try:
        ms = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither auto nor milliseconds (for example 40)") from None
    if not MIN_DELAY_MS <= ms <= MAX_DELAY_MS:
        raise argparse.ArgumentTypeError(f"{ms:g} ms is outside {MIN_DELAY_MS:g}..{MAX_DELAY_MS:g} ms")
    return ms


def register(sub: Any) -> None:
    p = sub.add_parser("vcam", help="the avatar as a virtual camera for conferencing apps (microphone or file in)")
    speech = p.add_mutually_exclusive_group()
    speech.add_argument("--mic", nargs="?", const="", default=None, metavar="DEVICE",
                        help="speech from a microphone (the default source): PortAudio's number or a part of the "
                        "name from --list-devices; none: the system's default input")
    speech.add_argument("--audio", metavar="FILE", default=None, help="speech from a file (wav, mp3, ...) instead")
    p.add_argument("--loop", action="store_true", help="play --audio FILE again and again (else once, then rest)")
    p.add_argument("--avatar", metavar="PATH", default=None,
                   help="a face photo or video (prepared on first use and cached), or a folder from "
                   "`syncvid prepare-avatar` (default: the shipped astronaut photo)")
    p.add_argument("--device", metavar="/dev/videoN", default=None,
                   help="the virtual camera device (default: the first free v4l2loopback device)")
    p.add_argument("--backend", metavar="NAME", default=None,
                   help="pyvirtualcam backend (default: the system's: v4l2loopback on Linux, obs elsewhere)")
    p.add_argument("--size", metavar="WxH", type=parse_size, default=None,
                   help="the camera's frame size, e.g. 1280x720 (default: the avatar's); the avatar is scaled to fit")
    p.add_argument("--fps", type=parse_fps, default=None, help="the camera's frame rate (default: the engine's, 25)")
    p.add_argument("--play-to", metavar="OUTPUT_DEVICE", default=None,
                   help="also play the speech to this output device (e.g. a loopback sink a conferencing app "
                   "uses as its microphone), delayed like the video; 'default': the system's output")
    p.add_argument("--audio-delay", metavar="auto|MS", type=parse_delay, default=0.0,
                   help="auto (default): the voice delayed exactly like the lips; MS: that many milliseconds "
                   "more (or less, down to -100), for an app that delays one more than the other")
    p.add_argument("--low-latency", action="store_true", help="40 ms look-ahead mode (less delay, rougher lips)")
    p.add_argument("--seconds", type=float, default=None, help="stop after this long (default: until Ctrl-C)")
    p.add_argument("--list-devices", action="store_true", help="list the video and audio devices and exit")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.list_devices:
        print(device_listing())
        return 0
    if args.loop and not args.audio:
        raise VcamError("--loop repeats --audio FILE: pass the file too")
    if args.seconds is not None and args.seconds <= 0:
        raise VcamError(f"--seconds must be above 0, got {args.seconds:g}")
    return start(args)


def device_listing() -> str:
    # here, not at the top: `syncvid` imports every command module to build its parser
    from realtime.vcam.camera import video_device_lines
    from realtime.vcam.sound import audio_device_lines, load_sounddevice

    lines = ["Video devices (--device):", *video_device_lines(), "",
             "Audio devices (--mic and --play-to take the number or a part of the name):"]
    try:
        lines += audio_device_lines(load_sounddevice()) or ["  none found (no sound card or audio server here)"]
    except VcamError as e:
        lines.append(f"  unavailable: {e}")
    return "\n".join(lines)


def start(args: argparse.Namespace, build: Callable[[RealtimeConfig, Any], Engine] | None = None) -> int:
    """Checks and opens everything cheap (file, PortAudio, devices, avatar, camera) before the models
    load, then runs until Ctrl-C (or ``--seconds``). ``build(config, avatar)`` makes the engine
    (default: the real one, models in this process)."""
    import asyncio  # these here, not at the top: `syncvid` imports every command module for its parser

    from realtime.face.avatar import default_avatar
    from realtime.face.sources import load_avatar_source
    from realtime.server.config import load_realtime_config
    from realtime.vcam.camera import FrameFit, open_camera
    from realtime.vcam.inputs import FileSource
    from realtime.vcam.sound import (
        MicSource,
        SpeakerOutput,
        load_sounddevice,
        parse_device,
    )

    changes: dict = {"inference": "thread", "audio_extra_delay_ms": args.audio_delay}
    if args.low_latency:
        changes["lookahead"] = "low"
    config = load_realtime_config(None, changes)
    opened: list = []  # closed in reverse order on the way out, whatever fails
    try:
        source = FileSource(args.audio, args.loop) if args.audio else None
        sd = load_sounddevice() if source is None or args.play_to is not None else None
        if source is None:
            source = MicSource(sd, parse_device(args.mic))
            opened.append(source)
        speaker = SpeakerOutput(sd, parse_device(args.play_to)) if args.play_to is not None else None
        if speaker is not None:
            opened.append(speaker)
        avatar = load_avatar_source(args.avatar) if args.avatar else default_avatar()
        h, w = avatar.frame(0).shape[:2]
        width, height = args.size or (w - w % 2, h - h % 2)
        camera = open_camera(width, height, args.fps or config.fps, args.device, args.backend)
        opened.append(camera)
        camera.send(FrameFit(width, height)(avatar.frame(0)))  # the avatar at rest while the models load
        log.info("virtual camera %s: %dx%d at %d fps; speech from %s; %s", camera.device, width, height,
                 args.fps or config.fps, source.name,
                 f"voice to {speaker.name}" if speaker else "no voice out (--play-to DEVICE plays it)")
        engine = (build or _build_engine)(config, avatar)
        return asyncio.run(_run(engine, config, camera, source, speaker, args.low_latency, args.seconds))
    finally:
        for part in reversed(opened):
            try:
                part.close()
            except Exception:
                log.exception("closing %s failed", part)


def _build_engine(config: RealtimeConfig, avatar: Any) -> Engine:
    import torch  # heavy: only when the models load

    from realtime.server.engine import build_engine

    torch.set_num_threads(1)  # as the server: the worker's threads run the encoder and renderer side by side
    return build_engine(config, avatar=avatar)


async def _run(engine: Engine, config: RealtimeConfig, camera: CameraSink, source: AudioSource,
               speaker: SpeakerOutput | None, low_latency: bool, seconds: float | None) -> int:
    """Runs the camera until a signal (or ``seconds``); closes the engine on the way out."""
    import asyncio  # these here, not at the top: `syncvid` imports every command module for its parser
    import signal

    from realtime.heap import freeze_startup_heap
    from realtime.session.config import SessionConfig
    from realtime.vcam.runner import Vcam

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    session = SessionConfig.from_realtime(config, low_latency=low_latency)
    log.info("live: %.0f ms from speech to lips (Ctrl-C stops)", session.budget_s * 1000)
    freeze_startup_heap()  # models and codecs: a full collection would otherwise stall the camera ~150 ms
    try:
        stats = await Vcam(engine, session, camera, source, speaker).run(stop, seconds)
    finally:
        engine.close()  # on the loop: the worker cancels its pending jobs' futures there
    log.info("stopped after %.0f s: %d frames (%.1f fps), %s; %d camera frames skipped, %d audio re-anchors, "
             "%d output underflows", stats.seconds, stats.frames, stats.fps, stats.kinds, stats.skipped_frames,
             stats.audio_jumps, stats.audio_underflows)
    return 0
