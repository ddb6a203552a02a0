"""The real engine's pieces as the server wires them (real Whisper weights, default avatar)."""

from __future__ import annotations

import numpy as np

from realtime.server.config import RealtimeConfig
from realtime.server.engine import build_engine
from realtime.session.config import as_block


def test_real_encoders_share_weights_and_emit_blocks(default_avatar, arctic_audio):
    engine = build_engine(RealtimeConfig(inference="thread"), avatar=default_avatar)
    try:
        full, low = engine.encoder_factory("full", 25), engine.encoder_factory("low", 25)
        assert full.weights is low.weights  # one copy of the model for every session
        x = arctic_audio[3200:12800]  # 0.6 s of speech
        out_full, out_low = [], []
        for i in range(0, len(x), 320):  # 20 ms packets, as the server pushes them
            out_full += full.push(x[i : i + 320])
            out_low += low.push(x[i : i + 320])
        j, block = as_block(out_full[0])
        assert j == 0 and block.shape == (50, 384) and block.dtype == np.float32
        # frame i needs audio up to i*40 + 120 (+12.5) ms, or + 40 (+12.5) ms in low mode
        assert 11 <= len(out_full) <= 12 and 13 <= len(out_low) <= 14, (len(out_full), len(out_low))
        assert as_block(out_low[0])[1].shape == (50, 384)
    finally:
        engine.close()


async def test_real_engine_end_to_end_over_webrtc(default_avatar, arctic_audio, monkeypatch):
    """Embedded renderer + streaming Whisper behind the real server: speech comes back lip-synced."""
    import asyncio

    import aioice.ice
    from scipy.signal import resample_poly

    from clients.webrtc_peer import WebRTCPeer
    from realtime.bench.mouth_open import face_box, opening_series
    from realtime.server.app import RealtimeServer

    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])
    config = RealtimeConfig(port=0)
    engine = build_engine(config, avatar=default_avatar)
    try:
        async with RealtimeServer(config, engine) as server:
            box = face_box(default_avatar)
            crops: list[tuple[float, np.ndarray]] = []
            peer = WebRTCPeer(f"ws://127.0.0.1:{server.port}/ws", keep_video=False, video_format="luma",
                              on_video=lambda t, y: crops.append((t, y[box].copy())))
            await peer.connect()
            await peer.wait_connected()
            await asyncio.sleep(1.0)
            t_play = peer.play(resample_poly(arctic_audio, 3, 1).astype(np.float32))  # 4 s of real speech
            await asyncio.sleep(4.8)
            stats = server.stats()
            kinds = stats["kinds"][0]
            # ~90 frames of speech: all are recognised as speech; how many are rendered in time
            # depends on the CPU left by other jobs (the slots of late ones repeat a frame)
            assert kinds.get("speech", 0) + kinds.get("late", 0) + kinds.get("repeat", 0) >= 70, kinds
            assert kinds.get("speech", 0) >= 40, kinds
            assert kinds.get("rest", 0) >= 10  # silence before and after
            assert stats["engine_latency_ms"]["p50"] <= 170
            n = len(peer.video_times)
            assert n >= 0.85 * 25 * 5.8  # constant rate while rendering
            assert peer.audio_frames >= 0.85 * 50 * 5.8  # the speech comes back as audio too
            # the lips, as FaceMesh sees them on the received frames: closed before the speech,
            # moving with it (the sentence opens the mouth in most of its frames)
            times = np.array([t for t, _ in crops])
            series = opening_series([c for _, c in crops])  # one tracking run: its first frames are rough
            before = series[(times > t_play - 0.6) & (times < t_play)]
            during = series[(times > t_play + 0.4) & (times < t_play + 3.6)]
            assert len(before) >= 10 and np.nanmedian(before) < 0.06, before  # the avatar at rest: ~0.03
            assert np.mean(during > 0.1) > 0.4 and np.nanmax(during) > 0.25, during
            await peer.close()
    finally:
        engine.close()


def test_rest_frame_cache_keeps_frames_and_states_bounded_whatever_seeds_clients_pick():
    from realtime.inference.rest_cache import MAX_REST_STATES, RestFrameCache
    from tests.fakes import FakeAvatar, FakeRenderer

    cache, renderer, avatar = RestFrameCache(max_items=8), FakeRenderer(), FakeAvatar()
    first = cache.get(renderer, avatar, 0, seed=0)
    assert cache.get(renderer, avatar, 0, seed=0) is first and cache.hits == 1  # shared by sessions
    for seed in range(3 * MAX_REST_STATES):  # a client cycling seeds
        cache.get(renderer, avatar, 1, seed=seed)
    assert len(cache._states) == MAX_REST_STATES and len(cache._frames) == 8
    assert (id(renderer), 3 * MAX_REST_STATES - 1) in cache._states  # the newest stay
