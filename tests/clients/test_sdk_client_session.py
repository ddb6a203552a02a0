"""AvatarClient against a scripted fake server: the start message, typed events, frames paired by
index despite scrambled binaries, JPEG/raw images, returned audio, and errors."""

from __future__ import annotations

import socket

import numpy as np
import pytest
from syncvid_client import (
    AvatarClient,
    ConnectError,
    ConnectionClosedError,
    Frame,
    OtherEvent,
    PlaybackFinished,
    PlaybackStarted,
    ServerError,
    SessionCapError,
    SlowConsumerError,
    UnknownAvatarError,
    error_for,
)

from tests.clients.sdk_fake_server import (
    audio_part,
    error,
    event,
    fake_server,
    frame_event,
    jpeg_part,
    raw_part,
    record_until,
    session_started,
)

RED, BLUE = (220, 30, 40), (20, 40, 210)
AUDIO0 = np.arange(640, dtype=np.int16) * 7 - 2000  # one 40 ms frame at 16 kHz
AUDIO1 = -AUDIO0


async def _scrambled_jpeg_session(ws, record) -> None:
    await ws.send(session_started())
    await ws.send(frame_event(0, buffered_ms=480))
    await ws.send(frame_event(1, buffered_ms=440, speaking=True))
    # frame 1's parts first, frame 0's last, an error between: the client must pair by index
    await ws.send(audio_part(1, AUDIO1))
    await ws.send(jpeg_part(1, BLUE))
    await ws.send(error("buffer_full", "more than 120 s of speech is buffered; chunk dropped"))
    await ws.send(jpeg_part(0, RED))
    await ws.send(audio_part(0, AUDIO0))
    await ws.send(event("playback_started", utterance=1, pts=0.04))
    await ws.send(event("some_future_event", detail=3))
    await ws.send(event("playback_finished", utterance=1, playback_position=2.31, interrupted=False))
    await ws.close()


async def test_session_yields_typed_events_paired_by_index():
    async with (fake_server(_scrambled_jpeg_session) as (url, record),
                AvatarClient(url, avatar="anna", jpeg_quality=70) as client):
        events = [ev async for ev in client.events()]
        started = client.started
    assert record.start == {"type": "start", "options": {
        "sample_rate": 16000, "video": "jpeg", "jpeg_quality": 70, "visemes": True, "blendshapes": True,
        "audio_out": True, "avatar": "anna", "low_latency": False}}
    assert "Authorization" not in record.headers
    assert started is not None
    assert (started.session, started.fps, started.width, started.height, started.sample_rate) == ("s1", 25, 8, 6, 16000)
    assert (started.video, started.audio_out, started.latency_budget_ms, started.max_buffer_s) == ("jpeg", True, 170, 120)

    f0, f1, err, ps, other, pf = events
    assert isinstance(f0, Frame) and isinstance(f1, Frame)
    assert (f0.index, f0.pts, f0.speaking, f0.buffered_ms) == (0, 0.0, False, 480)
    assert (f1.index, f1.pts, f1.speaking, f1.buffered_ms) == (1, 0.04, True, 440)
    assert f1.visemes == {"sil": 0.9, "aa": 0.1} and f1.blendshapes == {"jawOpen": 0.1}
    for frame, colour, audio in ((f0, RED, AUDIO0), (f1, BLUE, AUDIO1)):
        assert frame.image is not None and frame.image.shape == (6, 8, 3) and frame.image.dtype == np.uint8
        assert np.abs(frame.image.reshape(-1, 3).mean(axis=0) - colour).max() < 6  # JPEG of a flat colour
        assert frame.jpeg is not None and frame.jpeg[:2] == b"\xff\xd8"
        assert frame.audio is not None and frame.audio.dtype == np.int16
        np.testing.assert_array_equal(frame.audio, audio)
    assert err == ServerError("buffer_full", "more than 120 s of speech is buffered; chunk dropped")
    assert ps == PlaybackStarted(1, 0.04)
    assert other == OtherEvent("some_future_event", {"detail": 3})
    assert pf == PlaybackFinished(1, 2.31, False)


async def test_raw_video_is_reshaped_and_audio_off_needs_no_audio_part():
    image = np.arange(6 * 8 * 3, dtype=np.uint8).reshape(6, 8, 3)

    async def script(ws, record):
        await ws.send(session_started(video="raw", audio_out=False))
        await ws.send(frame_event(0))
        await ws.send(raw_part(0, image))
        await ws.send(frame_event(1))
        await ws.send(raw_part(1, 255 - image))
        await ws.close()

    async with fake_server(script) as (url, record), AvatarClient(url, video="raw", audio_out=False) as client:
        frames = [ev async for ev in client.events()]
    assert record.start is not None and record.start["options"]["video"] == "raw"
    assert [f.index for f in frames] == [0, 1]
    np.testing.assert_array_equal(frames[0].image, image)
    np.testing.assert_array_equal(frames[1].image, 255 - image)
    assert frames[0].audio is None and frames[0].jpeg is None


async def test_video_none_frames_need_only_their_event_and_audio():
    async def script(ws, record):
        await ws.send(session_started(video="none"))
        await ws.send(frame_event(0))
        await ws.send(audio_part(0, AUDIO0))
        await ws.close()

    async with fake_server(script) as (url, _), AvatarClient(url, video="none", visemes=False) as client:
        (frame,) = [ev async for ev in client.events()]
    assert frame.image is None and frame.jpeg is None
    np.testing.assert_array_equal(frame.audio, AUDIO0)


