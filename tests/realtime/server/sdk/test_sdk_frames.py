"""FrameMessages: the per-frame JSON event and the self-describing binary messages (no I/O)."""

import cv2
import numpy as np
import pytest
from syncvid_client import wire

from realtime.render.base import FrameEvent
from realtime.server.protocol import SdkOptions
from realtime.server.sdk.frames import REST_BLENDSHAPES, FrameMessages, full_visemes, implied_blendshapes
from realtime.session.live import SlotFrame
from realtime.visemes.phonemes import BLENDSHAPES, SIL, VISEME_BLENDSHAPES, VISEMES

IMG = np.zeros((64, 48, 3), np.uint8)
IMG[10:20, 5:30] = (200, 40, 10)


def frame(kind: str, event: FrameEvent | None = None) -> SlotFrame:
    return SlotFrame(7, IMG, kind, event)


def test_speech_frame_event_has_all_15_visemes_and_the_implied_blendshapes():
    m = FrameMessages(SdkOptions(), fps=25)
    ev = m.event(10, frame("speech", FrameEvent(3, visemes={"aa": 0.75, "sil": 0.25})), buffered_ms=420)
    assert ev["type"] == "event" and ev["event"] == "frame"
    assert (ev["index"], ev["pts"], ev["speaking"], ev["buffered_ms"]) == (10, 0.4, True, 420)
    assert list(ev["visemes"]) == list(VISEMES) and ev["visemes"]["aa"] == 0.75 and ev["visemes"]["PP"] == 0.0
    assert list(ev["blendshapes"]) == list(BLENDSHAPES)
    # 0.75 x aa's targets + 0.25 x sil's: jawOpen 0.75 x 0.75, mouthClose 0.25 x 1.0
    assert ev["blendshapes"]["jawOpen"] == pytest.approx(0.5625, abs=1e-4)
    assert ev["blendshapes"]["mouthClose"] == pytest.approx(0.25, abs=1e-4)


def test_a_renderers_own_blendshapes_win_and_late_frames_repeat_the_last_event():
    m = FrameMessages(SdkOptions(), fps=25)
    shapes = {b: 0.1 for b in BLENDSHAPES}
    m.event(0, frame("speech", FrameEvent(0, visemes={"oh": 1.0}, blendshapes=shapes)), 0)
    late = m.event(1, frame("late"), 0)
    assert late["visemes"]["oh"] == 1.0 and late["blendshapes"] == shapes and late["speaking"]
    rest = m.event(2, frame("rest"), 0)
    assert rest["visemes"]["sil"] == 1.0 and sum(rest["visemes"].values()) == 1.0
    assert rest["blendshapes"] == REST_BLENDSHAPES and not rest["speaking"]
    assert m.event(3, frame("repeat"), 0)["visemes"]["sil"] == 1.0  # repeats follow the rest


def test_switched_off_fields_are_absent():
    m = FrameMessages(SdkOptions(visemes=False, blendshapes=False, video="none", audio_out=False), fps=25)
    ev = m.event(0, frame("rest"), 0)
    assert "visemes" not in ev and "blendshapes" not in ev
    assert m.image(0, IMG) is None and m.audio(0, np.zeros(640, np.int16)) is None


def test_raw_and_jpeg_images_and_audio_carry_their_header():
    raw = FrameMessages(SdkOptions(video="raw"), fps=25).image(5, IMG)
    h, payload = wire.unpack(raw)
    assert (h.kind, h.index, h.pts, h.width, h.height) == (wire.Kind.RAW, 5, 0.2, 48, 64)
    np.testing.assert_array_equal(np.frombuffer(payload, np.uint8).reshape(64, 48, 3), IMG)
    jpg = FrameMessages(SdkOptions(jpeg_quality=95), fps=25).image(6, IMG)
    h, payload = wire.unpack(jpg)
    assert (h.kind, h.index, h.width, h.height) == (wire.Kind.JPEG, 6, 48, 64)
    decoded = cv2.imdecode(np.frombuffer(payload, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
    assert np.abs(decoded.astype(int) - IMG).mean() < 3  # RGB order kept
    samples = (np.arange(960) - 480).astype(np.int16)
    h, payload = wire.unpack(FrameMessages(SdkOptions(sample_rate=24000), fps=25).audio(7, samples))
    assert (h.kind, h.index, h.sample_rate, h.width) == (wire.Kind.AUDIO, 7, 24000, 0)
    np.testing.assert_array_equal(np.frombuffer(payload, "<i2"), samples)


def test_wire_refuses_what_is_not_a_server_message():
    with pytest.raises(wire.WireError, match="shorter"):
        wire.unpack(b"SV\x01")
    with pytest.raises(wire.WireError, match="does not start"):
        wire.unpack(b"XX" + bytes(30))
    bad_kind = wire.HEADER.pack(wire.MAGIC, 9, wire.VERSION, 0, 0.0, 0, 0, 0)
    with pytest.raises(wire.WireError, match="kind 9"):
        wire.unpack(bad_kind)


def test_full_visemes_and_implied_blendshapes_of_rest():
    assert full_visemes(None)["sil"] == 1.0
    assert implied_blendshapes(full_visemes(None)) == REST_BLENDSHAPES
    assert REST_BLENDSHAPES == {b: float(w) for b, w in zip(BLENDSHAPES, VISEME_BLENDSHAPES[SIL])}  # silence's row
