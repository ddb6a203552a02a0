"""The LiveKit side without a LiveKit server (none can be installed here): the worker's load and
dispatch metadata, and both ends of the room wiring on a small in-process fake of the SFU (RPC,
byte streams, participants, track publications) that the installed livekit-agents classes run on
unchanged: SyncVidAvatar + DataStreamAudioOutput in the agent's room, the worker's job entrypoint
(DataStreamAudioReceiver + AvatarRunner + SyncVidVideoGenerator) in the avatar's, against a real
syncvid server with fake models."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import time
import types
import wave
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("livekit.agents")

from livekit import api, rtc
from livekit.agents import AgentSession, AutoSubscribe
from livekit.agents.types import ATTRIBUTE_PUBLISH_ON_BEHALF
from livekit.agents.voice.avatar import DataStreamAudioOutput
from livekit.agents.voice.io import PlaybackFinishedEvent
from syncvid_client import AvatarClient
from syncvid_client.livekit import AvatarDispatch, SyncVidAvatar
from syncvid_client.livekit_worker import (
    AvatarJob,
    SyncVidLoad,
    healthz_url,
    session_load,
)


WAV = Path(__file__).resolve().parents[1] / "fixtures" / "arctic_a0007.wav"
RATE = 16000
FRAME_S = 0.04  # one output frame at 25 fps



# ---- pure parts ------------------------------------------------------------------------------------
@pytest.mark.parametrize("sessions, jobs, capacity, load", [
    (0, 0, 4, 0.0), (1, 0, 4, 0.25), (3, 0, 4, 0.75), (4, 0, 4, 1.0), (6, 0, 4, 1.0),
    (1, 2, 4, 0.5),  # jobs whose sessions are not open yet count
    (0, 0, 0, 1.0),  # no capacity: full
])
def test_session_load(sessions, jobs, capacity, load):
    assert session_load(sessions, jobs, capacity) == load


def test_healthz_url_and_dispatch_metadata():
    assert healthz_url("ws://10.0.0.5:8080/ws") == "http://10.0.0.5:8080/healthz"
    assert healthz_url("wss://gpu1.example:443/ws") == "https://gpu1.example:443/healthz"
    with pytest.raises(ValueError, match="ws://host:port/ws"):
        healthz_url("http://x/ws")
    d = AvatarDispatch("agent-1", "syncvid-avatar-r", avatar="anna", sample_rate=24000)
    assert json.loads(d.to_json()) == {"agent_identity": "agent-1", "avatar_identity": "syncvid-avatar-r",
                                       "avatar": "anna", "sample_rate": 24000}
    assert AvatarDispatch.from_json(d.to_json()) == d
    for bad, why in (("", "not JSON"), ("[1]", "JSON object"), ('{"agent_identity": "a"}', "avatar_identity"),
                     ('{"agent_identity": "a", "avatar_identity": "b", "x": 1}', "unknown fields"),
                     ('{"agent_identity": "a", "avatar_identity": "b", "sample_rate": 12345}', "sample_rate")):
        with pytest.raises(ValueError, match=why):
            AvatarDispatch.from_json(bad)


async def test_load_from_the_servers_healthz(server):
    fake_worker = types.SimpleNamespace(active_jobs=[])
    load = SyncVidLoad(f"http://127.0.0.1:{server.port}/healthz")
    assert await asyncio.to_thread(load, fake_worker) == 0.0
    async with AvatarClient(f"ws://127.0.0.1:{server.port}/ws", video="none"):
        assert await asyncio.to_thread(load, fake_worker) == 0.5  # 1 of max_sessions 2
        assert await asyncio.to_thread(SyncVidLoad(load.url, capacity=8), fake_worker) == 0.125
    fake_worker.active_jobs = [object()] * 2
    assert await asyncio.to_thread(load, fake_worker) == 1.0
    gone = SyncVidLoad("http://127.0.0.1:9/healthz", timeout=0.2)  # nothing listens: reads as full
    assert await asyncio.to_thread(gone, types.SimpleNamespace(active_jobs=[])) == 1.0


async def test_the_job_request_accepts_as_the_avatar_on_behalf_of_the_agent():
    answers = []

    class Request:
        id = "J1"

        def __init__(self, metadata):
            self.job = types.SimpleNamespace(metadata=metadata)

        async def accept(self, **kw):
            answers.append(("accept", kw))

        async def reject(self, terminate=True):
            answers.append(("reject", terminate))

    job = AvatarJob()
    await job.request(Request(AvatarDispatch("agent-7", "syncvid-avatar-room").to_json()))
    await job.request(Request("not json"))
    assert answers == [("accept", {"name": "avatar", "identity": "syncvid-avatar-room",
                                   "attributes": {ATTRIBUTE_PUBLISH_ON_BEHALF: "agent-7"}}),
                       ("reject", True)]


# ---- a fake SFU ------------------------------------------------------------------------------------
class FakeNetwork:
    """Rooms (one per participant, as each process sees its own) joined to one fake SFU."""

    def __init__(self) -> None:
        self.rooms: dict[str, FakeRoom] = {}
        self.rpc_log: list[tuple[float, str, str, str, str]] = []  # (time, caller, callee, method, payload)

    def join(self, identity: str, attributes: dict[str, str] | None = None) -> FakeRoom:
        room = FakeRoom(self, identity, attributes or {})
        for other in self.rooms.values():
            room.remote_participants[other.identity] = other.local_participant
            other.remote_participants[identity] = room.local_participant
            other.emit("participant_connected", room.local_participant)
            other.emit("participant_active", room.local_participant)
        self.rooms[identity] = room
        return room

    def leave(self, identity: str) -> None:
        room = self.rooms.pop(identity)
        for other in self.rooms.values():
            gone = other.remote_participants.pop(identity)
            other.emit("participant_disconnected", gone)
        room.emit("connection_state_changed", rtc.ConnectionState.CONN_DISCONNECTED)


class FakeParticipant:
    kind = rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
    state = rtc.ParticipantState.PARTICIPANT_STATE_ACTIVE

    def __init__(self, room: FakeRoom, identity: str, attributes: dict[str, str]) -> None:
        self.room, self.identity, self.attributes = room, identity, attributes
        self.track_publications: dict[str, types.SimpleNamespace] = {}
        self._rpc_handlers: dict = {}
        self._ids = itertools.count(1)

    def register_rpc_method(self, method: str, handler) -> None:
        self._rpc_handlers[method] = handler

    async def perform_rpc(self, *, destination_identity: str, method: str, payload: str,
                          response_timeout: float | None = None) -> str:
        net = self.room.net
        net.rpc_log.append((time.monotonic(), self.identity, destination_identity, method, payload))
        callee = net.rooms.get(destination_identity)
        handler = callee and callee.local_participant._rpc_handlers.get(method)
        if handler is None:
            raise rtc.RpcError(rtc.RpcError.ErrorCode.UNSUPPORTED_METHOD, f"no {method}")
        data = rtc.RpcInvocationData(f"rq{next(self._ids)}", self.identity, payload, 10.0, method)
        result = handler(data)
        return await result if asyncio.iscoroutine(result) else result

    async def stream_bytes(self, *, name: str, topic: str, destination_identities: list[str],
                           attributes: dict[str, str]) -> FakeWriter:
        info = rtc.ByteStreamInfo(f"st{next(self._ids)}", "application/octet-stream", topic, 0, None,
                                  attributes, name)
        readers = []
        for identity in destination_identities:
            room = self.room.net.rooms.get(identity)
            if room is not None and topic in room.stream_handlers:
                reader = FakeReader(info)
                room.stream_handlers[topic](reader, self.identity)
                readers.append(reader)
        return FakeWriter(readers)

    async def publish_track(self, track, options) -> types.SimpleNamespace:
        async def subscribed() -> None:
            return None

        publication = types.SimpleNamespace(sid=f"TR{next(self._ids)}", kind=track.kind, name=track.name,
                                            track=track, wait_for_subscription=subscribed)
        self.track_publications[publication.sid] = publication
        self.room.emit("local_track_published", publication, track)
        for other in self.room.net.rooms.values():
            if other is not self.room:
                other.emit("track_published", publication, self)
        return publication


class FakeReader:
    def __init__(self, info: rtc.ByteStreamInfo) -> None:
        self.info = info
        self.chunks: asyncio.Queue[bytes | None] = asyncio.Queue()

    def __aiter__(self):
        return self

    async def __anext__(self) -> bytes:
        chunk = await self.chunks.get()
        if chunk is None:
            raise StopAsyncIteration
        return chunk


class FakeWriter:
    def __init__(self, readers: list[FakeReader]) -> None:
        self.readers = readers

    async def write(self, data: bytes) -> None:
        for r in self.readers:
            r.chunks.put_nowait(bytes(data))

    async def aclose(self) -> None:
        for r in self.readers:
            r.chunks.put_nowait(None)


class FakeRoom(rtc.EventEmitter):
    name = "demo-room"

    def __init__(self, net: FakeNetwork, identity: str, attributes: dict[str, str]) -> None:
        super().__init__()
        self.net, self.identity = net, identity
        self.local_participant = FakeParticipant(self, identity, attributes)
        self.remote_participants: dict[str, FakeParticipant] = {}
        self.stream_handlers: dict = {}

    def isconnected(self) -> bool:
        return self.identity in self.net.rooms

    def register_byte_stream_handler(self, topic: str, handler) -> None:
        self.stream_handlers[topic] = handler


class FakeApi:
    """``LiveKitAPI.agent_dispatch``: records the dispatch and hands it to ``on_dispatch``."""

    def __init__(self, on_dispatch) -> None:
        self.requests: list = []
        self.deleted: list = []
        self.agent_dispatch = self
        self.on_dispatch = on_dispatch

    async def create_dispatch(self, req: api.CreateAgentDispatchRequest) -> api.AgentDispatch:
        self.requests.append(req)
        await self.on_dispatch(req)
        return api.AgentDispatch(id="AD_1", agent_name=req.agent_name, room=req.room, metadata=req.metadata)

    async def delete_dispatch(self, dispatch_id: str, room_name: str) -> None:
        self.deleted.append((dispatch_id, room_name))


def speech(start_s: float, seconds: float) -> np.ndarray:
    with wave.open(str(WAV)) as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), "<i2")
    return pcm[int(start_s * RATE): int((start_s + seconds) * RATE)].copy()


async def say(out: DataStreamAudioOutput, pcm: np.ndarray, flush: bool = True) -> None:
    """What the agent's TTS pipeline does: 20 ms frames into the audio output, then flush."""
    n = RATE // 50
    for k in range(0, len(pcm), n):
        await out.capture_frame(rtc.AudioFrame(pcm[k:k + n].tobytes(), RATE, 1, len(pcm[k:k + n])))
    if flush:
        out.flush()


