"""Speech of an avatar-SDK session, from the client's chunks to the engine's 20 ms packets, and
which utterance each output frame plays. Sans I/O: positions are sample counts, nothing sleeps.

A client (an agent's TTS) sends speech faster than real time. ``SpeechPlayout`` keeps it, bounded,
and hands the engine one packet per 20 ms as a microphone would: buffered speech, or silence when
none is buffered. Speech that arrives while nothing is buffered joins the packet being recorded
now, so it starts playing at once. Every position is a sample of the client's rate on one timeline:
packet ``k`` covers samples ``[k * P, (k + 1) * P)``, the same samples that come back to the client
with the frames that show them.

Utterances (numbered from 1) start with the first audio after the session's start,
``end_utterance`` or ``interrupt``; ``on_slot`` turns each sent frame's audio span into
``PlaybackStarted`` / ``PlaybackFinished``.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

import numpy as np

from realtime.session.timeline import AUDIO_PTIME, AudioRing


@dataclass(frozen=True)
class PlaybackStarted:
    utterance: int


@dataclass(frozen=True)
class PlaybackFinished:
    utterance: int
    playback_position: float  # seconds of the utterance that played
    interrupted: bool


Playback = PlaybackStarted | PlaybackFinished


@dataclass
class _Utterance:
    number: int
    start: int  # first sample
    end: int | None = None  # one past the last sample, once the client said so
    started: bool = False


@dataclass(frozen=True)
class Packet:
    samples: np.ndarray  # int16, exactly one packet
    utterance_ended: bool  # an utterance's last sample is in this packet (the engine renders its tail now)


class SpeechPlayout:
    def __init__(self, rate: int, max_buffer_s: float, played_s: float = 4.0) -> None:
        self.rate = rate
        self.packet = round(rate * AUDIO_PTIME)  # every accepted rate is a whole number of samples per 20 ms
        self.max_buffer = round(max_buffer_s * rate)
        self.read_pos = 0  # samples handed to the engine (whole packets)
        self.write_pos = 0  # one past the newest buffered sample
        self._chunks: collections.deque[np.ndarray] = collections.deque()
        self._head = 0  # samples of the first chunk already read
        # what was handed to the engine, silence included, for the frames that play it
        self.played = AudioRing(rate, played_s, np.int16)
        self._utterances: list[_Utterance] = []  # not yet finished, oldest first
        self._numbers = 0
        self._sent_upto = 0  # end of the audio of the last frame sent

    # ---- client -> buffer ------------------------------------------------------------------------
    @property
    def buffered(self) -> int:
        """Samples received and not yet handed to the engine."""
        return max(0, self.write_pos - self.read_pos)

    def receive(self, samples: np.ndarray) -> bool:
        """Appends speech (int16); False (and nothing kept) if it would overflow the buffer."""
        n = len(samples)
        if n == 0:
            return True
        if self.write_pos < self.read_pos:  # nothing buffered: joins the packet being recorded now
            self.write_pos = self.read_pos
        if self.write_pos + n - self.read_pos > self.max_buffer:
            return False
        if not self._utterances or self._utterances[-1].end is not None:
            self._numbers += 1
            self._utterances.append(_Utterance(self._numbers, self.write_pos))
        samples = np.asarray(samples, np.int16)
        if self._chunks and len(self._chunks[-1]) < self.packet:
            # a client may send one sample per message: an array object each would cost ~80x the
            # samples' own memory over a full buffer. Small chunks are joined, so every chunk but
            # the newest holds at least a packet and the buffer's memory stays about its samples
            self._chunks[-1] = np.concatenate([self._chunks[-1], samples])
        else:
            self._chunks.append(samples)
        self.write_pos += n
        return True

    def end_utterance(self) -> bool:
        """Marks the end of the open utterance; False if none was open (nothing to end)."""
        if not self._utterances or self._utterances[-1].end is not None:
            return False
        self._utterances[-1].end = self.write_pos
        return True

    def interrupt(self) -> list[PlaybackFinished]:
        """Drops all buffered speech; every unfinished utterance ends, interrupted, at what played."""
        self._chunks.clear()
        self._head = 0
        self.write_pos = self.read_pos
        self.played.clear()  # handed to the engine but not yet played: never plays
        out = []
        for u in self._utterances:
            played = min(self._sent_upto, u.end if u.end is not None else self._sent_upto) - u.start
            out.append(PlaybackFinished(u.number, max(0, played) / self.rate, True))
        self._utterances.clear()
        return out

    # ---- buffer -> engine ------------------------------------------------------------------------
    def next_packet(self, hold: bool = False) -> Packet:
        """The next 20 ms for the engine: buffered speech, padded with silence. ``hold``: silence,
        and the buffered speech moves one packet later (the engine cannot show it yet)."""
        out = np.zeros(self.packet, np.int16)
        if hold:
            if self.write_pos > self.read_pos:
                self.write_pos += self.packet
                for u in self._utterances:  # all of them lie in the buffer: none has played
                    u.start += self.packet
                    u.end = None if u.end is None else u.end + self.packet
            self.read_pos += self.packet
            self.played.write(out)
            return Packet(out, False)
        filled = 0
        while filled < self.packet and self._chunks:
            chunk = self._chunks[0]
            take = min(self.packet - filled, len(chunk) - self._head)
            out[filled:filled + take] = chunk[self._head:self._head + take]
            filled += take
            self._head += take
            if self._head == len(chunk):
                self._chunks.popleft()
                self._head = 0
        lo = self.read_pos
        self.read_pos += self.packet
        self.played.write(out)
        ended = any(u.end is not None and lo < u.end <= self.read_pos for u in self._utterances)
        return Packet(out, ended)

    # ---- engine -> client --------------------------------------------------------------------------
    def slot_audio(self, start: int, end: int) -> np.ndarray:
        """The samples ``[start, end)`` of the timeline (silence where none played)."""
        return self.played.read(start, end - start)

    def on_slot(self, start: int, end: int) -> list[Playback]:
        """A frame playing samples ``[start, end)`` was sent: the playback events it brings."""
        self._sent_upto = max(self._sent_upto, end)
        out: list[Playback] = []
        for u in list(self._utterances):
            if not u.started and end > u.start:
                u.started = True
                out.append(PlaybackStarted(u.number))
            if u.started and u.end is not None and end >= u.end:
                out.append(PlaybackFinished(u.number, (u.end - u.start) / self.rate, False))
                self._utterances.remove(u)
        return out

    def buffered_ms(self) -> int:
        """Speech received and not yet played to the client (in frames sent), in ms."""
        return max(0, self.write_pos - self._sent_upto) * 1000 // self.rate
