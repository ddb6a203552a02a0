"""A renderer that fails for one session: that session keeps its frame rate (repeating frames) and
stays open; the other session speaks at full rate, untouched."""

from __future__ import annotations

import asyncio
import time

from syncvid_client import AvatarClient, Frame

from tests.fakes import FakeRenderer, make_engine, running_server, speech_like

BROKEN_SEED = 13


class FailsForOneSession(FakeRenderer):
    """Raises on every chunk of the session started with ``seed`` BROKEN_SEED (a model fault that
    one session's input or state triggers)."""

    def render_chunk(self, avatar, frame_indices, audio_blocks, state):
        if state.seed == BROKEN_SEED:
            raise RuntimeError("renderer fault")
        return super().render_chunk(avatar, frame_indices, audio_blocks, state)


async def _speak_and_count(client: AvatarClient, seconds: float) -> tuple[float, int, int]:
    """Sends ``seconds`` of speech at once; returns (frames per second received, frames, speaking frames)."""
    pcm = (speech_like(seconds, 16000, 1) * 32767).astype("int16")
    await client.send_audio(pcm)
    frames = speaking = 0
    t0 = None

    async def run():
        nonlocal frames, speaking, t0
        async for ev in client.events():
            if isinstance(ev, Frame):
                t0 = t0 or time.monotonic()
                frames += 1
                speaking += ev.speaking

    try:
        await asyncio.wait_for(run(), seconds)
    except asyncio.TimeoutError:
        pass
    return (frames - 1) / (time.monotonic() - t0), frames, speaking


async def test_a_renderer_failing_for_one_session_leaves_the_other_at_full_rate():
    async with running_server(engine=make_engine(FailsForOneSession())) as srv:
        url = f"ws://127.0.0.1:{srv.port}/ws"
        async with AvatarClient(url, video="raw", seed=BROKEN_SEED) as broken, \
                AvatarClient(url, video="raw", seed=0) as healthy:
            (fps_b, n_b, speaking_b), (fps_h, n_h, speaking_h) = await asyncio.gather(
                _speak_and_count(broken, 3.0), _speak_and_count(healthy, 3.0))
            assert 23.0 <= fps_h <= 27.0 and speaking_h >= 40, (fps_h, speaking_h)  # untouched
            assert 23.0 <= fps_b <= 27.0, fps_b  # frames keep coming (repeated), at the rate
            assert len(srv.sessions) == 2  # and the failing one is not torn down
            broken_session = next(s for s in srv.sessions if s.live.state.seed == BROKEN_SEED)
            assert broken_session.live.counts["render_failures"] >= 3
