"""load_audio: formats, resampling, downmixing, and one clear AudioInputError naming the input."""

import struct
import wave

import numpy as np
import pytest

from realtime.audio.io import SAMPLE_RATE, load_audio, resample
from realtime.errors import AudioInputError


def write_wav(path, samples: np.ndarray, rate: int) -> None:
    """int16 PCM wav; ``samples`` is (n,) or (n, channels) float in [-1, 1]."""
    s = samples if samples.ndim == 2 else samples[:, None]
    pcm = np.clip(np.round(s * 32767), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(s.shape[1])
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())


def write_float_wav(path, samples: np.ndarray, rate: int) -> None:
    """IEEE-float mono wav (format tag 3), which can carry NaN."""
    data = samples.astype("<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, rate, rate * 4, 4, 32)
    riff = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    path.write_bytes(b"RIFF" + struct.pack("<I", len(riff)) + riff)


def _sine(freq, seconds, rate, amp=1.0):
    t = np.arange(int(seconds * rate)) / rate
    return amp * np.sin(2 * np.pi * freq * t)


def _peak_hz(x, rate=SAMPLE_RATE):
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return np.fft.rfftfreq(len(x), 1 / rate)[spec.argmax()]


def test_wav_16k_mono_is_exact_int16_scaling(arctic_wav):
    x = load_audio(arctic_wav)
    with wave.open(str(arctic_wav)) as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), "<i2")
    assert x.dtype == np.float32 and x.shape == (64000,)
    np.testing.assert_array_equal(x, pcm.astype(np.float32) / 32768)


def test_stereo_44k1_is_resampled_and_downmixed(tmp_path):
    left, right = _sine(440, 1.0, 44100, 0.5), _sine(440, 1.0, 44100, 0.3)
    path = tmp_path / "stereo.wav"
    write_wav(path, np.stack([left, right], 1), 44100)
    x = load_audio(path)
    assert x.dtype == np.float32 and x.ndim == 1
    assert abs(len(x) - SAMPLE_RATE) <= 2
    assert abs(_peak_hz(x) - 440) <= 2
    # channels are averaged: amplitude (0.5 + 0.3) / 2 away from the resampler's edges
    assert abs(np.abs(x[1000:-1000]).max() - 0.4) < 0.01


def test_array_input_resampled_downmixed_and_int_scaled():
    stereo = np.stack([_sine(300, 0.5, 48000, 0.2)] * 2, 1).astype(np.float32)  # (n, 2)
    x = load_audio(stereo, sample_rate=48000)
    assert abs(len(x) - 8000) <= 2 and abs(_peak_hz(x) - 300) <= 3
    pcm = (np.ones(160) * 16384).astype(np.int16)
    np.testing.assert_allclose(load_audio(pcm), 0.5)


@pytest.mark.parametrize("codec,ext", [("flac", "flac"), ("aac", "m4a"), ("libopus", "ogg")])
def test_compressed_formats(tmp_path, arctic_audio, codec, ext):
    av = pytest.importorskip("av")
    path = tmp_path / f"a.{ext}"
    rate = 48000 if codec == "libopus" else 16000
    src = resample(arctic_audio, 16000, rate)
    try:
        with av.open(str(path), "w") as c:
            st = c.add_stream(codec, rate=rate, layout="mono")
            frame = av.AudioFrame.from_ndarray((src[None] * 32767).astype(np.int16), format="s16", layout="mono")
            frame.sample_rate = rate
            for p in st.encode(frame):
                c.mux(p)
            for p in st.encode(None):
                c.mux(p)
    except av.FFmpegError as e:  # pragma: no cover - codec missing from this FFmpeg build
        pytest.skip(f"{codec} encoder unavailable: {e}")
    x = load_audio(path)
    assert abs(len(x) - len(arctic_audio)) <= 0.1 * SAMPLE_RATE  # codec priming/padding (AAC: 1024 + frame rounding)
    if codec == "flac":
        np.testing.assert_allclose(x, arctic_audio, atol=2 / 32768)


def _assert_names(err, path):
    assert str(path) in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.wav"
    with pytest.raises(AudioInputError, match="does not exist") as e:
        load_audio(path)
    _assert_names(e, path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    with pytest.raises(AudioInputError, match="empty") as e:
        load_audio(path)
    _assert_names(e, path)


def test_truncated_wav(tmp_path, arctic_wav):
    path = tmp_path / "cut.wav"
    path.write_bytes(arctic_wav.read_bytes()[: 44 + 30000])  # header + ~0.94 s of 4 s
    with pytest.raises(AudioInputError, match="truncated") as e:
        load_audio(path)
    _assert_names(e, path)


def test_header_only_wav(tmp_path, arctic_wav):
    path = tmp_path / "header.wav"
    path.write_bytes(arctic_wav.read_bytes()[:44])
    with pytest.raises(AudioInputError) as e:
        load_audio(path)
    _assert_names(e, path)


def test_garbage_bytes(tmp_path):
    path = tmp_path / "garbage.mp3"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(AudioInputError) as e:
        load_audio(path)
    _assert_names(e, path)


def test_file_without_audio_stream(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello " * 200)
    with pytest.raises(AudioInputError) as e:
        load_audio(path)
    _assert_names(e, path)


def test_nan_samples_in_file_and_array(tmp_path):
    x = _sine(200, 0.5, 16000, 0.5).astype(np.float32)
    x[100:110] = np.nan
    path = tmp_path / "nan.wav"
    write_float_wav(path, x, 16000)
    with pytest.raises(AudioInputError, match="10 non-finite") as e:
        load_audio(path)
    _assert_names(e, path)
    with pytest.raises(AudioInputError, match="non-finite"):
        load_audio(np.array([0.0, np.inf], np.float32))
    with pytest.raises(AudioInputError, match="empty"):
        load_audio(np.zeros(0, np.float32))


def test_video_file_sound_track(tmp_path, arctic_audio):
    av = pytest.importorskip("av")
    path = tmp_path / "clip.mp4"
    with av.open(str(path), "w") as c:
        vs = c.add_stream("mpeg4", rate=25)
        vs.width, vs.height, vs.pix_fmt = 64, 64, "yuv420p"
        aus = c.add_stream("aac", rate=16000, layout="mono")
        for i in range(25):
            img = np.full((64, 64, 3), i * 8, np.uint8)
            for p in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in vs.encode(None):
            c.mux(p)
        frame = av.AudioFrame.from_ndarray((arctic_audio[None, :16000] * 32767).astype(np.int16), format="s16", layout="mono")
        frame.sample_rate = 16000
        for p in list(aus.encode(frame)) + list(aus.encode(None)):
            c.mux(p)
    x = load_audio(path)
    assert abs(len(x) - 16000) <= 0.1 * SAMPLE_RATE
    assert np.abs(x).max() > 0.05


def test_truncated_compressed_file(tmp_path, arctic_audio):
    av = pytest.importorskip("av")
    path = tmp_path / "a.flac"
    with av.open(str(path), "w") as c:
        st = c.add_stream("flac", rate=16000, layout="mono")
        frame = av.AudioFrame.from_ndarray((arctic_audio[None] * 32767).astype(np.int16), format="s16", layout="mono")
        frame.sample_rate = 16000
        for p in list(st.encode(frame)) + list(st.encode(None)):
            c.mux(p)
    cut = tmp_path / "cut.flac"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(AudioInputError, match="truncated") as e:
        load_audio(cut)
    _assert_names(e, cut)
