"""A LiveKit agent with a syncvid avatar: in every new room it starts the avatar, then says a WAV
file every few seconds (put your STT, LLM and TTS into the AgentSession for a real conversation:
the avatar needs no change). Open the room in LiveKit's Agents Playground or any LiveKit client to
see and hear it.

    pip install -e 'clients/python[livekit]'
    export LIVEKIT_URL=ws://127.0.0.1:7880 LIVEKIT_API_KEY=devkey LIVEKIT_API_SECRET=secret
    livekit-server --dev &                      # or your LiveKit deployment (docs/scaling.md)
    syncvid serve &                             # the avatar engine, ws://127.0.0.1:8080/ws
    syncvid livekit-worker &                    # serves its avatars to LiveKit as `syncvid-avatar`
    SPEECH_WAV=tests/fixtures/arctic_a0007.wav \
        python clients/python/examples/livekit_avatar_agent.py dev

``SYNCVID_AVATAR`` picks an avatar from the server's library (``syncvid serve --avatars DIR``).
The argument (``dev``, ``start``...) goes to LiveKit's agent CLI.
"""

from __future__ import annotations

import asyncio
import logging
import os
import wave
from collections.abc import AsyncIterator

from livekit import rtc
from livekit.agents import Agent, AgentServer, AgentSession, JobContext, cli, room_io
from syncvid_client.livekit import SyncVidAvatar

log = logging.getLogger("livekit_avatar_agent")

FRAME_S = 0.02  # agents hand their audio output 20 ms frames
PAUSE_S = 3.0  # between two sayings


async def wav_frames(path: str) -> AsyncIterator[rtc.AudioFrame]:
    """A 16-bit PCM WAV as 20 ms mono frames (the agent resamples them to the avatar's rate)."""
    with wave.open(path) as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{path}: 16-bit PCM WAV needed, got {8 * w.getsampwidth()}-bit")
        rate, channels = w.getframerate(), w.getnchannels()
        n = round(rate * FRAME_S)
        while chunk := w.readframes(n):
            yield rtc.AudioFrame(chunk, rate, channels, len(chunk) // (2 * channels))


server = AgentServer()


@server.rtc_session()  # no agent name: dispatched into every new room (the avatar worker is explicit only)
async def entrypoint(ctx: JobContext) -> None:
    await ctx.connect()
    session = AgentSession()
    avatar = SyncVidAvatar(avatar=os.environ.get("SYNCVID_AVATAR") or None)
    await avatar.start(session, room=ctx.room)  # before session.start: the avatar takes the agent's audio
    await session.start(agent=Agent(instructions="You are a friendly avatar."), room=ctx.room,
                        room_options=room_io.RoomOptions(audio_input=False))  # no STT here: nothing to hear
    await avatar.wait_for_join()  # TimeoutError when no syncvid worker took the job
    path = os.environ.get("SPEECH_WAV")
    if not path:
        log.warning("set SPEECH_WAV to a 16-bit WAV for the avatar to say")
        return
    while ctx.room.isconnected():
        await session.say("(speech from a WAV file)", audio=wav_frames(path)).wait_for_playout()
        await asyncio.sleep(PAUSE_S)


if __name__ == "__main__":
    cli.run_app(server)
