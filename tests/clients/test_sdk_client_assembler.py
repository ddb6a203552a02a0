"""FrameAssembler without sockets: ordering, dropping frames whose parts never come, bounded memory;
and the package's import staying free of torch and the engine."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from syncvid_client import Frame, PlaybackFinished, ServerError, wire
from syncvid_client.assembler import FrameAssembler

from tests.clients.sdk_fake_server import audio_part, frame_event


def _event(index: int) -> dict:
    return json.loads(frame_event(index))


def _image(index: int) -> bytes:
    return wire.pack(wire.Header(wire.Kind.RAW, index, index / 25, 2, 1), bytes([index % 256] * 6))


def test_events_wait_behind_an_incomplete_frame_then_come_in_order():
    a = FrameAssembler(video="raw")
    a.feed_event(_event(0))
    a.feed_error("buffer_full", "dropped")
    a.feed_event(_event(1))
    a.feed_binary(_image(1))
    a.feed_binary(audio_part(1, np.ones(4, np.int16)))
    assert a.pop_ready() == []  # frame 0 still waits for its parts
    a.feed_binary(audio_part(0, np.zeros(4, np.int16)))
    a.feed_binary(_image(0))
    f0, err, f1 = a.pop_ready()
    assert isinstance(f0, Frame) and isinstance(f1, Frame)
    assert (f0.index, f1.index) == (0, 1)
    assert err == ServerError("buffer_full", "dropped")
    assert f0.image is not None and f0.image.tolist() == [[[0, 0, 0], [0, 0, 0]]]
    assert f1.audio is not None and f1.audio.tolist() == [1, 1, 1, 1]


def test_a_frame_missing_a_part_is_dropped_once_window_newer_frames_came():
    a = FrameAssembler(video="none", window=2)
    a.feed_event(_event(0))  # its audio never comes
    a.feed_event({"type": "event", "event": "playback_finished", "utterance": 1, "playback_position": 0.5})
    for i in (1, 2):
        a.feed_event(_event(i))
        a.feed_binary(audio_part(i, np.zeros(2, np.int16)))
    assert a.pop_ready() == [] and a.dropped == 0
    a.feed_event(_event(3))
    ready = a.pop_ready()  # 0 is now 3 frames old (> window): dropped, the rest flows
    assert [type(e) for e in ready] == [PlaybackFinished, Frame, Frame]
    assert [e.index for e in ready[1:]] == [1, 2] and a.dropped == 1
    a.feed_binary(audio_part(0, np.zeros(2, np.int16)))  # too late: ignored
    assert a.pop_ready() == [] and 0 not in a._parts


def test_parts_without_events_are_bounded():
    a = FrameAssembler(video="raw", window=4)
    for i in range(1000):
        a.feed_binary(_image(i))
    assert len(a._parts) <= 4 * 4 + 8
    a.feed_event(_event(999))
    a.feed_binary(audio_part(999, np.zeros(2, np.int16)))
    assert [e.index for e in a.pop_ready()] == [999]
    assert len(a._parts) == 0  # everything older than the window is forgotten once a newer event came


def test_flush_returns_held_events_and_drops_incomplete_frames():
    a = FrameAssembler()
    a.feed_event(_event(0))
    a.feed_event({"type": "event", "event": "session_ended", "reason": "bye"})
    assert a.pop_ready() == []
    (ended,) = a.flush()
    assert ended.reason == "bye" and a.dropped == 1


def test_a_binary_in_another_format_is_a_wire_error():
    a = FrameAssembler()
    with pytest.raises(wire.WireError, match="version"):
        a.feed_binary(wire.HEADER.pack(wire.MAGIC, 1, 9, 0, 0.0, 0, 0, 0))


def test_import_pulls_in_neither_torch_nor_the_engine():
    code = ("import sys, syncvid_client; from syncvid_client import client, audio, assembler, jpeg; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'realtime', 'models')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"
