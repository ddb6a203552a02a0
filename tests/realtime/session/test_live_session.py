"""The transport-neutral session on its own, no network: speech samples in, per slot a frame, its
audio and its events out; interrupt; end of utterance."""

from __future__ import annotations

import asyncio
import time

import numpy as np
from live_helpers import make_scheduler

from realtime.inference.worker import InferenceWorker
from realtime.session.live import SlotFrame
from realtime.session.timeline import ReadyFrame
from tests.fakes import FakeAvatar, FakeRenderer, mouth_darkness

REST = FakeAvatar().frame(0)
LOUD48 = 8000  # int16 level of the outgoing copy of loud input


async def run(session, packets: list[bool], seconds: float, actions: dict[int, str] | None = None) -> list[SlotFrame]:
    """Sends ``packets`` (True: loud 20 ms, False: silence) in real time, then nothing more, and
    pulls every slot for ``seconds``; ``actions``: packet index -> "interrupt" | "eou" done before it."""
    rng = np.random.default_rng(0)
    actions = actions or {}
    t0 = session.clock.start()
    out: list[SlotFrame] = []
    pkt = slot = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t_pkt, t_slot = t0 + pkt * 0.02, t0 + session.video_offset_s + slot * 0.04
        await asyncio.sleep(max(0.0, min(t_pkt if pkt < len(packets) else end, t_slot) - time.monotonic()))
        now = time.monotonic()
        if pkt < len(packets) and now >= t_pkt:
            if actions.get(pkt) == "interrupt":
                session.interrupt()
            if actions.get(pkt) == "eou":
                session.end_of_utterance()
            loud = packets[pkt]
            x16 = (0.3 * rng.standard_normal(320)).astype(np.float32) if loud else np.zeros(320, np.float32)
            session.push_audio(x16, np.full(960, LOUD48 if loud else 0, np.int16), now)
            pkt += 1
        if pkt >= len(packets) and actions.get(len(packets)) == "eou":
            session.end_of_utterance()
            actions.pop(len(packets))
        if now >= t_slot:
            out.append(session.slot(slot))
            slot += 1
    return out


async def with_session(fn, **kw):
    worker = InferenceWorker()
    session = make_scheduler(FakeRenderer(), worker, **kw)
    session.start()
    try:
        return session, await fn(session)
    finally:
        await session.close()
        worker.close()


async def test_speech_in_frames_audio_and_events_out():
    packets = [False] * 25 + [True] * 50 + [False] * 40  # 0.5 s silence, 1 s speech, 0.8 s silence
    session, out = await with_session(lambda s: run(s, packets, 2.4))
    slots = [o.slot for o in out]
    assert slots == list(range(len(out))) and len(out) >= 57  # one frame per slot on the clock
    speech = [o for o in out if o.kind == "speech"]
    assert len(speech) >= 20
    assert all(o.speaking and o.event is not None for o in speech)  # every rendered frame has its event
    # the mouth is open and the event says so (but at the onset and in the hangover: the fake
    # opens it by the level of the 80 ms around the frame)
    open_ = [o for o in speech if o.event.visemes["aa"] > 0.5 and mouth_darkness(o.image, REST) > 15.0]
    assert len(open_) >= len(speech) - 4, [(o.slot, o.event.visemes["aa"]) for o in speech]
    rest = [o for o in out if o.kind == "rest"]
    assert len(rest) >= 20 and all(not o.speaking and o.event is None for o in rest)
    assert all(mouth_darkness(o.image, REST) == 0.0 for o in rest)
    # each slot's audio is the speech its frame shows: loud with the speech frames, silent at rest
    loud = {o.slot for o in out if np.abs(session.slot_audio(o.slot)).max() == LOUD48}
    shown = {o.slot for o in speech}
    assert len(shown & loud) >= 0.8 * len(shown)
    assert not loud & {o.slot for o in rest if o.slot < min(shown)}  # silent before the speech


async def test_interrupt_drops_what_is_pending_at_once():
    packets = [False] * 25 + [True] * 60 + [False] * 20
    session, out = await with_session(lambda s: run(s, packets, 2.2, actions={60: "interrupt"}))
    t_int = 60 * 0.02  # on the session clock, content time of the interrupt
    speech_slots = [o.slot for o in out if o.kind == "speech"]
    assert speech_slots, out
    after = [o for o in out if o.slot * 0.04 + session.video_offset_s > t_int + 0.04]
    # speech that arrived before the interrupt but had not left yet never shows, nor sounds
    first_after = [o for o in after if o.slot * 0.04 + session.video_offset_s < t_int + 0.12]
    assert first_after and all(o.kind != "speech" for o in first_after), [o.kind for o in first_after]
    assert session.counts["speech"] >= 10
    assert session.metrics.interrupts.value == 1


async def test_end_of_utterance_makes_the_last_frames_without_their_lookahead():
    """The speaker stops and no more audio comes (a TTS stream that ended): without
    ``end_of_utterance`` the last words wait for look-ahead audio that never arrives and show as
    late; with it they are rendered and the mouth closes."""
    packets = [False] * 25 + [True] * 40  # then nothing at all

    async def last_kinds(eou: bool):
        session, out = await with_session(lambda s: run(s, packets, 2.0, actions={len(packets): "eou"} if eou else {}))
        return session, [o.kind for o in out]

    plain, kinds_plain = await last_kinds(False)
    tail, kinds_tail = await last_kinds(True)
    assert kinds_plain.count("late") >= 2, kinds_plain  # the frames needing the missing look-ahead
    assert kinds_tail.count("late") <= 1, "".join(k[0] for k in kinds_tail)
    assert kinds_tail.count("speech") >= kinds_plain.count("speech") + 2
    assert kinds_tail[-5:] == ["rest"] * 5  # and then the mouth is at rest


def test_a_rest_slot_with_no_rest_frame_ready_shows_the_last_rest_frame_not_the_photo():
    """Just after an interrupt (or an utterance) no rest frame may be ready for the next slot: it
    shows the last rest frame (mouth closed), never the avatar's own frame (a photo's smile)."""
    worker = InferenceWorker()
    live = make_scheduler(FakeRenderer(), worker)
    photo = live.avatar.frame(0)
    rest = np.full_like(photo, 7)  # a prepared rest frame, unlike the photo
    speech = np.full_like(photo, 200)
    live.frames.rest[0] = rest
    assert live.slot(0).image is rest
    live.frames.ready[1] = ReadyFrame(speech, None, 0.0)
    assert live.slot(1).kind == "speech"
    live.interrupt()
    out = live.slot(2)  # nothing prepared for this slot
    assert out.kind == "rest" and out.image is rest
    worker.close()


async def test_the_first_slot_shows_a_rest_frame_made_before_it_not_the_photo():
    """A session's very first slot comes before any rest frame of the planner: ``prime`` makes one
    first, so the viewer never sees the photo's own mouth (then a snap to the rest pose)."""
    worker = InferenceWorker()
    live = make_scheduler(FakeRenderer(), worker)
    photo = live.avatar.frame(0)
    assert live.slot(0).image is photo  # unprimed: the only fallback is the avatar's frame
    live = make_scheduler(FakeRenderer(), worker)
    await live.prime()
    first = live.slot(0)
    expected = FakeRenderer().rest_frame(live.avatar, 0, live.state)
    assert first.kind == "rest" and first.image is not photo
    np.testing.assert_array_equal(first.image, expected)
    worker.close()
