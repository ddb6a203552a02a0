"""The LiveKit agent worker that serves syncvid avatars (``syncvid livekit-worker``).

It registers with a LiveKit server under the agent name ``syncvid-avatar`` (explicit dispatch
only) and reports its load as syncvid sessions in use over capacity, so LiveKit spreads avatar
jobs over every worker (one per syncvid server, i.e. per GPU) that has room. Per job
(:class:`AvatarJob`): accept it as the avatar participant named in the dispatch metadata, with
``lk.publish_on_behalf`` = the agent (LiveKit mints that token), join the room, open a
:class:`~syncvid_client.livekit.SyncVidVideoGenerator` on this worker's syncvid server and run
LiveKit's ``AvatarRunner`` until the agent leaves.

Needs ``livekit-agents`` only (no torch, no engine): the worker may run beside the server or on
any host that reaches it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import signal
import urllib.request
from urllib.parse import urlsplit, urlunsplit

from livekit import rtc
from livekit.agents import (
    AgentServer,
    AutoSubscribe,
    JobContext,
    JobExecutorType,
    JobRequest,
)
from livekit.agents.types import ATTRIBUTE_PUBLISH_ON_BEHALF
from livekit.agents.utils import wait_for_participant
from livekit.agents.voice.avatar import AvatarRunner, DataStreamAudioReceiver

from .client import TIMEOUTS
from .errors import SyncVidError
from .livekit import AGENT_NAME, AvatarDispatch, SyncVidVideoGenerator

log = logging.getLogger(__name__)

DEFAULT_SYNCVID_URL = "ws://127.0.0.1:8080/ws"
JOIN_TIMEOUT_S = 30.0  # the agent that dispatched us must be in the room by then
HEALTH_TIMEOUT_S = 1.0  # the load is polled every 0.5 s, in a thread; a hung server reads as full
DRAIN_TIMEOUT_S = 600  # SIGTERM: sessions in progress may finish this long


def session_load(sessions: int, active_jobs: int, capacity: int) -> float:
    """The worker's load for LiveKit: sessions in use over the syncvid server's capacity, in [0, 1].

    ``sessions``: open on the server (its other clients included); ``active_jobs``: this worker's
    jobs, which count before their sessions open. ``capacity`` < 1 reads as full.
    """
    if capacity < 1:
        return 1.0
    return min(1.0, max(sessions, active_jobs, 0) / capacity)


def healthz_url(syncvid_url: str) -> str:
    """``ws://host:port/ws`` -> ``http://host:port/healthz`` (``wss`` -> ``https``)."""
    parts = urlsplit(syncvid_url)
    if parts.scheme not in ("ws", "wss") or not parts.netloc:
        raise ValueError(f"the syncvid URL must look like ws://host:port/ws; got {syncvid_url!r}")
    return urlunsplit(("https" if parts.scheme == "wss" else "http", parts.netloc, "/healthz", "", ""))


class SyncVidLoad:
    """``load_fnc`` of the worker: asks the syncvid server's ``GET /healthz`` for its sessions and
    ``max_sessions`` (``capacity`` overrides the latter). An unreachable or degraded server (its
    inference process down) reads as full, so no job is sent where it cannot be served."""

    def __init__(self, url: str, capacity: int | None = None, timeout: float = HEALTH_TIMEOUT_S) -> None:
        if capacity is not None and capacity < 1:
            raise ValueError(f"capacity must be at least 1 session; got {capacity!r}")
        self.url, self.capacity, self.timeout = url, capacity, timeout
        self._failing = False

    def health(self) -> dict:
        with urllib.request.urlopen(self.url, timeout=self.timeout) as response:
            return json.loads(response.read())

    def __call__(self, server: AgentServer) -> float:
        try:
            health = self.health()
            sessions, capacity = int(health["sessions"]), self.capacity or int(health["max_sessions"])
            ok = health.get("status") == "ok"
        except (OSError, ValueError, KeyError, TypeError) as exc:  # HTTPError (503 degraded) is an OSError
            if not self._failing:
                log.warning("syncvid server %s not healthy (%s): reporting full", self.url, exc)
            self._failing = True
            return 1.0
        if self._failing:
            log.info("syncvid server %s healthy again", self.url)
        self._failing = False
        return session_load(sessions, len(server.active_jobs), capacity) if ok else 1.0


