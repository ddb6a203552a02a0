"""The session's time and buffers: audio rings and the one media clock (speech kept at 16 kHz float
for the encoder and at 48 kHz int16 for the speech that goes back out; the 20 ms input schedule
and resampler for transports that make their own packets), ``SessionFrames`` (feature blocks,
frames rendered ahead of their slot, rest frames; bounded, event loop only), and ``TimeGrid``.

``TimeGrid``: the first packets anchor input time 0; the output clock starts at ``T0``. Output slot
``n`` departs at ``T0 + offset + n / fps`` and shows input time ``n / fps + phi``, chosen so that a
frame leaves ``budget - margin`` after the packet holding its content arrived. Input frames ``i``
sit on the grid ``e0 + i / fps`` and slot ``n = i + K``. The outgoing audio plays input time
``t - T0 - offset + phi`` at wall time ``t``: exactly the video's delay, from the same clock."""

from __future__ import annotations

import asyncio
import bisect
import enum
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import av
import numpy as np

from realtime.audio.io import SAMPLE_RATE as ENCODER_RATE  # 16 kHz: what the encoder reads
from realtime.metrics import ServerMetrics
from realtime.render.base import FrameEvent
from realtime.session.config import SessionConfig
from realtime.session.shared import LoadWatch, SlotPhases
from realtime.visemes.windows import RECEPTIVE_FIELD_MS

# ---- audio: the rings, the media clock, input packets ----
AUDIO_OUT_RATE = 48000  # the speech that goes back out (Opus' native rate)
AUDIO_PTIME = 0.020  # 20 ms output audio frames, as WebRTC packetises Opus
AUDIO_OUT_SAMPLES = int(AUDIO_OUT_RATE * AUDIO_PTIME)  # 960
PACKET_SAMPLES = int(ENCODER_RATE * AUDIO_PTIME)  # 320: one 20 ms packet at the encoder's rate
MAX_CATCH_UP_PACKETS = 25  # after a stall a paced input hands over at most 0.5 s at once


class AudioRing:
    """Fixed-capacity audio buffer addressed by absolute sample index; old audio is overwritten."""

    def __init__(self, rate: int, seconds: float, dtype: type = np.float32) -> None:
        self.rate = rate
        self.capacity = int(rate * seconds)
        self.buf = np.zeros(self.capacity, dtype=dtype)
        self.end = 0  # absolute index one past the newest sample
        self.valid_from = 0  # absolute index of the oldest sample still meaningful (after clear())

    def write(self, samples: np.ndarray) -> None:
        samples = np.asarray(samples, dtype=self.buf.dtype).reshape(-1)
        total = len(samples)
        samples = samples[-self.capacity :]  # more than the ring holds: only the newest fit
        n = len(samples)
        i = (self.end + total - n) % self.capacity
        first = min(n, self.capacity - i)
        self.buf[i : i + first] = samples[:first]
        self.buf[: n - first] = samples[first:]
        self.end += total

    def write_silence(self, n: int) -> None:
        n = int(n)
        if n >= self.capacity:
            self.buf[:] = 0
            self.end += n
            return
        self.write(np.zeros(n, dtype=self.buf.dtype))

    def read(self, start: int, n: int) -> np.ndarray:
        """Samples [start, start+n); zeros where audio is missing, overwritten, cleared or in the future."""
        if n < 0:
            raise ValueError(f"AudioRing.read: negative length {n} (start {start}, end {self.end})")
        out = np.zeros(n, dtype=self.buf.dtype)
        lo = max(start, self.valid_from, self.end - self.capacity)
        hi = min(start + n, self.end)
        if hi > lo:  # at most two slices of the ring (no index arrays: this runs on the event loop)
            i, n_valid = lo % self.capacity, hi - lo
            first = min(n_valid, self.capacity - i)
            out[lo - start : lo - start + first] = self.buf[i : i + first]
            out[lo - start + first : hi - start] = self.buf[: n_valid - first]
        return out

    def clear(self) -> None:
        """Drops everything buffered (interrupt); later writes continue the same timeline."""
        self.valid_from = self.end