async def test_token_is_sent_as_bearer_authorization():
    async def script(ws, record):
        await ws.send(session_started())
        await ws.close()

    async with fake_server(script) as (url, record), AvatarClient(url, token="s3cret", seed=7) as client:
        assert [ev async for ev in client.events()] == []
    assert record.headers["Authorization"] == "Bearer s3cret"
    assert record.start is not None and record.start["options"]["seed"] == 7


async def test_unknown_avatar_is_raised_from_async_with():
    async def script(ws, record):
        await ws.send(error("unknown_avatar", "no avatar named 'nobody'; GET /avatars lists them"))
        await ws.close(1008, "no avatar named 'nobody'; GET /avatars lists them")

    async with fake_server(script) as (url, _):
        with pytest.raises(UnknownAvatarError) as info:
            async with AvatarClient(url, avatar="nobody"):
                pytest.fail("the session must not open")
    assert info.value.code == "unknown_avatar"
    assert info.value.message == "no avatar named 'nobody'; GET /avatars lists them"


async def test_fatal_error_is_yielded_then_raised_at_the_close():
    async def script(ws, record):
        await ws.send(session_started(audio_out=False, video="none"))
        await ws.send(frame_event(0))
        await ws.send(error("slow_consumer", "the client stopped reading"))
        await ws.close(1008, "the client stopped reading")

    seen = []
    async with fake_server(script) as (url, _), AvatarClient(url, video="none", audio_out=False) as client:
        with pytest.raises(SlowConsumerError, match="stopped reading"):
            async for ev in client.events():
                seen.append(ev)
    assert [type(ev) for ev in seen] == [Frame, ServerError]


async def test_abnormal_close_without_error_raises_connection_closed():
    async def script(ws, record):
        await ws.send(session_started(audio_out=False, video="none"))
        await ws.close(1011, "keepalive ping timeout")

    async with fake_server(script) as (url, _), AvatarClient(url) as client:
        with pytest.raises(ConnectionClosedError) as info:
            [ev async for ev in client.events()]
    assert (info.value.close_code, info.value.reason) == (1011, "keepalive ping timeout")


async def test_control_messages_and_buffered_estimate():
    async def script(ws, record):
        await ws.send(session_started(video="none", audio_out=False))
        await ws.send(frame_event(0, buffered_ms=500))
        await record_until(ws, record, "close")

    async with (fake_server(script) as (url, record),
                AvatarClient(url, video="none", audio_out=False) as client):
        assert client.buffered_s == 0.0
        stream = client.events()
        frame = await anext(stream)
        assert frame.buffered_ms == 500
        await client.send_audio(np.zeros(8000, np.int16))  # 0.5 s at 16 kHz
        assert client.buffered_s == pytest.approx(1.0)
        await client.end_utterance()
        await client.interrupt()
        assert client.buffered_s == 0.0
        await client.close(reason="done")
        assert [ev async for ev in stream] == []  # our own close ends the iteration
    assert record.texts == [{"type": "end_of_utterance"}, {"type": "interrupt"}, {"type": "close", "reason": "done"}]


async def test_no_server_is_a_connect_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again below: nothing listens there
    with pytest.raises(ConnectError, match=f"127.0.0.1:{port}"):
        async with AvatarClient(f"ws://127.0.0.1:{port}/ws", open_timeout=2):
            pass


async def test_no_session_started_in_time_is_a_connect_error():
    async def script(ws, record):
        await ws.wait_closed()  # never answers start

    async with fake_server(script) as (url, _):
        with pytest.raises(ConnectError, match="no session_started"):
            async with AvatarClient(url, open_timeout=0.2):
                pass


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"sample_rate": 32000}, "sample_rate must be one of"),
    ({"video": "png"}, "video must be one of"),
    ({"jpeg_quality": 0}, "jpeg_quality must be an integer from 1 to 100"),
    ({"jpeg_quality": 101}, "jpeg_quality"),
    ({"seed": -1}, "seed"),
])
def test_arguments_are_checked_before_connecting(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AvatarClient("ws://127.0.0.1:1/ws", **kwargs)
    with pytest.raises(ValueError, match="ws://"):
        AvatarClient("http://127.0.0.1:1/ws")


def test_error_for_maps_codes_to_classes():
    assert type(error_for("session_cap", "full")) is SessionCapError
    assert type(error_for("unknown_avatar", "x")) is UnknownAvatarError
    generic = error_for("internal_error", "a bug")
    assert type(generic).__name__ == "SyncVidError" and (generic.code, generic.message) == ("internal_error", "a bug")


async def test_without_a_jpeg_decoder_frames_keep_the_bytes(monkeypatch):
    import syncvid_client.client as client_module

    monkeypatch.setattr(client_module, "find_jpeg_decoder", lambda: None)

    async def script(ws, record):
        await ws.send(session_started(audio_out=False))
        await ws.send(frame_event(0))
        await ws.send(jpeg_part(0, RED))
        await ws.close()

    async with fake_server(script) as (url, _), AvatarClient(url, audio_out=False) as client:
        (frame,) = [ev async for ev in client.events()]
    assert frame.image is None and frame.jpeg is not None and frame.jpeg[:2] == b"\xff\xd8"


def test_opencv_and_pillow_decode_to_the_same_rgb():
    pytest.importorskip("cv2")
    from syncvid_client import wire
    from syncvid_client.jpeg import decode_with_opencv, decode_with_pillow

    _, payload = wire.unpack(jpeg_part(0, RED))
    a, b = decode_with_pillow(bytes(payload)), decode_with_opencv(bytes(payload))
    assert a.shape == b.shape == (6, 8, 3)
    assert np.abs(b.reshape(-1, 3).mean(axis=0) - RED).max() < 6  # RGB, not OpenCV's BGR
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 3
