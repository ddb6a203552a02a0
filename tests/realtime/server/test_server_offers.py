"""Offers that are valid SDP but not what the server serves: a client camera is never received,
an offer the server could not send video on (or with extra sections) is refused, and nothing
builds up either way."""

from __future__ import annotations

import asyncio

import av
import numpy as np
import pytest
from aiortc import VideoStreamTrack

from clients.webrtc_peer import WebRTCPeer
from server_fakes import speech_like


class Camera(VideoStreamTrack):
    async def recv(self):
        pts, time_base = await self.next_timestamp()
        frame = av.VideoFrame.from_ndarray(np.full((240, 320, 3), 128, np.uint8), format="rgb24")
        frame.pts, frame.time_base = pts, time_base
        return frame


class OddPeer(WebRTCPeer):
    """Offers a camera in ``direction`` (as a video call's browser page would), or a second
    microphone section."""

    def __init__(self, url: str, direction: str = "sendrecv", extra_audio: bool = False) -> None:
        super().__init__(url, keep_video=False)
        self.direction, self.extra_audio = direction, extra_audio

    def add_media(self) -> None:
        self.pc.addTrack(self.audio_out)
        if self.extra_audio:
            self.pc.addTransceiver("audio", direction="sendonly")
        self.pc.addTransceiver(Camera(), direction=self.direction)


def server_video_receiver(session):
    return next(t for t in session.pc.getTransceivers() if t.kind == "video").receiver


async def test_client_camera_is_not_received_and_the_session_runs(server):
    peer = OddPeer(f"ws://127.0.0.1:{server.port}/ws", direction="sendrecv")
    try:
        reply = await peer.connect()
        video = reply["sdp"].split("m=video", 1)[1]
        assert "a=sendonly" in video and "a=sendrecv" not in video  # the server only sends video
        await peer.wait_connected()
        peer.play(speech_like(1.5))
        await asyncio.sleep(2.0)
        session = next(iter(server.sessions))
        track = server_video_receiver(session).track
        assert track is None or track._queue.qsize() == 0  # no camera frames decoded into a queue
        assert len(peer.video_times) >= 30  # the avatar's video still flows (~25 fps)
    finally:
        await peer.close()


@pytest.mark.parametrize("kwargs, words", [
    ({"direction": "sendonly"}, "video section must be recvonly or sendrecv"),
    ({"direction": "inactive"}, "video section must be recvonly or sendrecv"),
    ({"extra_audio": True}, "exactly one audio (sendrecv) and one video"),
])
async def test_offers_the_server_cannot_serve_are_refused_and_leave_nothing(server, kwargs, words):
    peer = OddPeer(f"ws://127.0.0.1:{server.port}/ws", **kwargs)
    try:
        with pytest.raises(ConnectionError) as e:
            await peer.connect()
        assert words in str(e.value)
        assert peer.messages[0]["type"] == "error"
    finally:
        await peer.close()
    for _ in range(100):
        if not server.sessions and server._reserved == 0:
            break
        await asyncio.sleep(0.02)
    assert not server.sessions and server._reserved == 0
