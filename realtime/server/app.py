"""The asyncio server: one port, `/ws` WebSocket sessions plus plain HTTP (`/`, `/healthz`,
`/metrics`, `/avatars`).

A thin layer over ``protocol.SessionProtocol`` (rules) and the two session kinds: ``WebRTCSession``
(a browser's media over WebRTC) and ``SdkSession`` (the avatar SDK: PCM in, frames and events out on
the same socket). Any failure inside one connection is logged and ends that connection with an
error message and close code; the server keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import http
import json
import logging
import time
from pathlib import Path

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from realtime.face.library import UnknownAvatar
from realtime.heap import PauseWatch, Sweeper
from realtime.metrics import ServerMetrics
from realtime.server import protocol as P
from realtime.server.config import RealtimeConfig
from realtime.server.sdk.session import SdkSession
from realtime.server.webrtc.session import SessionError, WebRTCSession
from realtime.session.shared import Engine

log = logging.getLogger(__name__)

CLIENT_DIR = Path(__file__).resolve().parents[2] / "clients" / "web"
STATIC = {"/": ("index.html", "text/html; charset=utf-8"), "/app.js": ("app.js", "text/javascript; charset=utf-8")}
FIRST_MESSAGE_TIMEOUT_S = 10.0


def _response(status: int, body: bytes, content_type: str) -> Response:
    headers = Headers([("Content-Type", content_type), ("Content-Length", str(len(body))),
                       ("Cache-Control", "no-store"), ("Connection", "close")])
    return Response(status, http.HTTPStatus(status).phrase, headers, body)


def _is_loopback(connection: ServerConnection) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(connection.remote_address[0]).is_loopback
    except (TypeError, ValueError, IndexError):
        return False


def close_reason(text: str) -> str:
    """A WebSocket close reason: at most 123 bytes of UTF-8 (a longer one fails the close itself)."""
    # errors="replace": a client's lone surrogate ("\ud800" in JSON) cannot be encoded as UTF-8
    return text.encode("utf-8", errors="replace")[:123].decode("utf-8", errors="ignore")


class RealtimeServer:
    """``async with RealtimeServer(config, engine) as srv: srv.port`` — or ``start()``/``close()``."""

    def __init__(self, config: RealtimeConfig, engine: Engine, metrics: ServerMetrics | None = None) -> None:
        self.config, self.engine = config, engine
        self.metrics = metrics or ServerMetrics()
        self.sessions: set[WebRTCSession | SdkSession] = set()
        self._reserved = 0  # sessions being set up, counted against the cap before they exist
        self._server: Server | None = None
        self._ticker: asyncio.Task | None = None
        self.client_dir = Path(config.client_dir) if config.client_dir else CLIENT_DIR
        self.started_at = time.monotonic()
        # a closed session's reference cycles (aiortc, PyAV filter graphs with native threads) are
        # collected soon after it ends, while `syncvid serve` keeps its start-up heap frozen (heap.py)
        self.sweeper = Sweeper(on_sweep=lambda seconds, freed: self.metrics.gc_sweeps.inc())
        self.gc_pauses = PauseWatch()

    # ---- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> int:
        lim = self.config.limits
        self._server = await serve(
            self._handle, self.config.host, self.config.port,
            process_request=self._process_request,
            max_size=lim.max_message_bytes, max_queue=lim.max_queue, open_timeout=lim.open_timeout_s,
            ping_interval=lim.ping_interval_s, ping_timeout=lim.ping_timeout_s,
            close_timeout=lim.close_timeout_s,
            compression=None,  # SDP and control messages are small; deflate costs CPU for nothing
        )
        self._ticker = asyncio.create_task(self._tick(), name="metrics-tick")
        self.gc_pauses.install()
        return self.port

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        host = self.config.host if self.config.host not in ("0.0.0.0", "::") else "127.0.0.1"
        return f"http://{host}:{self.port}/"

    async def close(self) -> None:
        self.gc_pauses.remove()
        self.sweeper.cancel()
        if self._ticker:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for s in list(self.sessions):
            await s.close()

    async def __aenter__(self) -> "RealtimeServer":
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def _tick(self) -> None:
        """Twice a second: gauges that are sums over sessions; garbage-collector pauses into metrics."""
        m = self.metrics
        while True:
            await asyncio.sleep(0.5)
            ss = list(self.sessions)
            m.sessions.set(len(ss))
            m.output_fps.set(sum(s.output_fps() for s in ss))
            m.audio_queue.set(sum(s.live.audio_backlog_s for s in ss))
            m.frame_queue.set(sum(len(s.live.frames.ready) for s in ss))
            m.worker_queue.set(self.engine.worker.depth)
            m.degrade_level.set(max((s.live.level for s in ss), default=0))
            m.av_offset.set(ss[-1].live.av_offset_s if ss else 0.0)  # no session: no offset to report
            self._drain_gc_pauses()

    def _drain_gc_pauses(self) -> None:
        for seconds in self.gc_pauses.drain():
            self.metrics.gc_pause.observe(seconds)

    # ---- HTTP -------------------------------------------------------------------------------------
    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        method = request.method.upper()
        path = request.path.split("?", 1)[0]
        if method not in ("GET", "HEAD") or (path == "/ws" and method != "GET"):
            allow = "GET" if path == "/ws" else "GET, HEAD"
            response = _response(405, f"{method} is not served here; use {allow}\n".encode(), "text/plain; charset=utf-8")
            response.headers["Allow"] = allow
            return response
        if path == "/ws":
            return None  # continue the WebSocket handshake
        response = self._http_response(connection, request, path)
        if method == "HEAD":  # the GET response's headers (Content-Length included), no body
            response = dataclasses.replace(response, body=b"")
        return response

    def _http_response(self, connection: ServerConnection, request: Request, path: str) -> Response:
        if path == "/healthz":
            # 503 while the inference process is down (its start failed; retried with a back-off)
            down = getattr(getattr(self.engine, "backend", None), "down", None)
            body = {"status": "ok" if down is None else "degraded", "sessions": len(self.sessions),
                    "max_sessions": self.config.max_sessions, "uptime_s": round(time.monotonic() - self.started_at, 1),
                    "inference": "ok" if down is None else f"down: {down}"}
            return _response(200 if down is None else 503, json.dumps(body).encode(), "application/json")
        if path == "/metrics":
            self.metrics.sessions.set(len(self.sessions))
            self._drain_gc_pauses()
            return _response(200, self.metrics.render().encode(), "text/plain; version=0.0.4; charset=utf-8")
        if path == "/stats":  # JSON summary for benchmarks (percentiles from raw samples)
            if not _is_loopback(connection):  # a benchmark's tool on this machine; it can reset the samples
                return _response(403, b"/stats is served to clients on this machine only\n", "text/plain; charset=utf-8")
            body = self.stats(reset="reset=1" in request.path)
            return _response(200, json.dumps(body).encode(), "application/json")
        if path == "/avatars":
            body = {"avatars": self.engine.avatars.describe()}
            return _response(200, json.dumps(body).encode(), "application/json")
        if path in STATIC:
            name, ctype = STATIC[path]
            f = self.client_dir / name
            if f.is_file():
                return _response(200, f.read_bytes(), ctype)
        return _response(404, b"not found\n", "text/plain; charset=utf-8")

    def stats(self, reset: bool = False) -> dict:
        m = self.metrics
        self._drain_gc_pauses()
        lat, rt = m.engine_latency, m.render_time

        def ms(h, *qs) -> dict:
            """Percentiles ``qs`` of ``h`` in ms, as {"p50": ...} (None while it has no samples)."""
            return {f"p{q}": None if v != v else round(v * 1000, 2) for q, v in zip(qs, h.percentiles(*qs))}

        out = {
            "sessions": len(self.sessions),
            "engine_latency_ms": {**ms(lat, 50, 95), "n": len(lat.samples)},
            "render_ms_per_frame": ms(rt, 50, 95),
            "encode_ms_per_push": ms(m.encode_time, 50, 95),
            # where a frame's compute window goes: packet -> push submitted, push round trip, and
            # how early speech frames were ready for their slot (p5: the tight end)
            "packet_lateness_ms": ms(m.packet_lateness, 50, 95, 99),
            "push_wait_ms": ms(m.push_wait, 50, 95),
            "push_round_trip_ms": ms(m.push_round_trip, 50, 95, 99),
            "frame_slack_ms": ms(m.frame_slack, 5, 50),
            # the collector's stalls of this process (what a frozen start-up heap keeps short)
            "gc_pause_ms": {**ms(m.gc_pause, 50, 99, 100), "n": len(m.gc_pause.samples)},
            "gc_sweeps": int(m.gc_sweeps.value),
            "frames": {k: int(getattr(m, "frames_" + k).value)
                       for k in ("sent", "rendered", "rest", "late", "repeated", "dropped")},
            "skipped_slots": sum(s.skipped for s in self.sessions),
            "output_fps": round(m.output_fps.value, 2),
            "degrade_level_max": max((s.live.level for s in self.sessions), default=0),
            "av_offset_ms": [round(s.live.av_offset_s * 1000, 2) for s in self.sessions],
            "kinds": [dict(s.live.counts) for s in self.sessions],
            # what each session aims at now: its budget less the light-load cut (engine.LoadWatch)
            "latency_target_ms": [round((s.budget_s - s.live.grid.cut_s) * 1000, 1) for s in self.sessions],
        }
        if reset:
            for h in (lat, rt, m.encode_time, m.packet_lateness, m.push_wait, m.push_round_trip, m.frame_slack,
                      m.gc_pause):
                h.reset_samples()
        return out

    # ---- WebSocket --------------------------------------------------------------------------------
    async def _send(self, ws: ServerConnection, message: dict) -> None:
        await self._send_raw(ws, P.encode(message))

    async def _fail(self, ws: ServerConnection, code: P.ErrorCode, message: str, close_code: int) -> None:
        await self._send(ws, P.error_message(code, message))
        await ws.close(close_code, close_reason(message))

    async def _handle(self, ws: ServerConnection) -> None:
        proto = P.SessionProtocol()
        session: WebRTCSession | SdkSession | None = None
        reserved = False
        try:
            try:
                first = await asyncio.wait_for(ws.recv(), FIRST_MESSAGE_TIMEOUT_S)
            except asyncio.TimeoutError:
                await self._fail(ws, P.ErrorCode.UNEXPECTED, "no first message within "
                                 f"{FIRST_MESSAGE_TIMEOUT_S:.0f} s", P.CLOSE_POLICY)
                return
            event = proto.receive_text(first) if isinstance(first, str) else proto.receive_bytes(first)
            if isinstance(event, P.ProtocolError):
                await self._fail(ws, event.code, event.message, event.close_code or P.CLOSE_POLICY)
                return
            if isinstance(event, P.Close):
                await ws.close(P.CLOSE_NORMAL, "bye")
                return
            assert isinstance(event, (P.Offer, P.Start))
            if len(self.sessions) + self._reserved >= self.config.max_sessions:
                self.metrics.sessions_rejected.inc()
                await self._fail(ws, P.ErrorCode.SESSION_CAP, f"server is at its session cap "
                                 f"({self.config.max_sessions}); try again later", P.CLOSE_TRY_AGAIN)
                return
            self._reserved += 1
            reserved = True
            avatar = event.options.avatar if isinstance(event, P.Start) else event.options.get("avatar", "default")
            try:  # a photo or video is prepared on first use (seconds): off the event loop
                await asyncio.to_thread(self.engine.avatars.load, avatar)
            except UnknownAvatar as e:
                await self._fail(ws, P.ErrorCode.UNKNOWN_AVATAR, str(e), P.CLOSE_POLICY)
                return
            if isinstance(event, P.Offer):
                session = WebRTCSession(self.engine, self.config, self.metrics, event.options)
                try:
                    answer = await session.start(event.sdp)
                except SessionError as e:
                    await self._fail(ws, P.ErrorCode.BAD_MESSAGE, str(e), P.CLOSE_POLICY)
                    return
                await ws.send(P.encode(P.answer_message(answer)))
                await self._send(ws, P.event_message("session_started", session=session.id, fps=self.config.fps,
                                                     latency_budget_ms=round(session.budget_s * 1000),
                                                     lookahead=session.lookahead))
            else:
                session = SdkSession(self.engine, self.config, self.metrics, event.options,
                                     send=lambda m: self._send_raw(ws, m))
                session.start()
            self._reserved -= 1
            reserved = False
            self.sessions.add(session)
            self.metrics.sessions_total.inc()
            self.metrics.sessions.set(len(self.sessions))
            await self._serve_session(ws, proto, session)
        except ConnectionClosed:
            pass
        except Exception:
            log.exception("connection failed")
            with contextlib.suppress(Exception):
                await self._fail(ws, P.ErrorCode.INTERNAL, "internal server error; see the server log",
                                 P.CLOSE_INTERNAL)
        finally:
            if reserved:
                self._reserved -= 1
            if session is not None:
                self.sessions.discard(session)
                await session.close()
                self.metrics.sessions.set(len(self.sessions))
                self.sweeper.session_ended()

    async def _send_raw(self, ws: ServerConnection, message: str | bytes) -> None:
        with contextlib.suppress(ConnectionClosed):  # the control loop sees the close and ends the session
            await ws.send(message)

    async def _serve_session(self, ws: ServerConnection, proto: P.SessionProtocol,
                             session: WebRTCSession | SdkSession) -> None:
        control = asyncio.create_task(self._control(ws, proto, session), name=f"{session.id}-control")
        gone = asyncio.create_task(session.gone.wait(), name=f"{session.id}-gone")
        try:
            done, _ = await asyncio.wait({control, gone}, return_when=asyncio.FIRST_COMPLETED)
            if gone in done and not control.done() and isinstance(session, SdkSession) and session.slow:
                # the client stopped reading: its sender task waits on the socket and holds it; stop the
                # session first, then a close frame only (an error message would queue behind the frames)
                await session.close()
                reason = close_reason(f"{P.ErrorCode.SLOW_CONSUMER.value}: the client did not read its frames")
                try:  # the close frame waits behind unread data with no deadline of its own
                    await asyncio.wait_for(ws.close(P.CLOSE_POLICY, reason), self.config.limits.close_timeout_s)
                except asyncio.TimeoutError:
                    ws.transport.abort()
            elif gone in done and not control.done() and session.failed:  # a server bug, logged with its traceback
                await self._fail(ws, P.ErrorCode.INTERNAL, f"internal server error ({session.failed}); the session "
                                 "ended, see the server log; start a new one", P.CLOSE_INTERNAL)
            elif gone in done and not control.done():
                await self._send(ws, P.event_message("session_ended", reason="media connection lost"))
                await ws.close(P.CLOSE_NORMAL, "media connection lost")
            elif control in done:
                control.result()  # re-raise handler errors into _handle
        finally:
            for t in (control, gone):
                t.cancel()
            await asyncio.gather(control, gone, return_exceptions=True)

    async def _control(self, ws: ServerConnection, proto: P.SessionProtocol,
                       session: WebRTCSession | SdkSession) -> None:
        """Control messages overtake media: they act on the scheduler immediately."""
        async for message in ws:
            event = proto.receive_text(message) if isinstance(message, str) else proto.receive_bytes(message)
            if isinstance(event, P.ProtocolError):
                if event.close_code:
                    await self._fail(ws, event.code, event.message, event.close_code)
                    return
                await self._send(ws, event.to_message())
            elif isinstance(event, P.AudioChunk):  # SDK sessions only (the protocol refuses it otherwise)
                assert isinstance(session, SdkSession)
                if not session.receive_audio(event.pcm16):
                    await self._send(ws, P.error_message(P.ErrorCode.BUFFER_FULL, (
                        f"more than {self.config.limits.sdk_buffer_s:g} s of speech buffered; this chunk was "
                        "dropped: send at most real time once the buffer is full")))
            elif isinstance(event, P.Interrupt):
                session.interrupt()  # an SDK session queues its own reply behind the frames already queued
                if isinstance(session, WebRTCSession):
                    await self._send(ws, P.event_message("interrupted"))
            elif isinstance(event, P.EndOfUtterance):
                session.end_of_utterance()
            elif isinstance(event, P.Report):
                self.metrics.glass_latency.observe(event.glass_to_glass_ms / 1000.0)
            elif isinstance(event, P.Close):
                await ws.close(P.CLOSE_NORMAL, close_reason(event.reason) or "bye")
                return
