"""The session's time grid: where input time 0 arrived, which input time each output slot shows,
and when each slot departs.

The first packets anchor input time 0; the output clock starts at ``T0``. Output slot ``n``
departs at ``T0 + offset + n / fps`` and shows input time ``n / fps + phi``, chosen so that a frame
leaves ``budget - margin`` after the packet holding its content arrived. Input frames ``i`` sit on
the grid ``e0 + i / fps`` and slot ``n = i + K``. The outgoing audio plays input time
``t - T0 - offset + phi`` at wall time ``t``: exactly the video's delay, from the same clock.
"""

from __future__ import annotations

import bisect
import enum
import math
import time
from collections.abc import Callable

import numpy as np

from realtime.metrics import ServerMetrics
from realtime.session.audio import AUDIO_PTIME as PACKET_S
from realtime.session.audio import ENCODER_RATE, PACKET_SAMPLES, MediaClock
from realtime.session.config import SessionConfig
from realtime.session.frames import HANGOVER
from realtime.session.shared import LoadWatch, SlotPhases
from realtime.visemes.windows import RECEPTIVE_FIELD_MS

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
        self.content_phase = (-(config.lookahead_s + RECEPTIVE_FIELD_S) - 0.001) % PACKET_S
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
        pkt = PACKET_S
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
            return arrival + ((sample - end) // PACKET_SAMPLES + 1) * PACKET_S
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

