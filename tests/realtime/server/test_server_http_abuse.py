"""Malformed and hostile HTTP on the server's port: pipelined requests, a client trickling its
headers (slow-loris), oversized and too many headers, garbage instead of HTTP. Each gets an answer
or a closed connection; the server serves on."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time

import pytest

from tests.fakes import make_config, running_server


@pytest.fixture
async def strict():
    """A server with a 1 s HTTP idle timeout, so the slow-loris case is quick."""
    config = make_config()
    config.limits.http_idle_timeout_s = 1.0
    async with running_server(config) as srv:
        yield srv


def exchange(port: int, data: bytes, read_for: float = 5.0) -> bytes:
    """Sends ``data`` and returns everything received until the server closes or ``read_for`` passes."""
    with socket.create_connection(("127.0.0.1", port), timeout=read_for) as sock:
        sock.sendall(data)
        out = b""
        deadline = time.monotonic() + read_for
        try:
            while time.monotonic() < deadline and (chunk := sock.recv(65536)):
                out += chunk
        except (socket.timeout, ConnectionResetError):
            pass
    return out


def healthy(port: int) -> bool:
    reply = exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    return reply.startswith(b"HTTP/1.1 200") and json.loads(reply.split(b"\r\n\r\n", 1)[1])["status"] == "ok"


async def test_pipelined_requests_are_all_answered_in_order(server):
    data = (b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" * 3
            + b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    reply = await asyncio.to_thread(exchange, server.port, data)
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", reply)  # bodies end without a line break
    assert statuses == [b"200", b"200", b"200", b"404"]


async def test_a_client_trickling_its_headers_is_cut_and_others_are_served(strict):
    port = strict.port

    def slow_loris() -> tuple[float, bytes]:
        t0 = time.monotonic()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
            try:
                for i in range(40):  # one header line every 0.25 s, never the blank line
                    sock.sendall(f"X-Slow-{i}: y\r\n".encode())
                    time.sleep(0.25)
            except (BrokenPipeError, ConnectionResetError):
                return time.monotonic() - t0, b""
            return time.monotonic() - t0, sock.recv(100)

    loris = asyncio.create_task(asyncio.to_thread(slow_loris))
    await asyncio.sleep(0.3)
    assert await asyncio.to_thread(healthy, port)  # served while the slow client hangs on
    took, _ = await loris
    assert took < 4.0, took  # cut after the 1 s idle timeout (plus a send or two), not after 40 lines


@pytest.mark.parametrize("request_bytes", [
    b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n",  # one field over max_header_bytes
    b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",  # the request line
    b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(200)) + b"\r\n",  # too many
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\0" * 64,  # a TLS hello to a plain-HTTP port
    b"NOT HTTP AT ALL\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
    b"POST /avatars?name=a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n",
])
async def test_malformed_requests_get_400_and_the_server_serves_on(server, request_bytes):
    reply = await asyncio.to_thread(exchange, server.port, request_bytes, 3.0)
    assert reply == b"" or reply.startswith((b"HTTP/1.1 400", b"HTTP/1.0 400", b"HTTP/1.1 431")), reply[:100]
    assert await asyncio.to_thread(healthy, server.port)


async def test_a_burst_of_broken_connections_leaves_nothing_open(server):
    def burst():
        for i in range(200):
            with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
                sock.sendall([b"GET /healthz HTTP/1.1\r\nHo", b"\xff" * 100, b"GET /ws HTTP/1.1\r\n\r\n"][i % 3])
    await asyncio.to_thread(burst)
    assert await asyncio.to_thread(healthy, server.port)
    assert not server.sessions and not server._sockets and not server._per_client
