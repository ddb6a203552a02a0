"""The session's audio and its clock: fixed-size rings addressed by absolute sample index, the
engine's two rates, the one clock every output is paced on, and what transports that make their
own input packets share (their 20 ms schedule, the stream resampler to the encoder's rate).

Speech is kept twice: at 16 kHz float for the encoder (Whisper's rate) and at 48 kHz int16 for
the speech that goes back out with the frames (Opus' native rate, so no resampling on the way out).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable

import av
import numpy as np

from realtime.audio.io import SAMPLE_RATE as ENCODER_RATE  # 16 kHz: what the encoder reads

AUDIO_OUT_RATE = 48000  # the speech that goes back out (Opus' native rate)
AUDIO_PTIME = 0.020  # 20 ms output audio frames, as WebRTC packetises Opus
AUDIO_OUT_SAMPLES = int(AUDIO_OUT_RATE * AUDIO_PTIME)  # 960
PACKET_SAMPLES = int(ENCODER_RATE * AUDIO_PTIME)  # 320: one 20 ms packet at the encoder's rate
MAX_CATCH_UP_PACKETS = 25  # after a stall a paced input hands over at most 0.5 s at once


class AudioRing:
    """Fixed-capacity audio buffer addressed by absolute sample index; old audio is overwritten."""

    def __init__(self, rate: int, seconds: float, dtype: type = np.float32) -> None:
        self.rate = rate
        self.capacity = int(rate * seconds)
        self.buf = np.zeros(self.capacity, dtype=dtype)
        self.end = 0  # absolute index one past the newest sample
        self.valid_from = 0  # absolute index of the oldest sample still meaningful (after clear())

    def write(self, samples: np.ndarray) -> None:
        samples = np.asarray(samples, dtype=self.buf.dtype).reshape(-1)
        total = len(samples)
        samples = samples[-self.capacity :]  # more than the ring holds: only the newest fit
        n = len(samples)
        i = (self.end + total - n) % self.capacity
        first = min(n, self.capacity - i)
        self.buf[i : i + first] = samples[:first]
        self.buf[: n - first] = samples[first:]
        self.end += total

    def write_silence(self, n: int) -> None:
        n = int(n)
        if n >= self.capacity:
            self.buf[:] = 0
            self.end += n
            return
        self.write(np.zeros(n, dtype=self.buf.dtype))

    def read(self, start: int, n: int) -> np.ndarray:
        """Samples [start, start+n); zeros where audio is missing, overwritten, cleared or in the future."""
        if n < 0:
            raise ValueError(f"AudioRing.read: negative length {n} (start {start}, end {self.end})")
        out = np.zeros(n, dtype=self.buf.dtype)
        lo = max(start, self.valid_from, self.end - self.capacity)
        hi = min(start + n, self.end)
        if hi > lo:  # at most two slices of the ring (no index arrays: this runs on the event loop)
            i, n_valid = lo % self.capacity, hi - lo
            first = min(n_valid, self.capacity - i)
            out[lo - start : lo - start + first] = self.buf[i : i + first]
            out[lo - start + first : hi - start] = self.buf[: n_valid - first]
        return out

    def clear(self) -> None:
        """Drops everything buffered (interrupt); later writes continue the same timeline."""
        self.valid_from = self.end


class MediaClock:
    """The one clock both outgoing tracks are paced on; started by whichever track asks first."""

    def __init__(self, now: Callable[[], float] = time.monotonic) -> None:
        self.now = now
        self.t0: float | None = None
        self.started = asyncio.Event()

    def start(self) -> float:
        if self.t0 is None:
            self.t0 = self.now()
            self.started.set()
        return self.t0

    def first_index(self, period: float, offset: float = 0.0) -> int:
        """Index of the first period boundary not yet passed: a track starting late joins on schedule."""
        t0 = self.start()
        return max(0, math.ceil((self.now() - t0 - offset) / period - 1e-9))

    async def wait_for(self, index: int, period: float, offset: float = 0.0) -> float:
        """Sleeps until ``t0 + offset + index * period``; returns how late we are (seconds)."""
        target = self.start() + offset + index * period
        delay = target - self.now()
        if delay > 0:
            await asyncio.sleep(delay)
        return self.now() - target

    async def next_due(self, prev: int | None, period: float, offset: float = 0.0,
                       rejoin_after: int = 2) -> tuple[int, int]:
        """For an output paced on this clock: waits for the index after ``prev`` (the first not yet
        passed when ``prev`` is None) and returns ``(index, skipped)``. More than ``rejoin_after``
        periods late (the sender stalled) it skips to the schedule instead of bursting."""
        index = self.first_index(period, offset) if prev is None else prev + 1
        late = await self.wait_for(index, period, offset)
        skipped = int(late / period) if late > rejoin_after * period else 0
        return index + skipped, skipped


class PacketSchedule:
    """Input packets of 20 ms on an absolute schedule: packet ``k`` is due, and its last sample
    arrives, at ``start + (k + 1) * AUDIO_PTIME``."""

    def __init__(self, start: float) -> None:
        self.start = start
        self.next = 0  # the first packet not yet handed over
        self.skipped = 0

    def arrival(self, k: int) -> float:
        return self.start + (k + 1) * AUDIO_PTIME

    def next_time(self) -> float:
        return self.arrival(self.next)

    def due(self, now: float) -> range:
        """Packets due at ``now``, in order; after a stall only the last ``MAX_CATCH_UP_PACKETS``
        (the ones before are skipped: the caller may keep the timeline with silence in their place)."""
        due = int((now - self.start) / AUDIO_PTIME + 1e-9)
        if due - self.next > MAX_CATCH_UP_PACKETS:
            self.skipped += due - MAX_CATCH_UP_PACKETS - self.next
            self.next = due - MAX_CATCH_UP_PACKETS
        out = range(self.next, max(self.next, due))
        self.next = out.stop
        return out


class EncoderResampler:
    """Mono blocks at ``rate`` (int16, or float in [-1, 1]) -> 16 kHz float32 for the encoder, in
    order; libswresample keeps its filter state between blocks (no edges at block boundaries)."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._resample = av.AudioResampler(format="flt", layout="mono", rate=ENCODER_RATE)

    def __call__(self, block: np.ndarray) -> np.ndarray:
        x = np.asarray(block)
        fmt = "s16" if x.dtype == np.int16 else "flt"
        x = np.ascontiguousarray(x if fmt == "s16" else x.astype(np.float32, copy=False)).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(x, format=fmt, layout="mono")
        frame.sample_rate = self.rate
        parts = [f.to_ndarray().reshape(-1) for f in self._resample.resample(frame)]
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)
