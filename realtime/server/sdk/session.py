"""An avatar-SDK session: speech chunks in over ``/ws``, per frame a JSON event, the image and the
frame's audio out, paced in real time on the session's clock.

Three tasks besides the ``LiveSession``'s own: the pacer hands the engine 20 ms of speech every
20 ms (``SpeechPlayout``); the frame loop takes each slot when it is due and queues its messages;
the sender writes the queue to the client. The queue is bounded (``limits.sdk_send_queue_s`` of
output): a client that stops reading ends its own session (``slow_consumer``) and nothing grows.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable

import numpy as np

from realtime.metrics import ServerMetrics
from realtime.server import protocol as P
from realtime.server.config import RealtimeConfig
from realtime.server.sdk.frames import FrameMessages
from realtime.server.sdk.playout import Playback, PlaybackFinished, PlaybackStarted, SpeechPlayout
from realtime.server.session_tasks import OutputRate, SessionTasks
from realtime.session.config import SessionConfig
from realtime.session.live import LiveSession
from realtime.session.shared import Engine
from realtime.session.timeline import EncoderResampler, PacketSchedule

log = logging.getLogger(__name__)

_ids = itertools.count(1)  # session ids for logs and clients only
MESSAGES_PER_FRAME = 4  # frame event, image, audio, and room for a playback event


class SdkSession:
    def __init__(self, engine: Engine, config: RealtimeConfig, metrics: ServerMetrics, options: P.SdkOptions,
                 send: Callable[[str | bytes], Awaitable[None]]) -> None:
        self.id = f"a{next(_ids)}"
        self.options, self.metrics, self._send = options, metrics, send
        session_config = SessionConfig.from_realtime(config, low_latency=options.low_latency, seed=options.seed,
                                                     avatar=options.avatar)
        self.lookahead, self.budget_s, self.fps = session_config.lookahead, session_config.budget_s, config.fps
        self.teardown_s = config.limits.teardown_timeout_s
        self.live = LiveSession(engine, session_config, metrics)
        self.clock = self.live.clock
        self.sample_rate = options.sample_rate
        self.playout = SpeechPlayout(self.sample_rate, config.limits.sdk_buffer_s, config.limits.audio_buffer_s)
        self.messages = FrameMessages(options, config.fps)
        self._resample = EncoderResampler(self.sample_rate)  # the client's PCM16 -> the encoder's rate
        self.outbox: asyncio.Queue[str | bytes] = asyncio.Queue(
            max(8, round(config.limits.sdk_send_queue_s * config.fps) * MESSAGES_PER_FRAME))
        self.work = SessionTasks(self.id)  # a task that fails ends the session (work.failed says which)
        self.tasks, self.gone = self.work.tasks, self.work.gone
        self.output_rate = OutputRate()
        self.slow = False  # the client stopped reading: the session ended
        self.closed = False
        self.skipped = 0  # slots not sent because the loop stalled
        self.started_at = time.monotonic()

    @property
    def failed(self) -> str | None:
        """Why the session ended on the server's side (a bug), if it did."""
        return self.work.failed

    # ---- life ------------------------------------------------------------------------------------
    def start(self) -> None:
        """Queues ``session_started`` (the client's first message) and starts the session's tasks."""
        h, w = self.live.avatar.frame(0).shape[:2]
        self._queue(P.encode(P.event_message(
            "session_started", session=self.id, fps=self.fps, width=w, height=h, sample_rate=self.sample_rate,
            avatar=self.options.avatar, video=self.options.video, audio_out=self.options.audio_out,
            latency_budget_ms=round(self.budget_s * 1000), lookahead=self.lookahead,
            max_buffer_s=self.playout.max_buffer / self.sample_rate)))
        self.live.start()
        for task in self.live.tasks:
            self.work.watch(task)
        self.work.spawn(self._pace(), "pace")
        self.work.spawn(self._frames(), "frames")
        self.work.spawn(self._sender(), "send")

    async def close(self) -> None:
        """Stops every task and frees the session's buffers and model state; idempotent."""
        if self.closed:
            return
        self.closed = True
        await self.work.cancel(self.teardown_s)
        await self.live.close()
        while not self.outbox.empty():
            self.outbox.get_nowait()
        log.info("session %s closed after %.1f s (%s)", self.id, time.monotonic() - self.started_at,
                 dict(self.live.counts))

    # ---- client -> engine --------------------------------------------------------------------------
    def receive_audio(self, pcm16: bytes) -> bool:
        """A chunk of the client's speech; False when the buffer is full (the chunk is dropped)."""
        return self.playout.receive(np.frombuffer(pcm16, "<i2"))

    def end_of_utterance(self) -> None:
        self.playout.end_utterance()

    def interrupt(self) -> None:
        """Drops all speech not yet played, at once; the unfinished utterances are reported."""
        self.live.interrupt()
        self._resample = EncoderResampler(self.sample_rate)  # the old one's filter still holds the dropped speech's tail
        for ev in self.playout.interrupt():
            self._queue(self._playback_message(ev, None))
        self._queue(P.encode(P.event_message("interrupted")))

    # ---- the three loops -----------------------------------------------------------------------------
    async def _pace(self) -> None:
        """One 20 ms packet every 20 ms, as a microphone: speech when buffered, else silence. After
        a stall of the loop the packets skipped are not handed over (the speech waits in the buffer)."""
        schedule = PacketSchedule(time.monotonic())
        while True:
            await asyncio.sleep(max(0.0, schedule.next_time() - time.monotonic()))
            for k in schedule.due(time.monotonic()):
                # arrival = when the packet's last sample is due on the playout clock, not when the
                # loop got to it: the session's time grid is then anchored on an exact clock (loop
                # jitter at the start would otherwise shift every later frame's latency)
                self._push(schedule.arrival(k))

    def _push(self, arrival: float) -> None:
        # until the first packets have fixed the session's time grid no slot can show speech: the
        # client's first words wait for it (200 ms after the start) rather than being lost
        packet = self.playout.next_packet(hold=not self.live.grid.anchored)
        ring = self.live.ring16
        ring.write(self._resample(packet.samples))
        self.live.on_packet(ring.end, arrival)
        if packet.utterance_ended:
            self.live.end_of_utterance()

    async def _frames(self) -> None:
        """Each slot when it is due: its frame event, image and audio, then the playback events."""
        period = 1.0 / self.fps
        loop = asyncio.get_running_loop()
        await self.live.prime()  # the first frame closed-mouthed, not the avatar's own (milliseconds)
        slot: int | None = None
        first: int | None = None
        while True:
            slot, skipped = await self.clock.next_due(slot, period, self.live.video_offset_s)  # a stall: rejoin
            self.skipped += skipped
            if first is None:
                first = slot - skipped  # index 0: the first slot this session was due
            frame = self.live.slot(slot)
            self.live.on_video_sent(slot, self.clock.now())
            index = slot - first
            span = self._span(slot)
            events = self.playout.on_slot(*span) if span else []
            for ev in events:
                if isinstance(ev, PlaybackStarted):
                    self._queue(self._playback_message(ev, index))
            self._queue(P.encode(self.messages.event(index, frame, self.playout.buffered_ms())))
            image = await loop.run_in_executor(None, self.messages.image, index, frame.image)
            if image is not None:
                self._queue(image)
            audio = self.messages.audio(index, self.playout.slot_audio(*span) if span else
                                        np.zeros(round(self.sample_rate * period), np.int16))
            if audio is not None:
                self._queue(audio)
            for ev in events:
                if isinstance(ev, PlaybackFinished):
                    self._queue(self._playback_message(ev, index))
            self.output_rate.frame_sent()

    def _span(self, slot: int) -> tuple[int, int] | None:
        """Samples of the session's timeline that play while ``slot`` shows."""
        t0, t1 = self.live.slot_input_time(slot), self.live.slot_input_time(slot + 1)
        if t0 is None or t1 is None:
            return None
        return round(t0 * self.sample_rate), round(t1 * self.sample_rate)

    async def _sender(self) -> None:
        while True:
            await self._send(await self.outbox.get())

    def _queue(self, message: str | bytes) -> None:
        """Queues a message for the client; a full queue means the client stopped reading: the
        session ends (``slow``), its queue stays bounded."""
        if self.slow:
            return
        try:
            self.outbox.put_nowait(message)
        except asyncio.QueueFull:
            self.slow = True
            self.gone.set()

    def _playback_message(self, ev: Playback, index: int | None) -> str:
        if isinstance(ev, PlaybackStarted):
            return P.encode(P.event_message("playback_started", utterance=ev.utterance,
                                            pts=self.messages.pts(index or 0)))
        return P.encode(P.event_message("playback_finished", utterance=ev.utterance,
                                        playback_position=round(ev.playback_position, 4),
                                        interrupted=ev.interrupted))

    # ---- figures ---------------------------------------------------------------------------------------
    def output_fps(self) -> float:
        return self.output_rate.now()
