"""A WebRTC session's incoming audio: each Opus packet decoded on the event loop as it arrives
(not after aiortc's jitter buffer and decoder thread), then into the session's rings
(``AudioInput``) and ``LiveSession.on_packet``.

Why not aiortc's path: aiortc's ``RTCRtpReceiver`` puts audio through ``JitterBuffer(capacity=16,
prefetch=4)``: a packet is released only when the fourth packet after it has arrived, i.e. 80 ms
after it came in, on every packet, whatever the network does. The decoded frames then cross a
thread (queue -> decoder thread -> ``run_coroutine_threadsafe`` -> the loop) whose GIL hand-offs
add ~5-10 ms of jitter at p95 with four sessions on two cores. A jitter buffer serves playback;
this engine places every packet on its own timeline by its RTP timestamp (``AudioInput``: gaps
become silence) and holds audio for exactly its latency budget, so neither the prefetch nor the
thread does anything for it.

``install_direct_audio_receive`` swaps two private parts of one audio receiver (call it from the
``track`` event, before the connection starts the receiver):

- the jitter buffer for an in-order pass-through: an Opus packet is a whole frame, released at
  once; a packet older than one already released (reordered, duplicated) is dropped, since its
  place in the timeline has passed;
- the decoder queue for one that decodes on ``put`` and hands the frames straight to the track's
  queue. aiortc's decoder thread still starts, and waits on it until the receiver stops.

Where aiortc lacks those attributes (another version), the receiver is left as it is and this says
so once in the log.
"""

from __future__ import annotations

import logging
import queue
import time
from typing import Any, Protocol

import av
from aiortc.codecs import get_decoder
from aiortc.jitterbuffer import JitterFrame
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from realtime.server.ratelimit import TokenBucket
from realtime.session.timeline import AUDIO_OUT_RATE, AUDIO_OUT_SAMPLES, ENCODER_RATE, AudioRing

log = logging.getLogger(__name__)

_JITTER_ATTR = "_RTCRtpReceiver__jitter_buffer"
_DECODER_Q_ATTR = "_RTCRtpReceiver__decoder_queue"
_THREAD_ATTR = "_RTCRtpReceiver__decoder_thread"
_warned = False

MAX_PACKETS_PER_S = 200.0  # Opus at 10 ms frames is 100 packets/s; beyond twice that is a flood
BURST_PACKETS = 100.0  # packets a network hiccup may deliver at once (2 s of 20 ms packets)


class PassThroughJitterBuffer:
    """aiortc ``JitterBuffer`` interface for one-packet frames (audio): every packet newer than the
    last released one is a frame, released now; older ones are dropped (``dropped``). aiortc's
    receiver only calls ``add``. Packets beyond ``MAX_PACKETS_PER_S`` (a token bucket of
    ``BURST_PACKETS``) are dropped before they cost a decode (``flooded``): each one decoded takes
    ~0.25 ms of the event loop every session shares."""

    def __init__(self, clock=time.monotonic) -> None:
        self._last: int | None = None
        self.dropped = 0
        self.flooded = 0
        self._bucket = TokenBucket(MAX_PACKETS_PER_S, BURST_PACKETS, clock)

    def add(self, packet) -> tuple[bool, Any]:
        if not self._bucket.take():
            self.flooded += 1
            if self.flooded in (1, 1000) or self.flooded % 100000 == 0:
                log.warning("incoming audio above %.0f packets/s: %d packets dropped", MAX_PACKETS_PER_S, self.flooded)
            return False, None
        seq = packet.sequence_number
        if self._last is not None and not 0 < (seq - self._last) % 65536 < 32768:
            self.dropped += 1  # reordered or duplicated: its audio's place has gone by
            return False, None
        self._last = seq
        return False, JitterFrame(data=packet._data, timestamp=packet.timestamp)


class InlineDecodeQueue:
    """Stands in for the receiver's decoder queue: ``put((codec, frame))`` decodes on the calling
    (event-loop) thread and puts the frames on the track's asyncio queue; ``put(None)`` (receiver
    stopping) releases aiortc's decoder thread, which is blocked in ``get``."""

    def __init__(self, track_queue) -> None:
        self._out = track_queue
        self._stop: queue.Queue = queue.Queue()
        self._decoder = None
        self._codec = None
        self.decoded = 0
        self.errors = 0

    def put(self, item) -> None:
        if item is None:
            self._stop.put(None)
            return
        codec, encoded = item
        if self._decoder is None or codec.name != self._codec:
            self._decoder, self._codec = get_decoder(codec), codec.name
        try:
            frames = self._decoder.decode(encoded)
        except av.FFmpegError as e:  # a corrupt packet: that 20 ms becomes a gap (silence)
            self.errors += 1
            log.debug("audio packet failed to decode: %s", e)
            return
        for f in frames:
            self._out.put_nowait(f)
            self.decoded += 1

    def get(self, *args, **kwargs):
        return self._stop.get(*args, **kwargs)


