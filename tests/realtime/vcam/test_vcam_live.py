"""The virtual camera in real time over test stand-ins (fake engine, recording camera backend, fake
sounddevice): real speech from a file and from a microphone, frames at the camera's rate, the voice
played out with the video's delay."""

from __future__ import annotations

import argparse
import gc

import numpy as np
from vcam_fakes import played_signal

from realtime.audio.io import resample
from realtime.cli import vcam as vcam_cli
from realtime.heap import freeze_startup_heap
from realtime.session.config import SessionConfig
from realtime.vcam.camera import open_camera
from realtime.vcam.inputs import LEAD_IN_S, FileSource
from realtime.vcam.runner import Vcam
from realtime.vcam.sound import MicSource, SpeakerOutput
from tests.fakes import SIZE, FakeAvatar, FakeRenderer, make_engine, mouth_darkness

GAIN = 4.0  # the fake renderer's mouth opening per unit of RMS: arctic's speech (RMS 0.02..0.21) spans it
WINDOW_S = 0.04  # the fake encoder's loudness window: +-40 ms around each frame


def av_lag(frames: list[tuple[float, np.ndarray]], played: list) -> tuple[float, float]:
    """How much later the voice plays than the lips show it (seconds) and the correlation there:
    the mouth opening of each sent frame against the loudness of what the speaker played around its
    send time shifted by each candidate lag, in 2 ms steps."""
    rest = FakeAvatar().frame(0)
    times = np.array([t for t, _ in frames])
    opening = np.array([mouth_darkness(img, rest) for _, img in frames])
    p0, x = played_signal(played)
    energy = np.concatenate([[0.0], np.cumsum(x.astype(np.float64) ** 2)])
    half = round(WINDOW_S * 48000)
    best = (0.0, -1.0)
    for lag in np.arange(-0.12, 0.1201, 0.002):
        centre = np.round((times + lag - p0) * 48000).astype(int)
        ok = (centre - half >= 0) & (centre + half < len(x))
        rms = np.sqrt((energy[centre[ok] + half] - energy[centre[ok] - half]) / (2 * half))
        corr = float(np.corrcoef(np.clip(rms * GAIN, 0, 1), opening[ok])[0, 1])
        if corr > best[1]:
            best = (float(lag), corr)
    return best


async def test_file_speech_at_the_camera_rate_with_the_voice_delayed_like_the_lips(
        arctic_wav, recording_backend, fake_sounddevice):
    sd = fake_sounddevice(output_latency=0.03)
    engine = make_engine(FakeRenderer(gain=GAIN))
    camera = open_camera(SIZE, SIZE, 25, backend="recording")
    vcam = Vcam(engine, SessionConfig(), camera, FileSource(arctic_wav), SpeakerOutput(sd, "loopback"))
    freeze_startup_heap()  # as `syncvid vcam` does: the test process's heap is not walked mid-run
    try:
        stats = await vcam.run(seconds=LEAD_IN_S + 4.0 + 0.6)
    finally:
        gc.unfreeze()
        engine.close()
        camera.close()
    frames = recording_backend.instances[0].frames
    times = np.array([t for t, _ in frames])
    fps = (len(times) - 1) / (times[-1] - times[0])
    gaps = np.diff(times)
    lag, corr = av_lag(frames, sd.played)
    print(f"\n{len(frames)} frames at {fps:.3f} fps (intervals {gaps.min() * 1000:.1f}..{gaps.max() * 1000:.1f} ms, "
          f"p95 |interval - 40 ms| {np.percentile(np.abs(gaps - 0.04), 95) * 1000:.1f} ms); voice minus lips "
          f"{lag * 1000:+.0f} ms (correlation {corr:.2f}); {stats.kinds}, {stats.audio_jumps} audio re-anchors")
    assert abs(fps - 25) < 0.25 and stats.skipped_frames <= 2  # a constant rate, whatever the renderer does
    assert [f.index for f in vcam.history] == list(range(vcam.history[0].index, vcam.history[-1].index + 1))
    assert abs(lag) < 1 / 25 and corr > 0.7  # the voice on the lips within a frame
    # the mouth: closed in the lead-in's silence, open in most of the sentence (0.4..3.45 s of the file)
    rest = FakeAvatar().frame(0)
    shown = {f.index: f for f in vcam.history}
    sent = list(zip(vcam.history, frames))
    assert len(shown) == len(frames)
    silent = [mouth_darkness(img, rest) for h, (_, img) in sent if h.input_time is not None and h.input_time < 0.35]
    speech = [mouth_darkness(img, rest) for h, (_, img) in sent
              if h.input_time is not None and LEAD_IN_S + 0.5 < h.input_time < LEAD_IN_S + 3.3]
    assert len(silent) >= 3 and max(silent) < 1.0, silent
    assert len(speech) >= 60 and np.mean(np.array(speech) > 5) > 0.8
    assert stats.audio_underflows == 0 and stats.kinds.get("speech", 0) >= 60


async def test_microphone_speech_moves_the_lips(arctic_audio, recording_backend, fake_sounddevice):
    speech = resample(arctic_audio[6400:32000], 16000, 48000)  # 1.6 s of the sentence
    sd = fake_sounddevice(mic=np.concatenate([np.zeros(24000, np.float32), speech]))
    engine = make_engine(FakeRenderer(gain=GAIN))
    camera = open_camera(SIZE, SIZE, 25, backend="recording")
    mic = MicSource(sd, None)
    vcam = Vcam(engine, SessionConfig(), camera, mic)
    try:
        stats = await vcam.run(seconds=2.6)
    finally:
        engine.close()
        camera.close()
    assert mic.closed and 2.2 * 50 <= mic.received <= 2.7 * 50  # 20 ms blocks, in real time
    rest = FakeAvatar().frame(0)
    darkness = [(h.input_time, mouth_darkness(img, rest))
                for h, (_, img) in zip(vcam.history, recording_backend.instances[0].frames)]
    before = [d for t, d in darkness if t is not None and t < 0.45]
    during = [d for t, d in darkness if t is not None and 0.7 < t < 2.0]
    assert before and max(before) < 1.0, before
    assert len(during) >= 20 and np.mean(np.array(during) > 5) > 0.7, during
    assert stats.kinds.get("speech", 0) >= 20


def test_the_command_wires_file_camera_and_speaker(arctic_wav, default_avatar, recording_backend,
                                                   fake_sounddevice):
    """``syncvid vcam`` as typed (engine stand-in): the avatar's size, letterboxed to --size, the
    first frame before the models load, the voice to --play-to."""
    sd = fake_sounddevice()
    parser = argparse.ArgumentParser()
    vcam_cli.register(parser.add_subparsers())
    args = parser.parse_args(["vcam", "--audio", str(arctic_wav), "--avatar", str(default_avatar.directory),
                              "--backend", "recording", "--size", "320x240", "--play-to", "Loopback",
                              "--audio-delay", "auto", "--seconds", "1.2"])
    assert vcam_cli.start(args, build=lambda config, avatar: make_engine(FakeRenderer(gain=GAIN))) == 0
    cam = recording_backend.instances[0]
    assert cam.closed and (cam.width, cam.height) == (320, 240) and len(cam.frames) >= 25
    first = cam.frames[0][1]
    assert first[:, :40].max() == 0 and first[:, 40:280].mean() > 20  # the real avatar, letterboxed
    assert len(sd.played) >= 40 and all(s.kind == "output" for s in sd.streams)
