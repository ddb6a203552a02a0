"""Speech the client sends: conversion to PCM16 mono and a small streaming resampler. No I/O.

The resampler interpolates linearly between neighbouring samples, without a low-pass filter:
cheap and seamless across chunks, but downsampling folds content above the new Nyquist
frequency back into the band (audible on music, minor on speech, where little energy lies above
8 kHz). Opening the session at the TTS's own rate (``AvatarClient(sample_rate=24000)``) avoids
resampling entirely; the server accepts every rate in ``wire.SAMPLE_RATES``.
"""

from __future__ import annotations

from math import gcd

import numpy as np

AudioLike = np.ndarray | bytes | bytearray | memoryview

INT16_SCALE = 32767.0  # float 1.0 <-> int16 32767 (symmetric; -1.0 -> -32767)


def as_mono(samples: np.ndarray) -> np.ndarray:
    """1-D samples; a 2-D ``(n, channels)`` array is averaged over its channels (float64 then)."""
    if samples.ndim == 1:
        return samples
    if samples.ndim == 2:
        if samples.shape[1] == 1:
            return samples[:, 0]
        return samples.astype(np.float64).mean(axis=1)
    raise ValueError(f"audio must be 1-D (mono) or 2-D (samples, channels); got shape {samples.shape}")


def pcm16_from_bytes(data: bytes | bytearray | memoryview) -> np.ndarray:
    """int16 samples of little-endian PCM16 bytes (a read-only view, no copy)."""
    raw = memoryview(data).cast("B")
    if len(raw) % 2:
        raise ValueError(f"PCM16 audio must have an even number of bytes; got {len(raw)}")
    return np.frombuffer(raw, dtype="<i2")


def to_float(samples: AudioLike) -> np.ndarray:
    """Mono samples as float64 in int16 units, from int16 arrays, float arrays in [-1, 1]
    (clipped) or PCM16 little-endian bytes."""
    if isinstance(samples, (bytes, bytearray, memoryview)):
        return pcm16_from_bytes(samples).astype(np.float64)
    arr = np.asarray(samples)
    if arr.dtype == np.int16:
        return as_mono(arr).astype(np.float64)
    if np.issubdtype(arr.dtype, np.floating):
        mono = np.nan_to_num(as_mono(arr).astype(np.float64), nan=0.0)
        return np.clip(mono, -1.0, 1.0) * INT16_SCALE
    raise ValueError(f"audio must be int16, float in [-1, 1] or PCM16 bytes; got an array of {arr.dtype}")


def to_int16(samples: np.ndarray) -> np.ndarray:
    """Round float samples in int16 units to int16, saturating."""
    return np.clip(np.rint(samples), -32768, 32767).astype(np.int16)


def to_pcm16(samples: AudioLike) -> np.ndarray:
    """Mono int16 samples of any accepted input (int16 and bytes unchanged in value)."""
    if isinstance(samples, (bytes, bytearray, memoryview)):
        return pcm16_from_bytes(samples)
    arr = np.asarray(samples)
    if arr.dtype == np.int16 and arr.ndim == 1:
        return arr
    return to_int16(to_float(arr))


class LinearResampler:
    """Streaming linear-interpolation resampler from ``src_rate`` to ``dst_rate``.

    Output sample ``k`` of the whole stream sits at input position ``k * src_rate / dst_rate``
    (exact integer arithmetic, so no drift over hours); the last input sample of each call is kept
    to interpolate across the next chunk boundary. Feeding a signal in chunks gives exactly the
    output of feeding it at once. N input samples give ``floor((N - 1) * dst / src) + 1`` outputs;
    when upsampling, the few outputs past the last input wait for the next sample, and ``flush()``
    (end of the stream) emits them holding the last value: ``ceil(N * dst / src)`` in all.
    """

    def __init__(self, src_rate: int, dst_rate: int) -> None:
        if src_rate <= 0 or dst_rate <= 0:
            raise ValueError(f"sample rates must be positive; got {src_rate} -> {dst_rate}")
        g = gcd(src_rate, dst_rate)
        self.src_rate, self.dst_rate = src_rate, dst_rate
        self._down, self._up = src_rate // g, dst_rate // g  # output k at input position k*down/up
        self._produced = 0  # outputs emitted so far
        self._base = 0  # stream index of self._tail[0]
        self._tail = np.zeros(0, dtype=np.float64)  # the last input sample seen

    def process(self, samples: np.ndarray) -> np.ndarray:
        """Resample the next chunk (1-D float64); returns the outputs it completes."""
        buf = np.concatenate([self._tail, np.asarray(samples, dtype=np.float64)])
        if len(buf) == 0:
            return buf
        last = self._base + len(buf) - 1  # stream index of the newest input sample
        end = (last * self._up) // self._down + 1  # outputs whose position is <= last
        k = np.arange(self._produced, end, dtype=np.int64)
        num = k * self._down
        i = num // self._up - self._base  # left neighbour, index into buf
        frac = (num % self._up) / self._up
        right = np.minimum(i + 1, len(buf) - 1)
        out = buf[i] * (1.0 - frac) + buf[right] * frac
        self._produced = end
        self._tail = buf[-1:].copy()
        self._base = last
        return out

    def flush(self) -> np.ndarray:
        """End of the stream: the outputs still due before its end (the last input held), then a
        fresh start."""
        count = self._base + len(self._tail)  # input samples seen
        end = -(-count * self._up // self._down)  # ceil: outputs whose position is < count
        out = np.full(max(end - self._produced, 0), self._tail[-1] if len(self._tail) else 0.0)
        self._produced, self._base, self._tail = 0, 0, np.zeros(0, dtype=np.float64)
        return out
