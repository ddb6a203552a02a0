"""End-to-end over loopback: real aiortc peers against the server with fake models."""

from __future__ import annotations

import asyncio
import time

import numpy as np

from clients.webrtc_peer import WebRTCPeer
from tests.fakes import FakeAvatar, make_config, make_engine, mouth_darkness, speech_like


def ws_url(srv) -> str:
    return f"ws://127.0.0.1:{srv.port}/ws"


async def test_offer_answer_constant_fps_and_silence_is_rest(server):
    peer = WebRTCPeer(ws_url(server))
    reply = await peer.connect()
    assert reply["type"] == "answer" and reply["sdp"].startswith("v=0")
    video = reply["sdp"].split("m=video")[1]
    first_pt = video.split("\r\n")[0].split()[2]
    assert f"a=rtpmap:{first_pt} H264/90000" in video  # the cheaper encoder is preferred
    await peer.wait_connected()
    await asyncio.sleep(0.6)  # let the jitter buffer settle
    n0, t0 = len(peer.video_times), time.monotonic()
    await asyncio.sleep(3.0)
    fps = (len(peer.video_times) - n0) / (time.monotonic() - t0)
    assert 22.0 <= fps <= 27.5, fps
    rest = FakeAvatar().frame(0)
    diffs = [mouth_darkness(img, rest) for _, img in peer.video[-50:]]
    assert max(diffs) < 6.0, max(diffs)  # silence: mouth closed, as the rest frame (VP8 noise only)
    session = next(iter(server.sessions))
    assert session.live.counts["speech"] == 0 and session.live.counts["rest"] > 50
    assert server.engine.renderer("full").calls == []  # no renderer work in silence
    events = [m for m in peer.messages if m.get("type") == "event"]
    assert events and events[0]["event"] == "session_started"
    await peer.close()


async def test_speech_opens_mouth_within_budget_and_audio_comes_back(server):
    heard: list[tuple[float, float]] = []  # (arrival, rms) of each received 20 ms audio frame
    peer = WebRTCPeer(ws_url(server), on_audio=lambda t, x: heard.append((t, float(np.sqrt(np.mean(
        x.astype(float) ** 2))))))
    await peer.connect()
    await peer.wait_connected()
    await asyncio.sleep(0.5)
    onset = peer.play(speech_like(1.5))
    await asyncio.sleep(2.2)
    rest = FakeAvatar().frame(0)
    opened = [t for t, img in peer.video if t > onset and mouth_darkness(img, rest) > 15.0]
    assert opened, "mouth never opened during speech"
    session = next(iter(server.sessions))
    # glass-to-glass on loopback: the budget (the fake encoder opens up to 40 ms early) + transport
    assert opened[0] - onset < session.budget_s + 0.15, opened[0] - onset
    sched = session.live
    assert sched.counts["speech"] >= 25  # ~1.5 s of speech at 25 fps, minus late ones
    lat = server.metrics.engine_latency
    assert lat.count >= 25
    # the session sends each frame `budget` after the packet it shows arrived (never later)
    assert lat.percentile(95) <= session.budget_s + 0.005, lat.percentile(95)
    assert lat.percentile(50) >= session.budget_s - 0.045
    assert server.metrics.frames_late.value <= 2
    if server.metrics.frames_late.value == 0:  # one session, nothing late: lightly loaded, 20 ms under
        assert server.stats()["latency_target_ms"] == [150.0]
        assert lat.percentile(50) <= session.budget_s - 0.02, lat.percentile(50)
    assert peer.audio_frames > 100  # the delayed speech comes back as audio
    # ... as mono Opus packets encoded in the track: silent before the onset, speech after it
    assert session.audio.encoder is not None
    before = [r for t, r in heard if t < onset]
    after = [r for t, r in heard if onset + 0.4 < t < onset + 1.4]
    assert before and max(before) < 50.0, max(before)
    assert len(after) >= 40 and np.median(after) > 1000.0, np.median(after)
    # /stats breaks each frame's compute window down: the push round trip and the frames' slack
    # are real measurements (a frame ready after its slot would have been late, not ready)
    st = server.stats()
    assert st["push_round_trip_ms"]["p50"] > 0 and st["push_wait_ms"]["p95"] < session.budget_s * 1000
    assert st["frame_slack_ms"]["p5"] <= st["frame_slack_ms"]["p50"] < session.budget_s * 1000
    assert st["frame_slack_ms"]["p50"] > 0
    assert st["packet_lateness_ms"]["p99"] is not None and st["packet_lateness_ms"]["p50"] < 20  # loopback
    # incoming audio took the direct path (decoded on arrival, no jitter-buffer hold) and all of it
    # was decoded there: ~1.5 s of speech and some silence around it, 50 packets a second
    from realtime.server.webrtc.receive import InlineDecodeQueue

    rx = next(t.receiver for t in session.pc.getTransceivers() if t.kind == "audio")
    dq = getattr(rx, "_RTCRtpReceiver__decoder_queue")
    assert isinstance(dq, InlineDecodeQueue) and dq.decoded >= 100 and dq.errors == 0
    assert session.audio_input.packets == dq.decoded
    await peer.close()


