"""Offers that are valid SDP but not what the server serves: a client camera is never received,
an offer the server could not send video on (or with extra sections) is refused, and nothing
builds up either way."""

from __future__ import annotations

import asyncio
import re

import av
import numpy as np
import pytest
from aiortc import VideoStreamTrack

from clients.webrtc_peer import WebRTCPeer
from tests.fakes import browser_offer_sdp, speech_like


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


async def _settled(server, sessions: int = 0) -> None:
    """Waits up to 2 s for ``sessions`` open sessions and none being set up: a connection's
    clean-up runs just after its close reaches the client."""
    for _ in range(100):
        if len(server.sessions) == sessions and server._reserved == 0:
            return
        await asyncio.sleep(0.02)


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
    await _settled(server)
    assert not server.sessions and server._reserved == 0


def _drop_lines(sdp: str, prefix: str) -> str:
    return "".join(ln for ln in sdp.splitlines(keepends=True) if not ln.startswith(prefix))


@pytest.mark.parametrize("mutate, words", [
    (lambda s: s.replace("a=mid:1", "a=mid:0"), "could not be"),  # two sections, one mid
    (lambda s: _drop_lines(s, "a=mid:"), "could not be"),
    (lambda s: s.replace("a=sendrecv", "a=send\x00recv", 1), "control characters"),
    (lambda s: s.replace("a=mid:0", "a=mid:\ud800"), "not UTF-8 text"),
    (lambda s: _drop_lines(s, "a=fingerprint:"), "no a=fingerprint line"),
    (lambda s: s.replace("a=sendrecv", "a=recvonly", 1), "audio section is recvonly"),
    (lambda s: s.replace("a=sendrecv", "a=inactive", 1), "audio section is inactive"),
    (lambda s: re.sub(r"^m=audio \d+ ", "m=audio 0 ", s, count=1, flags=re.M), "audio section is rejected (port 0)"),
    (lambda s: s.replace("a=mid:0", "a=mid:\x07"), "control characters"),
])
async def test_offers_aiortc_mishandles_are_bad_messages_not_server_errors(server, mutate, words, caplog):
    """SDP aiortc takes but cannot answer, or answers into a session that could never work: a
    clear bad_message / 1008 before any session exists, never an internal error."""
    import json

    from websockets.asyncio.client import connect

    sdp = mutate(await browser_offer_sdp())
    async with connect(f"ws://127.0.0.1:{server.port}/ws") as ws:
        await ws.send(json.dumps({"type": "offer", "sdp": sdp}))
        reply = json.loads(await asyncio.wait_for(ws.recv(), 5))
        await asyncio.wait_for(ws.wait_closed(), 5)
    assert reply["type"] == "error" and reply["code"] == "bad_message", reply
    assert words in reply["message"], reply["message"]
    assert ws.close_code == 1008
    await _settled(server)
    assert not server.sessions and server._reserved == 0
    assert not [r for r in caplog.records if r.levelname == "ERROR"], [r.getMessage() for r in caplog.records]


@pytest.mark.parametrize("first, code", [
    ('{"type":"\\ud800"}', 1008),
    ('{"type":"offer","sdp":"v=0","options":{"\\ud83d":1}}', 1008),
    ('{"type":"close","reason":"\\ud800"}', 1000),
])
async def test_lone_surrogates_get_their_error_and_close_code(server, first, code, caplog):
    from websockets.asyncio.client import connect

    async with connect(f"ws://127.0.0.1:{server.port}/ws") as ws:
        await ws.send(first)
        await asyncio.wait_for(ws.wait_closed(), 5)
    assert ws.close_code == code
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


async def test_a_control_message_flood_closes_that_connection_only(server):
    from realtime.server.protocol import CONTROL_BURST

    peers = [WebRTCPeer(f"ws://127.0.0.1:{server.port}/ws", keep_video=False) for _ in range(2)]
    for p in peers:
        await p.connect()
        await p.wait_connected()
    for _ in range(int(CONTROL_BURST) + 50):  # far faster than 50 a second
        await peers[0].ws.send('{"type":"report","glass_to_glass_ms":100}')
    await asyncio.wait_for(peers[0].ws.wait_closed(), 5)
    assert peers[0].ws.close_code == 1008
    assert any(m.get("code") == "rate_limited" for m in peers[0].messages)
    await _settled(server, sessions=1)
    assert len(server.sessions) == 1
    await peers[1].send({"type": "interrupt"})  # a client within the rate is served
    await asyncio.sleep(0.3)
    assert any(m.get("event") == "interrupted" for m in peers[1].messages)
    for p in peers:
        await p.close()
