"""send_audio: what goes on the wire for int16, float, bytes and stereo input, message sizes, and the
streaming resampler (frequency and length kept, seamless across chunks)."""

from __future__ import annotations

import numpy as np
import pytest
from syncvid_client import AvatarClient, LinearResampler

from tests.clients.sdk_fake_server import fake_server, record_until, session_started


async def _sent(calls, sample_rate: int = 16000) -> list[bytes]:
    """Binary messages the server receives for ``calls(client)`` (then end_of_utterance)."""

    async def script(ws, record):
        await ws.send(session_started(sample_rate=sample_rate, video="none", audio_out=False))
        await record_until(ws, record, "end_of_utterance")
        await ws.close()

    async with (fake_server(script) as (url, record),
                AvatarClient(url, sample_rate=sample_rate, video="none", audio_out=False) as client):
        await calls(client)
        await client.end_utterance()
        async for _ in client.events():
            pass
    return record.audio


def _pcm(messages: list[bytes]) -> np.ndarray:
    return np.frombuffer(b"".join(messages), dtype="<i2")


async def test_float_int16_bytes_and_stereo_are_sent_as_pcm16():
    async def calls(client):
        await client.send_audio(np.array([0.0, 0.25, -0.25, 1.0, -1.0, 2.0, -3.0], dtype=np.float32))
        await client.send_audio(np.array([1, -2, 32767], dtype=np.int16))
        await client.send_audio(b"\x01\x00\xff\x7f\x00\x80")
        await client.send_audio(np.array([[100, 200], [-100, -301]], dtype=np.int16))  # (n, channels)
        await client.send_audio(np.zeros(0, np.int16))  # nothing: no message

    messages = await _sent(calls)
    assert len(messages) == 4
    np.testing.assert_array_equal(np.frombuffer(messages[0], "<i2"), [0, 8192, -8192, 32767, -32767, 32767, -32767])
    np.testing.assert_array_equal(np.frombuffer(messages[1], "<i2"), [1, -2, 32767])
    assert messages[2] == b"\x01\x00\xff\x7f\x00\x80"  # bytes pass through unchanged
    np.testing.assert_array_equal(np.frombuffer(messages[3], "<i2"), [150, -200])  # -200.5 rounds to even


async def test_bad_input_raises_before_anything_is_sent():
    async def calls(client):
        with pytest.raises(ValueError, match="even number of bytes"):
            await client.send_audio(b"\x01\x00\x02")
        with pytest.raises(ValueError, match="int16, float"):
            await client.send_audio(np.zeros(4, np.int32))
        with pytest.raises(ValueError, match="1-D"):
            await client.send_audio(np.zeros((2, 2, 2), np.int16))

    assert await _sent(calls) == []


async def test_long_audio_is_split_into_messages_of_at_most_64_kib():
    speech = (np.arange(100_000) % 2000 - 1000).astype(np.int16)

    async def calls(client):
        await client.send_audio(speech)
        assert client.buffered_s == pytest.approx(100_000 / 16000)

    messages = await _sent(calls)
    assert [len(m) for m in messages] == [65536, 65536, 65536, 200_000 - 3 * 65536]
    np.testing.assert_array_equal(_pcm(messages), speech)


def _sine(n: int, rate: int, hz: float = 440.0, start: int = 0) -> np.ndarray:
    return 0.5 * np.sin(2 * np.pi * hz * np.arange(start, start + n) / rate)


def _peak_hz(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[np.argmax(spectrum)])


async def test_resampling_24k_to_16k_keeps_frequency_length_and_is_seamless():
    tts = _sine(24000, 24000)  # 1 s of 440 Hz at the TTS rate

    async def calls(client):
        for start in range(0, len(tts), 2401):  # odd chunk size: boundaries fall between outputs
            await client.send_audio(tts[start:start + 2401].astype(np.float32), sample_rate=24000)

    out = _pcm(await _sent(calls)).astype(np.float64) / 32767
    assert abs(len(out) - 16000) <= 1
    assert _peak_hz(out, 16000) == pytest.approx(440.0, abs=1.0)
    np.testing.assert_allclose(out, _sine(len(out), 16000), atol=0.01)  # linear interpolation error < 1 %
    # seamless: the largest sample-to-sample step is the sine's own (2 pi 440 / 16000 * 0.5)
    assert np.abs(np.diff(out)).max() < 2 * np.pi * 440 / 16000 * 0.5 + 0.002


def test_resampler_in_chunks_equals_resampler_at_once():
    x = np.random.default_rng(0).standard_normal(10_007)
    whole = LinearResampler(24000, 16000).process(x)
    chunked = LinearResampler(24000, 16000)
    parts = [chunked.process(x[i:i + n]) for i, n in ((0, 1), (1, 999), (1000, 3), (1003, 9004))]
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    assert len(whole) == (10_007 - 1) * 2 // 3 + 1


@pytest.mark.parametrize(("src", "dst"), [(44100, 16000), (8000, 16000), (22050, 48000)])
def test_resampler_output_length_and_exact_on_a_ramp(src, dst):
    n = src // 10  # 100 ms
    ramp = np.arange(n, dtype=np.float64)
    resampler = LinearResampler(src, dst)
    out = resampler.process(ramp)
    np.testing.assert_allclose(out, np.arange(len(out)) * src / dst, atol=1e-9)  # linear is exact on a line
    tail = resampler.flush()  # outputs past the last input (upsampling), the last value held
    assert len(out) + len(tail) == -(-n * dst // src)
    assert abs(len(out) + len(tail) - n * dst / src) < 1
    np.testing.assert_array_equal(tail, np.full(len(tail), n - 1.0))
