"""Fixtures of the real-time server tests: ICE on loopback only (the `server` fixture, a server
with fake models on port 0, is in tests/conftest.py: the client tests use it too)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def loopback_ice(monkeypatch):
    """aioice skips 127.0.0.1 when gathering; make it the only host candidate (no network needed)."""
    import aioice.ice

    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])