@dataclasses.dataclass(frozen=True)
class AvatarJob:
    """The worker's job: accept as the avatar participant, then serve the room. Picklable (job
    processes receive it)."""

    syncvid_url: str = DEFAULT_SYNCVID_URL
    syncvid_token: str | None = None
    video: str = "raw"
    join_timeout_s: float = JOIN_TIMEOUT_S

    async def request(self, req: JobRequest) -> None:
        try:
            dispatch = AvatarDispatch.from_json(req.job.metadata)
        except ValueError as exc:
            log.warning("job %s rejected: %s (dispatch it with SyncVidAvatar)", req.id, exc)
            await req.reject()
            return
        await req.accept(name="avatar", identity=dispatch.avatar_identity,
                         attributes={ATTRIBUTE_PUBLISH_ON_BEHALF: dispatch.agent_identity})

    async def __call__(self, ctx: JobContext) -> None:
        dispatch = AvatarDispatch.from_json(ctx.job.metadata)
        await ctx.connect(auto_subscribe=AutoSubscribe.SUBSCRIBE_NONE)  # the speech comes as data
        try:
            async with SyncVidVideoGenerator(self.syncvid_url, avatar=dispatch.avatar, token=self.syncvid_token,
                                             sample_rate=dispatch.sample_rate, video=self.video) as generator:
                reason = await run_avatar(ctx.room, generator, dispatch.agent_identity, self.join_timeout_s)
        except SyncVidError as exc:  # no session (server full, unknown avatar...) or it broke off
            log.error("room %s: syncvid session failed: %s", ctx.room.name, exc)
            reason = f"syncvid: {exc}"
        except TIMEOUTS:
            log.error("room %s: agent %s not in the room within %g s", ctx.room.name, dispatch.agent_identity,
                      self.join_timeout_s)
            reason = "the agent did not join"
        ctx.shutdown(reason)


async def run_avatar(room: rtc.Room, generator: SyncVidVideoGenerator, agent_identity: str,
                     join_timeout_s: float = JOIN_TIMEOUT_S) -> str:
    """Serves ``agent_identity``'s speech in ``room`` with LiveKit's ``DataStreamAudioReceiver``
    and ``AvatarRunner``; returns why it stopped (the agent left, the room closed, the session
    ended). Raises ``TimeoutError`` when the agent is not in the room within ``join_timeout_s``."""
    # the agent first: AvatarRunner.aclose() fails on a runner whose start() did not finish (1.8.9)
    await asyncio.wait_for(wait_for_participant(room, identity=agent_identity), join_timeout_s)
    runner = AvatarRunner(room, audio_recv=DataStreamAudioReceiver(room, sender_identity=agent_identity),
                          video_gen=generator, options=generator.avatar_options())
    stopped: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def stop(reason: str) -> None:
        if not stopped.done():
            stopped.set_result(reason)

    def on_left(participant: rtc.RemoteParticipant) -> None:
        if participant.identity == agent_identity:
            stop("the agent left")

    def on_state(state: rtc.ConnectionState.ValueType) -> None:
        if state == rtc.ConnectionState.CONN_DISCONNECTED:
            stop("room disconnected")

    room.on("participant_disconnected", on_left)
    room.on("connection_state_changed", on_state)
    started = False
    try:
        await runner.start()
        started = True
        watchers = [asyncio.ensure_future(w) for w in (runner.wait_for_complete(), generator.wait_ended())]
        for w in watchers:
            w.add_done_callback(lambda _: stop("the syncvid session ended"))
        try:
            return await stopped
        finally:
            for w in watchers:
                w.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)
    finally:
        room.off("participant_disconnected", on_left)
        room.off("connection_state_changed", on_state)
        if started:  # else aclose() raises; the job ends with its process anyway
            await runner.aclose()


def build_server(job: AvatarJob, load: SyncVidLoad, *, agent_name: str = AGENT_NAME, load_threshold: float = 1.0,
                 livekit_url: str | None = None, api_key: str | None = None, api_secret: str | None = None,
                 idle_processes: int = 1, executor: str = "process", http_port: int = 8081) -> AgentServer:
    """The ``AgentServer`` of ``syncvid livekit-worker``. ``load_threshold`` 1.0: LiveKit sends
    jobs while sessions in use < capacity. Credentials default to ``LIVEKIT_URL``,
    ``LIVEKIT_API_KEY``, ``LIVEKIT_API_SECRET``."""
    server = AgentServer(ws_url=livekit_url, api_key=api_key, api_secret=api_secret, load_fnc=load,
                         load_threshold=load_threshold, num_idle_processes=idle_processes,
                         job_executor_type=JobExecutorType(executor), port=http_port)
    server.rtc_session(job, agent_name=agent_name, on_request=job.request)
    return server


def run_worker(server: AgentServer, drain_timeout_s: int = DRAIN_TIMEOUT_S) -> int:
    """Runs ``server`` until SIGINT or SIGTERM, then lets the sessions in progress finish (up to
    ``drain_timeout_s``) while taking no new ones. Returns the exit status."""

    async def main() -> int:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        running = asyncio.ensure_future(server.run(devmode=False))
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if running.done():  # it gave up (cannot reach LiveKit, bad credentials...)
            exc = running.exception()
            if exc is not None:
                log.error("worker stopped: %s", exc)
            await server.aclose()
            return 1
        log.info("draining: no new avatar jobs, waiting for %d in progress", len(server.active_jobs))
        try:
            await server.drain(timeout=drain_timeout_s)
        except TIMEOUTS:
            log.warning("drain timed out after %d s; closing the remaining sessions", drain_timeout_s)
        await server.aclose()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await running
        return 0

    return asyncio.run(main())
