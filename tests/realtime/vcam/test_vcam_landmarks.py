"""``syncvid vcam`` end to end with the real engine (embedded renderer, streaming Whisper, the
default avatar) on the recording camera: FaceMesh sees the lips move with real speech and close in
silence."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from realtime.cli import vcam as vcam_cli
from realtime.vcam.inputs import LEAD_IN_S

SPEECH_S = (0.40, 3.45)  # where arctic_a0007's sentence is loud, in the file
DELAY_S = 0.17  # the engine's latency budget: speech arrival -> the frame showing it leaves


@pytest.mark.slow
def test_real_lips_open_with_the_speech_and_close_in_silence(arctic_wav, default_avatar, recording_backend):
    from realtime.bench.mouth_open import face_box, opening_series

    parser = argparse.ArgumentParser()
    vcam_cli.register(parser.add_subparsers())
    args = parser.parse_args(["vcam", "--audio", str(arctic_wav), "--avatar", str(default_avatar.directory),
                              "--backend", "recording", "--seconds", "5.6"])
    assert vcam_cli.start(args) == 0
    frames = recording_backend.instances[0].frames
    live = frames[1:]  # frames[0]: the avatar shown while the models loaded
    t = np.array([f[0] for f in live]) - live[0][0]  # ~ the file's packet clock (both start together)
    assert len(live) >= 0.95 * 25 * 5.6
    box = face_box(default_avatar)
    series = opening_series([img[box] for _, img in live])
    on = LEAD_IN_S + DELAY_S  # the file's time 0 on the camera
    before = series[(t > 0.15) & (t < on + SPEECH_S[0] - 0.15)]
    during = series[(t > on + SPEECH_S[0] + 0.3) & (t < on + SPEECH_S[1] - 0.2)]
    after = series[t > on + SPEECH_S[1] + 0.5]
    print(f"\nmouth opening (FaceMesh): before {np.nanmedian(before):.3f}, during median {np.nanmedian(during):.3f} "
          f"max {np.nanmax(during):.3f} ({np.mean(during > 0.1):.0%} of frames > 0.1), after {np.nanmedian(after):.3f}")
    assert len(before) >= 8 and np.nanmax(before) < 0.06, before  # lips together before the speech
    assert np.mean(during > 0.1) > 0.4 and np.nanmax(during) > 0.25, during  # moving with it
    assert len(after) >= 8 and np.nanmedian(after) < 0.06, after  # and together again after it
