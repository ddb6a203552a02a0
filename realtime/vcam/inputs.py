"""Speech into the session: a file played in real time (``FileSource``), and the conversion of
48 kHz microphone blocks to the engine's two rates (``PacketConverter``).

A source's ``run(live)`` pushes 20 ms packets into a ``LiveSession`` until cancelled; the packet's
arrival is the time its last sample is due (the file) or was delivered (the microphone).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Protocol

import numpy as np

from realtime.audio.io import load_audio_native, resample
from realtime.session.live import LiveSession
from realtime.session.timeline import (AUDIO_OUT_RATE, AUDIO_OUT_SAMPLES, ENCODER_RATE, PACKET_SAMPLES,
                                       EncoderResampler, PacketSchedule)
from realtime.vcam.timeline import PACKET_S

log = logging.getLogger(__name__)

LEAD_IN_S = 0.4  # silence before the file: the session's time grid is fixed (200 ms) before the speech


class AudioSource(Protocol):
    name: str

    async def run(self, live: LiveSession) -> None: ...

    def close(self) -> None: ...


def to_int16(x: np.ndarray) -> np.ndarray:
    """Float samples in [-1, 1] -> int16 (clipped)."""
    return np.clip(np.round(np.asarray(x, np.float32) * 32768.0), -32768, 32767).astype(np.int16)


class PacketConverter:
    """48 kHz float blocks -> (16 kHz float for the encoder, 48 kHz int16 for the output)."""

    def __init__(self) -> None:
        self._to_encoder = EncoderResampler(AUDIO_OUT_RATE)

    def __call__(self, block48: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(block48, np.float32).reshape(-1)
        return self._to_encoder(x), to_int16(x)


class FileSource:
    """A speech file paced like a microphone: ``LEAD_IN_S`` of silence, the file, then silence (the
    avatar at rest) or, with ``loop``, the file again and again. Decoded once, up front: a bad file
    fails before any model loads."""

    def __init__(self, path: str | Path, loop: bool = False) -> None:
        decoded = load_audio_native(path)  # AudioInputError naming the file
        x16 = decoded.engine_input()
        x48 = to_int16(resample(decoded.samples.mean(axis=0), decoded.rate, AUDIO_OUT_RATE))
        self.packets = -(-len(x16) // PACKET_SAMPLES)  # whole 20 ms packets, the last one padded
        self.x16 = np.zeros(self.packets * PACKET_SAMPLES, np.float32)
        self.x16[: len(x16)] = x16
        self.x48 = np.zeros(self.packets * AUDIO_OUT_SAMPLES, np.int16)
        n48 = min(len(x48), len(self.x48))
        self.x48[:n48] = x48[:n48]
        self.loop = loop
        self.lead_in = round(LEAD_IN_S / PACKET_S)
        self.name = f"file {Path(path).name}" + (" (looped)" if loop else "")
        self.duration_s = len(x16) / ENCODER_RATE

    def packet(self, k: int) -> tuple[np.ndarray, np.ndarray] | None:
        """Packet ``k`` of the stream (lead-in, file, ...); None for silence."""
        i = k - self.lead_in
        if i < 0 or (i >= self.packets and not self.loop):
            return None
        i %= self.packets
        return (self.x16[i * PACKET_SAMPLES : (i + 1) * PACKET_SAMPLES],
                self.x48[i * AUDIO_OUT_SAMPLES : (i + 1) * AUDIO_OUT_SAMPLES])

    def ended(self, k: int) -> bool:
        """Packet ``k`` comes after the file's single play."""
        return not self.loop and k >= self.lead_in + self.packets

    async def run(self, live: LiveSession) -> None:
        now = live.clock.now
        schedule = PacketSchedule(now())
        silence = (np.zeros(PACKET_SAMPLES, np.float32), np.zeros(AUDIO_OUT_SAMPLES, np.int16))
        last, ended = -1, False
        while True:
            await asyncio.sleep(max(0.0, schedule.next_time() - now()))
            for k in schedule.due(now()):
                if k > last + 1:  # the loop stalled: the skipped time is silence, the timeline kept
                    live.push_gap((k - last - 1) * AUDIO_OUT_SAMPLES)
                if not ended and self.ended(k):
                    ended = True
                    live.end_of_utterance()
                    log.info("%s played; the avatar rests (Ctrl-C stops)", self.name)
                x16, x48 = self.packet(k) or silence
                live.push_audio(x16, x48, schedule.arrival(k))
                last = k

    def close(self) -> None:
        pass
