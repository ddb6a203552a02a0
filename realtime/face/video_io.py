"""Reading reference media for the face track: videos via PyAV (resampled to a fixed fps), images via cv2.

Everything returned is RGB uint8 (H, W, 3). Unreadable input is a ``MediaInputError`` naming the file;
writing output video lives with ``syncvid render``, not here.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np

from realtime.errors import MediaInputError

log = logging.getLogger(__name__)

TRACK_FPS = 25  # LatentSync re-encodes every reference video to 25 fps; its audio chunking assumes it.


def read_image(path: str | Path) -> np.ndarray:
    """Reads a still image as RGB uint8 (H, W, 3); grey and RGBA inputs are converted."""
    import cv2  # OpenCV is heavy: the face package imports cheaply

    path = Path(path)
    if not path.is_file():
        raise MediaInputError(f"image {path} {'is a folder' if path.is_dir() else 'does not exist'}: give the "
                              "path of a JPEG or PNG face photo")
    data = np.fromfile(str(path), dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if img is None:
        # cv2 lacks some formats (e.g. WebP in some builds); PyAV decodes nearly every still format.
        try:
            frames = list(_decode_av(path, fps=None, max_frames=1))
        except MediaInputError:
            frames = []
        if not frames:
            raise MediaInputError(f"image {path} could not be decoded: convert it to JPEG or PNG")
        return frames[0]
    if img.dtype != np.uint8:  # 16-bit PNG
        img = (img.astype(np.float32) / np.iinfo(img.dtype).max * 255.0 + 0.5).astype(np.uint8)
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def video_info(path: str | Path) -> tuple[float, float | None, int | None]:
    """(native fps, duration in seconds or None, frame count or None) of a video's first video stream."""
    import av  # PyAV (FFmpeg) is heavy: imported on first use

    path = Path(path)
    _check_exists(path)
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise MediaInputError(f"video {path} has no video stream (a file cut short may have lost it): give "
                                      "a complete video file with a face in it")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or TRACK_FPS
            duration = None
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                duration = container.duration / 1_000_000
            return float(rate), duration, (stream.frames or None)
    except av.FFmpegError as e:
        raise MediaInputError(f"video {path} could not be read ({e}): give an mp4/mov/webm/mkv video file") from e


def iter_video_frames(path: str | Path, fps: float | None = TRACK_FPS, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """Yields RGB uint8 frames, resampled to ``fps`` (None keeps every decoded frame).

    Resampling picks, for output time k / fps, the last source frame shown at that time (frames are
    duplicated or dropped, never blended), which is what an ffmpeg ``-r 25`` re-encode does.
    """
    path = Path(path)
    _check_exists(path)
    yield from _decode_av(path, fps=fps, max_frames=max_frames)


def read_video(path: str | Path, fps: float | None = TRACK_FPS, max_frames: int | None = None) -> np.ndarray:
    """All frames as one (T, H, W, 3) uint8 array; prefer ``iter_video_frames`` for long videos."""
    frames = list(iter_video_frames(path, fps=fps, max_frames=max_frames))
    if not frames:
        raise MediaInputError(f"video {path} contains no decodable frames: give a non-empty video file")
    return np.stack(frames)


def _check_exists(path: Path) -> None:
    if not path.is_file():
        raise MediaInputError(f"video {path} {'is a folder' if path.is_dir() else 'does not exist'}: give the "
                              "path of a video file with a face in it")


def _decode_av(path: Path, fps: float | None, max_frames: int | None) -> Iterator[np.ndarray]:
    import av  # PyAV (FFmpeg) is heavy: imported on first use

    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, ValueError) as e:
        raise MediaInputError(f"{path} could not be opened as media ({e}): give an mp4/mov/webm/mkv or image file") from e
    with container:
        if not container.streams.video:
            raise MediaInputError(f"{path} has no video stream: give a video file with a face in it")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        n_out = 0
        prev: np.ndarray | None = None
        prev_t = 0.0
        step = None if fps is None else Fraction(fps).limit_denominator(1001) ** -1
        rate = stream.average_rate or stream.guessed_rate
        src_dur = 1.0 / float(rate) if rate else float(step or 0.04)
        try:
            for frame in container.decode(stream):
                img = _upright(frame)
                if step is None:
                    yield img
                    n_out += 1
                    if max_frames is not None and n_out >= max_frames:
                        return
                    continue
                t = float(frame.time) if frame.time is not None else prev_t + src_dur
                # every output tick before this frame's start shows the previous frame
                while prev is not None and float(n_out * step) < t - 1e-6:
                    yield prev
                    n_out += 1
                    if max_frames is not None and n_out >= max_frames:
                        return
                prev, prev_t = img, t
            if prev is not None and step is not None:
                # the last frame is shown for one source frame duration
                while float(n_out * step) < prev_t + src_dur - 1e-6:
                    yield prev
                    n_out += 1
                    if max_frames is not None and n_out >= max_frames:
                        return
        except av.FFmpegError as e:
            if n_out == 0:
                raise MediaInputError(f"{path} could not be decoded ({e}): re-encode it as H.264 mp4") from e
            log.warning("%s: decoding stopped after %d frames (%s); using the frames read", path, n_out, e)


def _upright(frame) -> np.ndarray:
    """RGB pixels as displayed: phone videos store a display rotation (counterclockwise degrees) that
    players apply, as ffmpeg's autorotate does; faces must be upright for the landmark detector."""
    img = frame.to_ndarray(format="rgb24")
    quarter = int(round((getattr(frame, "rotation", 0) or 0) / 90)) % 4
    return np.ascontiguousarray(np.rot90(img, quarter)) if quarter else img
