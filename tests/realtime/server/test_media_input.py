"""AudioInput (realtime.server.webrtc.send): the remote track drained into the 16 kHz encoder ring and the
48 kHz output ring, on the sender's timeline (lost packets become silence) and at the sender's level."""

from __future__ import annotations

import fractions

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError

from realtime.server.webrtc.receive import AudioInput
from realtime.session.timeline import AudioRing

PACKET = 960  # 20 ms at 48 kHz, as Opus packets decode


class ListTrack:
    def __init__(self, frames) -> None:
        self.frames = list(frames)

    async def recv(self):
        if not self.frames:
            raise MediaStreamError
        return self.frames.pop(0)


def packet(k: int, pts: int | None = None, layout: str = "stereo") -> av.AudioFrame:
    """Packet ``k`` of a constant level (k + 1) * 100, as aiortc's Opus decoder gives it (s16, 48 kHz,
    both channels equal for a mono microphone)."""
    channels = 2 if layout == "stereo" else 1
    frame = av.AudioFrame.from_ndarray(np.full((1, PACKET * channels), (k + 1) * 100, np.int16),
                                       format="s16", layout=layout)
    frame.sample_rate = 48000
    frame.pts = k * PACKET if pts is None else pts
    frame.time_base = fractions.Fraction(1, 48000)
    return frame


class Rings:
    """The input side of a LiveSession: its two rings, packet ends and gaps recorded."""

    def __init__(self) -> None:
        self.ring16, self.ring48 = AudioRing(16000, 4.0), AudioRing(48000, 4.0, np.int16)
        self.ends: list[int] = []

    def on_packet(self, end16: int, arrival: float) -> None:
        self.ends.append(end16)

    def push_gap(self, samples48: int) -> None:
        self.ring48.write_silence(samples48)
        self.ring16.write_silence(samples48 // 3)


async def drain(frames):
    sink = Rings()
    inp = AudioInput(ListTrack(frames), sink)
    await inp.run()
    return inp, sink.ring16, sink.ring48, sink.ends


def levels(ring: AudioRing, per_packet: int, n: int, scale: float) -> list[int]:
    """The level in the middle of each of ``n`` packet slots."""
    x = ring.read(0, ring.end)
    return [round(float(x[k * per_packet + per_packet // 2]) * scale) for k in range(n)]


async def test_lost_packets_become_silence_and_later_audio_keeps_its_place():
    sent = [0, 1, 2, 5, 6, 7]  # packets 3 and 4 lost
    inp, r16, r48, ends = await drain([packet(k) for k in sent])
    assert inp.packets == 6
    assert r48.end == 8 * PACKET  # the gap is kept: the rings stay on the sender's clock
    assert levels(r48, PACKET, 8, 1) == [100, 200, 300, 0, 0, 600, 700, 800]
    # the encoder ring has the same speech at the same level (the stereo decode downmixed to its
    # mean, not FFmpeg's +3 dB sum), 16 samples behind (the resampler's filter)
    assert levels(r16, PACKET // 3, 8, 32768) == [100, 200, 300, 0, 0, 600, 700, 800]
    assert 8 * PACKET // 3 - 32 <= r16.end <= 8 * PACKET // 3
    assert len(ends) == 6 and ends[-1] == r16.end and ends[3] - ends[2] == 3 * PACKET // 3  # 2 lost + 1


async def test_jitter_and_timestamp_jumps_are_not_filled():
    # a packet 5 ms late in its timestamps (under half a packet) and a sender restarting its clock
    # 20 s ahead: neither is a loss to fill
    frames = [packet(0), packet(1, pts=PACKET + 240), packet(2, pts=2 * PACKET + 240),
              packet(3, pts=48000 * 20)]
    _, r16, r48, _ = await drain(frames)
    assert r48.end == 4 * PACKET
    assert levels(r48, PACKET, 4, 1) == [100, 200, 300, 400]


async def test_a_mono_decode_gives_the_same_level():
    _, r16, r48, _ = await drain([packet(k, layout="mono") for k in range(3)])
    assert levels(r48, PACKET, 3, 1) == [100, 200, 300]
    assert levels(r16, PACKET // 3, 3, 32768) == [100, 200, 300]
