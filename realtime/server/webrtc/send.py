"""A WebRTC session's outgoing media: the video and audio tracks on one clock, and the cheaper
H.264 encoder installed on the video sender.

Facts this relies on (see docs/server.md): RTCP sender reports anchor each track at its first
frame, so both outgoing tracks take their timestamps from ONE ``MediaClock`` and pace against
``t0 + pts / rate`` (absolute schedule, errors never accumulate).

H.264: aiortc's ``H264Encoder`` opens libx264 with the default preset (medium) and libx264's own
frame threads: measured ~13-15 ms of CPU per 512x512 frame on a 2-core EPYC, more than the
renderer and the audio encoder together, per session. ``preset`` ultrafast (with tune
zerolatency, Baseline profile as before) costs ~0.3 ms, and one thread per encoder keeps sessions
from fighting over the cores (aiortc already runs each session's encode in the loop's executor, in
parallel). The encoder is installed only when H.264 was negotiated; any other codec keeps
aiortc's encoder.
"""

from __future__ import annotations

import fractions
import logging
from collections.abc import Callable

import av
import cv2
import numpy as np
from aiortc.codecs.h264 import MAX_FRAME_RATE, H264Encoder
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from realtime.session.timeline import AUDIO_OUT_RATE, AUDIO_OUT_SAMPLES, AUDIO_PTIME, MediaClock

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


def make_h264_encoder(preset: str, threads: int = 1):
    """An aiortc ``H264Encoder`` whose libx264 context uses ``preset`` and ``threads``."""

    class _TunedH264Encoder(H264Encoder):
        def _encode_frame(self, frame, force_keyframe):
            # Open the context ourselves with the tuned options; the base class then reuses it
            # (it only rebuilds on a size or a > 10 % bitrate change, which we mirror here).
            c = self.codec
            if c is not None and (frame.width != c.width or frame.height != c.height
                                  or abs(self.target_bitrate - c.bit_rate) / c.bit_rate > 0.1):
                c = None
            if c is None:
                self._open(frame)
            return super()._encode_frame(frame, force_keyframe)

        def _open(self, frame) -> None:
            self.buffer_data, self.buffer_pts = b"", None
            c = av.CodecContext.create("libx264", "w")
            c.width, c.height = frame.width, frame.height
            c.bit_rate = self.target_bitrate
            c.pix_fmt = "yuv420p"
            c.framerate = fractions.Fraction(MAX_FRAME_RATE, 1)
            c.time_base = fractions.Fraction(1, MAX_FRAME_RATE)
            c.options = {"level": "31", "tune": "zerolatency", "preset": preset}
            c.profile = "Baseline"
            c.thread_count = threads
            self.codec = c

    return _TunedH264Encoder()


def install_h264_encoder(pc, sender, preset: str) -> bool:
    """Gives ``sender`` a tuned H.264 encoder if its negotiated codec is H.264 (call right after
    ``setLocalDescription``, before its first frame). Relies on aiortc's private sender attribute;
    when that is missing (another aiortc version) aiortc's own encoder is kept and this says so."""
    if negotiated_mime(pc, sender) != "video/h264":
        return False
    attr = "_RTCRtpSender__encoder"
    if not hasattr(sender, attr):
        log.warning("aiortc sender has no %s: keeping aiortc's default H.264 encoder", attr)
        return False
    if getattr(sender, attr) is None:
        setattr(sender, attr, make_h264_encoder(preset))
    return True
