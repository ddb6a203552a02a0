"""Audio input: any file PyAV (FFmpeg) can read, or an array, -> float32 mono 16 kHz.

Numerics follow openai-whisper's ``load_audio`` (which LatentSync uses): 16-bit input becomes
``x / 32768`` exactly, several channels are averaged (what FFmpeg's ``-ac 1`` does for stereo
into s16), and other rates go through FFmpeg's default resampler (swresample, as ``-ar 16000``).

Every problem a user can cause (missing, empty, truncated, unreadable, non-finite) is an
``AudioInputError`` naming the input; nothing here lets an FFmpeg error escape.
"""

from __future__ import annotations

import logging
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from realtime.errors import AudioInputError

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000  # Whisper's input rate: 16 kHz mono
# A file whose decoded audio falls short of its declared duration by more than this is truncated.
# Generous enough for codec priming/padding (an MP3 or AAC frame is ~20-60 ms).
TRUNCATION_TOLERANCE_S = 0.25


def _describe(source) -> str:
    return f"audio file {str(source)!r}" if isinstance(source, (str, os.PathLike)) else "audio array"


def _check_finite(x: np.ndarray, what: str) -> np.ndarray:
    if not np.all(np.isfinite(x)):
        bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
        raise AudioInputError(f"{what} contains {bad} non-finite samples (NaN or infinity); re-export it as valid PCM audio")
    return x


