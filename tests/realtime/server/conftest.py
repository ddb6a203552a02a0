"""Fixtures of the real-time server tests: ICE on loopback only, a server with fake models on port 0."""

from __future__ import annotations

import pytest

from realtime.server.config import LimitsConfig, RealtimeConfig
from server_fakes import FakeAvatar, FakeEncoder, FakeRenderer


@pytest.fixture(autouse=True)
def loopback_ice(monkeypatch):
    """aioice skips 127.0.0.1 when gathering; make it the only host candidate (no network needed)."""
    import aioice.ice

    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])


def make_config(**kw) -> RealtimeConfig:
    limits = LimitsConfig(ice_timeout_s=2.0, teardown_timeout_s=1.0, ping_interval_s=1.0, ping_timeout_s=1.0)
    base = dict(host="127.0.0.1", port=0, max_sessions=2, limits=limits)
    base.update(kw)
    return RealtimeConfig(**base)


def make_engine(renderer=None):
    from realtime.server.engine import Engine
    from realtime.server.worker import InferenceWorker

    renderer = renderer or FakeRenderer()
    return Engine(
        avatar=FakeAvatar(),
        renderer_factory=lambda lookahead: renderer,
        encoder_factory=lambda lookahead, fps: FakeEncoder(fps, 0.12 if lookahead == "full" else 0.04),
        worker=InferenceWorker(),
    )


@pytest.fixture
async def server():
    from realtime.server.app import RealtimeServer

    engine = make_engine()
    srv = RealtimeServer(make_config(), engine)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.close()
        engine.close()
