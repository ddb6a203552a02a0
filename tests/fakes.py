"""Test stand-ins: a synthetic 128x128 avatar, a renderer that draws the mouth opening as a dark
rectangle, and an encoder whose per-frame block is the loudness around the frame. They keep the
server tests about the server (timing, queues, protocol), fast on 2 cores."""

from __future__ import annotations

import contextlib

import numpy as np

from realtime.render.base import FrameEvent, RenderedChunk, Renderer, RenderState, check_chunk

SIZE = 128
MOUTH = (slice(80, 104), slice(44, 84))  # rows, cols of the mouth region


class FakeAvatar:
    size = (SIZE, SIZE)

    def source_index(self, i: int) -> int:
        return i

    def has_face(self, i: int) -> bool:
        return True

    def __init__(self) -> None:
        y, x = np.mgrid[0:SIZE, 0:SIZE]
        face = np.stack([120 + 60 * (x / SIZE), 110 + 40 * (y / SIZE), 100 + 0 * x], -1)
        self._img = face.astype(np.uint8)
        self._img[MOUTH[0].start + 10 : MOUTH[0].start + 13, MOUTH[1]] = (90, 40, 40)  # closed lips

    def frame(self, i: int) -> np.ndarray:
        return self._img


class FakeRenderer(Renderer):
    name = "fake"

    def __init__(self, gain: float = 40.0) -> None:
        self.gain = gain
        self.calls: list[int] = []

    def new_state(self, seed: int = 0) -> RenderState:
        return RenderState(seed=seed)

    def render_chunk(self, avatar, frame_indices, audio_blocks, state) -> RenderedChunk:
        """The mouth drawn open by the block's level; each frame's event says how open (as the
        "aa" viseme's probability)."""
        check_chunk(frame_indices, audio_blocks)
        self.calls.append(len(frame_indices))
        out, events = [], []
        for idx, block in zip(frame_indices, audio_blocks):
            img = avatar.frame(int(idx)).copy()
            level = float(np.clip(float(block.mean()) * self.gain, 0, 1))
            opening = int(level * (MOUTH[0].stop - MOUTH[0].start))
            if opening:
                top = MOUTH[0].start + 12 - opening // 2
                img[top : top + opening, MOUTH[1]] = (20, 5, 5)
            out.append(img)
            events.append(FrameEvent(int(idx), visemes={"sil": 1.0 - level, "aa": level}))
        return RenderedChunk(frames=out, events=events)


class FakeEncoder:
    """push(16 kHz float32) -> [(frame, block)], each block emitted once ``lookahead_s`` of audio past
    the frame centre has arrived; block value = RMS of +-40 ms around the centre."""

    def __init__(self, fps: int = 25, lookahead_s: float = 0.12) -> None:
        self.fps, self.lookahead = fps, lookahead_s
        self.light = False
        self.reset()

    def reset(self) -> None:
        self.audio = np.zeros(0, np.float32)
        self.next = 0

    def push(self, samples: np.ndarray) -> list[tuple[int, np.ndarray]]:
        self.audio = np.concatenate([self.audio, np.asarray(samples, np.float32)])
        out = []
        while (self.next / self.fps + self.lookahead) * 16000 <= len(self.audio):
            c = int(self.next * 16000 / self.fps)
            w = self.audio[max(0, c - 640) : c + 640]
            rms = float(np.sqrt(np.mean(w.astype(np.float64) ** 2))) if len(w) else 0.0
            out.append((self.next, np.full((50, 384), rms, np.float32)))
            self.next += 1
        return out

    def flush(self) -> list:
        return []

    def release(self) -> None:
        pass


def mouth_darkness(img: np.ndarray, rest: np.ndarray) -> float:
    """Mean absolute difference in the mouth region against the rest frame (gray levels)."""
    a = img[MOUTH].astype(np.float32).mean(-1)
    b = rest[MOUTH].astype(np.float32).mean(-1)
    return float(np.abs(a - b).mean())


def speech_like(seconds: float, rate: int = 48000, seed: int = 0) -> np.ndarray:
    """Loud voiced buzz (150 Hz harmonics, syllable envelope): float32 in [-1, 1]."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    buzz = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 8))
    env = 0.6 + 0.4 * np.sin(2 * np.pi * 4 * t) ** 2
    x = 0.3 * buzz * env + 0.01 * rng.standard_normal(len(t))
    return (x / np.abs(x).max() * 0.7).astype(np.float32)


@contextlib.asynccontextmanager
async def negotiated(track, mime: str, direction: str = "recvonly"):
    """A server peer connection sending ``track`` with only ``mime`` (e.g. "video/H264") offered in
    its answer to a fresh client's offer; yields ``(server_pc, sender)``, closes both after."""
    from aiortc import RTCPeerConnection, RTCRtpSender

    client, server = RTCPeerConnection(), RTCPeerConnection()
    try:
        client.addTransceiver(track.kind, direction=direction)
        await client.setLocalDescription(await client.createOffer())
        sender = server.addTrack(track)
        caps = RTCRtpSender.getCapabilities(track.kind).codecs
        server.getTransceivers()[0].setCodecPreferences([c for c in caps if c.mimeType == mime])
        await server.setRemoteDescription(client.localDescription)
        await server.setLocalDescription(await server.createAnswer())
        yield server, sender
    finally:
        await client.close()
        await server.close()


def make_config(**kw):
    """A server config for tests: loopback, port 0, short timeouts."""
    from realtime.server.config import LimitsConfig, RealtimeConfig

    limits = LimitsConfig(ice_timeout_s=2.0, teardown_timeout_s=1.0, ping_interval_s=1.0,
                          close_timeout_s=0.5)
    base = dict(host="127.0.0.1", port=0, max_sessions=2, limits=limits)
    base.update(kw)
    return RealtimeConfig(**base)


def make_engine(renderer=None):
    from realtime.inference.worker import InferenceWorker
    from realtime.session.shared import Engine

    renderer = renderer or FakeRenderer()
    return Engine(
        avatar=FakeAvatar(),
        renderer_factory=lambda lookahead: renderer,
        encoder_factory=lambda lookahead, fps: FakeEncoder(fps, 0.12 if lookahead == "full" else 0.04),
        worker=InferenceWorker(),
    )


@contextlib.asynccontextmanager
async def running_server(config=None, engine=None, access=None):
    """A started server (``make_config()`` and ``make_engine()`` unless given) on a free loopback port;
    the server and its engine are closed after, also when the test fails."""
    from realtime.server.app import RealtimeServer  # aiortc and aiohttp: only the server tests pay for them

    engine = engine or make_engine()
    srv = RealtimeServer(config or make_config(), engine, access=access)
    try:
        await srv.start()
        yield srv
    finally:
        await srv.close()
        engine.close()


async def browser_offer_sdp() -> str:
    """A browser-like offer (audio sendrecv, video recvonly, every candidate gathered) from a peer
    connection that is closed at once: the server answers it with a peer that never connects."""
    from aiortc import RTCConfiguration, RTCPeerConnection

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("audio", direction="sendrecv")
    pc.addTransceiver("video", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp
