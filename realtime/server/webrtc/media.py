"""Media plumbing of a WebRTC session: the incoming audio drain and the two outgoing tracks.

Facts this relies on (see docs/server.md): aiortc's RemoteStreamTrack queue is unbounded, so it is
drained continuously by its own task and audio is kept in fixed-size rings that overwrite instead of
growing; RTCP sender reports anchor each track at its first frame, so both outgoing tracks take
their timestamps from ONE ``MediaClock`` and pace against ``t0 + pts / rate`` (absolute schedule,
errors never accumulate).
"""

from __future__ import annotations

import fractions
import logging
import time
from collections.abc import Callable
from typing import Protocol

import av
import cv2
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from realtime.session.audio import AUDIO_OUT_RATE, AUDIO_OUT_SAMPLES, AUDIO_PTIME, ENCODER_RATE, AudioRing, MediaClock

log = logging.getLogger(__name__)

VIDEO_CLOCK_RATE = 90000  # RTP video clock
VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK_RATE)


def to_i420(rgb: np.ndarray) -> np.ndarray:
    """RGB24 (H, W, 3) -> planar YUV 4:2:0 (H*3/2, W), what H.264/VP8 encode: OpenCV does it in
    ~0.1 ms at 512x512, libswscale (the encoder's own conversion of an rgb24 frame) in ~1.6 ms."""
    h, w = rgb.shape[:2]
    if h % 2 or w % 2:  # 4:2:0 needs even sizes: drop the odd row/column
        rgb = rgb[: h - h % 2, : w - w % 2]
    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2YUV_I420)


class VideoOutputTrack(MediaStreamTrack):
    """Outgoing video at a constant ``fps``: each slot asks ``frame_for(slot)`` (never blocks).

    ``offset()`` (seconds, < one frame) shifts the slot grid against the clock; the scheduler sets it
    once when audio starts so that frame content lines up with the input's packet boundaries."""

    kind = "video"

    def __init__(
        self,
        clock: MediaClock,
        fps: int,
        frame_for: Callable[[int], np.ndarray],
        on_sent: Callable[[int, float], None] | None = None,
        offset: Callable[[], float] = lambda: 0.0,
    ) -> None:
        super().__init__()
        self.clock, self.fps, self.offset = clock, fps, offset
        self.frame_for, self.on_sent = frame_for, on_sent
        self.slot: int | None = None
        self.skipped = 0

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        period = 1.0 / self.fps
        offset = self.offset()
        self.slot, skipped = await self.clock.next_due(self.slot, period, offset)  # a stall: rejoin, never burst
        self.skipped += skipped
        img = self.frame_for(self.slot)
        frame = av.VideoFrame.from_ndarray(to_i420(img), format="yuv420p")
        frame.pts = round((self.slot * period + offset) * VIDEO_CLOCK_RATE)
        frame.time_base = VIDEO_TIME_BASE
        if self.on_sent:
            self.on_sent(self.slot, self.clock.now())
        return frame


def transceiver_of(pc, sender):
    """The transceiver of ``pc`` that ``sender`` belongs to (None for a sender not on ``pc``)."""
    return next((t for t in pc.getTransceivers() if t.sender is sender), None)


def negotiated_mime(pc, sender) -> str | None:
    """The lower-case MIME type ("video/h264", "audio/opus") ``sender`` will send, once the local
    description is set; None before that or for a sender not on ``pc``."""
    codecs = getattr(transceiver_of(pc, sender), "_codecs", None) or []
    return codecs[0].mimeType.lower() if codecs else None


class OpusPacketEncoder:
    """Mono Opus for the outgoing track, encoded where the frame is made (see AudioOutputTrack).

    aiortc's own audio path hands every 20 ms frame to the loop's executor, resamples it to stereo
    and encodes at complexity 10: ~223 us of CPU plus two thread hand-offs per packet, 50 times a
    second per session. Speech from one microphone is mono; mono Opus at complexity 5 costs
    ~126-176 us here, on the event loop, with no hand-off. A stereo Opus decoder plays mono packets
    (RFC 7587), so the negotiated ``opus/48000/2`` is unchanged."""

    def __init__(self, bitrate: int = 48000, complexity: int = 5) -> None:
        self.codec = av.CodecContext.create("libopus", "w")
        self.codec.bit_rate = bitrate
        self.codec.format = "s16"
        self.codec.layout = "mono"
        self.codec.sample_rate = AUDIO_OUT_RATE
        self.codec.time_base = fractions.Fraction(1, AUDIO_OUT_RATE)
        self.codec.options = {"application": "voip", "compression_level": str(complexity)}

    def encode(self, frame: av.AudioFrame) -> av.Packet:
        """One 20 ms frame in, its packet out (libopus returns each frame's packet at once), with
        the frame's pts and time base so the RTP timestamp stays on the shared clock."""
        packets = self.codec.encode(frame)
        if len(packets) != 1:  # not seen with libopus at 960-sample frames; a change would misalign A/V
            raise RuntimeError(f"Opus encoder returned {len(packets)} packets for one 20 ms frame")
        packet = packets[0]
        packet.pts, packet.time_base = frame.pts, frame.time_base
        return packet


class AudioOutputTrack(MediaStreamTrack):
    """Outgoing audio, 48 kHz mono 20 ms frames on the shared clock: ``samples_for(k)`` -> 960 int16.

    With an ``encoder`` set (``use_opus_packets``, once Opus is negotiated) ``recv`` returns encoded
    ``av.Packet``s, which aiortc's sender packetises as they are; without one it returns frames for
    aiortc to encode."""

    kind = "audio"

    def __init__(
        self,
        clock: MediaClock,
        samples_for: Callable[[int], np.ndarray],
        on_sent: Callable[[int, float], None] | None = None,
    ) -> None:
        super().__init__()
        self.clock = clock
        self.samples_for, self.on_sent = samples_for, on_sent
        self.index: int | None = None
        self.encoder: OpusPacketEncoder | None = None
        self._time_base = fractions.Fraction(1, AUDIO_OUT_RATE)

    def use_opus_packets(self, pc, sender) -> bool:
        """Encodes in ``recv`` if ``sender``'s negotiated codec is Opus (call after
        ``setLocalDescription``, before the first packet); other codecs keep aiortc's encoder."""
        if negotiated_mime(pc, sender) != "audio/opus":
            return False
        self.encoder = OpusPacketEncoder()
        return True

    async def recv(self) -> av.AudioFrame | av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        self.index, _ = await self.clock.next_due(self.index, AUDIO_PTIME, rejoin_after=5)
        samples = np.asarray(self.samples_for(self.index), dtype=np.int16).reshape(1, AUDIO_OUT_SAMPLES)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = AUDIO_OUT_RATE
        frame.pts = self.index * AUDIO_OUT_SAMPLES
        frame.time_base = self._time_base
        out = self.encoder.encode(frame) if self.encoder is not None else frame
        if self.on_sent:
            self.on_sent(self.index, self.clock.now())
        return out


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
