"""LiveKit Agents integration: a syncvid avatar in a LiveKit room, the way the hosted avatar
plug-ins work (``livekit-agents`` 1.8; ``pip install 'syncvid-client[livekit]'``).

Agent side: :class:`SyncVidAvatar` asks LiveKit to dispatch a ``syncvid livekit-worker`` into the
room and sends the agent's speech to the avatar participant it starts
(``DataStreamAudioOutput``: byte streams on ``lk.audio_stream``, ``lk.clear_buffer`` and
``lk.playback_finished`` RPCs)::

    avatar = SyncVidAvatar(avatar="default")
    await avatar.start(session, room=ctx.room)    # before session.start()
    await session.start(agent=..., room=ctx.room)

Avatar side (what the worker runs per room, ``syncvid_client.livekit_worker``):
:class:`SyncVidVideoGenerator` is a livekit-agents ``VideoGenerator`` backed by one avatar-SDK
session: ``AvatarRunner`` feeds it the received speech and publishes the ``rtc.VideoFrame`` and
``rtc.AudioFrame`` it yields, so ``lk.clear_buffer`` and ``lk.playback_finished`` follow
LiveKit's own runner.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import aiohttp
import numpy as np
from livekit import api, rtc
from livekit.agents.voice.avatar import (
    AudioSegmentEnd,
    AvatarOptions,
    AvatarSession,
    DataStreamAudioOutput,
    VideoGenerator,
)

from .client import TIMEOUTS, AvatarClient
from .events import (
    Frame,
    OtherEvent,
    PlaybackFinished,
    PlaybackStarted,
    ServerError,
    SessionStarted,
)
from .jpeg import find_jpeg_decoder
from .wire import SAMPLE_RATES

if TYPE_CHECKING:
    from typing import Self

    from livekit.agents.voice import AgentSession

log = logging.getLogger(__name__)

AGENT_NAME = "syncvid-avatar"  # the worker's name for explicit dispatch
DEFAULT_SAMPLE_RATE = 24000  # TTS services commonly speak at 24 kHz: no resampling on either side
AVATAR_IDENTITY_PREFIX = "syncvid-avatar-"  # + the room's name


@dataclasses.dataclass(frozen=True)
class AvatarDispatch:
    """What the agent side tells the worker it dispatches: the job's metadata, as JSON.

    The worker accepts the job as ``avatar_identity`` with ``lk.publish_on_behalf`` =
    ``agent_identity`` (LiveKit mints that participant's token) and opens its syncvid session with
    ``avatar`` at ``sample_rate``, the rate the agent streams its speech at.
    """

    agent_identity: str
    avatar_identity: str
    avatar: str | None = None
    sample_rate: int = DEFAULT_SAMPLE_RATE

    def __post_init__(self) -> None:
        for name in ("agent_identity", "avatar_identity"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"{name} must be a non-empty string; got {value!r}")
        if self.avatar is not None and (not isinstance(self.avatar, str) or not self.avatar):
            raise ValueError(f"avatar must be a non-empty name or None; got {self.avatar!r}")
        if self.sample_rate not in SAMPLE_RATES:
            raise ValueError(f"sample_rate must be one of {SAMPLE_RATES}; got {self.sample_rate!r}")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> AvatarDispatch:
        """Raises ``ValueError`` naming what is wrong (not JSON, a missing or unknown field...)."""
        try:
            fields = json.loads(text or "")
        except ValueError:
            raise ValueError(f"avatar dispatch metadata is not JSON: {text[:80]!r}") from None
        if not isinstance(fields, dict):
            raise ValueError("avatar dispatch metadata must be a JSON object")  # noqa: TRY004 (a bad value)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise ValueError(f"avatar dispatch metadata has unknown fields {unknown}")
        try:
            return cls(**fields)
        except TypeError as exc:  # a required field missing
            raise ValueError(f"avatar dispatch metadata: {exc}") from None


def avatar_identity_for(room_name: str) -> str:
    return AVATAR_IDENTITY_PREFIX + room_name


# ---- agent side ------------------------------------------------------------------------------------
class SyncVidAvatar(AvatarSession):
    """A syncvid avatar for an ``AgentSession``: dispatches the ``syncvid-avatar`` worker into the
    room and routes the agent's audio to the avatar participant it starts.

    ``avatar``: a name from the syncvid server's library (``GET /avatars``; None: its default).
    ``url``, ``api_key``, ``api_secret``: the LiveKit server the dispatch goes through (default
    ``LIVEKIT_URL``, ``LIVEKIT_API_KEY``, ``LIVEKIT_API_SECRET``, which a LiveKit worker exports
    to its jobs). ``sample_rate``: the rate the agent's speech is streamed at (the TTS's, ideally).
    ``lkapi``: a ``livekit.api.LiveKitAPI`` to use instead (it is not closed here).

    ``await avatar.wait_for_join()`` after ``start`` raises ``TimeoutError`` when no worker took
    the job within 30 s (none registered, or all full).
    """

    def __init__(self, *, avatar: str | None = None, url: str | None = None, api_key: str | None = None,
                 api_secret: str | None = None, agent_name: str = AGENT_NAME, avatar_identity: str | None = None,
                 sample_rate: int = DEFAULT_SAMPLE_RATE, lkapi: api.LiveKitAPI | None = None) -> None:
        super().__init__()
        if sample_rate not in SAMPLE_RATES:
            raise ValueError(f"sample_rate must be one of {SAMPLE_RATES}; got {sample_rate!r}")
        if avatar is not None and (not isinstance(avatar, str) or not avatar):
            raise ValueError(f"avatar must be a non-empty name; got {avatar!r}")
        self.avatar, self.agent_name, self.sample_rate = avatar, agent_name, sample_rate
        self._credentials = (url, api_key, api_secret)
        self._lkapi = lkapi
        self._identity = avatar_identity
        self._dispatch_id: str | None = None
        self._room_name = ""

    @property
    def avatar_identity(self) -> str:
        return self._identity or avatar_identity_for(self._room_name)

    @property
    def provider(self) -> str:
        return "syncvid"

    async def start(self, agent_session: AgentSession, room: rtc.Room) -> None:
        self._room_name = room.name  # before the base class starts waiting for avatar_identity
        await super().start(agent_session, room)
        if room.isconnected():
            agent_identity = room.local_participant.identity
        else:  # the job's token says who the agent will be
            from livekit.agents import get_job_context

            agent_identity = get_job_context().local_participant_identity
        dispatch = AvatarDispatch(agent_identity=agent_identity, avatar_identity=self.avatar_identity,
                                  avatar=self.avatar, sample_rate=self.sample_rate)
        request = api.CreateAgentDispatchRequest(agent_name=self.agent_name, room=room.name,
                                                 metadata=dispatch.to_json())
        lkapi = self._lkapi or api.LiveKitAPI(*self._credentials)
        try:
            created = await lkapi.agent_dispatch.create_dispatch(request)
        finally:
            if self._lkapi is None:
                await lkapi.aclose()
        self._dispatch_id = created.id or None
        log.info("dispatched %s to room %s as %s", self.agent_name, room.name, self.avatar_identity)
        agent_session.output.audio = DataStreamAudioOutput(
            room, destination_identity=self.avatar_identity, sample_rate=self.sample_rate,
            wait_remote_track=rtc.TrackKind.KIND_VIDEO,  # speech waits until the avatar shows
            wait_playback_start=True)  # the runner reports when the first frame of speech plays

    async def aclose(self) -> None:
        """Removes the avatar participant (as every plug-in does) and deletes the dispatch, so
        LiveKit does not start the avatar again in this room."""
        dispatch_id, room_name, self._dispatch_id = self._dispatch_id, self._room_name, None
        await super().aclose()
        if dispatch_id is None:
            return
        lkapi = self._lkapi or api.LiveKitAPI(*self._credentials)
        try:
            await lkapi.agent_dispatch.delete_dispatch(dispatch_id, room_name)
        except (api.TwirpError, aiohttp.ClientError, OSError, *TIMEOUTS) as exc:  # the room may be gone
            log.debug("deleting dispatch %s failed: %s", dispatch_id, exc)
        finally:
            if self._lkapi is None:
                await lkapi.aclose()


# ---- avatar side -----------------------------------------------------------------------------------
class SyncVidVideoGenerator(VideoGenerator):
    """``async with SyncVidVideoGenerator(url, avatar=...) as gen:`` a livekit-agents
    ``VideoGenerator`` backed by one syncvid avatar-SDK session (opened on enter).

    ``push_audio`` sends ``rtc.AudioFrame`` speech (any rate: other than ``sample_rate`` it is
    resampled) and ``AudioSegmentEnd`` as the end of an utterance; ``clear_buffer()`` interrupts.
    Iterating yields, per output frame at the avatar's rate, an ``rtc.VideoFrame`` (RGB24) and,
    while an utterance plays, the ``rtc.AudioFrame`` of that frame's speech (the runner counts
    ``playback_position`` from these, so rest frames carry none), then ``AudioSegmentEnd`` once
    an utterance has played out (never for one cut by ``clear_buffer``: the runner reports that
    itself). ``last_frame`` is the syncvid frame of the latest video frame (``speaking``,
    ``visemes``, ``blendshapes``). Iterate from one task only.

    ``video``: ``"raw"`` (no codec; for a server on the same host or LAN) or ``"jpeg"`` (needs
    Pillow or OpenCV to decode).
    """

    def __init__(self, url: str, avatar: str | None = None, token: str | None = None, *,
                 sample_rate: int = DEFAULT_SAMPLE_RATE, video: str = "raw", low_latency: bool = False,
                 open_timeout: float = 10.0) -> None:
        if video not in ("raw", "jpeg"):
            raise ValueError(f"video must be 'raw' or 'jpeg'; got {video!r}")
        if video == "jpeg" and find_jpeg_decoder() is None:
            raise ValueError("video='jpeg' needs Pillow or OpenCV to decode the frames: "
                             "pip install pillow, or use video='raw'")
        self._client = AvatarClient(url, avatar=avatar, video=video, token=token, sample_rate=sample_rate,
                                    low_latency=low_latency, open_timeout=open_timeout)
        self.last_frame: Frame | None = None
        self._playing = False  # between an utterance's playback_started and its playback_finished
        self._clears_pending = 0  # interrupts sent whose `interrupted` acknowledgment has not come
        self._iterating = False
        self._ended = asyncio.Event()  # the session's output ended (closed, or the server cut it)

    async def __aenter__(self) -> Self:
        await self._client.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.close()

    @property
    def started(self) -> SessionStarted:
        if self._client.started is None:
            raise RuntimeError("not connected: use `async with SyncVidVideoGenerator(...)` first")
        return self._client.started

    def avatar_options(self) -> AvatarOptions:
        """The ``AvatarRunner`` options matching this session's frames and audio."""
        s = self.started
        return AvatarOptions(video_width=s.width, video_height=s.height, video_fps=s.fps,
                             audio_sample_rate=s.sample_rate, audio_channels=1)

    async def push_audio(self, frame: rtc.AudioFrame | AudioSegmentEnd) -> None:
        if isinstance(frame, AudioSegmentEnd):
            await self._client.end_utterance()
            return
        samples = np.frombuffer(frame.data, dtype=np.int16)
        if frame.num_channels > 1:
            samples = samples.reshape(-1, frame.num_channels)  # averaged to mono by send_audio
        await self._client.send_audio(samples, sample_rate=frame.sample_rate)

    async def clear_buffer(self) -> None:
        """Drops the speech not played yet. From here until the server acknowledges, frames come
        without audio (frames already on their way still show the mouth for up to a round trip)."""
        self._clears_pending += 1
        self._playing = False
        await self._client.interrupt()

    async def wait_ended(self) -> None:
        """Returns once iteration has ended: the session closed or broke off."""
        await self._ended.wait()

    def __aiter__(self) -> AsyncIterator[rtc.VideoFrame | rtc.AudioFrame | AudioSegmentEnd]:
        if self._iterating:
            raise RuntimeError("a SyncVidVideoGenerator is iterated by one consumer only")
        self._iterating = True
        return self._stream()

    async def _stream(self) -> AsyncIterator[rtc.VideoFrame | rtc.AudioFrame | AudioSegmentEnd]:
        try:
            async with contextlib.aclosing(self._items()) as items:
                async for item in items:
                    yield item
        finally:
            self._ended.set()

    async def _items(self) -> AsyncIterator[rtc.VideoFrame | rtc.AudioFrame | AudioSegmentEnd]:
        rate = self.started.sample_rate
        async for event in self._client.events():
            if isinstance(event, Frame):
                self.last_frame = event
                if event.image is not None:
                    height, width = event.image.shape[:2]
                    yield rtc.VideoFrame(width, height, rtc.VideoBufferType.RGB24, event.image.tobytes())
                if self._playing and not self._clears_pending and event.audio is not None and len(event.audio):
                    yield rtc.AudioFrame(event.audio.tobytes(), rate, 1, len(event.audio))
            elif isinstance(event, PlaybackStarted):
                # before the acknowledgment it is an utterance the pending interrupt drops
                self._playing = not self._clears_pending
            elif isinstance(event, PlaybackFinished):
                self._playing = False
                if not event.interrupted and not self._clears_pending:
                    yield AudioSegmentEnd()
            elif isinstance(event, OtherEvent) and event.event == "interrupted":
                self._clears_pending = max(0, self._clears_pending - 1)
            elif isinstance(event, ServerError):
                log.warning("syncvid server: %s (%s)", event.message, event.code)