async def test_agent_and_avatar_over_a_fake_room(server):
    """SyncVidAvatar dispatches; the worker's job joins as the avatar and runs AvatarRunner; speech
    streams on lk.audio_stream; lk.playback_finished comes back as the installed agents parse it,
    for a segment played out and for one cut by lk.clear_buffer."""
    net = FakeNetwork()
    agent_room = net.join("agent-1")
    jobs: list[asyncio.Task] = []
    shutdowns: list[str] = []

    async def worker_takes(req: api.CreateAgentDispatchRequest) -> None:
        accepted = []

        class Request:
            id, job = "J1", types.SimpleNamespace(metadata=req.metadata)

            async def accept(self, **kw):
                accepted.append(kw)

        job = AvatarJob(syncvid_url=f"ws://127.0.0.1:{server.port}/ws", join_timeout_s=5.0)
        await job.request(Request())
        avatar_room = net.join(accepted[0]["identity"], accepted[0]["attributes"])

        async def connect(**kw) -> None:
            assert kw == {"auto_subscribe": AutoSubscribe.SUBSCRIBE_NONE}  # speech comes as data

        ctx = types.SimpleNamespace(job=Request.job, room=avatar_room, connect=connect, shutdown=shutdowns.append)
        jobs.append(asyncio.create_task(job(ctx)))

    lkapi = FakeApi(worker_takes)
    avatar = SyncVidAvatar(avatar="default", sample_rate=RATE, lkapi=lkapi)
    session = AgentSession()  # the real one: the avatar replaces its audio output
    await avatar.start(session, agent_room)
    await avatar.wait_for_join(timeout=5.0)  # the avatar is in the room with its video track

    (req,) = lkapi.requests
    assert (req.agent_name, req.room) == ("syncvid-avatar", "demo-room")
    assert AvatarDispatch.from_json(req.metadata) == AvatarDispatch(
        agent_identity="agent-1", avatar_identity="syncvid-avatar-demo-room", avatar="default", sample_rate=RATE)
    avatar_p = agent_room.remote_participants["syncvid-avatar-demo-room"]
    assert avatar_p.attributes == {ATTRIBUTE_PUBLISH_ON_BEHALF: "agent-1"}
    assert sorted((p.name, p.kind) for p in avatar_p.track_publications.values()) == [
        ("avatar_audio", rtc.TrackKind.KIND_AUDIO), ("avatar_video", rtc.TrackKind.KIND_VIDEO)]
    out = session.output.audio
    assert isinstance(out, DataStreamAudioOutput) and out.sample_rate == RATE

    # a segment that plays out
    pcm = speech(0.4, 1.0)
    await say(out, pcm)
    done = await asyncio.wait_for(out.wait_for_playout(), 5.0)
    assert not done.interrupted and done.playback_position == pytest.approx(1.0, abs=2 * FRAME_S)
    calls = [(m, p) for _, c, _, m, p in net.rpc_log if c == "syncvid-avatar-demo-room"]
    assert [m for m, _ in calls] == ["lk.playback_started", "lk.playback_finished"]
    # the payload as the installed agents parse it (extra keys would raise here)
    assert dataclasses.asdict(PlaybackFinishedEvent(**json.loads(calls[1][1]))) == dataclasses.asdict(done)

    # a segment cut by the agent's clear_buffer 0.4 s after it started playing
    mark = len(net.rpc_log)
    await say(out, speech(1.6, 2.0), flush=False)
    while not any(m == "lk.playback_started" for _, _, _, m, _ in net.rpc_log[mark:]):
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.4)
    out.clear_buffer()
    cut = await asyncio.wait_for(out.wait_for_playout(), 2.0)  # the agent gives up after 2 s
    assert cut.interrupted and 0.3 < cut.playback_position < 0.7, cut
    rpcs = [(t, m) for t, _, _, m, _ in net.rpc_log[mark:]]
    t_clear = next(t for t, m in rpcs if m == "lk.clear_buffer")
    t_finished = next(t for t, m in rpcs if m == "lk.playback_finished")
    assert 0 <= t_finished - t_clear < FRAME_S  # within one frame time
    await asyncio.sleep(0.3)
    assert [m for _, m in rpcs] == ["lk.playback_started", "lk.clear_buffer", "lk.playback_finished"]
    assert [m for _, _, _, m, _ in net.rpc_log[mark + 3:]] == []  # no stray segment end after the cut

    # the agent leaves: the job ends and its session closes
    await avatar.aclose()
    net.leave("agent-1")
    await asyncio.wait_for(jobs[0], 5.0)
    assert shutdowns == ["the agent left"]
    assert lkapi.deleted == [("AD_1", "demo-room")]