async def test_interrupt_drops_pending_within_one_frame():
    from realtime.server.app import RealtimeServer

    # a long budget keeps ~0.4 s of received speech pending at the server when the interrupt comes
    engine = make_engine()
    async with RealtimeServer(make_config(latency_budget_ms=600), engine) as server:
        peer = WebRTCPeer(ws_url(server))
        await peer.connect()
        await peer.wait_connected()
        peer.play(speech_like(3.0))
        await asyncio.sleep(1.2)
        session = next(iter(server.sessions))
        sched = session.live
        assert sched.counts["speech"] > 5
        peer.audio_out.clear()  # the client stops talking; what it said is in flight / pending
        await asyncio.sleep(0.2)
        assert sched.output.history[-1][2] == "speech" and sched.frames.ready
        t_int = time.monotonic()
        await peer.send({"type": "interrupt"})
        deadline = time.monotonic() + 2
        while not any(m.get("event") == "interrupted" for m in peer.messages) and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        k_next = int((time.monotonic() - sched.clock.t0) / 0.02) + 1
        assert all(not np.any(sched.samples_for(k)) for k in range(k_next, k_next + 30))  # audio dropped too
        await asyncio.sleep(0.5)
        after = [(round(t - t_int, 3), kind) for t, _, kind in sched.output.history if t > t_int - 0.1]
        late = [(t, kind) for t, kind in after if t > 0.040 + 0.010]  # one frame time + scheduling slack
        assert late and all(kind == "rest" for _, kind in late), after
        assert server.metrics.interrupts.value == 1 and server.metrics.frames_dropped.value > 0
        await peer.close()
    engine.close()


async def test_session_cap_gives_error_and_close_code(server):
    peers = [WebRTCPeer(ws_url(server)) for _ in range(2)]
    for p in peers:
        await p.connect()
    extra = WebRTCPeer(ws_url(server))
    try:
        await extra.connect()
        raise AssertionError("third session accepted over a cap of 2")
    except ConnectionError as e:
        assert "session_cap" in str(e)
    await asyncio.sleep(0.1)
    assert extra.ws.close_code == 1013
    # two silent sessions index the avatar by server time: each rest frame is rendered once for both
    for p in peers:
        await p.wait_connected()
    await asyncio.sleep(1.0)
    cache = server.engine.rest_cache
    assert cache.misses >= 5 and cache.hits >= 0.8 * cache.misses, (cache.hits, cache.misses)
    assert server.metrics.sessions_rejected.value == 1
    await extra.close(send_close=False)
    for p in peers:
        await p.close()


async def _wait_no_sessions(server, timeout: float, leave: int = 0) -> float:
    """Seconds until at most ``leave`` sessions are open (``timeout`` at most)."""
    t0 = time.monotonic()
    while len(server.sessions) > leave and time.monotonic() - t0 < timeout:
        await asyncio.sleep(0.05)
    return time.monotonic() - t0


