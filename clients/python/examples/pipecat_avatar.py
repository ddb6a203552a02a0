"""Lip-sync speech on a syncvid avatar inside a pipecat pipeline, and save what an output transport
would receive (the images and the speech re-timed to them) as an MP4.

    python pipecat_avatar.py SPEECH.wav OUT.mp4 [--url ws://127.0.0.1:8080/ws] [--avatar NAME]

Needs ``pip install 'syncvid-client[pipecat]' av`` and a running ``syncvid serve``. The WAV (PCM16,
mono or stereo) stands in for a TTS service: it is pushed as TTSStartedFrame, 100 ms
TTSAudioRawFrames as fast as the pipeline takes them, and TTSStoppedFrame. In a bot the service
sits between the TTS service and the output transport::

    avatar = SyncVidVideoService("ws://127.0.0.1:8080/ws")
    pipeline = Pipeline([transport.input(), stt, context_aggregator.user(), llm, tts, avatar,
                         transport.output(), context_aggregator.assistant()])

with ``TransportParams(audio_out_enabled=True, video_out_enabled=True, video_out_width=512,
video_out_height=512)`` (the avatar's size; leave ``video_out_is_live`` False, or pass
``sync_with_audio=False`` to the service).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import wave
from fractions import Fraction
from typing import Any

import numpy as np
from pipecat.frames.frames import (
    EndFrame,
    ErrorFrame,
    OutputImageRawFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.workers.runner import WorkerRunner
from syncvid_client.pipecat import SyncVidVideoService

CHUNK_S = 0.1  # TTS-sized pieces of speech


def read_wav(path: str) -> tuple[np.ndarray, int]:
    """(int16 mono samples, sample rate) of a PCM16 WAV file; SystemExit with a message otherwise."""
    try:
        with wave.open(path, "rb") as w:
            if w.getsampwidth() != 2:
                sys.exit(f"{path} is not a PCM16 WAV; convert it, e.g. ffmpeg -i IN -c:a pcm_s16le OUT.wav")
            rate, channels, data = w.getframerate(), w.getnchannels(), w.readframes(w.getnframes())
    except (OSError, EOFError, wave.Error) as exc:
        sys.exit(f"cannot read {path} as a PCM16 WAV file: {exc}")
    samples = np.frombuffer(data, dtype="<i2").reshape(-1, channels)
    return np.rint(samples.mean(axis=1)).astype(np.int16), rate


class Mp4Sink(FrameProcessor):
    """Stands in for the output transport: each image becomes a video frame, the speech after it
    its audio (silence when none follows: rest frames carry no audio). Encodes off the event loop."""

    def __init__(self, path: str, service: SyncVidVideoService) -> None:
        super().__init__()
        self.path, self.service = path, service
        self.frames = 0
        self._container: Any = None
        self._samples = 0  # audio written
        self._silent_image = False  # the last image got no audio yet

    async def process_frame(self, frame, direction):
        await super().process_frame(frame, direction)
        if isinstance(frame, OutputImageRawFrame):
            await asyncio.to_thread(self._image, frame)
        elif isinstance(frame, TTSAudioRawFrame):
            await asyncio.to_thread(self._audio, np.frombuffer(frame.audio, "<i2"))
        elif isinstance(frame, EndFrame):
            await asyncio.to_thread(self._close)
        await self.push_frame(frame, direction)

    def _image(self, frame: OutputImageRawFrame) -> None:
        import av

        if self._container is None:
            self._open(*frame.size)
        if self._silent_image:
            self._audio(np.zeros(self._period, np.int16))
        rgb = np.frombuffer(frame.image, np.uint8).reshape(frame.size[1], frame.size[0], 3)
        image = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        image.pts = self.frames
        self._mux(self._video.encode(image))
        self.frames += 1
        self._silent_image = True

    def _audio(self, pcm: np.ndarray) -> None:
        import av

        if self._container is None:
            return
        sound = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        sound.sample_rate, sound.pts = self._rate, self._samples
        self._mux(self._audio_stream.encode(sound))
        self._samples += len(pcm)
        self._silent_image = False

    def _open(self, width: int, height: int) -> None:
        import av

        started = self.service.client.started  # the session is open once images come
        self._rate, self._period = started.sample_rate, round(started.sample_rate / started.fps)
        self._container = av.open(self.path, "w")
        self._video = self._container.add_stream("libx264", rate=Fraction(started.fps).limit_denominator(1001))
        self._video.width, self._video.height, self._video.pix_fmt = width, height, "yuv420p"
        self._audio_stream = self._container.add_stream("aac", rate=self._rate, layout="mono")

    def _close(self) -> None:
        if self._container is None:
            return
        if self._silent_image:
            self._audio(np.zeros(self._period, np.int16))
        self._mux(self._video.encode(None))
        self._mux(self._audio_stream.encode(None))
        self._container.close()
        self._container = None

    def _mux(self, packets: list) -> None:
        for packet in packets:
            self._container.mux(packet)


class ErrorTap(FrameProcessor):
    """First in the pipeline: keeps the errors that travel upstream (no session, session lost)."""

    def __init__(self) -> None:
        super().__init__()
        self.errors: list[str] = []

    async def process_frame(self, frame, direction):
        await super().process_frame(frame, direction)
        if isinstance(frame, ErrorFrame) and direction is FrameDirection.UPSTREAM:
            self.errors.append(frame.error)
        await self.push_frame(frame, direction)


async def main(wav_path: str, out_path: str, url: str, avatar: str | None) -> int:
    speech, rate = read_wav(wav_path)
    n = round(rate * CHUNK_S)
    service = SyncVidVideoService(url, avatar=avatar)
    errors, sink = ErrorTap(), Mp4Sink(out_path, service)
    worker = PipelineWorker(Pipeline([errors, service, sink]), idle_timeout_secs=None, enable_rtvi=False)

    @worker.event_handler("on_pipeline_started")
    async def speak(worker, frame):
        tts = [TTSAudioRawFrame(speech[k:k + n].tobytes(), rate, 1) for k in range(0, len(speech), n)]
        # EndFrame waits for the speech to play out: the service holds it until the last frame
        await worker.queue_frames([TTSStartedFrame(), *tts, TTSStoppedFrame(), EndFrame()])

    runner = WorkerRunner(handle_sigint=True)
    await runner.add_workers(worker)
    await runner.run()
    if errors.errors:
        print(f"error: {errors.errors[0]}", file=sys.stderr)
        return 1
    print(f"{out_path}: {sink.frames} frames, {len(speech) / rate:.1f} s of speech", file=sys.stderr)
    return 0


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("wav", help="speech, PCM16 WAV")
    p.add_argument("out", help="MP4 to write")
    p.add_argument("--url", default="ws://127.0.0.1:8080/ws", help="the server's avatar-SDK endpoint")
    p.add_argument("--avatar", default=None, help="a name from the server's avatar library")
    a = p.parse_args()
    sys.exit(asyncio.run(main(a.wav, a.out, a.url, a.avatar)))
