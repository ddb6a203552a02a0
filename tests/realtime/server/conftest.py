"""Fixtures of the real-time server tests: ICE on loopback only, a server with fake models on port 0."""

from __future__ import annotations

import pytest

from tests.fakes import make_config, make_engine


@pytest.fixture(autouse=True)
def loopback_ice(monkeypatch):
    """aioice skips 127.0.0.1 when gathering; make it the only host candidate (no network needed)."""
    import aioice.ice

    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])


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
