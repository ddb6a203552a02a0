"""``SyncVidVideoService``: a pipecat avatar service backed by a ``syncvid serve`` server.

Place it after the TTS service::

    Pipeline([transport.input(), stt, user_aggregator, llm, tts,
              SyncVidVideoService("ws://127.0.0.1:8080/ws"),
              transport.output(), assistant_aggregator])

with ``TransportParams(audio_out_enabled=True, video_out_enabled=True, video_out_width=W,
video_out_height=H)`` (the avatar's size; ``video_out_is_live`` left False, see below).

It consumes the TTS audio (``TTSAudioRawFrame``, any rate) and sends it over one avatar-SDK
session; the server plays it out in real time and sends back, per output frame, the lip-synced
image and that frame's slice of the speech. Per frame the service pushes an
``OutputImageRawFrame`` (RGB) and, while an utterance plays, a ``TTSAudioRawFrame`` holding exactly
the TTS audio, now delayed to match its images. So:

- The TTS service's own audio frames are NOT passed on (the speech would play twice, once early).
  Everything else passes through unchanged, except ``TTSStoppedFrame``, which is held back and
  pushed after the utterance's last frame, so the output transport reports the bot stopped
  speaking when the voice really stops. Rest frames (between utterances) carry an image only.
- Images are pushed before their audio with ``sync_with_audio=True``: the output transport queues
  each one behind the audio before it, so it shows as its own audio starts. In pipecat 1.14 such
  images only show with ``video_out_is_live=False`` (the default): a live transport never draws
  them. Pass ``sync_with_audio=False`` to send them straight to a live video queue instead.
- ``InterruptionFrame`` -> ``interrupt()`` on the server; frames the server sent before it took the
  interrupt (told by its ``interrupted`` event) are dropped, so speech output stops at once.
- ``StartFrame``: the session opens before it is passed on. ``EndFrame``: the speech already sent
  plays to its end (an utterance without a TTSStoppedFrame is ended first), then the session
  closes and it is passed on. ``CancelFrame``: the session closes at once.
- Without a session (the server is down, or it closed) the TTS frames pass through unchanged:
  the bot keeps its voice, without the avatar. The error goes upstream as an ``ErrorFrame``.

Each image's ``metadata["syncvid"]`` holds the server's frame ``index``, ``pts`` and ``speaking``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque

import numpy as np
from pipecat.frames import frames as pipecat_frames
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    OutputImageRawFrame,
    StartFrame,
    TTSAudioRawFrame,
    TTSStoppedFrame,
)
from pipecat.frames.frames import Frame as PipecatFrame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from .client import AvatarClient
from .errors import SyncVidError
from .events import Frame, OtherEvent, PlaybackFinished, PlaybackStarted, ServerError
from .wire import SAMPLE_RATES

log = logging.getLogger(__name__)

# older pipecat releases named it StartInterruptionFrame (1.x has InterruptionFrame only)
INTERRUPTIONS: tuple[type, ...] = tuple(
    cls for cls in (getattr(pipecat_frames, n, None) for n in ("InterruptionFrame", "StartInterruptionFrame"))
    if isinstance(cls, type))
FALLBACK_RATE = 24000  # when the pipeline's output rate is not one the server takes (TTS commonly speaks at 24 kHz)
PLAY_OUT_MARGIN_S = 2.0  # on EndFrame: wait for the buffered speech plus this (the server's latency and more)
INTERRUPT_ACK_TIMEOUT_S = 1.0  # stop dropping frames if the server never confirms an interrupt


class SyncVidVideoService(FrameProcessor):
    """A ``FrameProcessor`` that lip-syncs the TTS speech on a syncvid avatar (module docstring).

    ``url``: the server's ``ws://host:port/ws``; ``avatar``: a name from its library (``None``: its
    default); ``token``: the server's bearer token, if it needs one. ``sample_rate``: the session's
    rate (of the speech sent and the audio pushed); ``None`` takes the pipeline's output rate, which
    TTS services speak at by default, if the server takes it, else 24000. TTS frames at another
    rate are resampled by the client (linear interpolation). ``video``: ``"raw"`` (RGB over the
    socket: the least CPU, measured on 2 cores at 512x512 and 25 fps: 0.42 CPU s per s, server and
    pipeline together, against 0.51 for JPEG; but 20 MB/s, for a server on the same host or LAN) or
    ``"jpeg"`` (about 1 MB/s at quality 80, decoded here with Pillow: for a remote server).
    ``low_latency``: the server's 40 ms look-ahead mode. ``sync_with_audio``: see the module
    docstring. Other keyword arguments go to ``FrameProcessor`` (``name``...).
    """

    def __init__(self, url: str, *, avatar: str | None = None, token: str | None = None,
                 sample_rate: int | None = None, video: str = "raw", low_latency: bool = False,
                 sync_with_audio: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        if sample_rate is not None and sample_rate not in SAMPLE_RATES:
            raise ValueError(f"sample_rate must be one of {SAMPLE_RATES} or None; got {sample_rate!r}")
        if video not in ("raw", "jpeg"):
            raise ValueError(f"video must be 'raw' or 'jpeg'; got {video!r}")
        AvatarClient(url, avatar=avatar)  # checks url and avatar now, not at the pipeline's start
        self._url, self._avatar, self._token, self._video = url, avatar, token, video
        self._requested_rate, self._low_latency, self._sync = sample_rate, low_latency, sync_with_audio
        self._client: AvatarClient | None = None
        self._rate = 0  # the session's sample rate, once open
        self._reader: asyncio.Task | None = None
        self._in_utterance = False  # speech sent since the last end of utterance or interrupt
        self._contexts: deque[str | None] = deque()  # TTS context of each utterance not yet playing
        self._context: str | None = None  # of the utterance playing now
        self._playing = False  # between the server's playback_started and playback_finished
        self._held_stops: deque[list[TTSStoppedFrame]] = deque()  # per ended utterance, oldest first
        self._played_out = asyncio.Event()  # set while no ended utterance is waiting to finish
        self._played_out.set()
        self._unacked_interrupts = 0  # interrupts sent whose `interrupted` event has not come back
        self._interrupted_at = 0.0

    @property
    def client(self) -> AvatarClient | None:
        """The open session (``client.started`` has its fps, size and rate), else None."""
        return self._client

    # ---- frames in ----------------------------------------------------------------------------
    async def process_frame(self, frame: PipecatFrame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, StartFrame):
            await self._open()  # the pipeline starts once the avatar is ready (or known to be down)
            await self.push_frame(frame, direction)
            if self._client is not None:  # after StartFrame: the images come behind it
                self._reader = self.create_task(self._read(self._client), name=f"{self}::syncvid_reader")
        elif isinstance(frame, EndFrame):
            await self._play_out()
            await self._close()
            await self.push_frame(frame, direction)
        elif isinstance(frame, CancelFrame):
            await self._close()
            await self.push_frame(frame, direction)
        elif isinstance(frame, INTERRUPTIONS):
            await self._interrupt()
            await self.push_frame(frame, direction)
        elif direction is FrameDirection.DOWNSTREAM and self._client is not None and \
                isinstance(frame, TTSAudioRawFrame):
            await self._send(frame)
        elif direction is FrameDirection.DOWNSTREAM and self._client is not None and \
                isinstance(frame, TTSStoppedFrame):
            await self._end_utterance(frame)
        else:
            await self.push_frame(frame, direction)

    async def _open(self) -> None:
        rate = self._requested_rate
        if rate is None:
            rate = self.processor_setup.audio_out_sample_rate
            rate = rate if rate in SAMPLE_RATES else FALLBACK_RATE
        client = AvatarClient(self._url, avatar=self._avatar, video=self._video, token=self._token,
                              sample_rate=rate, low_latency=self._low_latency, visemes=False, blendshapes=False)
        try:
            started = await client.connect()
        except SyncVidError as exc:
            await self.push_error(f"syncvid: no avatar session ({exc}); the speech passes on without video",
                                  exception=exc)
            return
        log.info("syncvid session %s: %dx%d at %g fps, %d Hz", started.session, started.width, started.height,
                 started.fps, started.sample_rate)
        self._client, self._rate = client, started.sample_rate

    async def _send(self, frame: TTSAudioRawFrame) -> None:
        assert self._client is not None
        samples = np.frombuffer(frame.audio, dtype="<i2")
        if frame.num_channels > 1:
            samples = samples.reshape(-1, frame.num_channels)  # averaged to mono by the client
        if not self._in_utterance:
            self._in_utterance = True
            self._contexts.append(frame.context_id)
        try:
            await self._client.send_audio(samples, sample_rate=frame.sample_rate)
        except SyncVidError as exc:
            await self.push_error(f"syncvid: the session failed sending speech ({exc})", exception=exc)

    async def _end_utterance(self, stop: TTSStoppedFrame | None) -> None:
        """The utterance plays out; ``stop`` goes on after its last frame (None: there is none)."""
        assert self._client is not None
        stops = [stop] if stop is not None else []
        if self._in_utterance:
            self._in_utterance = False
            self._held_stops.append(stops)
            self._played_out.clear()
            with contextlib.suppress(SyncVidError):  # a closed session is reported by the reader
                await self._client.end_utterance()
        elif self._held_stops:  # no speech since the last one: it goes with that one
            self._held_stops[-1].extend(stops)
        else:
            for f in stops:
                await self.push_frame(f)

    async def _interrupt(self) -> None:
        """Drops what is queued here and on the server; frames already on the way are dropped on
        arrival, up to the server's ``interrupted`` event."""
        self._in_utterance = self._playing = False
        self._contexts.clear()
        self._held_stops.clear()  # the output transport reports the bot stopped on the interruption
        self._played_out.set()
        if self._client is not None:
            self._unacked_interrupts += 1  # before the await: the reader drops from now on
            self._interrupted_at = time.monotonic()
            with contextlib.suppress(SyncVidError):
                await self._client.interrupt()

    async def _play_out(self) -> None:
        """On EndFrame: the speech sent plays to its end before the session closes."""
        client = self._client
        if client is None:
            return
        if self._in_utterance:
            await self._end_utterance(None)
        with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
            await asyncio.wait_for(self._played_out.wait(), client.buffered_s + PLAY_OUT_MARGIN_S)

    async def _close(self) -> None:
        client, self._client = self._client, None
        reader, self._reader = self._reader, None
        if client is not None:
            with contextlib.suppress(Exception):  # the socket may be gone already
                await client.close()
        if reader is not None:
            await self.cancel_task(reader)

    async def cleanup(self) -> None:
        await super().cleanup()
        await self._close()

    # ---- frames out ---------------------------------------------------------------------------
    async def _read(self, client: AvatarClient) -> None:
        """The session's events -> images and speech downstream, in the server's real-time pace."""
        try:
            async for event in client.events():
                if self._unacked_interrupts and time.monotonic() - self._interrupted_at > INTERRUPT_ACK_TIMEOUT_S:
                    log.warning("syncvid: no confirmation of the interrupt from the server; showing frames again")
                    self._unacked_interrupts = 0
                if isinstance(event, OtherEvent) and event.event == "interrupted":
                    self._unacked_interrupts = max(0, self._unacked_interrupts - 1)
                elif self._unacked_interrupts:
                    continue  # sent before the server took the interrupt
                elif isinstance(event, Frame):
                    await self._push_frame(event)
                elif isinstance(event, PlaybackStarted):
                    self._playing = True
                    self._context = self._contexts.popleft() if self._contexts else None
                elif isinstance(event, PlaybackFinished) and not event.interrupted:
                    self._playing = False
                    await self._release_stops()
                elif isinstance(event, ServerError):
                    log.warning("syncvid server: %s (%s)", event.message, event.code)
        except SyncVidError as exc:
            await self.push_error(f"syncvid: the avatar session ended ({exc}); the speech passes on without video",
                                  exception=exc)
        finally:
            self._playing = False
            if self._client is client:  # the server ended it (not _close): voice only from now on
                self._client = None
                while self._held_stops:
                    await self._release_stops()

    async def _push_frame(self, event: Frame) -> None:
        if event.image is None:
            log.warning("syncvid: frame %d has no image (JPEG without Pillow? pip install pillow)", event.index)
            return
        h, w = event.image.shape[:2]
        image = OutputImageRawFrame(image=event.image.tobytes(), size=(w, h), format="RGB")
        image.sync_with_audio = self._sync  # not an __init__ field in pipecat 1.14
        image.metadata["syncvid"] = {"index": event.index, "pts": event.pts, "speaking": event.speaking}
        await self.push_frame(image)
        if self._playing and event.audio is not None and not self._unacked_interrupts:
            await self.push_frame(TTSAudioRawFrame(event.audio.tobytes(), self._rate, 1, context_id=self._context))

    async def _release_stops(self) -> None:
        if self._held_stops:
            for stop in self._held_stops.popleft():
                await self.push_frame(stop)
        if not self._held_stops:
            self._played_out.set()
