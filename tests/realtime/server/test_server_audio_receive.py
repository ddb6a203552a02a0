"""Incoming audio decoded on arrival (realtime/server/webrtc/receive.py): the pass-through buffer, the
inline decoder, and on a real aiortc loopback pair the 80 ms that aiortc's audio jitter buffer
holds every packet for, gone."""

from __future__ import annotations

import asyncio
import fractions
import statistics
import time

import av
import numpy as np
import pytest

from realtime.server.webrtc.receive import (InlineDecodeQueue, PassThroughJitterBuffer, install_direct_audio_receive,
                                            receiver_of)


class _Pkt:
    def __init__(self, seq: int, ts: int, data: bytes = b"x") -> None:
        self.sequence_number, self.timestamp, self._data = seq, ts, data


def test_pass_through_releases_each_packet_at_once_and_drops_old_ones():
    jb = PassThroughJitterBuffer()
    out = []
    # in order across the 16-bit wrap, then a duplicate, a reordered old one, and a jump (loss)
    for seq in (65534, 65535, 0, 1, 1, 65535, 5):
        pli, frame = jb.add(_Pkt(seq, seq * 960 % 2**32, bytes([seq % 256])))
        assert pli is False
        out.append(None if frame is None else (frame.timestamp, frame.data))
    assert [o is not None for o in out] == [True, True, True, True, False, False, True]
    assert out[2] == (0, b"\x00") and out[6] == (5 * 960, b"\x05")
    assert jb.dropped == 2


def test_a_packet_flood_is_dropped_before_decoding_and_real_time_passes():
    from realtime.server.webrtc.receive import BURST_PACKETS, MAX_PACKETS_PER_S

    t = [0.0]
    jb = PassThroughJitterBuffer(clock=lambda: t[0])
    seq = 0

    def send(n: int, dt: float) -> int:
        nonlocal seq
        passed = 0
        for _ in range(n):
            t[0] += dt
            seq += 1
            passed += jb.add(_Pkt(seq % 65536, seq * 960))[1] is not None
        return passed

    assert send(500, 0.02) == 500 and jb.flooded == 0  # 50 packets/s: all through
    assert send(500, 0.01) == 500  # 10 ms Opus frames: all through
    flood = send(5000, 0.0001)  # 10000 packets/s for 0.5 s
    assert flood <= BURST_PACKETS + 0.5 * MAX_PACKETS_PER_S + 1 and jb.flooded == 5000 - flood
    t[0] += 1.0  # the flood stops; a real-time sender goes on unharmed
    assert send(200, 0.02) == 200


def _opus_packets(n: int, freq: float = 440.0) -> list[bytes]:
    enc = av.CodecContext.create("libopus", "w")
    enc.bit_rate, enc.format, enc.layout, enc.sample_rate = 64000, "s16", "stereo", 48000
    enc.time_base = fractions.Fraction(1, 48000)
    t = np.arange(960 * n) / 48000
    x = (np.sin(2 * np.pi * freq * t) * 8000).astype(np.int16)
    packets = []
    for k in range(n):
        f = av.AudioFrame.from_ndarray(np.repeat(x[None, k * 960:(k + 1) * 960], 2, axis=0).T.reshape(1, -1).copy(),
                                       format="s16", layout="stereo")
        f.sample_rate, f.pts, f.time_base = 48000, k * 960, enc.time_base
        packets += [bytes(p) for p in enc.encode(f)]
    return packets


async def test_inline_decode_puts_frames_on_the_track_queue_and_survives_bad_packets():
    from aiortc.jitterbuffer import JitterFrame
    from aiortc.rtcrtpparameters import RTCRtpCodecParameters

    codec = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2, payloadType=111)
    q: asyncio.Queue = asyncio.Queue()
    dq = InlineDecodeQueue(q)
    packets = _opus_packets(12)
    assert len(packets) >= 10
    for k, p in enumerate(packets[:5]):
        dq.put((codec, JitterFrame(p, k * 960)))
    assert q.qsize() == dq.decoded == 5  # decoded synchronously, no thread involved
    dq.put((codec, JitterFrame(b"\xff" * 3, 5 * 960)))  # garbage: counted, nothing raised
    for k, p in enumerate(packets[6:9], start=6):
        dq.put((codec, JitterFrame(p, k * 960)))
    frames = [q.get_nowait() for _ in range(q.qsize())]
    assert all(f.samples == 960 and f.sample_rate == 48000 for f in frames)
    assert dq.errors == 1 and len(frames) == 8
    loud = frames[-1].to_ndarray().astype(np.float64)
    assert np.sqrt(np.mean(loud ** 2)) > 1000  # a real decoded tone, not silence
    # the receiver stopping (put None) releases aiortc's decoder thread waiting in get()
    dq.put(None)
    assert dq.get(timeout=1.0) is None