async def test_teardown_when_client_vanishes(server):
    peer = WebRTCPeer(ws_url(server))
    await peer.connect()
    await peer.wait_connected()
    await asyncio.sleep(0.5)
    session = next(iter(server.sessions))
    # the client disappears: no close message, peer connection and socket just drop
    await peer.pc.close()
    await peer.ws.transport.abort() if asyncio.iscoroutinefunction(peer.ws.transport.abort) else peer.ws.transport.abort()
    took = await _wait_no_sessions(server, 5.0)
    assert not server.sessions, "session still open 5 s after the client vanished"
    assert took < 1.5  # the socket's end is seen at once; 5 s is the promise for any vanished client
    assert session.closed and not session.tasks
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith(session.id + "-")]
    await asyncio.sleep(0.6)  # metrics tick
    assert "syncvid_sessions 0" in server.metrics.render()
    await peer.close(send_close=False)


async def test_teardown_when_the_client_goes_silent_without_closing(server):
    """A pulled cable or a sleeping laptop: no FIN, no DTLS close, the socket just stops answering.
    The keepalive drops it within 1.5 ping intervals (a ping, then half an interval for its pong)."""
    lim = server.config.limits
    peer = WebRTCPeer(ws_url(server))
    await peer.connect()
    await peer.wait_connected()
    await asyncio.sleep(0.3)
    session = next(iter(server.sessions))
    peer.ws.transport.pause_reading()  # the client no longer reads its socket, so never answers a ping
    took = await _wait_no_sessions(server, 6.0)
    assert not server.sessions and session.closed and not session.tasks
    assert lim.ping_interval_s / 2 - 0.2 <= took <= 1.5 * lim.ping_interval_s + 0.5, took
    await peer.close(send_close=False)


async def test_teardown_when_ice_never_connects(server):
    import json

    from aiortc import RTCConfiguration, RTCPeerConnection
    from websockets.asyncio.client import connect

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("audio", direction="sendrecv")
    pc.addTransceiver("video", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    async with connect(ws_url(server)) as ws:
        await ws.send(json.dumps({"type": "offer", "sdp": pc.localDescription.sdp}))
        reply = json.loads(await ws.recv())
        assert reply["type"] == "answer"
        await pc.close()  # never applies the answer: ICE cannot connect
        assert len(server.sessions) == 1
        took = await _wait_no_sessions(server, 5.0)
        # the answer left just after the session's ICE watchdog started: it fires ice_timeout_s later
        ice_timeout = server.config.limits.ice_timeout_s
        assert not server.sessions and ice_timeout - 0.5 <= took <= ice_timeout + 1.0, took
        started = json.loads(await asyncio.wait_for(ws.recv(), 2))
        ended = json.loads(await asyncio.wait_for(ws.recv(), 2))
        assert started["event"] == "session_started"
        assert ended == {"type": "event", "event": "session_ended", "reason": "media connection lost"}


async def test_a_session_task_that_fails_ends_that_session_as_a_server_error(server):
    """A bug in one session's task ends that session with internal_error / 1011 (not a "media
    connection lost" that blames the client); the other session carries on."""
    peers = [WebRTCPeer(ws_url(server), keep_video=False) for _ in range(2)]
    for p in peers:
        await p.connect()
        await p.wait_connected()
    await asyncio.sleep(0.2)
    started = next(m for m in peers[0].messages if m.get("event") == "session_started")
    victim = next(s for s in server.sessions if s.id == started["session"])

    async def boom():
        raise RuntimeError("bug")

    victim._spawn(boom(), "render")
    await _wait_no_sessions(server, 3.0, leave=1)
    await asyncio.sleep(0.3)
    assert len(server.sessions) == 1 and victim not in server.sessions
    errors = [m for m in peers[0].messages if m.get("type") == "error"]
    assert errors and errors[0]["code"] == "internal_error" and "render task failed" in errors[0]["message"]
    assert peers[0].ws.close_code == 1011
    n = len(peers[1].video_times)
    await asyncio.sleep(1.0)
    assert len(peers[1].video_times) - n >= 20  # the other session still runs at its rate
    for p in peers:
        await p.close()