class MediaClock:
    """The one clock both outgoing tracks are paced on; started by whichever track asks first."""

    def __init__(self, now: Callable[[], float] = time.monotonic) -> None:
        self.now = now
        self.t0: float | None = None
        self.started = asyncio.Event()

    def start(self) -> float:
        if self.t0 is None:
            self.t0 = self.now()
            self.started.set()
        return self.t0

    def first_index(self, period: float, offset: float = 0.0) -> int:
        """Index of the first period boundary not yet passed: a track starting late joins on schedule."""
        t0 = self.start()
        return max(0, math.ceil((self.now() - t0 - offset) / period - 1e-9))

    async def wait_for(self, index: int, period: float, offset: float = 0.0) -> float:
        """Sleeps until ``t0 + offset + index * period``; returns how late we are (seconds)."""
        target = self.start() + offset + index * period
        delay = target - self.now()
        if delay > 0:
            await asyncio.sleep(delay)
        return self.now() - target

    async def next_due(self, prev: int | None, period: float, offset: float = 0.0,
                       rejoin_after: int = 2) -> tuple[int, int]:
        """For an output paced on this clock: waits for the index after ``prev`` (the first not yet
        passed when ``prev`` is None) and returns ``(index, skipped)``. More than ``rejoin_after``
        periods late (the sender stalled) it skips to the schedule instead of bursting."""
        index = self.first_index(period, offset) if prev is None else prev + 1
        late = await self.wait_for(index, period, offset)
        skipped = int(late / period) if late > rejoin_after * period else 0
        return index + skipped, skipped


class PacketSchedule:
    """Input packets of 20 ms on an absolute schedule: packet ``k`` is due, and its last sample
    arrives, at ``start + (k + 1) * AUDIO_PTIME``."""

    def __init__(self, start: float) -> None:
        self.start = start
        self.next = 0  # the first packet not yet handed over
        self.skipped = 0

    def arrival(self, k: int) -> float:
        return self.start + (k + 1) * AUDIO_PTIME

    def next_time(self) -> float:
        return self.arrival(self.next)

    def due(self, now: float) -> range:
        """Packets due at ``now``, in order; after a stall only the last ``MAX_CATCH_UP_PACKETS``
        (the ones before are skipped: the caller may keep the timeline with silence in their place)."""
        due = int((now - self.start) / AUDIO_PTIME + 1e-9)
        if due - self.next > MAX_CATCH_UP_PACKETS:
            self.skipped += due - MAX_CATCH_UP_PACKETS - self.next
            self.next = due - MAX_CATCH_UP_PACKETS
        out = range(self.next, max(self.next, due))
        self.next = out.stop
        return out


