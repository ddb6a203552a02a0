"""The glass-to-glass probe's landmark detector (realtime.bench.mouth_open) on real renders."""

import numpy as np

from realtime.bench.echo_server import echo_frames
from realtime.bench.g2g_reference import luma
from realtime.bench.mouth_open import face_box, opening_series
from realtime.face.avatar import default_avatar


def test_opening_reads_rest_and_open_mouths_of_the_echo_frames_through_the_probe_crop():
    avatar = default_avatar()
    box = face_box(avatar)
    h, w = np.asarray(avatar.frame(0)).shape[:2]
    assert 0 <= box[0].start < box[0].stop <= h and 0 <= box[1].start < box[1].stop <= w
    rest, opened = echo_frames(avatar)
    rest, opened = luma(rest)[box], luma(opened)[box]  # what the probe keeps: Y of the face region

    series = opening_series([rest] * 3 + [opened] * 3 + [rest] * 2)
    assert not np.isnan(series).any()
    assert series[:3].max() < 0.06  # lips together at rest
    assert series[3:6].min() > 0.2  # jaw open 0.7: the inner lips well apart
    assert series[6:].max() < 0.06
    # the probe's threshold (0.08 above the pre-onset median) separates the two at once
    from realtime.bench.loopback import Probe

    assert series[3] > np.median(series[:3]) + Probe.JUMP
    blank = opening_series([np.zeros_like(rest)])
    assert np.isnan(blank[0])  # no face: no reading (not a closed mouth)


def test_content_delay_of_a_vowel_onset_is_about_zero_and_silence_has_none():
    from realtime.bench.g2g_reference import content_delays
    from realtime.bench.loopback import BURST_S, FIXTURE, Probe, speech_bursts

    bursts = speech_bursts(str(FIXTURE), 1)  # the clip's first voiced onset, as the probe plays it
    silence = np.zeros(int(BURST_S * 48000), np.int16)
    box = face_box(default_avatar())
    speech_d, silent_d = content_delays([bursts[0], silence], "full", box, Probe.JUMP)
    # the first burst starts on a vowel: the mouth opens within a frame of the onset (the model
    # may open it a little before the sound: it sees 120 ms ahead)
    assert -0.045 <= speech_d <= 0.045
    assert np.isnan(silent_d)  # never opens


def test_probe_analysis_of_a_synthetic_session():
    """Two bursts: the mouth opens 0.30 s after each onset, the audio gets loud 0.11 s after it;
    burst 0 has a content delay of 0.12 s, burst 1 an ambiguous one (NaN)."""
    from realtime.bench.loopback import BURST_S, Probe

    avatar = default_avatar()
    box = face_box(avatar)
    rest, opened = echo_frames(avatar)
    probe = Probe(box)
    onsets = [1.0, 2.72]  # 0.3 s after either is between two frames (25 fps)
    for i in range(int((onsets[1] + 1.5) * 25)):
        t = i / 25
        is_open = any(on + 0.3 <= t < on + 0.3 + 0.4 for on in onsets)
        probe.on_video(t, luma(opened if is_open else rest))
    for i in range(int((onsets[1] + 1.5) * 50)):
        t = i / 50
        loud = any(on + 0.11 <= t < on + BURST_S for on in onsets)
        probe.on_audio(t, np.full(960, 8000 if loud else 0, np.int16))
    res = probe.analyse(onsets, calib_until=0.9, delays=[0.12, float("nan")])
    assert res["onsets"] == 2 and res["face_found"] == 1.0
    np.testing.assert_allclose(res["g2g"], [0.32, 0.32], atol=1e-9)  # first frame at or after +0.3 s
    np.testing.assert_allclose(res["g2g_net"], [0.20], atol=1e-9)  # burst 1 left out
    np.testing.assert_allclose(res["av_raw"], [0.20, 0.20], atol=1e-9)  # video +0.32, audio +0.12 (50 Hz)
    np.testing.assert_allclose(res["av"], [0.08], atol=1e-9)  # minus the content delay
    assert [b["content_delay"] for b in res["per_burst"]] == [0.12, None]


def test_first_open_frame_is_left_out_when_the_opening_hovers_at_the_threshold():
    from realtime.bench.g2g_reference import BASE_NOISE, first_open

    th = 0.03 + 0.08
    crisp = np.array([0.03, 0.03, 0.03, 0.04, 0.25, 0.3, 0.2])
    assert first_open(crisp, 0, th) == 4
    assert first_open(crisp, 5, th) == 5  # from ``start`` on
    ramp = np.array([0.03, 0.03, 0.08, 0.12, 0.16, 0.2])  # one frame per BASE_NOISE step: still defined
    assert first_open(ramp, 0, th) == 3
    # a plateau just above the threshold: a baseline BASE_NOISE higher opens it 4 frames later
    hover = np.array([0.03, 0.03, 0.12, 0.11, 0.12, 0.10, 0.2])
    assert first_open(hover, 0, th) is None
    assert first_open(hover, 0, th - BASE_NOISE - 0.01) == 2  # far below the plateau it is crisp again
    assert first_open(np.array([0.03, np.nan, 0.03, 0.05]), 0, th) is None  # never opens
