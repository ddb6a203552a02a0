"""Outgoing audio encoded in the track: mono Opus packets on the shared clock, decodable by the
stereo Opus decoder a WebRTC receiver uses, installed only when Opus is negotiated."""

from __future__ import annotations

import fractions

import av
import numpy as np

from realtime.server.webrtc.send import AudioOutputTrack, OpusPacketEncoder
from realtime.session.timeline import AUDIO_OUT_SAMPLES, MediaClock

TB = fractions.Fraction(1, 48000)


def _tone(k: int) -> np.ndarray:
    t = np.arange(k * AUDIO_OUT_SAMPLES, (k + 1) * AUDIO_OUT_SAMPLES) / 48000.0
    return (8000 * np.sin(2 * np.pi * 440.0 * t)).astype(np.int16)


def _frame(samples: np.ndarray, k: int) -> av.AudioFrame:
    f = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
    f.sample_rate, f.pts, f.time_base = 48000, k * AUDIO_OUT_SAMPLES, TB
    return f


def test_one_packet_per_frame_on_the_frames_clock_and_stereo_decodable():
    enc = OpusPacketEncoder()
    dec = av.CodecContext.create("libopus", "r")  # as aiortc's receiver opens it: stereo s16
    dec.format, dec.layout, dec.sample_rate = "s16", "stereo", 48000
    sent, got, sizes = [], [], []
    for k in range(100, 150):  # a track joins its clock at some index: pts are absolute
        x = _tone(k)
        packet = enc.encode(_frame(x, k))
        assert packet.pts == k * AUDIO_OUT_SAMPLES and packet.time_base == TB
        sizes.append(packet.size)
        sent.append(x)
        for f in dec.decode(av.Packet(bytes(packet))):
            y = f.to_ndarray().reshape(-1, 2)
            assert np.array_equal(y[:, 0], y[:, 1])  # mono in both channels
            got.append(y[:, 0])
    sent, got = np.concatenate(sent).astype(float), np.concatenate(got).astype(float)
    assert len(got) == len(sent)
    # 48 kb/s: ~120 bytes per 20 ms packet (aiortc's own: 96 kb/s stereo)
    assert 60 <= np.median(sizes) <= 180, np.median(sizes)
    # the decoder's output lags by the encoder's look-ahead (pre-skip); past it the tone is clean
    lag = max(range(200, 400), key=lambda d: float(np.dot(sent[1000:-1000], got[1000 + d: len(got) - 1000 + d])))
    err = got[1000 + lag: -1000 + lag] - sent[1000:-1000]
    snr = 10 * np.log10(np.mean(sent[1000:-1000] ** 2) / np.mean(err**2))
    assert 300 <= lag <= 330, lag  # libopus' 6.5 ms pre-skip (312 samples at 48 kHz)
    assert snr > 15.0, snr


async def test_installed_only_when_opus_is_negotiated():
    from tests.fakes import negotiated

    results = {}
    for mime in ("audio/opus", "audio/PCMU"):
        track = AudioOutputTrack(MediaClock(), lambda k: np.zeros(AUDIO_OUT_SAMPLES, np.int16))
        async with negotiated(track, mime, direction="sendrecv") as (server, sender):
            results[mime] = (track.use_opus_packets(server, sender), track.encoder is not None)
    assert results == {"audio/opus": (True, True), "audio/PCMU": (False, False)}


async def test_track_returns_packets_once_encoding():
    clock = MediaClock()
    track = AudioOutputTrack(clock, _tone)
    first = await track.recv()
    assert isinstance(first, av.AudioFrame)  # no encoder: aiortc encodes the frame
    track.encoder = OpusPacketEncoder()
    second = await track.recv()
    assert isinstance(second, av.Packet) and second.pts == track.index * AUDIO_OUT_SAMPLES
    assert track.index == first.pts // AUDIO_OUT_SAMPLES + 1
