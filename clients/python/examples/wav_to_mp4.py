"""Lip-sync a WAV file through a syncvid server and save the avatar with the speech as an MP4.

    python wav_to_mp4.py SPEECH.wav OUT.mp4 [--url ws://127.0.0.1:8080/ws] [--avatar NAME]

Needs ``pip install av pillow`` besides ``syncvid-client`` (PyAV writes the MP4, Pillow decodes the
server's JPEG frames). The WAV must be PCM16, mono or stereo (averaged to mono); a rate the
server does not take is resampled to 16 kHz by the client. The speech is streamed as fast as the
server takes it while another task collects the frames, the usual agent pattern; the file runs
from the first frame that plays the speech to its last one, paced in real time by the server.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import wave
from collections import deque
from fractions import Fraction
from typing import Any

import numpy as np
from syncvid_client import (
    AvatarClient,
    ConnectError,
    Frame,
    PlaybackFinished,
    PlaybackStarted,
    ServerError,
    SessionEnded,
    SyncVidError,
)
from syncvid_client.wire import SAMPLE_RATES

CHUNK_S = 0.1  # TTS-sized pieces of speech
HEADROOM = 0.5  # keep the server's buffer at most half full


class UsageError(Exception):
    """A problem with the command's input, reported in one line."""


def read_wav(path: str) -> tuple[np.ndarray, int]:
    """(int16 mono samples, sample rate) of a PCM16 WAV file."""
    try:
        with wave.open(path, "rb") as w:
            if w.getsampwidth() != 2:
                raise UsageError(f"{path} is not a PCM16 WAV ({8 * w.getsampwidth()}-bit samples); convert it, "
                                 "e.g. ffmpeg -i IN -c:a pcm_s16le OUT.wav")
            rate, channels, data = w.getframerate(), w.getnchannels(), w.readframes(w.getnframes())
    except (wave.Error, EOFError) as exc:
        raise UsageError(f"{path} is not a PCM16 WAV file ({exc}); convert it, e.g. ffmpeg -i IN -c:a pcm_s16le "
                         "OUT.wav") from None
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    samples = np.frombuffer(data, dtype="<i2").reshape(-1, channels)
    if len(samples) == 0:
        raise UsageError(f"{path} has no samples")
    mono = samples[:, 0] if channels == 1 else np.rint(samples.mean(axis=1)).astype(np.int16)
    return mono, rate


class Mp4Writer:
    """H.264 video and AAC audio, one output frame (image + its audio slice) at a time."""

    def __init__(self, path: str, fps: float, sample_rate: int) -> None:
        import av

        self._av, self.path, self.fps, self.rate = av, path, fps, sample_rate
        self._container: Any = None
        self.frames = self._samples = 0

    def write(self, frame: Frame) -> None:
        if frame.image is None:
            raise UsageError("the server's frames could not be decoded: pip install pillow")
        h, w = (frame.image.shape[0] // 2) * 2, (frame.image.shape[1] // 2) * 2  # yuv420p needs even sizes
        if self._container is None:
            self._open(w, h)
        image = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(frame.image[:h, :w]), format="rgb24")
        image.pts = self.frames
        self._mux(self._video.encode(image))
        self.frames += 1
        if frame.audio is not None and len(frame.audio):
            sound = self._av.AudioFrame.from_ndarray(frame.audio.reshape(1, -1), format="s16", layout="mono")
            sound.sample_rate, sound.pts = self.rate, self._samples
            self._mux(self._audio.encode(sound))
            self._samples += len(frame.audio)

    def close(self) -> None:
        if self._container is None:
            return
        self._mux(self._video.encode(None))
        self._mux(self._audio.encode(None))
        self._container.close()

    def _open(self, width: int, height: int) -> None:
        self._container = self._av.open(self.path, "w")
        self._video = self._container.add_stream("libx264", rate=Fraction(self.fps).limit_denominator(1001))
        self._video.width, self._video.height, self._video.pix_fmt = width, height, "yuv420p"
        self._audio = self._container.add_stream("aac", rate=self.rate, layout="mono")

    def _mux(self, packets: list) -> None:
        for packet in packets:
            self._container.mux(packet)


async def send_speech(client: AvatarClient, speech: np.ndarray, rate: int) -> None:
    """Stream the speech in ~100 ms chunks, pausing while the server's buffer is half full."""
    chunk = max(1, int(rate * CHUNK_S))
    limit = (client.started.max_buffer_s if client.started else 120.0) * HEADROOM
    for start in range(0, len(speech), chunk):
        while client.buffered_s > limit:
            await asyncio.sleep(0.05)
        await client.send_audio(speech[start:start + chunk], sample_rate=rate)
    await client.end_utterance()


async def convert(wav_path: str, out_path: str, url: str, avatar: str | None) -> int:
    """Frames written. Raises UsageError or SyncVidError with a one-line message."""
    speech, rate = read_wav(wav_path)
    session_rate = rate if rate in SAMPLE_RATES else 16000
    total_s = len(speech) / rate
    async with AvatarClient(url, avatar=avatar, video="jpeg", sample_rate=session_rate) as client:
        started = client.started
        assert started is not None
        writer = Mp4Writer(out_path, started.fps, started.sample_rate)
        sender = asyncio.create_task(send_speech(client, speech, rate))
        waiting: deque[Frame] = deque(maxlen=int(started.fps * 30))  # frames before the speech starts
        start_pts: float | None = None
        try:
            async for event in client.events():
                if sender.done() and not sender.cancelled() and sender.exception() is not None:
                    raise sender.exception()  # type: ignore[misc]
                if isinstance(event, Frame):
                    if start_pts is None:
                        waiting.append(event)
                    else:
                        writer.write(event)
                        if writer.frames % round(started.fps) == 0:
                            print(f"{writer.frames / started.fps:5.1f} s / {total_s:.1f} s", file=sys.stderr)
                elif isinstance(event, PlaybackStarted) and start_pts is None:
                    start_pts = event.pts
                    for frame in waiting:
                        if frame.pts >= start_pts - 1e-6:
                            writer.write(frame)
                    waiting.clear()
                elif isinstance(event, PlaybackFinished):
                    if event.interrupted:
                        raise UsageError("the server interrupted the speech before it finished")
                    break
                elif isinstance(event, ServerError):
                    print(f"server: {event.message} ({event.code})", file=sys.stderr)
                elif isinstance(event, SessionEnded):
                    raise UsageError(f"the server ended the session: {event.reason}")
            else:
                raise UsageError("the session closed before the speech finished playing")
            await sender
        finally:
            sender.cancel()
            writer.close()
    print(f"wrote {out_path}: {writer.frames} frames, {writer.frames / started.fps:.2f} s", file=sys.stderr)
    return writer.frames


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Lip-sync a WAV file through a syncvid server into an MP4.")
    parser.add_argument("wav", help="speech, a PCM16 WAV file (mono or stereo)")
    parser.add_argument("out", help="the MP4 file to write")
    parser.add_argument("--url", default="ws://127.0.0.1:8080/ws", help="the server's /ws endpoint")
    parser.add_argument("--avatar", default=None, help="an avatar name from the server's library (GET /avatars)")
    args = parser.parse_args(argv)
    try:
        import av  # noqa: F401
    except ImportError:
        print("error: this example needs PyAV: pip install av pillow", file=sys.stderr)
        return 2
    try:
        asyncio.run(convert(args.wav, args.out, args.url, args.avatar))
    except (UsageError, SyncVidError) as exc:
        hint = "; is `syncvid serve` running there?" if isinstance(exc, ConnectError) else ""
        print(f"error: {exc}{hint}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
