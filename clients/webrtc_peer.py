"""A scriptable aiortc client for the /ws WebRTC protocol: sends audio you choose, records what comes back.

Used by the server tests and `syncvid bench realtime`; also handy by hand::

    peer = WebRTCPeer("ws://127.0.0.1:8080/ws")
    await peer.connect()
    peer.play(samples_48k_int16)       # queued, sent in real time as 20 ms frames
    ...; await peer.close()

Every received video/audio frame is handed to ``on_video(t, rgb)`` / ``on_audio(t, int16)`` with its
arrival time (``time.monotonic()``); by default video frames are kept in ``peer.video``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
import time
from collections.abc import Callable

import av
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

RATE = 48000
PTIME = 0.02
SAMPLES = int(RATE * PTIME)


class QueuedAudioTrack(MediaStreamTrack):
    """48 kHz mono audio paced in real time; plays queued samples, silence otherwise."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._buf = np.zeros(0, np.int16)
        self._t0: float | None = None
        self._n = 0
        self.sent_samples = 0  # samples of queued audio already sent
        self.queued_samples = 0

    def play(self, samples: np.ndarray) -> float:
        """Queues int16 (or float in [-1, 1]) samples; returns the time their first sample is sent."""
        s = np.asarray(samples)
        if s.dtype != np.int16:
            s = (np.clip(s, -1, 1) * 32767).astype(np.int16)
        wait = len(self._buf) / RATE
        self._buf = np.concatenate([self._buf, s.reshape(-1)])
        self.queued_samples += len(s)
        t0 = self._t0 if self._t0 is not None else time.monotonic()
        next_frame = t0 + self._n * PTIME
        return max(next_frame, time.monotonic()) + wait

    def clear(self) -> None:
        self._buf = np.zeros(0, np.int16)

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._t0 is None:
            self._t0 = time.monotonic()
        target = self._t0 + self._n * PTIME
        delay = target - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        chunk = np.zeros(SAMPLES, np.int16)
        take = min(SAMPLES, len(self._buf))
        chunk[:take] = self._buf[:take]
        self._buf = self._buf[take:]
        self.sent_samples += take
        frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = self._n * SAMPLES
        frame.time_base = fractions.Fraction(1, RATE)
        self._n += 1
        return frame


def _luma(frame: av.VideoFrame) -> np.ndarray:
    if frame.format.name not in ("yuv420p", "yuvj420p", "nv12"):
        return frame.to_ndarray(format="gray")
    plane = frame.planes[0]
    y = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)
    return y[:, : frame.width]


class WebRTCPeer:
    def __init__(self, url: str, options: dict | None = None,
                 on_video: Callable[[float, np.ndarray], None] | None = None,
                 on_audio: Callable[[float, np.ndarray], None] | None = None, keep_video: bool = True,
                 video_format: str = "rgb24") -> None:
        self.url, self.options = url, options or {}
        self.on_video, self.on_audio, self.keep_video = on_video, on_audio, keep_video
        # "luma": hand over the decoded Y plane (H, W) uint8 without any colour conversion, so a
        # measuring client keeps up with 25 fps on a busy CPU (a backlog would skew its timings)
        self.video_format = video_format
        self.audio_out = QueuedAudioTrack()
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.video: list[tuple[float, np.ndarray]] = []
        self.video_times: list[float] = []
        self.audio_frames = 0
        self.messages: list[dict] = []
        self.ws = None
        self._tasks: list[asyncio.Task] = []
        self.answer: dict | None = None

    async def connect(self, timeout: float = 10.0) -> dict:
        """Offer over /ws, apply the answer; returns the answer message (or raises on an error reply)."""
        from websockets.asyncio.client import connect

        self.add_media()

        @self.pc.on("track")
        def on_track(track) -> None:
            self._tasks.append(asyncio.create_task(self._consume(track)))

        await self.pc.setLocalDescription(await self.pc.createOffer())
        self.ws = await connect(self.url, max_size=2**20)
        await self.ws.send(json.dumps({"type": "offer", "sdp": self.pc.localDescription.sdp,
                                       "options": self.options}))
        reply = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
        self.messages.append(reply)
        if reply.get("type") != "answer":
            raise ConnectionError(f"server replied {reply}")
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=reply["sdp"], type="answer"))
        self._tasks.append(asyncio.create_task(self._read_messages()))
        self.answer = reply
        return reply

    def add_media(self) -> None:
        """The offer's sections: the microphone (sendrecv audio) and the avatar's video (recvonly)."""
        self.pc.addTrack(self.audio_out)
        self.pc.addTransceiver("video", direction="recvonly")

    async def _read_messages(self) -> None:
        with contextlib.suppress(Exception):
            async for m in self.ws:
                self.messages.append(json.loads(m))

    async def _consume(self, track) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            t = time.monotonic()
            if track.kind == "video":
                self.video_times.append(t)
                if self.on_video or self.keep_video:
                    img = _luma(frame) if self.video_format == "luma" else frame.to_ndarray(format="rgb24")
                    if self.keep_video:
                        self.video.append((t, img))
                    if self.on_video:
                        self.on_video(t, img)
            else:
                self.audio_frames += 1
                if self.on_audio:
                    self.on_audio(t, frame.to_ndarray().reshape(-1))

    def play(self, samples: np.ndarray) -> float:
        return self.audio_out.play(samples)

    async def send(self, message: dict) -> None:
        await self.ws.send(json.dumps(message))

    async def wait_connected(self, timeout: float = 10.0) -> None:
        t = time.monotonic()
        while self.pc.connectionState != "connected":
            if time.monotonic() - t > timeout:
                raise TimeoutError(f"ICE state {self.pc.connectionState} after {timeout} s")
            await asyncio.sleep(0.02)

    async def close(self, send_close: bool = True) -> None:
        if self.ws is not None:
            with contextlib.suppress(Exception):
                if send_close:
                    await self.ws.send(json.dumps({"type": "close"}))
                await self.ws.close()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.pc.close()
