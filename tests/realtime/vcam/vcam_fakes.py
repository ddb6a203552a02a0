"""Stand-ins for the virtual camera's devices: a pyvirtualcam backend that records what it is sent,
and a sounddevice module whose streams run on threads in real time (no PortAudio, no kernel module)."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace
from typing import ClassVar

import numpy as np

BUSY_DEVICE = "/dev/video7"  # the recording backend answers as v4l2loopback does for a busy device


class RecordingBackend:
    """A pyvirtualcam backend keeping (monotonic time, RGB frame) of every frame sent."""

    instances: ClassVar[list[RecordingBackend]] = []

    def __init__(self, *, width: int, height: int, fps: float, fourcc: int, device: str | None, **kw) -> None:
        if device == BUSY_DEVICE:
            raise RuntimeError(f"Device {device} could not be opened: Device or resource busy")
        self.width, self.height, self.fps = width, height, fps
        self._device = device or "/dev/video-recording"
        self.frames: list[tuple[float, np.ndarray]] = []
        self.closed = False
        RecordingBackend.instances.append(self)

    def send(self, frame: np.ndarray) -> None:
        self.frames.append((time.monotonic(), frame.reshape(self.height, self.width, 3).copy()))

    def close(self) -> None:
        self.closed = True

    def device(self) -> str:
        return self._device

    def native_fourcc(self) -> int | None:
        return None


class PortAudioError(Exception):
    pass


class FakeSoundDevice:
    """Enough of the sounddevice module: devices, settings checks, and streams whose callbacks run
    on a thread every block on an absolute schedule. The input plays ``mic`` (48 kHz float) then
    silence; the output records each block with the time it plays (``played``). Stream times are
    the monotonic clock shifted by ``stream_offset``, as a host's own clock would be."""

    PortAudioError = PortAudioError

    def __init__(self, mic: np.ndarray | None = None, default_input: int = 0, output_latency: float = 0.03,
                 stream_offset: float = -1234.5) -> None:
        self.devices = [{"name": "Fake USB Mic", "max_input_channels": 1, "max_output_channels": 0},
                        {"name": "Loopback sink", "max_input_channels": 0, "max_output_channels": 2}]
        self.default = SimpleNamespace(device=[default_input, 1])
        self.mic = np.zeros(0, np.float32) if mic is None else mic
        self.output_latency, self.stream_offset = output_latency, stream_offset
        self.played: list[tuple[float, np.ndarray]] = []  # (when its first sample plays, samples (n, channels))
        self.streams: list[_Stream] = []
        fake = self

        class InputStream(_Stream):
            def __init__(self, **kw) -> None:
                super().__init__(fake, "input", **kw)

        class OutputStream(_Stream):
            def __init__(self, **kw) -> None:
                super().__init__(fake, "output", **kw)

        self.InputStream, self.OutputStream = InputStream, OutputStream

    def query_devices(self, device=None, kind=None):
        if device is None and kind is None:
            return [dict(d) for d in self.devices]
        if device is None:
            index = self.default.device[0 if kind == "input" else 1]
            if index < 0:
                raise PortAudioError("Error querying device -1")
        elif isinstance(device, int):
            if not 0 <= device < len(self.devices):
                raise PortAudioError(f"Error querying device {device}")
            index = device
        else:
            found = [i for i, d in enumerate(self.devices)
                     if device.lower() in d["name"].lower() and d[f"max_{kind}_channels"] > 0]
            if not found:
                raise ValueError(f"No {kind} device matching {device!r}")
            index = found[0]
        return dict(self.devices[index])

    def check_input_settings(self, device=None, channels=None, dtype=None, samplerate=None) -> None:
        pass

    def check_output_settings(self, device=None, channels=None, dtype=None, samplerate=None) -> None:
        pass


class _Stream:
    def __init__(self, fake: FakeSoundDevice, kind: str, *, device, samplerate, channels, dtype, blocksize,
                 latency, callback) -> None:
        self.fake, self.kind, self.rate, self.channels, self.dtype = fake, kind, samplerate, channels, dtype
        self.blocksize, self.callback = blocksize, callback
        self.latency = fake.output_latency if kind == "output" else 0.01
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        fake.streams.append(self)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        period, n, start = self.blocksize / self.rate, 0, time.monotonic()
        flags = SimpleNamespace(output_underflow=False)
        while not self._stop.is_set():
            due = start + (n + 1) * period
            time.sleep(max(0.0, due - time.monotonic()))
            stream_now = time.monotonic() + self.fake.stream_offset
            if self.kind == "input":
                block = np.zeros((self.blocksize, 1), np.float32)
                chunk = self.fake.mic[n * self.blocksize : (n + 1) * self.blocksize]
                block[: len(chunk), 0] = chunk
                info = SimpleNamespace(currentTime=stream_now, inputBufferAdcTime=stream_now - period,
                                       outputBufferDacTime=0.0)
                self.callback(block, self.blocksize, info, flags)
            else:  # blocks play back to back from ``start``, on the card's own exact schedule
                plays = due + self.fake.output_latency
                out = np.zeros((self.blocksize, self.channels), np.int16)
                info = SimpleNamespace(currentTime=stream_now, inputBufferAdcTime=0.0,
                                       outputBufferDacTime=plays + self.fake.stream_offset)
                self.callback(out, self.blocksize, info, flags)
                self.fake.played.append((plays, out.copy()))
            n += 1

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def close(self) -> None:
        pass


def played_signal(played: list[tuple[float, np.ndarray]]) -> tuple[float, np.ndarray]:
    """(when the first sample played, the first channel as float in [-1, 1]) of contiguous blocks."""
    x = np.concatenate([b[:, 0] for _, b in played]).astype(np.float32) / 32768.0
    return played[0][0], x
