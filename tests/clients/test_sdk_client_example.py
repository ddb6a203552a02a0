"""examples/wav_to_mp4.py against a fake server that plays the received speech back as frames: one
task sends while another collects, and the MP4 holds exactly the speaking frames and their audio."""

from __future__ import annotations

import importlib.util
import json
import socket
import wave
from pathlib import Path

import numpy as np
import pytest

from tests.clients.sdk_fake_server import (
    audio_part,
    event,
    fake_server,
    frame_event,
    jpeg_part,
    session_started,
)

av = pytest.importorskip("av")
pytest.importorskip("PIL")

EXAMPLE = Path(__file__).resolve().parents[2] / "clients" / "python" / "examples" / "wav_to_mp4.py"
FRAME = 640  # samples per frame at 16 kHz, 25 fps


def _example():
    spec = importlib.util.spec_from_file_location("wav_to_mp4", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write_wav(path: Path, samples: np.ndarray, rate: int, channels: int = 1) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.astype("<i2").tobytes())


async def _playback(ws, record) -> None:
    """Two rest frames, then the speech it receives, 640 samples a frame, then playback_finished."""
    await ws.send(session_started(width=32, height=32))
    for i in range(2):
        await ws.send(frame_event(i))
        await ws.send(jpeg_part(i, (0, 0, 0), 32, 32))
        await ws.send(audio_part(i, np.zeros(FRAME, np.int16)))
    speech = []
    async for message in ws:
        if isinstance(message, bytes):
            speech.append(np.frombuffer(message, "<i2"))
        elif json.loads(message)["type"] == "end_of_utterance":
            break
    pcm = np.concatenate(speech)
    pcm = np.concatenate([pcm, np.zeros(-len(pcm) % FRAME, np.int16)])
    record.audio = [pcm.tobytes()]
    await ws.send(event("playback_started", utterance=1, pts=2 / 25))
    for k in range(len(pcm) // FRAME):
        i = k + 2
        await ws.send(frame_event(i, speaking=True))
        await ws.send(audio_part(i, pcm[k * FRAME:(k + 1) * FRAME]))  # audio before image: any order
        await ws.send(jpeg_part(i, (200, 200, 200), 32, 32))
    await ws.send(event("playback_finished", utterance=1, playback_position=len(pcm) / 16000, interrupted=False))
    await ws.wait_closed()


async def test_wav_to_mp4_writes_the_speaking_frames_with_their_audio(tmp_path):
    t = np.arange(16000 // 2) / 16000  # 0.5 s stereo at 16 kHz
    stereo = np.rint(np.stack([8000 * np.sin(2 * np.pi * 300 * t), 4001 * np.sin(2 * np.pi * 300 * t)], axis=1))
    stereo = stereo.astype(np.int16)
    wav, out = tmp_path / "speech.wav", tmp_path / "out.mp4"
    _write_wav(wav, stereo.reshape(-1), 16000, channels=2)
    async with fake_server(_playback) as (url, record):
        frames = await _example().convert(str(wav), str(out), url, None)
    sent = np.frombuffer(record.audio[0], "<i2")
    np.testing.assert_array_equal(sent[:8000], np.rint(stereo.mean(axis=1)).astype(np.int16))  # mono mix
    assert frames == 13  # ceil(8000 / 640) speaking frames; the two rest frames are trimmed
    with av.open(str(out)) as container:
        video = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    with av.open(str(out)) as container:
        audio = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)])
    assert len(video) == 13 and video[0].shape == (32, 32, 3)
    assert abs(float(video[0].mean()) - 200) < 8  # a speaking frame, not a black rest frame
    assert abs(len(audio) - 13 * FRAME) <= 1024  # AAC pads by up to a frame
    assert np.abs(audio).max() > 0.1  # the speech (AAC, float): 6000 / 32768 = 0.18 peak


def test_wav_to_mp4_errors_are_one_line(tmp_path, capsys):
    example = _example()
    not_wav = tmp_path / "notes.wav"
    not_wav.write_text("not audio")
    assert example.main([str(not_wav), str(tmp_path / "o.mp4")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {not_wav} is not a PCM16 WAV file") and "\n" not in err

    wav = tmp_path / "ok.wav"
    _write_wav(wav, np.zeros(1600, np.int16), 16000)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert example.main([str(wav), str(tmp_path / "o.mp4"), "--url", f"ws://127.0.0.1:{port}/ws"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: cannot connect to ws://127.0.0.1:{port}/ws") and "\n" not in err
    assert err.endswith("is `syncvid serve` running there?")
