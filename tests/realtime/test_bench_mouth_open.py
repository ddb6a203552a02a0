"""The glass-to-glass probe's landmark detector (realtime.bench.mouth_open) on real renders."""

import numpy as np

from realtime.bench.echo_server import echo_frames
from realtime.bench.mouth_open import face_box, opening_series
from realtime.face.avatar import default_avatar


def test_opening_reads_rest_and_open_mouths_of_the_echo_frames_through_the_probe_crop():
    avatar = default_avatar()
    box = face_box(avatar)
    h, w = np.asarray(avatar.frame(0)).shape[:2]
    assert 0 <= box[0].start < box[0].stop <= h and 0 <= box[1].start < box[1].stop <= w
    rest, opened = echo_frames(avatar)

    def luma(rgb):  # what the probe keeps: the Y plane of the face region
        y = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
        return np.clip(y + 0.5, 0, 255).astype(np.uint8)[box]

    series = opening_series([luma(rest)] * 3 + [luma(opened)] * 3 + [luma(rest)] * 2)
    assert not np.isnan(series).any()
    assert series[:3].max() < 0.06  # lips together at rest
    assert series[3:6].min() > 0.2  # jaw open 0.7: the inner lips well apart
    assert series[6:].max() < 0.06
    # the probe's threshold (0.08 above the pre-onset median) separates the two at once
    from realtime.bench.realtime import Probe

    assert series[3] > np.median(series[:3]) + Probe.JUMP
    blank = opening_series([np.zeros_like(luma(rest))])
    assert np.isnan(blank[0])  # no face: no reading (not a closed mouth)


def test_content_delay_of_a_vowel_onset_is_about_zero_and_silence_has_none():
    from realtime.bench.g2g_reference import content_delays
    from realtime.bench.realtime import BURST_S, FIXTURE, Probe, speech_bursts

    bursts = speech_bursts(str(FIXTURE), 1)  # the clip's first voiced onset, as the probe plays it
    silence = np.zeros(int(BURST_S * 48000), np.int16)
    box = face_box(default_avatar())
    speech_d, silent_d = content_delays([bursts[0], silence], "full", box, Probe.JUMP)
    # the first burst starts on a vowel: the mouth opens within a frame of the onset (the model
    # may open it a little before the sound: it sees 120 ms ahead)
    assert -0.045 <= speech_d <= 0.045
    assert np.isnan(silent_d)  # never opens
