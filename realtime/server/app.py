"""The asyncio server (aiohttp): one port, `/ws` WebSocket sessions plus HTTP (the page,
`/healthz`, `/metrics`, `/avatars`; ``http_api.py``), over TLS when given a certificate.

A thin layer over ``protocol.SessionProtocol`` (rules), ``access.AccessPolicy`` (who may connect,
decided before any upgrade) and the two session kinds: ``WebRTCSession`` (a browser's media over
WebRTC) and ``SdkSession`` (the avatar SDK: PCM in, frames and events out on the same socket). Any
failure inside one connection is logged and ends that connection with an error message and close
code; the server keeps serving.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from pathlib import Path

from aiohttp import WSMsgType, web

from realtime.face.library import UnknownAvatar
from realtime.heap import PauseWatch, Sweeper
from realtime.metrics import ServerMetrics
from realtime.server import protocol as P
from realtime.server.access import AccessPolicy, tls_context
from realtime.server.config import RealtimeConfig
from realtime.server.http_api import HttpApi, error_response, not_found_or_method
from realtime.server.live_events import face_box, session_stats
from realtime.server.sdk.session import SdkSession
from realtime.server.summary import server_summary
from realtime.server.webrtc.session import SessionError, WebRTCSession
from realtime.session.shared import Engine

log = logging.getLogger(__name__)

CLIENT_DIR = Path(__file__).resolve().parents[2] / "clients" / "web"
FIRST_MESSAGE_TIMEOUT_S = 10.0
STATS_PERIOD_S = 1.0  # a WebRTC session's `stats` event (the page's live figures)
CLOSE_GOING_AWAY = 1001  # the server is stopping
Session = WebRTCSession | SdkSession


def close_reason(text: str) -> str:
    """A WebSocket close reason: at most 123 bytes of UTF-8 (a longer one fails the close itself)."""
    # errors="replace": a client's lone surrogate ("\ud800" in JSON) cannot be encoded as UTF-8
    return text.encode("utf-8", errors="replace")[:123].decode("utf-8", errors="ignore")


async def _server_header(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Server"] = "syncvid"  # not the library's name and version


class RealtimeServer:
    """``async with RealtimeServer(config, engine) as srv: srv.port`` — or ``start()``/``close()``."""

    def __init__(self, config: RealtimeConfig, engine: Engine, metrics: ServerMetrics | None = None,
                 access: AccessPolicy | None = None) -> None:
        self.config, self.engine = config, engine
        self.metrics = metrics or ServerMetrics()
        self.access = access or AccessPolicy(allowed_origins=tuple(config.allowed_origins))
        self.sessions: set[Session] = set()
        self._sockets: set[web.WebSocketResponse] = set()  # every open /ws, to close them on shutdown
        self._per_client: collections.Counter[str] = collections.Counter()  # open /ws per client address
        self._reserved = 0  # sessions being set up, counted against the cap before they exist
        self._runner: web.AppRunner | None = None
        self._closing = False
        self._ticker: asyncio.Task | None = None
        self.client_dir = Path(config.client_dir) if config.client_dir else CLIENT_DIR
        self.upload_dir: Path | None = engine.avatars.root if config.allow_uploads else None
        self.http = HttpApi(self)
        self.started_at = time.monotonic()
        # a closed session's reference cycles (aiortc, PyAV filter graphs with native threads) are
        # collected soon after it ends, while `syncvid serve` keeps its start-up heap frozen (heap.py)
        self.sweeper = Sweeper(on_sweep=lambda seconds, freed: self.metrics.gc_sweeps.inc())
        self.gc_pauses = PauseWatch()

    # ---- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> int:
        lim = self.config.limits
        app = web.Application(middlewares=[self._guard], client_max_size=lim.max_upload_bytes + 1)
        app.add_routes([web.get("/ws", self._handle, allow_head=False), *self.http.routes()])
        app.on_response_prepare.append(_server_header)
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=lim.close_timeout_s,
            keepalive_timeout=lim.http_idle_timeout_s, max_line_size=lim.max_header_bytes,
            max_field_size=lim.max_header_bytes, max_headers=lim.max_headers)
        await self._runner.setup()
        tls = tls_context(self.config.tls_cert, self.config.tls_key) if self.config.tls_cert else None
        try:
            await web.TCPSite(self._runner, self.config.host, self.config.port, ssl_context=tls,
                              reuse_address=True).start()
        except BaseException:
            await self._runner.cleanup()
            raise
        self._ticker = asyncio.create_task(self._tick(), name="metrics-tick")
        self.gc_pauses.install()
        return self.port

    @property
    def port(self) -> int:
        assert self._runner is not None
        return self._runner.addresses[0][1]

    @property
    def open_websockets(self) -> int:
        return len(self._sockets)

    @property
    def url(self) -> str:
        host = self.config.host if self.config.host not in ("0.0.0.0", "::") else "127.0.0.1"
        return f"{'https' if self.config.tls_cert else 'http'}://{host}:{self.port}/"

    async def close(self) -> None:
        """Every session ends with close 1001 (going away), then the listener stops."""
        self._closing = True
        self.gc_pauses.remove()
        self.sweeper.cancel()
        if self._ticker:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        await asyncio.gather(*(self._close_socket(ws, CLOSE_GOING_AWAY, "server shutting down")
                               for ws in list(self._sockets)), return_exceptions=True)
        for s in list(self.sessions):
            await s.close()
        if self._runner is not None:
            await self._runner.cleanup()

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
            self.drain_gc_pauses()

    def drain_gc_pauses(self) -> None:
        for seconds in self.gc_pauses.drain():
            self.metrics.gc_pause.observe(seconds)

    # ---- HTTP -------------------------------------------------------------------------------------
    @web.middleware
    async def _guard(self, request: web.Request, handler) -> web.StreamResponse:
        """Access first (before any upgrade or body is read), then the handler; the server's own 404/405."""
        own = (f"{request.scheme}://{request.host}",)
        denied = self.access.check(request.path, request.headers, request.query, own)
        if denied is not None:
            extra = {"WWW-Authenticate": "Bearer"} if denied.status == 401 else None
            return error_response(denied.status, denied.code, denied.message, extra)
        try:
            return await handler(request)
        except web.HTTPMethodNotAllowed as e:
            allow = ", ".join(sorted(e.allowed_methods - {"OPTIONS"}, key=("GET", "HEAD", "POST").index))
            return not_found_or_method(405, request.method, request.path, allow)
        except web.HTTPNotFound:
            return not_found_or_method(404, request.method, request.path, None)

    def stats(self, reset: bool = False) -> dict:
        """The `/stats` summary (``summary.py``); ``reset`` clears the histograms' samples."""
        return server_summary(self, reset)

    # ---- WebSocket --------------------------------------------------------------------------------
    async def _send(self, ws: web.WebSocketResponse, message: dict) -> None:
        await self._send_raw(ws, P.encode(message))

    async def _send_raw(self, ws: web.WebSocketResponse, message: str | bytes) -> None:
        # a closed socket: the control loop sees the close and ends the session
        with contextlib.suppress(ConnectionError, RuntimeError):
            if isinstance(message, str):
                await ws.send_str(message)
            else:
                await ws.send_bytes(message)

    async def _close_socket(self, ws: web.WebSocketResponse, code: int, reason: str) -> None:
        """Sends the close frame and waits (at most ``close_timeout_s``) for the client's; a client
        that does not read gets its connection cut."""
        transport = ws._req.transport if ws._req is not None else None  # aiohttp has no public abort
        try:
            await asyncio.wait_for(ws.close(code=code, message=close_reason(reason).encode()),
                                   self.config.limits.close_timeout_s + 0.5)
            # aiohttp then closes the transport gracefully, which waits for the unsent output to
            # go: a client that does not read would keep the socket (and its full buffers) open
            cut = transport is not None and transport.get_write_buffer_size() > 0
        except asyncio.CancelledError:
            # aiohttp's drain waiter is one future per connection: when the session's sender was
            # cancelled while waiting on it, this close is cancelled too. Only our own cancellation goes on.
            if asyncio.current_task().cancelling():
                if transport is not None:
                    transport.abort()
                raise
            cut = True
        except (asyncio.TimeoutError, ConnectionError, RuntimeError):
            cut = True
        if cut and transport is not None:
            transport.abort()

    async def _fail(self, ws: web.WebSocketResponse, code: P.ErrorCode, message: str, close_code: int) -> None:
        await self._send(ws, P.error_message(code, message))
        await self._close_socket(ws, close_code, message)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        lim = self.config.limits
        client = request.remote or "?"
        if self._closing:
            return error_response(503, "shutting_down", "the server is stopping: connect again in a moment")
        if self._per_client[client] >= lim.max_connections_per_client:
            return error_response(429, "too_many_connections", f"more than {lim.max_connections_per_client} open "
                                  "connections from this address: close some first")
        ws = web.WebSocketResponse(max_msg_size=lim.max_message_bytes, heartbeat=lim.ping_interval_s,
                                   timeout=lim.close_timeout_s, compress=False)
        if not ws.can_prepare(request).ok:
            return error_response(400, "not_websocket", "/ws takes WebSocket connections only: open it with a "
                                  "WebSocket client (the page, syncvid_client)")
        self._per_client[client] += 1
        self._sockets.add(ws)
        try:
            await ws.prepare(request)
            await self._serve_socket(ws)
        finally:
            self._sockets.discard(ws)
            self._per_client[client] -= 1
            if self._per_client[client] <= 0:
                del self._per_client[client]
        return ws

    async def _serve_socket(self, ws: web.WebSocketResponse) -> None:
        proto = P.SessionProtocol()
        session: Session | None = None
        reserved = False
        try:
            try:
                first = await ws.receive(timeout=FIRST_MESSAGE_TIMEOUT_S)
            except asyncio.TimeoutError:
                await self._fail(ws, P.ErrorCode.UNEXPECTED, "no first message within "
                                 f"{FIRST_MESSAGE_TIMEOUT_S:.0f} s", P.CLOSE_POLICY)
                return
            if first.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                return  # closed, or a frame aiohttp refused (it has closed with the right code)
            event = proto.receive_text(first.data) if first.type is WSMsgType.TEXT else proto.receive_bytes(first.data)
            if isinstance(event, P.ProtocolError):
                await self._fail(ws, event.code, event.message, event.close_code or P.CLOSE_POLICY)
                return
            if isinstance(event, P.Close):
                await self._close_socket(ws, P.CLOSE_NORMAL, "bye")
                return
            assert isinstance(event, (P.Offer, P.Start))
            if len(self.sessions) + self._reserved >= self.config.max_sessions:
                self.metrics.sessions_rejected.inc()
                await self._fail(ws, P.ErrorCode.SESSION_CAP, f"server is at its session cap "
                                 f"({self.config.max_sessions}); try again later", P.CLOSE_TRY_AGAIN)
                return
            self._reserved += 1
            reserved = True
            avatar_name = event.options.avatar if isinstance(event, P.Start) else event.options.get("avatar", "default")
            try:  # a photo or video is prepared on first use (seconds): off the event loop
                avatar = await asyncio.to_thread(self.engine.avatars.load, avatar_name)
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
                await self._send(ws, P.answer_message(answer))
                height, width = avatar.frame(0).shape[:2]
                await self._send(ws, P.event_message(
                    "session_started", session=session.id, fps=self.config.fps,
                    latency_budget_ms=round(session.budget_s * 1000), lookahead=session.lookahead,
                    avatar=avatar_name, width=width, height=height, face_box=face_box(avatar)))
            else:
                session = SdkSession(self.engine, self.config, self.metrics, event.options,
                                     send=lambda m: self._send_raw(ws, m))
                session.start()
            self._reserved -= 1
            reserved = False
            self.sessions.add(session)
            self.metrics.sessions_total.inc()
            self.metrics.sessions.set(len(self.sessions))
            await self._serve_session(ws, proto, session, stats=isinstance(event, P.Offer)
                                      and bool(event.options.get("stats")))
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

    async def _serve_session(self, ws: web.WebSocketResponse, proto: P.SessionProtocol, session: Session,
                             stats: bool = False) -> None:
        control = asyncio.create_task(self._control(ws, proto, session), name=f"{session.id}-control")
        gone = asyncio.create_task(session.gone.wait(), name=f"{session.id}-gone")
        limit = asyncio.create_task(asyncio.sleep(self.config.limits.max_session_s), name=f"{session.id}-limit")
        watched = {control, gone, limit}
        if stats and isinstance(session, WebRTCSession):
            watched.add(asyncio.create_task(self._stats(ws, session), name=f"{session.id}-stats"))
        try:
            done, _ = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
            if control in done:
                control.result()  # re-raise handler errors into _serve_socket
            elif self._closing:
                pass  # close() sends 1001 to every socket
            elif gone in done and isinstance(session, SdkSession) and session.slow:
                # the client stopped reading: stop the session first, then a close frame only (an
                # error message would queue behind the frames it does not read)
                await session.close()
                await self._close_socket(ws, P.CLOSE_POLICY, f"{P.ErrorCode.SLOW_CONSUMER.value}: the client did "
                                         "not read its frames")
            elif gone in done and session.failed:  # a server bug, logged with its traceback
                await self._fail(ws, P.ErrorCode.INTERNAL, f"internal server error ({session.failed}); the session "
                                 "ended, see the server log; start a new one", P.CLOSE_INTERNAL)
            elif gone in done:
                await self._send(ws, P.event_message("session_ended", reason="media connection lost"))
                await self._close_socket(ws, P.CLOSE_NORMAL, "media connection lost")
            elif limit in done:
                minutes = self.config.limits.max_session_s / 60
                await self._send(ws, P.event_message("session_ended", reason=f"time limit ({minutes:g} min)"))
                await self._close_socket(ws, P.CLOSE_NORMAL, "session time limit")
        finally:
            for t in watched:
                t.cancel()
            await asyncio.gather(*watched, return_exceptions=True)

    async def _stats(self, ws: web.WebSocketResponse, session: WebRTCSession) -> None:
        """The page's live figures, once a second."""
        while True:
            await asyncio.sleep(STATS_PERIOD_S)
            await self._send(ws, session_stats(session.live, session.output_fps(), STATS_PERIOD_S))

    async def _control(self, ws: web.WebSocketResponse, proto: P.SessionProtocol, session: Session) -> None:
        """Control messages overtake media: they act on the scheduler immediately."""
        async for message in ws:
            if message.type is WSMsgType.TEXT:
                event = proto.receive_text(message.data)
            elif message.type is WSMsgType.BINARY:
                event = proto.receive_bytes(message.data)
            else:  # ERROR: a frame aiohttp refused (too big, bad UTF-8...); it has sent the close
                return
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
                await self._close_socket(ws, P.CLOSE_NORMAL, event.reason or "bye")
                return
