"""Sans-I/O protocol rules on strings and bytes."""

from __future__ import annotations

import json

import pytest

from realtime.server import protocol as P

SDP = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"


def test_offer_starts_webrtc_session_with_options():
    proto = P.SessionProtocol()
    ev = proto.receive_text(json.dumps({"type": "offer", "sdp": SDP, "options": {"low_latency": True}}))
    assert ev == P.Offer(sdp=SDP, options={"low_latency": True})
    assert proto.kind is P.SessionKind.WEBRTC and proto.state is P.State.ACTIVE
    assert isinstance(proto.receive_text('{"type":"interrupt"}'), P.Interrupt)
    assert proto.receive_text('{"type":"report","glass_to_glass_ms":312.5}') == P.Report(312.5)
    assert isinstance(proto.receive_text('{"type":"report","glass_to_glass_ms":"fast"}'), P.ProtocolError)
    again = proto.receive_text(json.dumps({"type": "offer", "sdp": SDP}))
    assert isinstance(again, P.ProtocolError) and again.code is P.ErrorCode.UNEXPECTED and again.close_code is None
    assert proto.receive_text('{"type":"close","reason":"done"}') == P.Close("done")
    assert proto.state is P.State.CLOSED
    assert isinstance(proto.receive_text('{"type":"interrupt"}'), P.ProtocolError)


def test_start_routes_to_sdk_session_and_accepts_pcm16():
    proto = P.SessionProtocol()
    assert proto.receive_text('{"type":"start","options":{"seed":3}}') == P.Start(options=P.SdkOptions(seed=3))
    assert proto.kind is P.SessionKind.SDK
    assert proto.receive_bytes(b"\x00\x01" * 160) == P.AudioChunk(pcm16=b"\x00\x01" * 160)
    odd = proto.receive_bytes(b"\x00\x01\x02")
    assert isinstance(odd, P.ProtocolError) and odd.code is P.ErrorCode.BAD_AUDIO and odd.close_code is None
    assert proto.receive_text('{"type":"end_of_utterance"}') == P.EndOfUtterance()
    assert proto.receive_text('{"type":"clear_buffer"}') == P.Interrupt()  # the agent frameworks' name


def test_start_options_all_of_them_typed():
    opts = {"sample_rate": 24000, "video": "raw", "jpeg_quality": 55, "visemes": False, "blendshapes": False,
            "audio_out": False, "avatar": "anna", "low_latency": True, "seed": 7}
    ev = P.parse_text(json.dumps({"type": "start", "options": opts}))
    assert ev == P.Start(options=P.SdkOptions(**opts))
    assert P.parse_text('{"type":"start"}') == P.Start(options=P.SdkOptions())
    assert P.SdkOptions().sample_rate == 16000 and P.SdkOptions().video == "jpeg"


@pytest.mark.parametrize("options, code, words", [
    ({"sample_rate": 11025}, P.ErrorCode.BAD_AUDIO, "11025"),
    ({"sample_rate": 16000.0}, P.ErrorCode.BAD_OPTION, "int"),
    ({"video": "gif"}, P.ErrorCode.BAD_OPTION, "jpeg, raw, none"),
    ({"jpeg_quality": 0}, P.ErrorCode.BAD_OPTION, "1 to 100"),
    ({"jpeg_quality": 101}, P.ErrorCode.BAD_OPTION, "1 to 100"),
    ({"visemes": 1}, P.ErrorCode.BAD_OPTION, "bool"),
    ({"avatar": ""}, P.ErrorCode.BAD_OPTION, "avatar"),
    ({"avatar": "x" * 201}, P.ErrorCode.BAD_OPTION, "avatar"),
    ({"audio": True}, P.ErrorCode.BAD_OPTION, "audio_out"),  # the message lists the known options
])
def test_bad_start_options_close_the_connection_with_a_named_error(options, code, words):
    proto = P.SessionProtocol()
    ev = proto.receive_text(json.dumps({"type": "start", "options": options}))
    assert isinstance(ev, P.ProtocolError) and ev.code is code and ev.close_code == P.CLOSE_POLICY
    assert words in ev.message


def test_sdk_options_are_not_offer_options():
    ev = P.parse_text(json.dumps({"type": "offer", "sdp": "v=0", "options": {"video": "raw"}}))
    assert isinstance(ev, P.ProtocolError) and ev.code is P.ErrorCode.BAD_OPTION
    ev = P.parse_text(json.dumps({"type": "offer", "sdp": "v=0", "options": {"avatar": "anna"}}))
    assert ev == P.Offer(sdp="v=0", options={"avatar": "anna"})


@pytest.mark.parametrize(
    "text, code",
    [
        ("{not json", P.ErrorCode.BAD_JSON),
        ("[1, 2]", P.ErrorCode.BAD_MESSAGE),
        ('{"sdp": "v=0"}', P.ErrorCode.MISSING_FIELD),
        ('{"type": "dance"}', P.ErrorCode.UNKNOWN_TYPE),
        ('{"type": "offer"}', P.ErrorCode.MISSING_FIELD),
        ('{"type": "offer", "sdp": ""}', P.ErrorCode.MISSING_FIELD),
        ('{"type": "offer", "sdp": "hello"}', P.ErrorCode.BAD_MESSAGE),
        ('{"type": "offer", "sdp": "v=0", "options": {"volume": 3}}', P.ErrorCode.BAD_OPTION),
        ('{"type": "offer", "sdp": "v=0", "options": {"low_latency": "yes"}}', P.ErrorCode.BAD_OPTION),
        ('{"type": "offer", "sdp": "v=0", "options": []}', P.ErrorCode.BAD_OPTION),
        ('{"type": "interrupt"}', P.ErrorCode.UNEXPECTED),
        ("[" * 100000 + "]" * 100000, P.ErrorCode.BAD_JSON),
        ('{"type": "offer", "sdp": "v=0", "n": ' + "9" * 5000 + "}", P.ErrorCode.BAD_JSON),  # int too long
        ('{"type": "offer", "sdp": "v=0", "options": {"seed": -1}}', P.ErrorCode.BAD_OPTION),
        ('{"type": "offer", "sdp": "v=0", "options": {"seed": 4294967296}}', P.ErrorCode.BAD_OPTION),
    ],
)
def test_bad_first_message_is_an_error_that_closes(text, code):
    proto = P.SessionProtocol()
    ev = proto.receive_text(text)
    assert isinstance(ev, P.ProtocolError)
    assert ev.code is code
    assert ev.close_code == P.CLOSE_POLICY
    msg = ev.to_message()
    assert msg["type"] == "error" and msg["code"] == code.value and msg["message"]
    assert proto.state is P.State.CLOSED  # a valid first message after it is refused too


def test_binary_before_start_is_rejected():
    ev = P.SessionProtocol().receive_bytes(b"\x00\x00")
    assert isinstance(ev, P.ProtocolError) and ev.close_code == P.CLOSE_POLICY


def test_bad_control_message_keeps_session():
    proto = P.SessionProtocol()
    proto.receive_text(json.dumps({"type": "offer", "sdp": SDP}))
    ev = proto.receive_text('{"type": "nope"}')
    assert isinstance(ev, P.ProtocolError) and ev.close_code is None
    assert proto.state is P.State.ACTIVE
    assert isinstance(proto.receive_bytes(b"\x00\x00"), P.ProtocolError)  # no binary in WebRTC sessions


def test_messages_encode_compactly():
    assert P.encode(P.answer_message("v=0")) == '{"type":"answer","sdp":"v=0"}'
    assert json.loads(P.encode(P.event_message("interrupted"))) == {"type": "event", "event": "interrupted"}