def install_direct_audio_receive(receiver) -> bool:
    """Gives an audio ``RTCRtpReceiver`` the pass-through buffer and inline decoding (see the
    module doc). Returns False, changing nothing, if the receiver is not audio, has started
    already, or this aiortc version lacks the private attributes."""
    global _warned
    track = getattr(receiver, "track", None)
    if track is None or track.kind != "audio":
        return False
    if not all(hasattr(receiver, a) for a in (_JITTER_ATTR, _DECODER_Q_ATTR, _THREAD_ATTR)) \
            or not hasattr(track, "_queue"):
        if not _warned:
            log.warning("this aiortc has no %s/%s: incoming audio keeps aiortc's jitter buffer (+80 ms)",
                        _JITTER_ATTR, _DECODER_Q_ATTR)
            _warned = True
        return False
    if getattr(receiver, _THREAD_ATTR) is not None:  # its decoder thread already reads the old queue
        return False
    setattr(receiver, _JITTER_ATTR, PassThroughJitterBuffer())
    setattr(receiver, _DECODER_Q_ATTR, InlineDecodeQueue(track._queue))
    return True


def receiver_of(pc, track):
    """The ``RTCRtpReceiver`` of a remote ``track`` of ``pc`` (None if not found)."""
    for t in pc.getTransceivers():
        if t.receiver is not None and t.receiver.track is track:
            return t.receiver
    return None


class SpeechSink(Protocol):
    """Where the incoming speech goes (``session.LiveSession``)."""

    ring16: AudioRing
    ring48: AudioRing

    def on_packet(self, end16: int, arrival: float) -> None: ...

    def push_gap(self, samples48: int) -> None: ...


class AudioInput:
    """Drains a remote audio track in its own task into the session (16 kHz float for the encoder,
    48 kHz int16 for the delayed output). Gaps in the sender's timestamps become silence, so ring
    positions stay on the sender's clock."""

    def __init__(self, track: MediaStreamTrack, live: SpeechSink) -> None:
        self.track, self.live = track, live
        self.packets = 0
        self._next_pts: int | None = None  # expected pts (in 1/48000) of the next frame

    async def run(self) -> None:
        # The decoded Opus is stereo with both channels equal (a mono microphone). FFmpeg's float
        # stereo -> mono downmix sums them at -3 dB each, 3 dB louder than the speech itself; the
        # encoder gets the mean of the channels (layout kept, None), so it sees the level an offline
        # file of the same speech gives. (Its int16 downmix is normalised: the output keeps the level.)
        r16 = av.AudioResampler(format="flt", layout=None, rate=ENCODER_RATE)
        r48 = av.AudioResampler(format="s16", layout="mono", rate=AUDIO_OUT_RATE)
        ring16, ring48 = self.live.ring16, self.live.ring48
        while True:
            try:
                frame = await self.track.recv()
            except MediaStreamError:
                return
            arrival = time.monotonic()
            self.packets += 1
            self._fill_gap(frame)
            for out in r16.resample(frame):
                ring16.write(out.to_ndarray().reshape(-1, len(out.layout.channels)).mean(axis=1))
            for out in r48.resample(frame):
                ring48.write(out.to_ndarray().reshape(-1))
            self.live.on_packet(ring16.end, arrival)

    def _fill_gap(self, frame: av.AudioFrame) -> None:
        if frame.pts is None or frame.time_base is None:
            return
        pts48 = int(frame.pts * frame.time_base * AUDIO_OUT_RATE)
        if self._next_pts is not None:
            gap = pts48 - self._next_pts
            if AUDIO_OUT_SAMPLES // 2 < gap < AUDIO_OUT_RATE * 10:  # lost packets / DTX: keep the timeline
                self.live.push_gap(gap)
        self._next_pts = pts48 + frame.samples * AUDIO_OUT_RATE // frame.sample_rate
