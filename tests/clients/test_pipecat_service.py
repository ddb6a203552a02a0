"""``syncvid_client.pipecat.SyncVidVideoService`` in a real pipecat pipeline, against a real server on
loopback (fake models: the mouth is a dark rectangle as open as the speech is loud). A scripted
TTS source (real speech, 100 ms frames sent faster than real time, as TTS services do) feeds the
service; a sink records what reaches the end of the pipeline and when."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import wave
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pipecat")

from pipecat.frames.frames import (
    BotStoppedSpeakingFrame,
    CancelFrame,
    EndFrame,
    ErrorFrame,
    InterruptionFrame,
    OutputImageRawFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    TTSTextFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.transports.base_output import BaseOutputTransport
from pipecat.transports.base_transport import TransportParams
from syncvid_client.pipecat import SyncVidVideoService

from tests.clients.sdk_fake_server import (
    audio_part,
    event,
    fake_server,
    frame_event,
    raw_part,
    session_started,
)
from realtime.bench.pipecat import pipeline_running
from tests.fakes import FakeAvatar, mouth_darkness

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "arctic_a0007.wav"
RATE = 16000  # the fixture's
FPS = 25
PERIOD = 1 / FPS
REST = FakeAvatar().frame(0)
OPEN = 15.0  # mouth darkness of an open mouth (rest frames: 0)



def speech(start_s: float, seconds: float) -> np.ndarray:
    with wave.open(str(FIXTURE), "rb") as w:
        assert (w.getframerate(), w.getnchannels()) == (RATE, 1)
        pcm = np.frombuffer(w.readframes(w.getnframes()), "<i2")
    return pcm[round(start_s * RATE):round((start_s + seconds) * RATE)]


def tts_frames(pcm: np.ndarray, rate: int = RATE, chunk_s: float = 0.1) -> list:
    n = round(rate * chunk_s)
    return ([TTSStartedFrame(), TTSTextFrame("and you always want", text_type="sentence")]
            + [TTSAudioRawFrame(pcm[k:k + n].tobytes(), rate, 1) for k in range(0, len(pcm), n)]
            + [TTSStoppedFrame()])


class Sink(FrameProcessor):
    """Records (arrival time, frame) of every downstream frame and passes it on."""

    def __init__(self) -> None:
        super().__init__()
        self.got: list[tuple[float, object]] = []

    async def process_frame(self, frame, direction):
        await super().process_frame(frame, direction)
        if direction is FrameDirection.DOWNSTREAM:
            self.got.append((time.monotonic(), frame))
        await self.push_frame(frame, direction)

    def images(self, after: float = 0.0) -> list[tuple[float, OutputImageRawFrame]]:
        return [(t, f) for t, f in self.got if isinstance(f, OutputImageRawFrame) and t >= after]

    def speech(self, after: float = 0.0) -> list[tuple[float, TTSAudioRawFrame]]:
        return [(t, f) for t, f in self.got if isinstance(f, TTSAudioRawFrame) and t >= after]

    async def until(self, pred, timeout: float = 10.0) -> float:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            for t, f in self.got:
                if pred(f):
                    return t
            await asyncio.sleep(0.005)
        raise TimeoutError("the frame never reached the sink")


class Upstream(FrameProcessor):
    """The pipeline's first processor: keeps what comes back upstream (errors)."""

    def __init__(self) -> None:
        super().__init__()
        self.got: list[object] = []

    async def process_frame(self, frame, direction):
        await super().process_frame(frame, direction)
        if direction is FrameDirection.UPSTREAM:
            self.got.append(frame)
        await self.push_frame(frame, direction)


@contextlib.asynccontextmanager
async def pipeline(service: FrameProcessor, rate: int = RATE):
    """Runs [source, service, sink] (the pipeline's output rate ``rate``); yields (worker, source, sink)
    once started; ends it with EndFrame (unless the body did) and waits for the worker to finish."""
    source, sink = Upstream(), Sink()
    async with pipeline_running([source, service, sink], rate, start_timeout=5, end_timeout=10) as worker:
        yield worker, source, sink


