"""`syncvid eval-lipsync`: does the rendered mouth follow the speech? (landmarks on the output video)

    syncvid eval-lipsync --audio A [--video OUT.mp4] [--transcript TEXT] [--image FACE | --avatar DIR]

With --video, that video is measured. Without it, the audio is first rendered onto the avatar (default:
the astronaut) with the embedded renderer through the same path as `syncvid render`, and the avatar's
closed reading is measured on its rest frames encoded the same way. Prints correlation, best lag and
silent-frame closure (see ``realtime.evaluate.lipsync``) and whether the issue's bar is met.
"""

from __future__ import annotations

import argparse
import json
import logging

log = logging.getLogger(__name__)


def register(sub) -> None:
    p = sub.add_parser("eval-lipsync", help="measure lip-sync of a rendered video with a landmark detector",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--audio", required=True, metavar="A", help="the speech audio of the video")
    p.add_argument("--video", metavar="OUT.mp4", help="rendered video to measure (default: render one now)")
    p.add_argument("--transcript", metavar="TEXT", help="what is said (default: Whisper transcribes the audio)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--image", metavar="FACE", help="face photo to render onto (default: the astronaut)")
    src.add_argument("--avatar", metavar="DIR", help="prepared avatar to render onto")
    p.add_argument("--lookahead", choices=("full", "low"), default="full", help="viseme model when rendering")
    p.add_argument("--visemes", metavar="CKPT", help="viseme checkpoint to render with (default: the shipped one)")
    p.add_argument("--oracle", action="store_true",
                   help="drive the mouth from the aligned phones instead of the viseme model: the ceiling of "
                   "renderer + measurement, separate from the model's accuracy")
    p.add_argument("--out", metavar="OUT.mp4", help="keep the rendered video here (default: a temp file)")
    p.add_argument("--pad-silence", type=float, default=0.0, metavar="S",
                   help="add S seconds of the clip's own room tone before and after it (longer real silences)")
    p.add_argument("--seed", type=int, default=0, help="render seed (photos: blink times and head sway)")
    p.add_argument("--closed-reading", type=float, help="the avatar's closed-mouth gap reading (default: measured)")
    p.add_argument("--guard", type=int, default=2, help="frames next to speech not counted as silent (default 2)")
    p.add_argument("--json", metavar="FILE", help="also write the report (and per-frame series) as JSON")
    p.set_defaults(func=run)


def _render(args, out_path: str) -> float:
    """Renders the audio with the embedded renderer; returns the avatar's closed reading."""
    import numpy as np

    from realtime.evaluate.lipsync import measure_gaps, read_video
    from realtime.face.avatar import default_avatar
    from realtime.offline.render_file import load_or_prepare_avatar, render_file
    from realtime.offline.video_writer import VideoWriter
    from realtime.render.embedded import EmbeddedRenderer

    if args.image or args.avatar:
        avatar = load_or_prepare_avatar(image=args.image, avatar_dir=args.avatar, progress=False)
    else:
        avatar = default_avatar()
    renderer = EmbeddedRenderer(lookahead=args.lookahead, weights=args.visemes)
    if args.oracle:
        _render_oracle(renderer, avatar, args, out_path)
    else:
        render_file(renderer, avatar, args.samples, out_path, progress=False, seed=args.seed)
    # The closed reading goes through the same encoder: H.264 itself shifts FaceMesh's reading a little.
    rest_path = out_path + ".rest.mp4"
    state = renderer.new_state(0)
    with VideoWriter(rest_path, 25.0) as w:
        for i in range(25):
            w.write(renderer.rest_frame(avatar, i, state))
    return float(np.nanmedian(measure_gaps(read_video(rest_path)[0])))


def _render_oracle(renderer, avatar, args, out_path: str) -> None:
    from realtime.audio.features import num_video_frames
    from realtime.evaluate.lipsync import align_phones, implied_opening, transcribe
    from realtime.offline.video_writer import VideoWriter
    from realtime.render.mouth_warp import MouthParams

    samples = args.samples
    n = num_video_frames(len(samples), 25.0)
    opening, _ = implied_opening(align_phones(samples, args.transcript or transcribe(samples)), n, 25.0)
    state = renderer.new_state(args.seed)
    with VideoWriter(out_path, 25.0, audio=samples) as w:
        for i in range(n):
            w.write(renderer.render_params(avatar, i, MouthParams(jawOpen=0.6 * float(opening[i])), state))


def run(args: argparse.Namespace) -> int:
    import os
    import tempfile

    from realtime.audio.io import load_audio
    from realtime.errors import AudioInputError
    from realtime.evaluate.lipsync import evaluate_video, pad_with_room_tone

    try:
        args.samples = pad_with_room_tone(load_audio(args.audio), args.pad_silence)
    except ValueError as e:
        raise AudioInputError(f"--pad-silence cannot pad {args.audio}: {e}") from None
    if args.pad_silence and args.video:
        log.warning("--pad-silence only applies when rendering; the given --video is measured against padded audio")
    with tempfile.TemporaryDirectory() as tmp:
        video = args.video
        closed = args.closed_reading
        if video is None:
            video = args.out or os.path.join(tmp, "render.mp4")
            measured_closed = _render(args, video)
            closed = measured_closed if closed is None else closed
        report, gaps, implied, speech = evaluate_video(video, args.samples, args.transcript, closed, args.guard)
    print(f"frames {report.frames}  correlation {report.correlation:.3f}  best lag {report.best_lag:+d} "
          f"(r={report.best_correlation:.3f})  silent frames closed {100 * report.silent_closed:.1f}% "
          f"of {report.silent_frames} (closed reading {report.closed_reading:.3f}, "
          f"threshold {report.closed_threshold:.3f})  undetected {report.undetected_frames}")
    print("quality bar (r >= 0.7, |lag| <= 1, >= 95% silent closed):", "PASS" if report.passes() else "FAIL")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({**report.to_dict(), "gaps": [None if g != g else g for g in gaps.tolist()],
                       "implied": implied.tolist(), "speech": speech.astype(int).tolist()}, f, indent=1)
    return 0
