"""The avatar-SDK session end to end: the Python client against a real server on loopback (fake
models: these tests are about timing, order and audio, not the face)."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import time
import urllib.request

import numpy as np
import pytest
import websockets
from syncvid_client import (
    AvatarClient,
    Frame,
    PlaybackFinished,
    PlaybackStarted,
    ServerError,
    SessionStarted,
)
from syncvid_client.errors import UnknownAvatarError

from realtime.face.library import AvatarLibrary
from realtime.server.app import RealtimeServer
from tests.fakes import (
    FakeAvatar,
    make_config,
    make_engine,
    mouth_darkness,
    speech_like,
)

FPS = 25


def url(srv) -> str:
    return f"ws://127.0.0.1:{srv.port}/ws"


def pcm(seconds: float, rate: int, seed: int = 0) -> np.ndarray:
    return (speech_like(seconds, rate, seed) * 32767).astype(np.int16)


async def collect(client: AvatarClient, until, timeout: float = 10.0) -> list:
    """Events until ``until(event)`` is true (that event included)."""
    out: list = []

    async def run():
        async for ev in client.events():
            out.append(ev)
            if until(ev):
                return

    await asyncio.wait_for(run(), timeout)
    return out


def finished(ev) -> bool:
    return isinstance(ev, PlaybackFinished)


@pytest.mark.parametrize("rate, wait", [(24000, 0.3), (48000, 0.3), (16000, 0.0)])
async def test_utterance_order_frames_visemes_and_audio_equal_to_the_input(server, rate, wait):
    """``wait`` 0: the speech comes with the session's start, before its time grid exists."""
    speech = pcm(1.2, rate)
    async with AvatarClient(url(server), sample_rate=rate, video="raw") as c:
        assert isinstance(c.started, SessionStarted)
        assert (c.started.fps, c.started.width, c.started.height, c.started.sample_rate) == (FPS, 128, 128, rate)
        await asyncio.sleep(wait)  # a few rest frames first
        for k in range(0, len(speech), rate // 10):  # 100 ms chunks, as fast as the socket takes them
            await c.send_audio(speech[k:k + rate // 10])
        await c.end_utterance()
        events = await collect(c, finished)
    frames = [e for e in events if isinstance(e, Frame)]
    kinds = [type(e).__name__ for e in events if not isinstance(e, Frame)]
    assert kinds == ["PlaybackStarted", "PlaybackFinished"], kinds
    started = next(e for e in events if isinstance(e, PlaybackStarted))
    fin = events[-1]
    assert fin.utterance == started.utterance == 1 and not fin.interrupted
    assert fin.playback_position == pytest.approx(1.2, abs=1e-3)
    # every frame has its image, its audio (one frame period) and 15 visemes; indices count up
    assert [f.index for f in frames] == list(range(frames[0].index, frames[0].index + len(frames)))
    assert all(f.image.shape == (128, 128, 3) and len(f.audio) == rate // FPS for f in frames)
    assert all(len(f.visemes) == 15 and f.blendshapes for f in frames)
    assert all(f.pts == pytest.approx(f.index / FPS) for f in frames)
    # frames of the utterance: from the one that starts it to the one that ends it = duration x fps (+-1)
    first = next(i for i, e in enumerate(events) if isinstance(e, PlaybackStarted))
    played = [e for e in events[first:] if isinstance(e, Frame)]
    assert abs(len(played) - 1.2 * FPS) <= 1, len(played)
    assert played[0].pts == pytest.approx(started.pts)
    # the audio that came back is the input, sample for sample, cut at the frames
    audio = np.concatenate([f.audio for f in frames])
    onset = int(np.flatnonzero(audio)[0])
    np.testing.assert_array_equal(audio[onset:onset + len(speech)], speech)
    assert not audio[onset + len(speech):].any()
    assert onset // (rate // FPS) == played[0].index - frames[0].index  # the first played frame holds it
    # the mouth opens while the speech plays and is at rest before it
    rest = FakeAvatar().frame(0)
    assert max(mouth_darkness(f.image, rest) for f in played) > 15
    assert all(not f.speaking and f.visemes["sil"] == 1.0 for f in frames[:3])
    assert sum(f.speaking for f in played) >= 0.8 * len(played)


@pytest.mark.parametrize("rate", [16000, 24000])
async def test_interrupt_mid_utterance_stops_at_once_and_the_mouth_rests(server, rate):
    async with AvatarClient(url(server), video="raw", sample_rate=rate) as c:
        await c.send_audio(pcm(4.0, rate))  # bulk: 4 s of speech at once
        await collect(c, lambda e: isinstance(e, PlaybackStarted))
        await collect(c, lambda e: isinstance(e, Frame) and e.speaking)
        await asyncio.sleep(0.5)
        t0 = time.monotonic()
        await c.interrupt()
        events = await collect(c, finished)
        dt = time.monotonic() - t0
        fin = events[-1]
        assert fin.interrupted and 0.4 < fin.playback_position < 1.5, fin
        assert dt < 0.1, dt  # at once (a frame time is 40 ms; loopback adds little)
        after = [e for e in await collect(c, lambda e: isinstance(e, Frame) and e.index > 0, timeout=2) if
                 isinstance(e, Frame)]
        more = [e for e in await collect(c, lambda e: isinstance(e, Frame) and e.index >= after[-1].index + 10)
                if isinstance(e, Frame)]
    late = more[2:]  # one or two frames already queued when the interrupt arrived
    assert all(not f.speaking and not f.audio.any() for f in late)
    assert c.buffered_s == pytest.approx(0.0, abs=0.05)


async def test_interrupt_before_the_first_frame_is_not_lost(server):
    async with AvatarClient(url(server), video="none") as c:
        await c.send_audio(pcm(2.0, 16000))
        await c.interrupt()
        events = await collect(c, lambda e: isinstance(e, Frame) and e.index >= 40, timeout=5)
    playback = [e for e in events if isinstance(e, (PlaybackStarted, PlaybackFinished))]
    assert playback == [PlaybackFinished(1, 0.0, True)]
    frames = [e for e in events if isinstance(e, Frame)]
    assert not any(f.speaking for f in frames)
    assert not any(f.audio.any() for f in frames)


async def test_buffer_full_drops_the_chunk_and_keeps_the_session():
    engine = make_engine()
    cfg = make_config()
    cfg.limits.sdk_buffer_s = 1.0
    async with RealtimeServer(cfg, engine) as srv:
        async with AvatarClient(url(srv), video="none", audio_out=False) as c:
            await c.send_audio(pcm(0.9, 16000))
            await c.send_audio(pcm(0.5, 16000))  # over 1 s buffered: dropped
            await c.end_utterance()
            events = await collect(c, finished)
    errors = [e for e in events if isinstance(e, ServerError)]
    assert [e.code for e in errors] == ["buffer_full"]
    assert events[-1].playback_position == pytest.approx(0.9, abs=1e-3)  # only the first chunk played
    engine.close()


async def test_bad_audio_is_reported_and_the_session_goes_on(server):
    async with AvatarClient(url(server), video="none", audio_out=False) as c:
        await c._ws.send(b"\x01\x02\x03")  # odd length: not PCM16
        events = await collect(c, lambda e: isinstance(e, ServerError))
        assert events[-1].code == "bad_audio"
        await collect(c, lambda e: isinstance(e, Frame))  # still serving frames
    with pytest.raises(ValueError, match="11025"):  # the client checks first
        AvatarClient(url(server), sample_rate=11025)
    async with websockets.connect(url(server)) as ws:  # the server's own check, past the client's
        await ws.send(json.dumps({"type": "start", "options": {"sample_rate": 11025}}))
        reply = json.loads(await ws.recv())
        assert reply["code"] == "bad_audio" and "11025" in reply["message"]
        await ws.wait_closed()
        assert ws.close_code == 1008


async def test_unknown_avatar_is_refused_before_the_session(server):
    with pytest.raises(UnknownAvatarError, match="nobody"):
        async with AvatarClient(url(server), avatar="nobody"):
            pass
    with pytest.raises(UnknownAvatarError):
        async with AvatarClient(url(server), avatar="../etc/passwd"):
            pass
    assert not server.sessions


async def test_a_client_that_never_reads_is_dropped_and_others_carry_on():
    engine = make_engine()
    cfg = make_config()
    cfg.limits.ping_interval_s = 60.0  # keepalive out of the way: the send queue's bound must end it
    cfg.limits.sdk_send_queue_s = 0.5
    async with RealtimeServer(cfg, engine) as server, AvatarClient(url(server), video="none") as good:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window: the server's buffers fill soon
        sock.connect(("127.0.0.1", server.port))
        stuck = await websockets.connect(url(server), max_queue=1, sock=sock)
        await stuck.send(json.dumps({"type": "start", "options": {"video": "raw"}}))
        stuck.transport.pause_reading()  # never reads again: the server's socket buffer fills
        deadline = time.monotonic() + 15.0
        while len(server.sessions) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        (session,) = [s for s in server.sessions if s.options.video == "raw"]
        peak = 0
        while len(server.sessions) > 1 and time.monotonic() < deadline:
            peak = max(peak, session.outbox.qsize())
            await asyncio.sleep(0.05)
        assert len(server.sessions) == 1, "the stuck session was never dropped"
        assert session.slow and peak <= session.outbox.maxsize  # ended by its bounded queue
        t0 = time.monotonic()
        frames = [e for e in await collect(good, lambda e: isinstance(e, Frame) and time.monotonic() - t0 > 1.0)
                  if isinstance(e, Frame)]
        assert len(frames) >= 20  # the other session kept its rate
        stuck.transport.abort()
    engine.close()


async def test_two_sessions_with_different_avatars_at_once(tmp_path, default_avatar):
    root = tmp_path / "avatars"
    root.mkdir()
    neg = shutil.copytree(default_avatar.directory, root / "negative")
    np.save(neg / "frames.npy", 255 - np.load(neg / "frames.npy"))
    engine = make_engine()
    engine.avatar, engine.avatars = default_avatar, AvatarLibrary(root, default_avatar)
    async with RealtimeServer(make_config(), engine) as srv:
        async with AvatarClient(url(srv), video="raw") as a, AvatarClient(url(srv), video="raw", avatar="negative") as b:
            assert (a.started.avatar, b.started.avatar) == ("default", "negative")
            await asyncio.gather(a.send_audio(pcm(0.6, 16000)), b.send_audio(pcm(0.6, 16000)))
            await asyncio.gather(a.end_utterance(), b.end_utterance())
            ea, eb = await asyncio.gather(collect(a, finished), collect(b, finished))
        listed = await asyncio.to_thread(lambda: urllib.request.urlopen(f"http://127.0.0.1:{srv.port}/avatars").read())
    assert [x["name"] for x in json.loads(listed)["avatars"]] == ["default", "negative"]
    own = default_avatar.frame(0)[-20:]  # rows below the mouth: the avatar's own pixels
    for events, sign in ((ea, 1), (eb, -1)):
        frames = [e for e in events if isinstance(e, Frame)]
        assert sum(f.speaking for f in frames) >= 10
        for f in frames:
            want = own if sign == 1 else 255 - own
            assert np.abs(f.image[-20:].astype(int) - want).mean() < 30, f.index
    engine.close()
