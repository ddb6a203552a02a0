"""Plain HTTP on the WebSocket port, and the server surviving bad clients."""

from __future__ import annotations

import asyncio
import json
import urllib.request

from websockets.asyncio.client import connect


def http_get(port: int, path: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.headers["Content-Type"], r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"], e.read().decode()


async def get(port: int, path: str):
    return await asyncio.to_thread(http_get, port, path)


async def test_healthz_metrics_page_and_404(server):
    status, ctype, body = await get(server.port, "/healthz")
    assert status == 200 and ctype.startswith("application/json")
    health = json.loads(body)
    assert health["status"] == "ok" and health["sessions"] == 0 and health["max_sessions"] == 2
    assert health["inference"] == "ok"
    status, ctype, body = await get(server.port, "/metrics")
    assert status == 200 and ctype.startswith("text/plain; version=0.0.4")
    for name in ("syncvid_sessions 0", "# TYPE syncvid_engine_latency_seconds histogram",
                 'syncvid_engine_latency_seconds_bucket{le="+Inf"} 0', "syncvid_frames_late_total 0",
                 "syncvid_frames_repeated_total 0", "syncvid_output_fps 0", "syncvid_av_offset_seconds 0",
                 "syncvid_render_seconds_per_frame_count 0", "syncvid_frame_queue_depth 0",
                 "# TYPE syncvid_glass_to_glass_latency_seconds histogram"):
        assert name in body, name
    status, ctype, body = await get(server.port, "/")
    assert status == 200 and ctype.startswith("text/html") and "/ws" in body + (await get(server.port, "/app.js"))[2]
    status, _, _ = await get(server.port, "/nope")
    assert status == 404


def raw_http(port: int, request: bytes) -> bytes:
    """Everything the server sends back for ``request`` on one connection, until it closes it."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


async def test_head_has_the_get_headers_and_no_body_and_other_methods_are_405(server):
    get_reply = await asyncio.to_thread(raw_http, server.port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head_reply = await asyncio.to_thread(raw_http, server.port, b"HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    get_head, get_body = get_reply.split(b"\r\n\r\n", 1)
    head_head, head_body = head_reply.split(b"\r\n\r\n", 1)
    assert get_head.startswith(b"HTTP/1.1 200") and len(get_body) > 500
    assert head_head.startswith(b"HTTP/1.1 200") and head_body == b""
    assert f"Content-Length: {len(get_body)}".encode() in head_head.split(b"\r\n")
    for request in (b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    b"DELETE / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                    b"HEAD /ws HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"):
        reply = await asyncio.to_thread(raw_http, server.port, request)
        assert reply.startswith(b"HTTP/1.1 405"), reply[:80]
        allow = b"GET" if b" /ws " in request else b"GET, HEAD"
        assert b"Allow: " + allow + b"\r\n" in reply
        assert request.startswith(b"HEAD") or b"is not served here; use" in reply  # a HEAD reply has no body
    status, _, body = await get(server.port, "/healthz")  # and the server serves on
    assert status == 200 and json.loads(body)["status"] == "ok"


async def test_healthz_is_503_while_the_inference_process_is_down(server):
    class DownBackend:
        down = "the inference process failed to start: no avatar"

    server.engine.backend = DownBackend()
    try:
        status, _, body = await get(server.port, "/healthz")
        assert status == 503
        health = json.loads(body)
        assert health["status"] == "degraded" and health["inference"].startswith("down: the inference process")
    finally:
        server.engine.backend = None
    status, _, _ = await get(server.port, "/healthz")
    assert status == 200


def test_histogram_percentiles_are_nearest_rank_of_the_window():
    from realtime.metrics import Histogram

    h = Histogram("x", "x", (0.1, 1.0), window=100)
    assert all(v != v for v in h.percentiles(50, 95))  # NaN while empty
    for v in range(250):  # the window keeps the newest 100: 150..249
        h.observe(float(v))
    assert h.percentiles(0, 50, 95, 100) == [150.0, 200.0, 244.0, 249.0] and h.percentile(50) == 200.0
    assert h.count == 250  # the Prometheus counts keep everything


async def test_stats_answers_loopback_clients_only(server, monkeypatch):
    import realtime.server.http_api as http_api

    status, _, body = await get(server.port, "/stats")
    assert status == 200 and "engine_latency_ms" in json.loads(body)
    monkeypatch.setattr(http_api, "is_loopback_host", lambda host: False)  # as if from another machine
    status, _, body = await get(server.port, "/stats?reset=1")
    assert status == 403 and "this machine only" in body


async def _first_reply(port: int, message):
    async with connect(f"ws://127.0.0.1:{port}/ws") as ws:
        await ws.send(message)
        reply = json.loads(await ws.recv())
        try:
            await asyncio.wait_for(ws.recv(), 2)
        except Exception:
            pass
        return reply, ws.close_code


async def test_bad_messages_get_errors_and_server_survives(server):
    reply, code = await _first_reply(server.port, "{oops")
    assert reply == {"type": "error", "code": "bad_json", "message": "message is not valid JSON"} and code == 1008
    reply, code = await _first_reply(server.port, json.dumps({"type": "offer"}))
    assert reply["code"] == "missing_field" and "sdp" in reply["message"] and code == 1008
    reply, code = await _first_reply(server.port, json.dumps({"type": "hello"}))
    assert reply["code"] == "unknown_type" and code == 1008
    reply, code = await _first_reply(server.port, json.dumps({"type": "start", "options": {"video": "gif"}}))
    assert reply["code"] == "bad_option" and code == 1008
    # a syntactically valid SDP that aiortc cannot use: error, close, no session left behind
    reply, code = await _first_reply(server.port, json.dumps({"type": "offer", "sdp": "v=0\r\n"}))
    assert reply["type"] == "error" and code in (1008, 1011)
    for _ in range(100):  # the handler's finally runs just after the client saw the close
        if not server.sessions and server._reserved == 0:
            break
        await asyncio.sleep(0.02)
    assert not server.sessions and server._reserved == 0
    status, _, body = await get(server.port, "/healthz")
    assert status == 200 and json.loads(body)["sessions"] == 0


def test_close_reasons_fit_a_close_frame():
    from realtime.server.app import close_reason

    reason = close_reason("é" * 120)  # 240 bytes of UTF-8: more than a close frame holds
    assert len(reason.encode()) <= 123 and reason == "é" * 61
    assert close_reason("bye") == "bye"


async def test_a_close_with_a_long_multibyte_reason_closes_normally(server):
    from clients.webrtc_peer import WebRTCPeer

    peer = WebRTCPeer(f"ws://127.0.0.1:{server.port}/ws", keep_video=False)
    try:
        await peer.connect()
        await peer.ws.send(json.dumps({"type": "close", "reason": "é" * 120}))
        for _ in range(100):
            if peer.ws.close_code is not None:
                break
            await asyncio.sleep(0.02)
        assert peer.ws.close_code == 1000  # not 1011 (a close frame holds 123 bytes of reason)
        assert peer.ws.close_reason == "é" * 61
    finally:
        await peer.close()


async def test_oversized_message_closes_connection_only(server):
    async with connect(f"ws://127.0.0.1:{server.port}/ws", max_size=None) as ws:
        await ws.send("x" * (server.config.limits.max_message_bytes + 1))
        try:
            await asyncio.wait_for(ws.recv(), 2)
        except Exception:
            pass
        assert ws.close_code == 1009  # message too big
    status, _, _ = await get(server.port, "/healthz")
    assert status == 200