async def run_job(server, net: FakeNetwork, dispatch: AvatarDispatch, join_timeout_s: float = 5.0):
    """The worker's job entrypoint in ``net`` as the avatar: (task, shutdown reasons)."""
    shutdowns: list[str] = []
    room = net.join(dispatch.avatar_identity)

    async def connect(**kw) -> None:
        pass

    ctx = types.SimpleNamespace(job=types.SimpleNamespace(metadata=dispatch.to_json()), room=room, connect=connect,
                                shutdown=shutdowns.append)
    job = AvatarJob(syncvid_url=f"ws://127.0.0.1:{server.port}/ws", join_timeout_s=join_timeout_s)
    return asyncio.create_task(job(ctx)), shutdowns


async def test_the_job_ends_when_the_agent_never_comes_or_the_syncvid_server_goes(server):
    net = FakeNetwork()
    task, shutdowns = await run_job(server, net, AvatarDispatch("nobody", "syncvid-avatar-a"), join_timeout_s=0.3)
    await asyncio.wait_for(task, 3.0)
    assert shutdowns == ["the agent did not join"]

    net.join("agent-2")
    task, shutdowns = await run_job(server, net, AvatarDispatch("agent-2", "syncvid-avatar-b"))
    avatar_p = net.rooms["agent-2"].remote_participants["syncvid-avatar-b"]
    while not avatar_p.track_publications:  # serving: its first frames published the tracks
        await asyncio.sleep(0.01)
    await server.close()  # the syncvid server shuts down
    await asyncio.wait_for(task, 5.0)
    assert shutdowns == ["the syncvid session ended"]