def url(srv) -> str:
    return f"ws://127.0.0.1:{srv.port}/ws"


async def test_speech_plays_as_lip_synced_images_at_the_frame_rate(server):
    pcm = speech(0.4, 2.0)
    service = SyncVidVideoService(url(server))
    async with pipeline(service) as (worker, _, sink):
        await asyncio.sleep(0.4)  # rest frames first
        t_in = time.monotonic()
        await worker.queue_frames(tts_frames(pcm))
        await worker.queue_frame(EndFrame())  # the speech plays to its end before the session closes
        await sink.until(lambda f: isinstance(f, EndFrame), timeout=8)
        assert service.client is None and not server.sessions
    kinds = [type(f).__name__ for _, f in sink.got if not isinstance(f, (OutputImageRawFrame, TTSAudioRawFrame))]
    assert kinds == ["StartFrame", "TTSStartedFrame", "TTSTextFrame", "TTSStoppedFrame", "EndFrame"], kinds
    images, audio = sink.images(), sink.speech()
    # images at the frame rate, RGB at the avatar's size, queued with the audio
    assert all(f.size == (128, 128) and f.format == "RGB" and len(f.image) == 128 * 128 * 3 and f.sync_with_audio
               for _, f in images)
    span = images[-1][0] - images[0][0]
    assert abs(len(images) - 1 - span * FPS) <= 2, (len(images), span)
    gaps = np.diff([t for t, _ in images])
    assert np.percentile(gaps, 50) == pytest.approx(PERIOD, abs=0.01)
    # the speech comes back exactly once (the TTS frames do not pass), one frame period per image,
    # each audio frame right behind its image; the stop follows the last of it
    assert all(f.sample_rate == RATE and f.num_frames == RATE // FPS for _, f in audio)
    out = np.concatenate([np.frombuffer(f.audio, "<i2") for _, f in audio])
    onset = int(np.flatnonzero(out)[0])  # the speech starts within the utterance's first frame
    assert onset < RATE // FPS and len(pcm) <= len(out) - onset < len(pcm) + RATE // FPS
    np.testing.assert_array_equal(out[onset:onset + len(pcm)], pcm)
    assert not out[onset + len(pcm):].any()
    order = [f for _, f in sink.got]
    assert all(isinstance(order[order.index(f) - 1], OutputImageRawFrame) for _, f in audio)
    stop_at = next(t for t, f in sink.got if isinstance(f, TTSStoppedFrame))
    assert stop_at >= audio[-1][0]
    # the mouth moves with the speech and rests outside it
    speaking = [order[order.index(f) - 1] for _, f in audio]
    opening = [mouth_darkness(img_of(f), REST) for f in speaking]
    assert max(opening) > 2 * OPEN and np.mean([o > OPEN for o in opening]) > 0.6, opening
    first_speaking = [f for _, f in images].index(speaking[0])  # its image may arrive a moment before its audio
    before = [f for _, f in images[:first_speaking]]
    after = [f for t, f in images if t > stop_at]
    darkness = [mouth_darkness(img_of(f), REST) for f in before + after]
    assert len(before) >= 5 and not any(darkness), str([round(d, 1) for d in darkness])
    # TTS frame in -> the first image showing it: the image paired with the utterance's first audio
    latency = images[[f for _, f in images].index(speaking[0])][0] - t_in
    print(f"TTS frame in -> first image showing it: {latency * 1000:.0f} ms")
    assert 0.05 < latency < 0.5, latency


class RecordingOutput(BaseOutputTransport):
    """pipecat's output transport machinery, with a real-time audio sink: records what it draws
    (the server's frame index) and what it plays, with times."""

    def __init__(self) -> None:
        super().__init__(TransportParams(audio_out_enabled=True, audio_out_sample_rate=RATE, video_out_enabled=True,
                                         video_out_width=128, video_out_height=128, video_out_framerate=FPS,
                                         audio_out_end_silence_secs=0))
        self.drawn: list[tuple[float, int]] = []
        self.played: list[tuple[float, np.ndarray]] = []

    async def start(self, frame):
        await super().start(frame)
        await self.set_transport_ready(frame)

    async def write_video_frame(self, frame) -> bool:
        self.drawn.append((time.monotonic(), frame.metadata["syncvid"]["index"]))
        return True

    async def write_audio_frame(self, frame) -> bool:
        self.played.append((time.monotonic(), np.frombuffer(frame.audio, "<i2")))
        await asyncio.sleep(frame.num_frames / frame.sample_rate)  # plays in real time
        return True


async def test_through_pipecats_output_transport_each_image_shows_as_its_speech_plays(server):
    pcm = speech(0.4, 1.6)
    service, output = SyncVidVideoService(url(server)), RecordingOutput()
    async with pipeline(Pipeline([service, output])) as (worker, _, sink):
        await asyncio.sleep(0.3)
        await worker.queue_frames(tts_frames(pcm))
        t_stop = await sink.until(lambda f: isinstance(f, BotStoppedSpeakingFrame), timeout=5)
    played = np.concatenate([a for _, a in output.played])
    onset = int(np.flatnonzero(played)[0])
    np.testing.assert_array_equal(played[onset:onset + len(pcm)], pcm)  # the voice, once
    assert not played[onset + len(pcm):].any()
    last_speech = max(t for t, a in output.played if a.any())
    assert 0 <= t_stop - last_speech < 0.1  # the bot stops speaking when the voice does
    # each speech image is first drawn as its audio starts playing (the video clock ticks every frame)
    first_drawn: dict[int, float] = {}
    for t, index in output.drawn:
        first_drawn.setdefault(index, t)
    order = [f for _, f in sink.got if isinstance(f, (OutputImageRawFrame, TTSAudioRawFrame))]
    offsets = []
    for k, f in enumerate(order):
        if isinstance(f, TTSAudioRawFrame) and np.frombuffer(f.audio, "<i2").any():
            audio = np.frombuffer(f.audio, "<i2")
            t_audio = next(t for t, a in output.played if np.array_equal(a, audio))
            index = order[k - 1].metadata["syncvid"]["index"]
            if index in first_drawn:  # pipecat's video clock draws the newest image: on a loaded
                offsets.append(first_drawn[index] - t_audio)  # machine it skips one (bounded below)
    print(f"image shown - its audio played: p50 {np.median(offsets) * 1000:.0f} ms, "
          f"range {min(offsets) * 1000:.0f}..{max(offsets) * 1000:.0f} ms")
    assert len(offsets) >= 0.9 * len(pcm) / (RATE // FPS)
    assert -0.005 < min(offsets) and max(offsets) < PERIOD + 0.02, offsets


def img_of(frame: OutputImageRawFrame) -> np.ndarray:
    w, h = frame.size
    return np.frombuffer(frame.image, np.uint8).reshape(h, w, 3)


async def test_an_interruption_stops_speech_within_a_frame_and_the_next_reply_plays(server):
    service = SyncVidVideoService(url(server))
    async with pipeline(service) as (worker, _, sink):
        await worker.queue_frames(tts_frames(speech(0.4, 3.0))[:-1])  # no stop yet: the TTS is still talking
        await sink.until(lambda f: isinstance(f, TTSAudioRawFrame))
        await asyncio.sleep(0.5)
        t_int = time.monotonic()
        await worker.queue_frame(InterruptionFrame())
        await sink.until(lambda f: isinstance(f, InterruptionFrame))
        await asyncio.sleep(0.5)
        late_audio = sink.speech(after=t_int + PERIOD)
        opened = [t for t, f in sink.images(after=t_int - 0.2) if mouth_darkness(img_of(f), REST) > OPEN]
        assert opened and opened[0] < t_int  # it was speaking
        opened = [t for t in opened if t >= t_int]
        stop = (max(opened) - t_int) if opened else 0.0
        print(f"interruption -> last speech image: {stop * 1000:.0f} ms")
        assert not late_audio and stop <= PERIOD, (len(late_audio), stop)
        assert sum(1 for _ in sink.images(after=t_int + 0.1)) >= 8  # the video goes on, at rest
        # the next reply plays in full
        pcm = speech(0.4, 1.0)
        mark = time.monotonic()
        await worker.queue_frames(tts_frames(pcm))
        await sink.until(lambda f: isinstance(f, TTSStoppedFrame), timeout=5)
        out = np.concatenate([np.frombuffer(f.audio, "<i2") for _, f in sink.speech(after=mark)])
        onset = int(np.flatnonzero(out)[0])
        np.testing.assert_array_equal(out[onset:onset + len(pcm)], pcm)


async def test_frames_the_server_sent_before_it_took_the_interrupt_are_dropped():
    """A scripted server that sends three more speech frames after the interrupt, before its
    `interrupted` event (a loaded server or a slow link): none of them reaches the output."""

    async def script(ws, record):
        index = 0

        async def frame(level: int) -> None:
            nonlocal index
            await ws.send(frame_event(index, speaking=level > 0))
            await ws.send(raw_part(index, np.full((6, 8, 3), level, np.uint8)))
            await ws.send(audio_part(index, np.full(RATE // FPS, 10 * level, np.int16)))
            index += 1

        await ws.send(session_started(video="raw"))
        async for message in ws:
            if isinstance(message, bytes):
                break
        await ws.send(event("playback_started", utterance=1, pts=0.0))
        for _ in range(5):
            await frame(200)
        async for message in ws:
            if isinstance(message, str) and json.loads(message)["type"] == "interrupt":
                break
        for _ in range(3):
            await frame(200)
        await ws.send(event("playback_finished", utterance=1, playback_position=0.2, interrupted=True))
        await ws.send(event("interrupted"))
        for _ in range(3):
            await frame(0)
        async for _ in ws:
            pass

    async with fake_server(script) as (ws_url, _), pipeline(SyncVidVideoService(ws_url)) as (worker, _, sink):
        await worker.queue_frames(tts_frames(speech(0.4, 1.0))[:-1])
        await sink.until(lambda f: len(sink.speech()) >= 5)
        await worker.queue_frame(InterruptionFrame())
        t_int = await sink.until(lambda f: isinstance(f, InterruptionFrame))
        await sink.until(lambda f: len(sink.images(after=t_int)) >= 3)
        await asyncio.sleep(0.05)
        assert not sink.speech(after=t_int)
        shown = [(f.metadata["syncvid"]["index"], f.image[0]) for _, f in sink.images(after=t_int)]
        assert shown == [(8, 0), (9, 0), (10, 0)]  # the speech images 5-7 never show


async def test_other_rates_are_resampled_and_cancel_closes_the_session_at_once(server):
    service = SyncVidVideoService(url(server))
    pcm = (np.sin(np.arange(22050) * 2 * np.pi * 220 / 22050) * 8000).astype(np.int16)  # 1 s at 22.05 kHz
    async with pipeline(service, rate=16000) as (worker, _, sink):  # session at the pipeline's 16 kHz
        await worker.queue_frames(tts_frames(pcm, rate=22050))
        await sink.until(lambda f: isinstance(f, TTSAudioRawFrame))
        t0 = time.monotonic()
        await worker.queue_frame(CancelFrame())
        await sink.until(lambda f: isinstance(f, CancelFrame), timeout=2)
        for _ in range(100):
            if not server.sessions:
                break
            await asyncio.sleep(0.01)
        assert not server.sessions and time.monotonic() - t0 < 0.5
    assert {f.sample_rate for _, f in sink.speech()} == {16000}


async def test_without_a_server_the_voice_passes_through_and_an_error_goes_upstream():
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    pcm = speech(0.4, 0.3)
    async with pipeline(SyncVidVideoService(f"ws://127.0.0.1:{port}/ws")) as (worker, source, sink):
        await worker.queue_frames(tts_frames(pcm))
        await sink.until(lambda f: isinstance(f, TTSStoppedFrame), timeout=3)
    assert not sink.images()
    out = np.concatenate([np.frombuffer(f.audio, "<i2") for _, f in sink.speech()])
    np.testing.assert_array_equal(out, pcm)
    errors = [f for f in source.got if isinstance(f, ErrorFrame)]
    assert len(errors) == 1 and "no avatar session" in errors[0].error
