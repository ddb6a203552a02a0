"""SpeechPlayout: the SDK session's speech buffer, packets and playback events (no I/O)."""

import numpy as np
import pytest

from realtime.server.sdk.playout import PlaybackFinished, PlaybackStarted, SpeechPlayout

RATE = 24000
P = 480  # 20 ms at 24 kHz


def ramp(n: int, start: int = 1) -> np.ndarray:
    return (np.arange(start, start + n) % 30000).astype(np.int16)


def test_packets_are_the_speech_then_silence_and_the_played_audio_is_the_same_samples():
    p = SpeechPlayout(RATE, max_buffer_s=10)
    speech = ramp(P * 2 + 100)
    assert p.receive(speech)
    got = np.concatenate([p.next_packet().samples for _ in range(4)])
    assert len(got) == 4 * P
    np.testing.assert_array_equal(got[:len(speech)], speech)
    assert not got[len(speech):].any()
    np.testing.assert_array_equal(p.slot_audio(0, 4 * P), got)


def test_speech_arriving_while_nothing_is_buffered_joins_the_packet_being_recorded():
    p = SpeechPlayout(RATE, max_buffer_s=10)
    for _ in range(3):  # 60 ms of silence handed over: the timeline moved on
        p.next_packet()
    p.receive(ramp(100))
    pkt = p.next_packet()
    np.testing.assert_array_equal(pkt.samples[:100], ramp(100))  # starts at this packet, not at sample 0
    assert p.on_slot(0, 3 * P) == []  # the silence before it plays no utterance
    assert p.on_slot(3 * P, 3 * P + 960) == [PlaybackStarted(1)]


def test_buffer_is_bounded_and_a_rejected_chunk_keeps_nothing():
    p = SpeechPlayout(RATE, max_buffer_s=1.0)
    assert p.receive(ramp(RATE - 10))
    assert not p.receive(ramp(20))  # would exceed 1 s
    assert p.buffered == RATE - 10
    assert p.receive(ramp(10))  # exactly full is fine
    p.next_packet()
    assert p.buffered == RATE - P
    assert p.receive(ramp(P))  # played out 20 ms: room for 20 ms


def test_utterances_start_and_finish_with_the_frames_that_play_them():
    p = SpeechPlayout(RATE, max_buffer_s=10)
    p.receive(ramp(1000))
    assert p.end_utterance()
    assert not p.end_utterance()  # nothing open
    ended = [p.next_packet().utterance_ended for _ in range(4)]
    assert ended == [False, False, True, False]  # sample 1000 lies in the third packet
    assert p.on_slot(-960, 0) == []
    assert p.on_slot(0, 960) == [PlaybackStarted(1)]
    assert p.on_slot(960, 1920) == [PlaybackFinished(1, 1000 / RATE, False)]  # 1000 <= 1920: played
    p.receive(ramp(10))
    assert p.on_slot(1920, 2880) == [PlaybackStarted(2)]  # the next audio is the next utterance


def test_interrupt_drops_the_buffer_and_reports_what_played():
    p = SpeechPlayout(RATE, max_buffer_s=10)
    p.receive(ramp(RATE))  # 1 s
    for _ in range(10):
        p.next_packet()
    p.on_slot(0, 960)
    p.on_slot(960, 1920)
    fin = p.interrupt()
    assert fin == [PlaybackFinished(1, 1920 / RATE, True)]
    assert p.buffered == 0
    assert not p.slot_audio(1920, 4800).any()  # handed to the engine, never played
    assert not p.next_packet().samples.any()
    assert p.interrupt() == []  # nothing left to report


def test_interrupt_before_playback_reports_the_utterance_unplayed():
    p = SpeechPlayout(RATE, max_buffer_s=10)
    p.receive(ramp(2000))
    p.end_utterance()
    p.receive(ramp(500))  # a second utterance, queued behind the first
    fin = p.interrupt()
    assert fin == [PlaybackFinished(1, 0.0, True), PlaybackFinished(2, 0.0, True)]
    assert p.on_slot(0, 10 * P) == []  # no playback_started for what was dropped


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 24000, 44100, 48000])
def test_every_accepted_rate_has_whole_packets(rate):
    p = SpeechPlayout(rate, max_buffer_s=1)
    assert p.packet == rate * 20 / 1000
    assert len(p.next_packet().samples) == p.packet


def test_buffered_ms_counts_speech_not_yet_played_to_the_client():
    p = SpeechPlayout(RATE, max_buffer_s=10)
    p.receive(ramp(RATE // 2))  # 500 ms
    assert p.buffered_ms() == 500
    for _ in range(5):
        p.next_packet()
    p.on_slot(0, 2400)  # 100 ms played
    assert p.buffered_ms() == 400


def test_held_packets_move_the_buffered_speech_later_without_losing_any():
    p = SpeechPlayout(RATE, max_buffer_s=10)
    p.receive(ramp(700))
    p.end_utterance()
    held = [p.next_packet(hold=True) for _ in range(2)]
    assert not any(h.samples.any() for h in held)
    got = np.concatenate([p.next_packet().samples for _ in range(2)])
    np.testing.assert_array_equal(got[:700], ramp(700))
    assert p.on_slot(0, 2 * P) == []  # the held silence plays no utterance
    assert p.on_slot(2 * P, 3 * P) == [PlaybackStarted(1)]
    assert p.on_slot(3 * P, 4 * P) == [PlaybackFinished(1, 700 / RATE, False)]
