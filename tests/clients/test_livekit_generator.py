"""SyncVidVideoGenerator (the LiveKit VideoGenerator) against a real server on loopback with fake
models, driven with real speech as AvatarRunner drives it: 100 ms rtc.AudioFrames faster than
real time, AudioSegmentEnd, clear_buffer mid-segment."""

from __future__ import annotations

import asyncio
import time
import wave
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("livekit.agents")

from livekit import rtc
from livekit.agents.voice.avatar import AudioSegmentEnd, AvatarOptions
from syncvid_client.livekit import SyncVidVideoGenerator

from tests.fakes import FakeAvatar, mouth_darkness

WAV = Path(__file__).resolve().parents[1] / "fixtures" / "arctic_a0007.wav"
RATE, FPS = 16000, 25
FRAME = RATE // FPS  # samples of one output frame
REST = FakeAvatar().frame(0)
OPEN = 15.0  # mouth_darkness of an open mouth is 30-60 with the fake renderer; rest frames ~0



def url(srv) -> str:
    return f"ws://127.0.0.1:{srv.port}/ws"


def speech(start_s: float, seconds: float) -> np.ndarray:
    """A stretch of "and you always want to see it in the superlative degree" (16 kHz int16)."""
    with wave.open(str(WAV)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (RATE, 1, 2)
        pcm = np.frombuffer(w.readframes(w.getnframes()), "<i2")
    return pcm[int(start_s * RATE): int((start_s + seconds) * RATE)].copy()


def audio_frames(pcm: np.ndarray, rate: int = RATE) -> list[rtc.AudioFrame]:
    """100 ms frames, as DataStreamAudioReceiver cuts the agent's byte stream."""
    n = rate // 10
    return [rtc.AudioFrame(pcm[k:k + n].tobytes(), rate, 1, len(pcm[k:k + n])) for k in range(0, len(pcm), n)]


class Output:
    """Iterates the generator in the background, as AvatarRunner does: (time, item, speaking)."""

    def __init__(self, gen: SyncVidVideoGenerator) -> None:
        self.gen = gen
        self.items: list[tuple[float, object, bool]] = []
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for item in self.gen:
            speaking = isinstance(item, rtc.VideoFrame) and self.gen.last_frame.speaking
            self.items.append((time.monotonic(), item, speaking))

    async def wait(self, pred, timeout: float = 6.0) -> float:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            for t, item, _ in self.items:
                if pred(t, item):
                    return t
            await asyncio.sleep(0.005)
        raise TimeoutError("the item never came")

    def audio(self, since: float = 0.0, until: float = float("inf")) -> list[rtc.AudioFrame]:
        return [i for t, i, _ in self.items if isinstance(i, rtc.AudioFrame) and since <= t < until]

    def video(self, since: float = 0.0) -> list[tuple[float, rtc.VideoFrame, bool]]:
        return [(t, i, s) for t, i, s in self.items if isinstance(i, rtc.VideoFrame) and t >= since]

    def ends(self, since: float = 0.0) -> list[float]:
        return [t for t, i, _ in self.items if isinstance(i, AudioSegmentEnd) and t >= since]


def image(frame: rtc.VideoFrame) -> np.ndarray:
    assert frame.type == rtc.VideoBufferType.RGB24
    return np.frombuffer(bytes(frame.data), np.uint8).reshape(frame.height, frame.width, 3)


def pcm_of(frames: list[rtc.AudioFrame]) -> np.ndarray:
    return np.concatenate([np.frombuffer(f.data, np.int16) for f in frames])


async def test_a_segment_plays_in_sync_then_audio_segment_end(server):
    pcm = speech(0.4, 1.2)
    async with SyncVidVideoGenerator(url(server), sample_rate=RATE) as gen:
        assert gen.avatar_options() == AvatarOptions(video_width=128, video_height=128, video_fps=FPS,
                                                     audio_sample_rate=RATE, audio_channels=1)
        out = Output(gen)
        await asyncio.sleep(0.3)  # rest frames
        t0 = time.monotonic()
        for f in audio_frames(pcm):
            await gen.push_audio(f)
        await gen.push_audio(AudioSegmentEnd())
        t_end = await out.wait(lambda t, i: isinstance(i, AudioSegmentEnd))
        await asyncio.sleep(0.2)  # rest frames again
        out.task.cancel()

    played = out.audio()
    assert out.audio(until=t0) == []  # rest frames carry no audio: the runner counts playback from it
    assert {(f.sample_rate, f.num_channels, f.samples_per_channel) for f in played} == {(RATE, 1, FRAME)}
    assert len(played) in (30, 31)  # 1.2 s at 25 fps, starting where the frame grid has got to
    # exactly the speech pushed, in order, and silence only to fill the first and last frames
    total = pcm_of(played)
    lead = next(k for k in range(2 * FRAME) if np.array_equal(total[k:k + len(pcm)], pcm))
    assert lead < FRAME and not total[:lead].any() and not total[lead + len(pcm):].any()
    assert out.ends() == [t_end] and out.audio(since=t_end) == []  # one end, after the last audio
    # in sync: each audio frame comes right after the video frame it plays with, at 25 fps
    kinds = [type(i).__name__ for _, i, _ in out.items]
    for k, (_, item, _) in enumerate(out.items):
        if isinstance(item, rtc.AudioFrame):
            assert kinds[k - 1] == "VideoFrame"
    video = out.video()
    assert all((v.width, v.height) == (128, 128) for _, v, _ in video)
    span = video[-1][0] - video[0][0]
    assert abs(len(video) - 1 - span * FPS) < 4, (len(video), span)
    # the mouth: at rest before the speech, open while it plays
    with_audio = [out.items[k - 1][1] for k, (_, i, _) in enumerate(out.items) if isinstance(i, rtc.AudioFrame)]
    assert max(mouth_darkness(image(v), REST) for _, v, _ in out.video()[:5]) < 2.0
    assert np.median([mouth_darkness(image(v), REST) for v in with_audio]) > OPEN
    first_speaking = next(t for t, _, s in video if s)
    assert 0.0 < first_speaking - t0 < 0.6  # fake models: the 120 ms look-ahead plus the server's budget


async def test_clear_buffer_mid_segment_stops_audio_at_once_and_the_next_segment_plays_whole(server):
    async with SyncVidVideoGenerator(url(server), sample_rate=24000) as gen:  # 16 kHz frames: resampled
        out = Output(gen)
        long_speech = speech(0.3, 3.0)
        for f in audio_frames(long_speech):  # bulk, as TTS sends it
            await gen.push_audio(f)
        await out.wait(lambda t, i: isinstance(i, rtc.AudioFrame))
        while len(out.audio()) < 12:  # about 0.5 s played
            await asyncio.sleep(0.005)
        tc = time.monotonic()
        await gen.clear_buffer()
        cleared = time.monotonic() - tc  # AvatarRunner sends lk.playback_finished right after
        await gen.push_audio(AudioSegmentEnd())  # DataStreamAudioReceiver ends the cleared stream so
        await asyncio.sleep(0.5)
        t_next = time.monotonic()
        pcm = speech(1.6, 0.8)
        for f in audio_frames(pcm):
            await gen.push_audio(f)
        await gen.push_audio(AudioSegmentEnd())
        t_end = await out.wait(lambda t, i: isinstance(i, AudioSegmentEnd))
        out.task.cancel()

    assert cleared < 1 / FPS  # within one frame time
    assert out.audio(since=tc, until=t_next) == []  # not one sample of speech after clear_buffer
    assert out.ends(since=0) == [t_end]  # no segment end for the cleared one, nor for its stray end
    # the mouth: open only on the frames already on their way (a round trip: one or two)
    before = [mouth_darkness(image(v), REST) for t, v, _ in out.video(since=tc - 0.4) if t < tc]
    assert max(before) > OPEN  # it was talking
    after = [(t, mouth_darkness(image(v), REST)) for t, v, _ in out.video(since=tc) if t < t_next]
    assert len(after) >= 10
    last_open = max((t for t, d in after if d > 2.0), default=tc)
    assert last_open - tc < 0.1, last_open - tc
    # the next segment: all of it (resampled to 24 kHz: 1.5x the samples), then its end
    second = out.audio(since=t_next)
    assert {(f.sample_rate, f.samples_per_channel) for f in second} == {(24000, 960)} and len(second) in (20, 21)
    voiced = np.flatnonzero(pcm_of(second))
    assert abs(voiced[-1] + 1 - voiced[0] - len(pcm) * 3 // 2) <= 2
