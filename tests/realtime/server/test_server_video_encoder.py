"""Outgoing video cost path: RGB -> I420 conversion and the tuned libx264 encoder."""

import fractions

import av
import cv2
import numpy as np
import pytest

from realtime.config import ConfigError
from realtime.server.config import RealtimeConfig
from realtime.server.webrtc.send import make_h264_encoder, to_i420


def _frames(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    base = cv2.GaussianBlur(rng.integers(0, 256, (128, 160, 3), dtype=np.uint8), (15, 15), 0)
    return [np.roll(base, 2 * k, axis=1) for k in range(n)]


def test_to_i420_matches_libswscale():
    rgb = _frames(1)[0]
    ours = to_i420(rgb).astype(int)
    ref = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p").to_ndarray().astype(int)
    assert ours.shape == ref.shape == (192, 160)
    assert np.abs(ours[:128] - ref[:128]).max() <= 1  # luma: same BT.601 limited range
    assert np.abs(ours[128:] - ref[128:]).mean() < 2.0  # chroma: subsampling filters differ slightly


def test_to_i420_crops_odd_sizes():
    assert to_i420(np.zeros((101, 99, 3), np.uint8)).shape == (150, 98)


def test_tuned_encoder_round_trip():
    enc = make_h264_encoder("ultrafast")
    dec = av.CodecContext.create("h264", "r")
    frames = _frames(5)
    decoded, stream = [], b""
    for k, rgb in enumerate(frames):
        vf = av.VideoFrame.from_ndarray(to_i420(rgb), format="yuv420p")
        vf.pts, vf.time_base = k, fractions.Fraction(1, 30)
        payloads = list(enc._encode_frame(vf, force_keyframe=(k == 0)))
        assert payloads, "zerolatency: one frame in, one frame out"
        data = b"".join(b"\x00\x00\x00\x01" + p for p in payloads)
        stream += data
        decoded += [f.to_ndarray(format="rgb24") for f in dec.decode(av.Packet(data))]
    # x264 writes its settings into an SEI of the first keyframe: ultrafast = subme 0, diamond search
    assert b"subme=0" in stream and b"me=dia" in stream
    assert b"threads=1 " in stream
    assert len(decoded) == 5
    mse = np.mean((decoded[-1].astype(float) - frames[-1].astype(float)) ** 2)
    assert 10 * np.log10(255**2 / mse) > 30.0  # PSNR dB at aiortc's 1 Mbps


def test_video_preset_is_validated():
    assert RealtimeConfig().video_preset == "ultrafast"
    with pytest.raises(ConfigError, match="video_preset"):
        RealtimeConfig(video_preset="placebo")


async def test_install_on_negotiated_h264_sender():
    from aiortc import VideoStreamTrack

    from realtime.server.webrtc.send import install_h264_encoder
    from tests.fakes import negotiated

    results = {}
    for mime in ("video/H264", "video/VP8"):
        async with negotiated(VideoStreamTrack(), mime) as (server, sender):
            results[mime] = (install_h264_encoder(server, sender, "ultrafast"),
                             type(getattr(sender, "_RTCRtpSender__encoder")).__name__)
    assert results["video/H264"] == (True, "_TunedH264Encoder")
    assert results["video/VP8"] == (False, "NoneType")
