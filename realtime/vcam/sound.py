"""PortAudio through sounddevice: the microphone in, the delayed voice out, device checks.

sounddevice loads the PortAudio library when imported, so it is imported here, lazily, and only
for ``--mic`` and ``--play-to``; every class takes the module as an argument (tests pass a fake).
Streams are opened at start-up, before any model loads, so a missing or busy device fails at once;
they start later. Callbacks run on PortAudio's thread: the microphone's only queues a copy of the
block and wakes the event loop; the speaker's reads the session's delayed audio (AudioPlayout).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from types import ModuleType
from typing import Any

import numpy as np

from realtime.session.live import LiveSession
from realtime.session.timeline import AUDIO_OUT_RATE, AUDIO_OUT_SAMPLES
from realtime.vcam import VcamError
from realtime.vcam.inputs import PacketConverter
from realtime.vcam.timeline import AudioPlayout

log = logging.getLogger(__name__)

MAX_QUEUED_BLOCKS = 50  # microphone blocks waiting for the event loop: 1 s, the oldest dropped beyond
LIST_HINT = "`syncvid vcam --list-devices` shows what PortAudio sees"


def load_sounddevice() -> ModuleType:
    """The sounddevice module, or a ``VcamError`` saying what to install."""
    try:
        import sounddevice  # loads PortAudio (a system library): only --mic and --play-to need it
    except OSError:
        raise VcamError("no PortAudio: the microphone and --play-to need the PortAudio library; install it "
                        "(`sudo apt-get install libportaudio2`), or use --audio FILE without --play-to") from None
    except ImportError:
        raise VcamError("the sounddevice package is missing: install it (`pip install sounddevice`)") from None
    return sounddevice


def parse_device(spec: str | None) -> int | str | None:
    """A device as given on the command line: a number (PortAudio's index), a part of its name; None,
    empty or "default": the system's default."""
    if not spec or spec.strip().lower() == "default":
        return None
    return int(spec) if spec.strip().isdigit() else spec


def _describe(device: int | str | None, kind: str) -> str:
    return f"the default {kind} device" if device is None else f"{kind} device {device!r}"


def check_device(sd: ModuleType, device: int | str | None, kind: str) -> dict[str, Any]:
    """PortAudio's description of the input or output ``device`` (``kind``), if it can carry 48 kHz
    speech; else a ``VcamError``. Output devices get up to two channels (the voice on both)."""
    what = _describe(device, kind)
    try:
        info = dict(sd.query_devices(device, kind))
    except (ValueError, sd.PortAudioError) as e:
        if device is None:
            hint = "plug one in or enable it" + (", or use --audio FILE" if kind == "input" else "")
            raise VcamError(f"no {kind} device: PortAudio lists none as the default ({hint}; {LIST_HINT})") from None
        raise VcamError(f"no {what} ({e}); pass a number or a part of a name that {LIST_HINT}") from None
    channels = info.get(f"max_{kind}_channels", 0)
    if channels < 1:
        raise VcamError(f"{what} ({info.get('name')}) has no {kind} channels; pick another ({LIST_HINT})")
    info["channels"] = 1 if kind == "input" else min(2, channels)
    check = sd.check_input_settings if kind == "input" else sd.check_output_settings
    try:
        check(device=device, channels=info["channels"], dtype="float32" if kind == "input" else "int16",
              samplerate=AUDIO_OUT_RATE)
    except (ValueError, sd.PortAudioError) as e:
        raise VcamError(f"{what} ({info.get('name')}) cannot carry 48 kHz audio ({e}); pick another, for "
                        f"example 'pulse' or 'default' ({LIST_HINT})") from None
    return info


def _open_error(e: Exception, what: str) -> VcamError:
    return VcamError(f"{what} cannot be opened ({e}): it may be busy in another program; close that program "
                     f"or pick another device ({LIST_HINT})")


def stream_time_to_clock(stream_time: float, current_time: float, now: float) -> float:
    """A PortAudio stream time (a DAC or ADC time) on the monotonic clock: hosts keep their own
    clock, so only differences to the callback's ``currentTime`` are used."""
    return now + (stream_time - current_time)


class MicSource:
    """The microphone, 20 ms blocks at 48 kHz: each block goes to the session with the time its
    callback ran (when its last sample was delivered)."""

    def __init__(self, sd: ModuleType, device: int | str | None) -> None:
        info = check_device(sd, device, "input")
        self.name = f"microphone {info.get('name', device)!r}"
        self.blocks: collections.deque[tuple[np.ndarray, float]] = collections.deque(maxlen=MAX_QUEUED_BLOCKS)
        self.received = 0
        self.closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        try:
            self.stream = sd.InputStream(device=device, samplerate=AUDIO_OUT_RATE, channels=1, dtype="float32",
                                         blocksize=AUDIO_OUT_SAMPLES, latency="low", callback=self._callback)
        except (ValueError, sd.PortAudioError) as e:
            raise _open_error(e, _describe(device, "input")) from None
        self._sd = sd

    def _callback(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        self.blocks.append((np.array(indata[:, 0], np.float32), time.monotonic()))
        self.received += 1
        if self._loop is not None and self._wake is not None:
            try:
                self._loop.call_soon_threadsafe(self._wake.set)
            except RuntimeError:  # the loop closed while the stream stops: the block is not needed
                pass

    async def run(self, live: LiveSession) -> None:
        self._loop, self._wake = asyncio.get_running_loop(), asyncio.Event()
        convert = PacketConverter()
        try:
            self.stream.start()
        except self._sd.PortAudioError as e:
            raise _open_error(e, self.name) from None
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self.blocks:
                block, arrival = self.blocks.popleft()
                x16, x48 = convert(block)
                live.push_audio(x16, x48, arrival)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.stream.stop()
            self.stream.close()


class SpeakerOutput:
    """The session's speech, delayed exactly like the video, played to an output device: every
    block the card asks for is read from the session at the time the card says it will play it."""

    def __init__(self, sd: ModuleType, device: int | str | None) -> None:
        info = check_device(sd, device, "output")
        self.name = f"output {info.get('name', device)!r}"
        self.channels = int(info["channels"])
        self.playout: AudioPlayout | None = None
        self.underflows = 0
        self.failed = False
        self.closed = False
        try:
            self.stream = sd.OutputStream(device=device, samplerate=AUDIO_OUT_RATE, channels=self.channels,
                                          dtype="int16", blocksize=AUDIO_OUT_SAMPLES, latency="low",
                                          callback=self._callback)
        except (ValueError, sd.PortAudioError) as e:
            raise _open_error(e, _describe(device, "output")) from None
        self._sd = sd

    def start(self, playout: AudioPlayout) -> None:
        self.playout = playout
        try:
            self.stream.start()
        except self._sd.PortAudioError as e:
            raise _open_error(e, self.name) from None
        log.info("voice to %s, %.0f ms of output latency (compensated)", self.name, self.latency_s * 1000)

    @property
    def latency_s(self) -> float:
        """How long before it plays the card asks for a block (PortAudio's figure)."""
        return float(getattr(self.stream, "latency", 0.0) or 0.0)

    def _callback(self, outdata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        if getattr(status, "output_underflow", False):
            self.underflows += 1
        try:
            now = time.monotonic()
            dac, current = time_info.outputBufferDacTime, time_info.currentTime
            if dac > 0 and 0 <= dac - current < 1.0:
                t = stream_time_to_clock(dac, current, now)
            else:  # a host without timestamps: its reported latency
                t = now + self.latency_s
            samples = self.playout.block(frames, t) if self.playout is not None else np.zeros(frames, np.int16)
            outdata[:] = samples[:, None]
        except Exception:  # never raise into PortAudio (it would stop the stream): silence, logged once
            outdata.fill(0)
            if not self.failed:
                self.failed = True
                log.exception("speaker callback failed; playing silence")

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.stream.stop()
            self.stream.close()


def audio_device_lines(sd: ModuleType) -> list[str]:
    """PortAudio's devices, one line each: index, name, channels, which are the defaults."""
    default_in, default_out = (list(sd.default.device) + [None, None])[:2]
    lines = []
    for i, d in enumerate(sd.query_devices()):
        marks = [m for m, on in (("default input", i == default_in), ("default output", i == default_out)) if on]
        lines.append(f"  {i:3d}  {d['name']}  ({d['max_input_channels']} in, {d['max_output_channels']} out)"
                     + (f"  [{', '.join(marks)}]" if marks else ""))
    return lines
