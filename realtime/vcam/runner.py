"""One live avatar on a virtual camera: speech in (a file or a microphone) -> ``LiveSession`` ->
frames to the camera at a constant rate, and the voice, delayed exactly like them, to an output
device.

Three things run on the session's one clock (``LiveSession.clock``): the source's packets, the frame
loop (``FrameLoop``: slots taken when due, a camera frame at each of the camera's ticks, resized and
sent on a thread of its own) and, when there is a speaker, its callback (``AudioPlayout``: each
block read from ``LiveSession.samples_for`` at the time the card plays it). The audio's delay is the
video's by construction: both are the session's output timeline, read at the time they go out.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from realtime.metrics import ServerMetrics
from realtime.session.config import SessionConfig
from realtime.session.live import LiveSession
from realtime.session.shared import Engine
from realtime.vcam.camera import CameraSink, FrameFit
from realtime.vcam.inputs import AudioSource
from realtime.vcam.sound import SpeakerOutput
from realtime.vcam.timeline import PACKET_S, AudioPlayout, CameraFrame, FrameLoop

log = logging.getLogger(__name__)

HISTORY_FRAMES = 1500  # (sent, frame, slot, kind, input time) of the last minute at 25 fps


@dataclass(frozen=True)
class SentFrame:
    t: float  # when the camera had it (clock seconds)
    index: int  # camera frame
    slot: int  # engine slot it shows
    kind: str  # speech | rest | late | repeat
    input_time: float | None  # input seconds (since the first pushed sample) the slot shows; None before the grid


@dataclass
class VcamStats:
    frames: int = 0
    seconds: float = 0.0
    kinds: dict[str, int] = field(default_factory=dict)
    skipped_frames: int = 0
    audio_jumps: int = 0
    audio_underflows: int = 0

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


class Vcam:
    """The session between a source, a camera and an optional speaker; ``run`` until stopped. The
    source and the speaker are closed when it ends; the camera stays with whoever opened it."""

    def __init__(self, engine: Engine, config: SessionConfig, camera: CameraSink, source: AudioSource,
                 speaker: SpeakerOutput | None = None) -> None:
        self.engine, self.config, self.camera, self.source, self.speaker = engine, config, camera, source, speaker
        self.live: LiveSession | None = None
        self.frames: FrameLoop | None = None
        self.playout: AudioPlayout | None = None
        self.history: collections.deque[SentFrame] = collections.deque(maxlen=HISTORY_FRAMES)
        self.stats = VcamStats()

    async def run(self, stop: asyncio.Event | None = None, seconds: float | None = None) -> VcamStats:
        """Runs until ``stop`` is set, ``seconds`` have passed or a part fails (raised here); every
        part is closed on the way out."""
        live = self.live = LiveSession(self.engine, self.config, ServerMetrics())
        self.frames = FrameLoop(live, live.clock, self.config.fps, self.camera.fps)
        self.playout = AudioPlayout(live.samples_for, live.clock)
        sender = ThreadPoolExecutor(1, thread_name_prefix="vcam-send")  # one: frames leave in order
        stop = stop or asyncio.Event()
        started = time.monotonic()
        tasks: list[asyncio.Task] = []
        try:
            await live.prime()
            live.start()
            live.clock.start()
            if self.speaker is not None:
                self.speaker.start(self.playout)
                if self.speaker.latency_s > self.config.budget_s - PACKET_S:  # asks before the speech arrived
                    log.warning("%s buffers %.0f ms, more than the engine's %.0f ms: the start of each word "
                                "plays as silence; pick a device with less latency", self.speaker.name,
                                self.speaker.latency_s * 1000, self.config.budget_s * 1000)
            tasks = [asyncio.create_task(self.source.run(live), name="vcam-input"),
                     asyncio.create_task(self._frames(live, sender), name="vcam-frames"),
                     asyncio.create_task(stop.wait(), name="vcam-stop")]
            # the session's own loops too: a failure there ends the camera instead of freezing the lips
            done, _ = await asyncio.wait([*tasks, *live.tasks], timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        finally:
            self.stats.seconds = time.monotonic() - started
            for task in tasks:
                task.cancel()
            with contextlib.suppress(Exception):
                await asyncio.gather(*tasks, return_exceptions=True)
            self._close_devices()
            sender.shutdown(wait=True)
            await live.close()
            self._sum_up()
        return self.stats

    async def _frames(self, live: LiveSession, sender: ThreadPoolExecutor) -> None:
        loop = asyncio.get_running_loop()
        fit = FrameFit(int(self.camera.width), int(self.camera.height))
        frames, clock = self.frames, live.clock
        assert frames is not None
        while True:
            frame, wake = frames.step()
            if frame is not None:
                await loop.run_in_executor(sender, self._send, fit, frame)
                t = clock.now()
                live.on_video_sent(frame.slot, t)
                self.history.append(SentFrame(t, frame.index, frame.slot, frame.kind, self._input_time(live, frame.slot)))
                self.stats.frames += 1
            delay = wake - clock.now()
            if delay > 0:
                await asyncio.sleep(delay)

    def _input_time(self, live: LiveSession, slot: int) -> float | None:
        t = live.slot_input_time(slot)  # where the slot's audio starts: the content, less the audio trim
        return None if t is None else t + self.config.audio_extra_delay_s

    def _send(self, fit: FrameFit, frame: CameraFrame) -> None:
        self.camera.send(fit(frame.image))

    def _close_devices(self) -> None:
        for part in (self.speaker, self.source):
            if part is not None:
                try:
                    part.close()
                except Exception:  # closing the others matters more
                    log.exception("closing %s failed", getattr(part, "name", part))

    def _sum_up(self) -> None:
        s = self.stats
        if self.live is not None:
            s.kinds = {k: self.live.counts[k] for k in ("speech", "rest", "late", "repeat") if self.live.counts[k]}
        if self.frames is not None:
            s.skipped_frames = self.frames.skipped_frames
        if self.playout is not None:
            s.audio_jumps = self.playout.jumps
        if self.speaker is not None:
            s.audio_underflows = self.speaker.underflows