def resample(x: np.ndarray, rate: int, target_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Mono float32 ``x`` at ``rate`` -> ``target_rate`` with FFmpeg's default resampler."""
    import av  # PyAV (FFmpeg) is heavy: only resampling and decoding need it

    x = np.ascontiguousarray(x, dtype=np.float32)
    if rate == target_rate or x.size == 0:
        return x
    frame = av.AudioFrame.from_ndarray(x[None, :], format="flt", layout="mono")
    frame.sample_rate = int(rate)
    resampler = av.AudioResampler(format="flt", layout="mono", rate=int(target_rate))
    parts = [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
    parts += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]  # flush the filter delay
    return np.concatenate(parts).astype(np.float32, copy=False) if parts else np.zeros(0, np.float32)


def to_mono(x: np.ndarray) -> np.ndarray:
    """Average channels. 2-D arrays are (samples, channels) or (channels, samples): the short axis is channels."""
    x = np.asarray(x)
    if x.ndim == 1:
        return x
    if x.ndim != 2:
        raise AudioInputError(f"audio array must be 1-D or 2-D (samples x channels), got shape {x.shape}")
    ch_axis = 0 if x.shape[0] < x.shape[1] else 1
    return x.mean(axis=ch_axis)


def _from_array(x: np.ndarray, sample_rate: int | None) -> np.ndarray:
    what = "audio array"
    x = np.asarray(x)
    if x.dtype.kind in "iu":
        # Integer PCM: scale to [-1, 1) like whisper's s16 -> float conversion.
        x = x.astype(np.float32) / float(2 ** (8 * x.dtype.itemsize - 1))
    elif x.dtype.kind != "f":
        raise AudioInputError(f"{what} has dtype {x.dtype}; pass float or integer PCM samples")
    x = to_mono(x).astype(np.float32, copy=False)
    if x.size == 0:
        raise AudioInputError(f"{what} is empty; pass at least one sample")
    _check_finite(x, what)
    return resample(x, int(sample_rate or SAMPLE_RATE))


def _wav_missing_bytes(path: Path) -> int:
    """Bytes a RIFF/WAVE file's ``data`` chunk declares beyond the end of the file (0 if complete).

    FFmpeg clamps a WAV's duration to the file size, so a cut-off WAV decodes "successfully";
    the header is the only place the loss shows. Sizes 0 and 0xFFFFFFFF mean "unknown" (streamed).
    """
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return 0
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            chunk = f.read(8)
            cid, csize = chunk[:4], struct.unpack("<I", chunk[4:8])[0]
            if cid == b"data":
                if csize in (0, 0xFFFFFFFF):
                    return 0
                return max(0, pos + 8 + csize - size)
            pos += 8 + csize + (csize & 1)  # chunks are word-aligned
    return 0


@dataclass(frozen=True)
class DecodedAudio:
    """A file's audio as it is, for output: (channels, samples) float32 in [-1, 1] at its own rate."""

    samples: np.ndarray
    rate: int
    name: str  # how errors name it (the file's path)

    def engine_input(self) -> np.ndarray:
        """The engine's 16 kHz mono of the same audio (what ``load_audio`` gives for the file)."""
        if self.rate != SAMPLE_RATE:
            log.debug("resampling %s from %d Hz to %d Hz", self.name, self.rate, SAMPLE_RATE)
        return resample(self.samples.mean(axis=0), self.rate)


def load_audio_native(source: str | os.PathLike) -> DecodedAudio:
    """A file's audio at its own rate and channels (stereo and more kept as they are); raises
    ``AudioInputError`` as ``load_audio`` does."""
    import av  # PyAV (FFmpeg) is heavy: only decoding needs it

    path = Path(source)
    what = _describe(path)
    if not path.exists():
        raise AudioInputError(f"{what} does not exist; check the path")
    if path.is_dir():
        raise AudioInputError(f"{what} is a directory; pass an audio or video file")
    if path.stat().st_size == 0:
        raise AudioInputError(f"{what} is empty (0 bytes); pass a file that contains audio")
    missing = _wav_missing_bytes(path)
    if missing:
        raise AudioInputError(f"{what} is truncated: its WAV header declares {missing} more bytes of audio than the file holds; re-export or re-download it")
    try:
        with av.open(str(path), mode="r") as container:
            if not container.streams.audio:
                raise AudioInputError(f"{what} has no audio stream; pass a file with sound")
            stream = container.streams.audio[0]
            rate = stream.rate
            declared_s = float(stream.duration * stream.time_base) if stream.duration and stream.time_base else None
            chunks = []
            for frame in container.decode(stream):
                # (channels, samples) for planar formats, (1, samples*channels) for packed ones.
                a = frame.to_ndarray()
                if not frame.format.is_planar:
                    a = a.reshape(-1, len(frame.layout.channels)).T
                if a.dtype.kind in "iu":
                    a = a.astype(np.float32) / float(2 ** (8 * a.dtype.itemsize - 1))
                chunks.append(a.astype(np.float32, copy=False))
    except AudioInputError:
        raise
    except (av.FFmpegError, OSError, ValueError, EOFError, IndexError) as e:
        raise AudioInputError(f"{what} cannot be decoded, it may be corrupt or truncated ({type(e).__name__}: {e}); pass a readable audio file (wav, mp3, flac, ogg, m4a, ...)") from None
    x = np.concatenate(chunks, axis=1) if chunks else np.zeros((1, 0), np.float32)
    if x.size == 0:
        raise AudioInputError(f"{what} contains no audio samples; pass a file with sound")
    got_s = x.shape[1] / rate
    if declared_s is not None and declared_s - got_s > TRUNCATION_TOLERANCE_S:
        raise AudioInputError(
            f"{what} is truncated: its header declares {declared_s:.2f} s but only {got_s:.2f} s could be decoded; re-export or re-download it"
        )
    _check_finite(x, what)
    return DecodedAudio(x, int(rate), str(path))


def load_audio(source, sample_rate: int | None = None) -> np.ndarray:
    """Load audio as float32 mono at 16 kHz.

    ``source`` is a path (anything FFmpeg reads: wav, mp3, flac, ogg, m4a, a video's sound track)
    or an array of samples: 1-D, or 2-D with channels on the short axis; float in [-1, 1] or
    integer PCM. ``sample_rate`` is the rate of an array (default 16 kHz); files carry their own.
    Raises ``AudioInputError`` naming the input for missing, empty, truncated, unreadable or
    non-finite audio.
    """
    if isinstance(source, (str, os.PathLike)):
        return load_audio_native(source).engine_input()
    if isinstance(source, (bytes, bytearray, memoryview)):
        raise AudioInputError("raw bytes are not an audio array; pass a file path or a numpy array of samples")
    return _from_array(source, sample_rate)