async def _one_way_delays(direct: bool, seconds: float = 1.6) -> tuple[list[float], bool]:
    """Per 20 ms frame: its receipt by the remote track minus its hand-off to the sender, on a
    loopback aiortc pair; and whether the receiver was switched to the direct path."""
    from aiortc import RTCPeerConnection
    from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

    sent: dict[int, float] = {}

    class Tone(MediaStreamTrack):
        kind = "audio"

        def __init__(self) -> None:
            super().__init__()
            self.k, self.t0 = 0, None

        async def recv(self):
            if self.t0 is None:
                self.t0 = time.monotonic()
            target = self.t0 + self.k * 0.02
            await asyncio.sleep(max(0.0, target - time.monotonic()))
            x = (np.sin(np.arange(960) * 0.06) * 6000).astype(np.int16)[None]
            f = av.AudioFrame.from_ndarray(x, format="s16", layout="mono")
            f.sample_rate, f.pts, f.time_base = 48000, self.k * 960, fractions.Fraction(1, 48000)
            sent[self.k] = time.monotonic()
            self.k += 1
            return f

    a, b = RTCPeerConnection(), RTCPeerConnection()
    got: list[tuple[int, float]] = []
    installed = {}
    done = asyncio.Event()
    tasks: list[asyncio.Task] = []

    @b.on("track")
    def on_track(track):
        if direct:
            installed["ok"] = install_direct_audio_receive(receiver_of(b, track))

        async def drain():
            while not done.is_set():
                try:
                    f = await track.recv()
                except MediaStreamError:
                    return
                got.append((f.pts, time.monotonic()))

        tasks.append(asyncio.ensure_future(drain()))

    try:
        a.addTrack(Tone())
        await a.setLocalDescription(await a.createOffer())
        await b.setRemoteDescription(a.localDescription)
        await b.setLocalDescription(await b.createAnswer())
        await a.setRemoteDescription(b.localDescription)
        await asyncio.sleep(seconds)
    finally:
        done.set()
        await a.close()
        await b.close()
        await asyncio.gather(*tasks, return_exceptions=True)
    # the receiver's timestamps start at 0 with the first packet it saw: align on the sender's
    # first frame number that arrived (pts / 960 = sender frame - first)
    if not got:
        return [], installed.get("ok", False)
    first = min(k for k in sent if sent[k] <= got[0][1])
    delays = [t - sent[first + pts // 960] for pts, t in got if first + pts // 960 in sent]
    return delays[5:], installed.get("ok", False)


@pytest.mark.usefixtures("loopback_ice")
async def test_direct_receive_removes_the_jitter_buffer_hold_on_loopback():
    default, _ = await _one_way_delays(direct=False)
    direct, installed = await _one_way_delays(direct=True)
    assert installed
    assert len(default) > 30 and len(direct) > 30
    d_med, x_med = statistics.median(default), statistics.median(direct)
    # aiortc holds each packet until the 4th after it arrived: ~80 ms; decoded on arrival: a few ms
    assert d_med > 0.06, d_med
    assert x_med < 0.03, x_med
    assert d_med - x_med > 0.05


async def test_install_refuses_video_and_started_receivers():
    from aiortc import RTCPeerConnection

    class _Track:
        kind = "video"

    class _Rx:
        track = _Track()

    assert install_direct_audio_receive(_Rx()) is False
    assert install_direct_audio_receive(None) is False
    a, b = RTCPeerConnection(), RTCPeerConnection()
    try:
        a.addTransceiver("audio", direction="sendonly")
        await a.setLocalDescription(await a.createOffer())
        await b.setRemoteDescription(a.localDescription)
        rx = b.getTransceivers()[0].receiver
        setattr(rx, "_RTCRtpReceiver__decoder_thread", object())  # as if the connection had started it
        assert install_direct_audio_receive(rx) is False
        assert type(getattr(rx, "_RTCRtpReceiver__jitter_buffer")).__name__ == "JitterBuffer"
        setattr(rx, "_RTCRtpReceiver__decoder_thread", None)
        assert install_direct_audio_receive(rx) is True
        assert isinstance(getattr(rx, "_RTCRtpReceiver__jitter_buffer"), PassThroughJitterBuffer)
    finally:
        await a.close()
        await b.close()


async def test_config_can_keep_aiortcs_audio_paths():
    from clients.webrtc_peer import WebRTCPeer
    from realtime.server.app import RealtimeServer
    from tests.fakes import make_config, make_engine

    engine = make_engine()
    async with RealtimeServer(make_config(direct_audio_receive=False, audio_encode_in_track=False), engine) as server:
        peer = WebRTCPeer(f"ws://127.0.0.1:{server.port}/ws")
        await peer.connect()
        await peer.wait_connected()
        await asyncio.sleep(0.3)
        session = next(iter(server.sessions))
        rx = next(t.receiver for t in session.pc.getTransceivers() if t.kind == "audio")
        assert type(getattr(rx, "_RTCRtpReceiver__jitter_buffer")).__name__ == "JitterBuffer"
        assert session.audio_input.packets > 5  # audio still flows, through aiortc's own path
        assert session.audio.encoder is None and peer.audio_frames > 5  # aiortc encodes what is sent
        await peer.close()
    engine.close()
