"""H.264 + AAC mp4 writer (PyAV): frames streamed in one at a time, the audio muxed at the end.

yuv420p needs even dimensions: odd frame sizes are padded by one replicated edge row/column (never
cropped, so no face pixel is lost). Video timestamps are exact frame counts in a 1/fps time base.

The rendered frames are bit-exact from run to run; the encoded bytes are not always: the same frames
occasionally encode to slightly different H.264 (x264 in PyAV's wheel, seen only on a process's first
encode after other heavy work, with or without threads), so compare decoded videos with a tolerance.
"""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path

import numpy as np

from realtime.audio.io import SAMPLE_RATE, resample
from realtime.errors import MediaInputError

log = logging.getLogger(__name__)

AUDIO_FRAME = 1024  # samples per AAC frame fed to the encoder
# Sampling rates AAC (MPEG-4 audio) defines; audio at any other rate is resampled to 48 kHz.
AAC_RATES = frozenset({8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000})
AAC_FALLBACK_RATE = 48000
AAC_BITRATE_PER_CHANNEL = 96_000  # transparent for speech at 44.1/48 kHz
DEFAULT_CRF = 18  # visually lossless, as LatentSync's ffmpeg call (-crf 18)


def _fps_fraction(fps: float) -> Fraction:
    return Fraction(fps).limit_denominator(1001)


def even_pad(frame: np.ndarray) -> np.ndarray:
    h, w = frame.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return frame
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


class VideoWriter:
    """``with VideoWriter(path, fps, audio=samples) as w: w.write(frame) ...``.

    The audio (float in [-1, 1] at ``audio_rate``: (samples,) mono or (channels, samples), one or
    two channels kept as given, more mixed down to mono) is encoded as AAC interleaved with the
    video: after each frame, the audio up to that frame's end time is muxed; the rest at ``close``.
    """

    def __init__(self, path: str | Path, fps: float = 25.0, audio: np.ndarray | None = None,
                 audio_rate: int = SAMPLE_RATE, crf: int = DEFAULT_CRF, audio_bitrate: int | None = None):
        import av  # PyAV (FFmpeg) is heavy: imported when a video is written

        self.path = Path(path)
        if not self.path.parent.exists():
            raise MediaInputError(f"output directory {self.path.parent} does not exist; create it or choose another --out")
        self.fps = _fps_fraction(fps)
        self.crf = crf
        self.audio, self.audio_rate = _aac_audio(audio, int(audio_rate))
        channels = 0 if self.audio is None else self.audio.shape[0]
        self.audio_bitrate = audio_bitrate or AAC_BITRATE_PER_CHANNEL * max(channels, 1)
        try:
            self._container = av.open(str(self.path), mode="w", format="mp4")
        except (OSError, av.FFmpegError) as e:
            raise MediaInputError(f"cannot write {self.path}: {e}") from None
        self._video = None
        self._astream = None
        self._audio_pos = 0
        self.frames_written = 0

    def _open_streams(self, h: int, w: int) -> None:
        self._video = self._container.add_stream("libx264", rate=self.fps)
        self._video.width, self._video.height = w, h
        self._video.pix_fmt = "yuv420p"
        self._video.time_base = 1 / self.fps
        self._video.options = {"crf": str(self.crf), "preset": "veryfast"}
        if self.audio is not None and self.audio.shape[1]:
            self._astream = self._container.add_stream("aac", rate=self.audio_rate)
            self._astream.layout = "stereo" if self.audio.shape[0] == 2 else "mono"
            self._astream.bit_rate = self.audio_bitrate

    def write(self, frame: np.ndarray) -> None:
        """One (H, W, 3) uint8 RGB frame."""
        import av  # PyAV (FFmpeg) is heavy: imported when a video is written

        frame = even_pad(np.ascontiguousarray(frame, dtype=np.uint8))
        if self._video is None:
            self._open_streams(*frame.shape[:2])
        elif (frame.shape[0], frame.shape[1]) != (self._video.height, self._video.width):
            raise ValueError(f"frame size {frame.shape[1]}x{frame.shape[0]} differs from the first frame's")
        vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
        vf.pts = self.frames_written
        vf.time_base = 1 / self.fps
        for packet in self._video.encode(vf):
            self._container.mux(packet)
        self.frames_written += 1
        self._push_audio(int(self.frames_written / self.fps * self.audio_rate))

    def _push_audio(self, until: int) -> None:
        import av  # PyAV (FFmpeg) is heavy: imported when a video is written

        if self._astream is None:
            return
        n = self.audio.shape[1]
        until = min(until, n)
        while self._audio_pos + AUDIO_FRAME <= until or (until == n and self._audio_pos < until):
            block = self.audio[:, self._audio_pos:self._audio_pos + AUDIO_FRAME]
            af = av.AudioFrame.from_ndarray(np.ascontiguousarray(block), format="fltp", layout=self._astream.layout.name)
            af.sample_rate = self.audio_rate
            af.pts = self._audio_pos
            af.time_base = Fraction(1, self.audio_rate)
            for packet in self._astream.encode(af):
                self._container.mux(packet)
            self._audio_pos += block.shape[1]

    def close(self) -> None:
        if self._container is None:
            return
        try:
            if self._video is not None:
                for packet in self._video.encode(None):
                    self._container.mux(packet)
            if self._astream is not None:
                self._push_audio(self.audio.shape[1])
                for packet in self._astream.encode(None):
                    self._container.mux(packet)
        finally:
            self._container.close()
            self._container = None
        log.info("wrote %s: %d frames at %s fps", self.path, self.frames_written, self.fps)

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _aac_audio(audio: np.ndarray | None, rate: int) -> tuple[np.ndarray | None, int]:
    """(channels, samples) float32 in [-1, 1] at a rate AAC has, one or two channels."""
    if audio is None:
        return None, rate
    a = np.asarray(audio, np.float32)
    a = a[None, :] if a.ndim == 1 else a
    if a.shape[0] > 2:
        a = a.mean(axis=0, keepdims=True)
    if rate not in AAC_RATES:
        a = np.stack([resample(c, rate, AAC_FALLBACK_RATE) for c in a])
        rate = AAC_FALLBACK_RATE
    return np.clip(a, -1.0, 1.0), rate