class EncoderResampler:
    """Mono blocks at ``rate`` (int16, or float in [-1, 1]) -> 16 kHz float32 for the encoder, in
    order; libswresample keeps its filter state between blocks (no edges at block boundaries)."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._resample = av.AudioResampler(format="flt", layout="mono", rate=ENCODER_RATE)

    def __call__(self, block: np.ndarray) -> np.ndarray:
        x = np.asarray(block)
        fmt = "s16" if x.dtype == np.int16 else "flt"
        x = np.ascontiguousarray(x if fmt == "s16" else x.astype(np.float32, copy=False)).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(x, format=fmt, layout="mono")
        frame.sample_rate = self.rate
        parts = [f.to_ndarray().reshape(-1) for f in self._resample.resample(frame)]
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)


# ---- frames between the encoder and the output ----
HANGOVER = 2  # silent frames still rendered after speech so the mouth closes smoothly
NEVER = -(10**9)  # an input frame or slot index before any


@dataclass
class Block:
    block: np.ndarray  # the frame's audio features, (50, 384) float32
    silent: bool  # nothing to render: a rest frame shows (silence past the hangover)
    arrival: float  # arrival time of the packet holding the sample this frame shows


@dataclass
class ReadyFrame:
    """A frame rendered from speech, waiting for its slot."""

    image: np.ndarray
    event: FrameEvent | None
    arrival: float  # of the packet it shows (its engine latency is measured from here)


class SessionFrames:
    def __init__(self, max_frames_ahead: int, metrics: ServerMetrics) -> None:
        self.max_frames_ahead, self.metrics = max_frames_ahead, metrics
        self.gen = 0  # bumped on interrupt and grid moves; results of older generations are dropped
        self.blocks: dict[int, Block] = {}  # input frame -> its features
        self.ready: dict[int, ReadyFrame] = {}  # slot -> frame rendered from speech
        self.rest: dict[int, np.ndarray] = {}  # slot -> rest frame
        self.thinned: set[int] = set()  # input frames skipped on purpose at the top level (repeated)
        self.rendered_upto = NEVER  # highest input frame handed to the renderer
        self.sent_slot = NEVER  # newest slot handed to the output: never rendered again
        self.last_speech_i = NEVER  # newest input frame with speech
        self.last_speech_t = -1e9  # when it was added (monotonic)

    def add_block(self, i: int, block: np.ndarray, silent: bool, arrival: float) -> None:
        if not silent:
            self.last_speech_i = i
            self.last_speech_t = time.monotonic()
        # a short hangover keeps rendering just after speech so the renderer can close the mouth
        skip = silent and i - self.last_speech_i > HANGOVER
        self.blocks[i] = Block(block, skip, arrival)
        if len(self.blocks) > 4 * self.max_frames_ahead:  # bounded even if nothing consumes them
            for k in sorted(self.blocks)[: len(self.blocks) - 4 * self.max_frames_ahead]:
                del self.blocks[k]

    def make_ready(self, slot: int, frame: ReadyFrame, slack: float) -> None:
        """A rendered speech frame waits for its slot (``slack``: seconds until it departs)."""
        self.ready[slot] = frame
        self.metrics.frame_slack.observe(slack)

    def clear(self) -> int:
        """Drops every pending block and frame (interrupt); returns how many speech frames that was."""
        dropped = len(self.ready) + sum(1 for b in self.blocks.values() if not b.silent)
        self.gen += 1
        self.ready.clear()
        self.blocks.clear()
        self.thinned.clear()
        self.last_speech_i = NEVER
        return dropped

    def forget_before(self, slot: int, frame: int | None) -> None:
        """Slot ``slot`` is leaving: what was for earlier slots (input frames before ``frame - 2``)
        can never be shown."""
        self.sent_slot = max(self.sent_slot, slot)
        for s in [s for s in self.ready if s < slot]:
            self.metrics.frames_dropped.inc()
            del self.ready[s]
        for s in [s for s in self.rest if s < slot]:
            del self.rest[s]
        for k in [k for k in self.blocks if frame is None or k < frame - 2]:
            del self.blocks[k]
        self.thinned = {k for k in self.thinned if frame is not None and k >= frame}

    def speech_pending(self) -> bool:
        return bool(self.ready)


# ---- the time grid ----
ANCHOR_FIRST_PACKETS = 10  # 200 ms of audio before the timeline is fixed (it is re-fixed in silence)
ANCHOR_PACKETS = 250  # 5 s of packets for the arrival-time anchor
ANCHOR_PERCENTILE = 5
RECEPTIVE_FIELD_S = RECEPTIVE_FIELD_MS / 1000.0  # log-mel window + encoder convolutions past the last step
ARRIVAL_MARGIN_S = 0.008  # packets arriving this much earlier than the anchor still meet the budget
REANCHOR_S = 0.008  # re-anchoring is for clock drift (ppm): only a clear, lasting shift
REANCHOR_SILENCE_S = 3.0  # input silent this long (and nothing pending): a shift is unnoticeable
RETARGET_QUIET_S = 0.1  # a change of latency target waits until the last loud packet's frame left + this

class Anchor(enum.Enum):
    """What a packet did to the grid."""

    UNCHANGED = 0
    FIRST = 1  # the grid now exists
    RETARGET = 2  # moved to the other latency target (the load changed): in-flight work is stale
    REANCHOR = 3  # moved to follow the sender's clock (drift)

class TimeGrid:
    def __init__(self, config: SessionConfig, clock: MediaClock, metrics: ServerMetrics, key: int,
                 epoch: float | None = None, phases: SlotPhases | None = None, load: LoadWatch | None = None) -> None:
        self.config, self.clock, self.metrics, self.key = config, clock, metrics, key
        self.period = config.period
        # Avatar frame index = time since the server's epoch in frames, the same for every session at
        # any moment: idle motion is continuous, and rest frames are shared between sessions.
        self.epoch = epoch
        self.phases = phases  # shared by the sessions, or None
        # aim ``light_cut_s`` under the budget while the server is lightly loaded (``cut_s``: the
        # current cut, changed only in silence)
        self.load = load
        self.cut_s = 0.0
        self.phi: float | None = None  # input time shown by slot 0; None until anchored
        self.a0 = 0.0  # estimated arrival time of input time 0
        self.video_offset_s = 0.0  # the slot grid's shift against the clock (see _set_anchor)
        # content phase within a packet so that content + look-ahead (+ the encoder's 12.5 ms
        # receptive field) ends 1 ms before a packet boundary
        self.content_phase = (-(config.lookahead_s + RECEPTIVE_FIELD_S) - 0.001) % AUDIO_PTIME
        self.K = 0  # slot = input frame + K
        self.e0 = 0.0  # input time of input frame 0
        self.packets: list[tuple[int, float]] = []  # (end sample, arrival) of recent packets
        self.last_loud_arrival = -1e9

    @property
    def anchored(self) -> bool:
        return self.phi is not None

    def observe(self, end16: int, arrival: float, loud: bool, quiet: Callable[[float, float, float], bool]) -> Anchor:
        """A packet ending at 16 kHz sample ``end16`` arrived. ``quiet(arrival, input_s, speech_s)``:
        whether nothing is pending and the input and speech have been silent that long."""
        if loud:
            self.last_loud_arrival = arrival
        self.packets.append((end16, arrival))
        if len(self.packets) > ANCHOR_PACKETS + 50:
            del self.packets[:50]
        # When input time 0 "arrived": a packet's last sample arrives with it, so a low percentile
        # of (arrival - end) over recent packets is a jitter-robust estimate (the minimum alone
        # swings by 10+ ms on a loaded CPU).
        offs = np.fromiter((a - e / ENCODER_RATE for e, a in self.packets[-ANCHOR_PACKETS:]), float)
        a0 = float(np.percentile(offs, ANCHOR_PERCENTILE)) if len(offs) >= 20 else float(offs.min())
        cut = self._wanted_cut(arrival)
        c = self.config
        if self.phi is not None:  # how much later than the anchor expects (eats the compute window)
            self.metrics.packet_lateness.observe(max(0.0, arrival - self.a0 - end16 / ENCODER_RATE))
        if self.phi is None:
            if len(self.packets) >= ANCHOR_FIRST_PACKETS:  # a few packets first: the min needs samples
                self.cut_s = cut
                self._set_anchor(a0)
                return Anchor.FIRST
        elif cut != self.cut_s and quiet(arrival, c.budget_s + RETARGET_QUIET_S,
                                         c.budget_s - c.lookahead_s + (HANGOVER + 1) * self.period):
            # The load changed (LoadWatch): aim at the other target. In silence only, like the
            # re-anchoring below: the video holds or skips one rest frame's worth, the audio 20 ms
            # of silence. In-flight (silent) results belong to the old grid: dropped.
            self.cut_s = cut
            self._set_anchor(a0)
            return Anchor.RETARGET
        elif abs(a0 - self.a0) > REANCHOR_S and quiet(arrival, REANCHOR_SILENCE_S, REANCHOR_SILENCE_S):
            # Only in silence (nothing pending, the last speech long enough ago to have left): the
            # shift is invisible and inaudible, and keeps a long session on the sender's clock.
            self._set_anchor(a0)
            return Anchor.REANCHOR
        return Anchor.UNCHANGED

    def _wanted_cut(self, now: float) -> float:
        """How far under the budget to aim now (0 without a LoadWatch)."""
        if self.load is None or not self.load.light(now, self.config.light_sessions):
            return 0.0
        return self.config.light_cut_s

    def _set_anchor(self, a0: float) -> None:
        """Fixes the timeline. Latency is measured from the arrival of the packet holding a frame's
        content, so content sits just after a packet boundary (phase ``content_phase``), placed so
        that the frame's whole look-ahead ends just before a later packet boundary: the frame can be
        computed one packet earlier than with an arbitrary phase (42 ms for encoder + renderer at
        the default budget instead of 9..42 ms). The video slot grid is shifted by ``video_offset_s``
        (< one packet) to make both hold exactly; the audio output follows the same shift. Any of the
        frame period's packet boundaries gives the same latency (slots and content move together):
        ``phases`` (SlotPhases) picks the one least used by the other sessions, adding whole packets
        to the offset (< one frame)."""
        t0 = self.clock.start()
        self.a0 = a0
        target = self.config.budget_s - ARRIVAL_MARGIN_S - self.cut_s  # packet arrival -> frame departure
        pkt = AUDIO_PTIME
        if abs(self.period / pkt - round(self.period / pkt)) < 1e-9:
            boundary = (self.packets[-1][0] % (ENCODER_RATE * pkt)) / ENCODER_RATE if self.packets else 0.0
            x = t0 - a0 - target - pkt  # phi - offset - phase
            self.video_offset_s = (boundary - x) % pkt
            n = round(self.period / pkt)
            if self.phases is not None and n > 1:
                grid = t0 + self.video_offset_s
                self.video_offset_s += pkt * self.phases.choose(self.key, [grid + m * pkt for m in range(n)],
                                                                self.period)
            self.phi = x + self.video_offset_s + self.content_phase
        else:  # frame period not a whole number of packets: no alignment
            self.video_offset_s = 0.0
            self.phi = t0 - a0 - target
        k = -math.floor(self.phi * self.config.fps)
        self.K, self.e0 = k, self.phi + k / self.config.fps

    def arrival_of(self, sample: int) -> float:
        """Arrival time of the packet holding 16 kHz input sample ``sample``; for a sample past
        the input's end (frames an end of utterance makes early, over the silence assumed after
        it), when it would arrive on the input's clock."""
        if not self.packets:
            return time.monotonic()
        i = bisect.bisect_right([p[0] for p in self.packets], sample)
        if i == len(self.packets):  # the packet that would hold it arrives with its last sample
            end, arrival = self.packets[-1]
            return arrival + ((sample - end) // PACKET_SAMPLES + 1) * AUDIO_PTIME
        return self.packets[i][1]

    def avatar_index(self, slot: int) -> int:
        if self.epoch is None or self.clock.t0 is None:
            return slot
        return slot + round((self.clock.t0 + self.video_offset_s - self.epoch) * self.config.fps)

    def slot_time(self, slot: int) -> float:
        """When output slot ``slot`` departs."""
        return (self.clock.t0 or 0.0) + self.video_offset_s + slot * self.period

    def grid_sample(self, i: int) -> int:
        """16 kHz input sample at which input frame ``i`` sits (the frame grid ``e0 + i / fps``)."""
        return round((self.e0 + i * self.period) * ENCODER_RATE)

    def frame_at(self, sample: int) -> int:
        """The first input frame at or after 16 kHz sample ``sample``."""
        return math.ceil((sample / ENCODER_RATE - self.e0) * self.config.fps)

    def release(self) -> None:
        if self.phases is not None:
            self.phases.release(self.key)
