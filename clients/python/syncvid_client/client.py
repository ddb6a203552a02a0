"""``AvatarClient``: one avatar-SDK session over the server's ``/ws`` WebSocket.

The usual agent pattern is one task sending speech (``send_audio``, ``end_utterance``,
``interrupt``) while another iterates ``events()``; both may run at once. ``events()`` itself is
single-consumer: iterate it from one task only, and keep iterating (even when dropping frames), or
the server cuts the session off as a slow consumer after about 2 s of queued output.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from .assembler import FrameAssembler
from .audio import AudioLike, LinearResampler, to_float, to_int16, to_pcm16
from .errors import (
    ConnectError,
    ConnectionClosedError,
    ProtocolViolation,
    SyncVidError,
    error_for,
)
from .events import ClientEvent, Frame, SessionStarted, parse_session_started
from .jpeg import find_jpeg_decoder
from .wire import SAMPLE_RATES, VIDEO_FORMATS, Event, WireError

if TYPE_CHECKING:
    from typing import Self

log = logging.getLogger(__name__)

MAX_AUDIO_MESSAGE_BYTES = 65536  # one binary message of speech (32768 PCM16 samples)
MAX_SERVER_MESSAGE_BYTES = 32 * 2**20  # a raw 1920x1080 RGB frame is 6 MiB
RECEIVE_QUEUE = 64  # messages websockets buffers while the reader is busy (about 0.8 s of frames)
CLOSE_NORMAL = 1000
TIMEOUTS = (TimeoutError, asyncio.TimeoutError)  # distinct classes before Python 3.11


class AvatarClient:
    """``async with AvatarClient("ws://127.0.0.1:8080/ws", avatar="default") as c: ...``

    Options left at ``None`` are not sent (the server's defaults apply); the others are checked
    here and sent in the ``start`` message. Raises from ``async with`` (or ``connect()``):
    :class:`ConnectError` when no session can be opened, or the typed error the server answered
    (``UnknownAvatarError``, ``SessionCapError``...).
    """

    def __init__(self, url: str, avatar: str | None = None, video: str = "jpeg", token: str | None = None,
                 sample_rate: int = 16000, jpeg_quality: int | None = None, visemes: bool = True,
                 blendshapes: bool = True, audio_out: bool = True, low_latency: bool = False,
                 seed: int | None = None, open_timeout: float = 10.0, decode_images: bool = True) -> None:
        if not url.startswith(("ws://", "wss://")):
            raise ValueError(f"url must start with ws:// or wss://; got {url!r}")
        if sample_rate not in SAMPLE_RATES:
            raise ValueError(f"sample_rate must be one of {SAMPLE_RATES}; got {sample_rate!r} "
                             "(send_audio(..., sample_rate=...) resamples other rates)")
        if video not in VIDEO_FORMATS:
            raise ValueError(f"video must be one of {VIDEO_FORMATS}; got {video!r}")
        if jpeg_quality is not None and (not _is_int(jpeg_quality) or not 1 <= jpeg_quality <= 100):
            raise ValueError(f"jpeg_quality must be an integer from 1 to 100; got {jpeg_quality!r}")
        if seed is not None and (not _is_int(seed) or not 0 <= seed < 2**32):
            raise ValueError(f"seed must be an integer from 0 to 4294967295; got {seed!r}")
        if avatar is not None and (not isinstance(avatar, str) or not avatar):
            raise ValueError(f"avatar must be a non-empty name; got {avatar!r}")
        for name, flag in (("visemes", visemes), ("blendshapes", blendshapes), ("audio_out", audio_out),
                           ("low_latency", low_latency)):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be True or False; got {flag!r}")
        if not open_timeout > 0:
            raise ValueError(f"open_timeout must be positive seconds; got {open_timeout!r}")
        self.url, self.open_timeout = url, float(open_timeout)
        self.decode_images = decode_images  # False: JPEG frames keep their bytes only (no decoding cost)
        self._token = token
        options: dict[str, Any] = {"sample_rate": int(sample_rate), "video": video,
                                   "jpeg_quality": None if jpeg_quality is None else int(jpeg_quality),
                                   "visemes": visemes, "blendshapes": blendshapes, "audio_out": audio_out,
                                   "avatar": avatar, "low_latency": low_latency,
                                   "seed": None if seed is None else int(seed)}  # numpy ints are not JSON
        self.options: dict[str, Any] = {k: v for k, v in options.items() if v is not None}
        self.started: SessionStarted | None = None  # set once the session is open
        self._ws: ClientConnection | None = None
        self._assembler = FrameAssembler(video, audio_out)
        self._send_lock = asyncio.Lock()
        self._generation = 0  # bumped by interrupt(): a send_audio in progress stops there
        self._resampler: LinearResampler | None = None
        self._sent_samples = 0  # at the session rate
        self._mark = (0.0, 0)  # (buffered_ms of the latest frame event, _sent_samples when it came)
        self._last_error: tuple[str, str] | None = None
        self._error_was_last = False  # no message has arrived since the last error
        self._closing = False
        self._ended = False  # session_ended received

    # ---- session ------------------------------------------------------------------------------
    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def connect(self) -> SessionStarted:
        """Open the WebSocket, send ``start`` and wait for ``session_started``."""
        if self._ws is not None:
            raise RuntimeError("this AvatarClient is already connected; make a new one per session")
        headers = {"Authorization": f"Bearer {self._token}"} if self._token else None
        try:
            self._ws = await connect(self.url, additional_headers=headers, open_timeout=self.open_timeout,
                                     max_size=MAX_SERVER_MESSAGE_BYTES, max_queue=RECEIVE_QUEUE, compression=None)
        except InvalidStatus as exc:  # refused before the upgrade: say why in words
            raise ConnectError(f"cannot connect to {self.url}: {_refusal(exc)}") from exc
        except (OSError, InvalidHandshake, InvalidURI, *TIMEOUTS) as exc:
            raise ConnectError(f"cannot connect to {self.url}: {exc or type(exc).__name__}") from exc
        try:
            with contextlib.suppress(ConnectionClosed):  # a refusal is read below, from the queued error
                await self._ws.send(json.dumps({"type": "start", "options": self.options}))
            self.started = await asyncio.wait_for(self._await_started(), self.open_timeout)
        except BaseException as exc:
            await self._abort()
            if isinstance(exc, TIMEOUTS):
                raise ConnectError(f"no session_started from {self.url} within {self.open_timeout:g} s") from None
            raise
        return self.started

    async def _await_started(self) -> SessionStarted:
        ws = self._connection()
        while True:
            try:
                message = await ws.recv()
            except ConnectionClosed as exc:
                raise self._close_error(exc) or ConnectionClosedError(CLOSE_NORMAL, "closed before session_started")
            if isinstance(message, str):
                msg = _json_object(message)
                if msg.get("type") == "error":
                    raise error_for(str(msg.get("code", "")), str(msg.get("message", "")))
                if msg.get("type") == "event" and msg.get("event") == Event.SESSION_STARTED.value:
                    started = parse_session_started(msg, self.options)
                    self._assembler.configure(started.video, started.audio_out)
                    return started
            self._receive(message)

    async def close(self, reason: str = "") -> None:
        """Send ``close`` and close the socket (idempotent; ``events()`` then ends normally)."""
        ws, self._closing = self._ws, True
        if ws is None:
            return
        with contextlib.suppress(ConnectionClosed):
            await ws.send(json.dumps({"type": "close", "reason": reason} if reason else {"type": "close"}))
        await ws.close()

    async def _abort(self) -> None:
        self._closing = True
        if self._ws is not None:
            await self._ws.close()

    # ---- speech -------------------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        """The session's sample rate: of the speech sent and of the audio in frames."""
        return self.started.sample_rate if self.started else int(self.options["sample_rate"])

    async def send_audio(self, samples: AudioLike, sample_rate: int | None = None) -> None:
        """Send speech: an int16 array, a float array in [-1, 1] (clipped), or PCM16 little-endian
        bytes; mono, or a (samples, channels) array averaged to mono.

        With ``sample_rate`` other than the session's, the speech is resampled by linear
        interpolation (state kept across calls, so chunk boundaries are seamless; see
        ``syncvid_client.audio`` for the quality caveat: opening the session at the source's rate
        avoids it). Sent in binary messages of at most 64 KiB; an ``interrupt()`` meanwhile stops
        the rest of this call's speech from being sent.
        """
        self._connection()
        rate = self.sample_rate
        if sample_rate is not None and (not _is_int(sample_rate) or sample_rate <= 0):
            raise ValueError(f"sample_rate must be a positive integer; got {sample_rate!r}")
        if sample_rate is None or sample_rate == rate:
            self._resampler = None
            if isinstance(samples, (bytes, bytearray, memoryview)):
                payload = memoryview(samples).cast("B")  # sent as is
                if len(payload) % 2:
                    raise ValueError(f"PCM16 audio must have an even number of bytes; got {len(payload)}")
            else:
                payload = memoryview(to_pcm16(samples).astype("<i2", copy=False).tobytes())
        else:
            if self._resampler is None or self._resampler.src_rate != sample_rate or self._resampler.dst_rate != rate:
                self._resampler = LinearResampler(sample_rate, rate)
            payload = memoryview(to_int16(self._resampler.process(to_float(samples))).astype("<i2").tobytes())
        await self._send_pcm(payload)

    async def _send_pcm(self, payload: memoryview) -> None:
        """PCM16 bytes in messages of at most 64 KiB, kept together against concurrent senders."""
        ws = self._connection()
        generation = self._generation
        async with self._send_lock:
            for start in range(0, len(payload), MAX_AUDIO_MESSAGE_BYTES):
                if self._generation != generation:
                    return
                chunk = payload[start:start + MAX_AUDIO_MESSAGE_BYTES]
                try:
                    await ws.send(chunk)
                except ConnectionClosed as exc:
                    raise self._close_error(exc) or ConnectionClosedError(CLOSE_NORMAL, "session closed") from None
                self._sent_samples += len(chunk) // 2

    async def end_utterance(self) -> None:
        """No more speech for now: the utterance plays out and ``PlaybackFinished`` follows."""
        if self._resampler is not None:
            tail = to_int16(self._resampler.flush())  # the last few outputs of an upsampling stream
            self._resampler = None
            if len(tail):
                await self._send_pcm(memoryview(tail.astype("<i2").tobytes()))
        await self._send_control({"type": "end_of_utterance"})

    async def interrupt(self) -> None:
        """Drop all speech not yet played; ``PlaybackFinished(interrupted=True)`` follows for each
        unfinished utterance. Speech sent afterwards starts a new utterance."""
        self._generation += 1
        self._resampler = None
        self._mark = (0.0, self._sent_samples)
        await self._send_control({"type": "interrupt"})

    @property
    def buffered_s(self) -> float:
        """Speech the server holds but has not played yet, estimated: ``buffered_ms`` of the latest
        frame event received, plus the speech sent since it arrived (seconds at the session rate).
        It lags by the network delay, and only moves down while ``events()`` is being read;
        0 after ``interrupt()``."""
        buffered_ms, sent_then = self._mark
        return buffered_ms / 1000.0 + (self._sent_samples - sent_then) / self.sample_rate

    @property
    def dropped_frames(self) -> int:
        """Frames dropped because a part never arrived (should stay 0)."""
        return self._assembler.dropped

    # ---- events -------------------------------------------------------------------------------
    async def events(self) -> AsyncIterator[ClientEvent]:
        """The session's events in arrival order: ``Frame`` (once its image and audio arrived,
        paired by frame index), ``PlaybackStarted``, ``PlaybackFinished``, ``ServerError``
        (non-fatal errors such as ``buffer_full``), ``SessionEnded``, ``OtherEvent``.

        Ends when the session closes normally (``close()``, ``session_ended``, close 1000); raises
        the typed error when the server closes after an error message, else
        ``ConnectionClosedError``."""
        ws = self._connection()
        while True:
            for event in self._assembler.pop_ready():
                yield await self._finish(event)
            try:
                message = await ws.recv()
            except ConnectionClosed as exc:
                for event in self._assembler.flush():
                    yield await self._finish(event)
                error = self._close_error(exc)
                if error is not None:
                    raise error from None
                return
            self._receive(message)

    def _receive(self, message: str | bytes) -> None:
        """One server message into the assembler (session_started excepted: see connect)."""
        if isinstance(message, bytes):
            try:
                self._assembler.feed_binary(message)
            except WireError as exc:
                raise ProtocolViolation("bad_server_message", str(exc)) from None
            self._error_was_last = False
            return
        msg = _json_object(message)
        kind = msg.get("type")
        if kind == "error":
            code, text = str(msg.get("code", "")), str(msg.get("message", ""))
            self._last_error, self._error_was_last = (code, text), True
            self._assembler.feed_error(code, text)
            return
        self._error_was_last = False
        if kind != "event":
            log.debug("server message of type %r ignored", kind)
            return
        name = msg.get("event")
        if name == Event.FRAME.value:
            if not isinstance(msg.get("index"), int):
                log.warning("frame event without an integer index ignored")
                return
            self._mark = (float(msg.get("buffered_ms", 0.0)), self._sent_samples)
        elif name == Event.SESSION_ENDED.value:
            self._ended = True
        elif name == Event.SESSION_STARTED.value:
            log.debug("a second session_started ignored")
            return
        self._assembler.feed_event(msg)

    async def _finish(self, event: ClientEvent) -> ClientEvent:
        """Decode a frame's JPEG off the event loop (Pillow and OpenCV release the GIL)."""
        if not isinstance(event, Frame) or event.jpeg is None or event.image is not None or not self.decode_images:
            return event
        decoder = find_jpeg_decoder()
        if decoder is None:
            return event
        try:
            image: np.ndarray = await asyncio.to_thread(decoder, event.jpeg)
        except (OSError, ValueError, SyntaxError) as exc:  # a corrupt image: keep the frame, bytes only
            log.warning("frame %d: JPEG not decodable (%s)", event.index, exc)
            return event
        return replace(event, image=image)

    def _close_error(self, exc: ConnectionClosed) -> SyncVidError | None:
        """None for a normal end; else the error the server announced or ConnectionClosedError."""
        if self._closing or self._ended:
            return None
        code = exc.rcvd.code if exc.rcvd is not None else 1006  # 1006: no close frame at all
        reason = exc.rcvd.reason if exc.rcvd is not None else ""
        if code == CLOSE_NORMAL:
            return None
        if self._last_error is not None:
            error_code, message = self._last_error
            # the server closes right after a fatal error, with the message as the close reason
            if self._error_was_last or (reason and message.startswith(reason)):
                return error_for(error_code, message)
        return ConnectionClosedError(code, reason)

    async def _send_control(self, message: dict[str, Any]) -> None:
        ws = self._connection()
        try:
            await ws.send(json.dumps(message))
        except ConnectionClosed as exc:
            raise self._close_error(exc) or ConnectionClosedError(CLOSE_NORMAL, "session closed") from None

    def _connection(self) -> ClientConnection:
        if self._ws is None:
            raise RuntimeError("not connected: use `async with AvatarClient(...)` or await connect() first")
        return self._ws


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _json_object(text: str) -> dict[str, Any]:
    try:
        msg = json.loads(text)
    except ValueError:
        log.warning("server text message is not JSON; ignored")
        return {}
    if not isinstance(msg, dict):
        log.warning("server JSON message is not an object; ignored")
        return {}
    return msg


def _refusal(exc: InvalidStatus) -> str:
    """The server's reason for an HTTP refusal of the upgrade (its JSON error), with what to do."""
    status = exc.response.status_code
    try:
        message = json.loads(exc.response.body)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = f"HTTP {status}"
    if status == 401:
        return f"{message} (pass token=... to AvatarClient: the server's --token)"
    return f"{message} (HTTP {status})"
