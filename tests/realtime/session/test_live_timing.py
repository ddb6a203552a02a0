"""The live session without a transport: audio packets and output slots driven in real time
against slow, failing and fused renderers."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
from live_helpers import drive, make_engine, make_scheduler, running, stop

from realtime.inference.messages import Drawn
from realtime.inference.worker import InferenceWorker
from realtime.session.config import MAX_LEVEL
from tests.fakes import FakeAvatar, FakeEncoder, FakeRenderer, mouth_darkness


class SlowRenderer(FakeRenderer):
    def __init__(self, seconds_per_frame: float) -> None:
        super().__init__()
        self.delay = seconds_per_frame

    def render_chunk(self, avatar, frame_indices, audio_blocks, state):
        time.sleep(self.delay * len(frame_indices))
        return super().render_chunk(avatar, frame_indices, audio_blocks, state)


async def test_slow_renderer_degrades_keeps_fps_and_recovers():
    renderer = SlowRenderer(0.05)  # slower than the 40 ms frame period: cannot keep up at full rate
    async with running(renderer, budget_s=0.25) as sched:
        out: list = []
        await drive(sched, 3.0, loud=True, out=out)
        assert len(out) >= 73  # every slot got a frame, renderer or not
        assert max(o[3] for o in out) <= 8  # bounded queue
        assert sched.level >= 2, sched.level
        m = sched.metrics
        assert m.frames_late.value > 0 and m.frames_repeated.value >= m.frames_late.value
        assert m.frames_rendered.value > 25  # still rendering a large share of the frames
        assert sched.level == MAX_LEVEL
        last = [kind for _, _, kind in list(sched.output.history)[-25:]]
        print("last second at the top level:", {k: last.count(k) for k in set(last)})
        assert last.count("speech") >= 10 and last.count("repeat") >= 10  # every other frame, on time
        assert last.count("late") <= 3
        assert max(renderer.calls) <= 4
        top = sched.level
        renderer.delay = 0.002
        out2: list = []
        await drive(sched, 3.0, loud=True, out=out2)
        assert sched.level < top, (top, sched.level)  # recovered at least one step
        assert len(out2) >= 73


class FlakyRenderer(FakeRenderer):
    """Fails every chunk while ``failing``; renders normally otherwise."""

    def __init__(self) -> None:
        super().__init__()
        self.failing = True
        self.failures = 0

    def render_chunk(self, avatar, frame_indices, audio_blocks, state):
        if self.failing:
            self.failures += 1
            raise RuntimeError("renderer failed on this chunk")
        return super().render_chunk(avatar, frame_indices, audio_blocks, state)


async def test_a_failing_renderer_keeps_the_frame_rate_and_the_session_recovers():
    renderer = FlakyRenderer()
    async with running(renderer) as sched:
        out: list = []
        await drive(sched, 1.0, loud=True, out=out)
        # every slot still got a frame (none rendered), the failures were counted, nothing piled up
        assert len(out) >= 23 and [o[0] for o in out] == list(range(out[0][0], out[0][0] + len(out)))
        assert renderer.failures >= 3 and sched.counts["render_failures"] == renderer.failures
        assert sched.metrics.frames_rendered.value == 0 and max(o[3] for o in out) == 0
        assert not any(t.done() for t in sched.tasks)  # the loops carry on
        renderer.failing = False
        out2: list = []
        await drive(sched, 1.0, loud=True, out=out2)
        assert len(out2) >= 23 and sched.metrics.frames_rendered.value >= 10
        rest = FakeAvatar().frame(0)
        assert sum(mouth_darkness(f, rest) > 0 for _, f, _, _ in out2) >= 10  # speech frames again


async def test_silence_sends_rest_frames_without_rendering():
    renderer = FakeRenderer()
    async with running(renderer) as sched:
        out: list = []
        await drive(sched, 1.2, loud=False, out=out)
        assert len(out) >= 28 and renderer.calls == []
        rest = FakeAvatar().frame(0)
        assert all(mouth_darkness(f, rest) == 0.0 for _, f, _, _ in out)
        assert sched.counts["rest"] == len(out) and sched.metrics.frames_late.value == 0
        assert sched.audio_backlog_s < 0.05  # the encoder keeps up; nothing accumulates


class FusedEncoder(FakeEncoder):
    """``push_render`` like the inference process: the push, then the frames the spec names that it
    completed and that can still make their deadline, rendered with ``renderer``. Frames complete
    when the streaming encoder's do (its newest step's mel frames, 12.5 ms past the look-ahead)."""

    def __init__(self, renderer) -> None:
        super().__init__()
        self.renderer, self.specs, self.drawn = renderer, [], 0

    def push(self, samples):
        self.audio = np.concatenate([self.audio, np.asarray(samples, np.float32)])
        out = []
        while 160 * (2 * (2 * self.next + round(self.lookahead * 50) - 1) + 2) + 200 <= len(self.audio):
            c = int(self.next * 16000 / self.fps)
            w = self.audio[max(0, c - 640) : c + 640]
            out.append((self.next, np.full((50, 384), float(np.sqrt(np.mean(w.astype(np.float64) ** 2))), np.float32)))
            self.next += 1
        return out

    def push_render(self, samples, spec):
        blocks = dict(self.push(samples))
        self.specs.append(spec)
        want = [(f.encoder_index, f.avatar_index) for f in spec.frames
                if f.encoder_index in blocks and time.monotonic() < f.deadline]
        frames = []
        if want:
            frames = self.renderer.render_chunk(FakeAvatar(), np.array([a for _, a in want]),
                                                np.stack([blocks[j] for j, _ in want]), None).frames
        self.drawn += len(frames)
        return sorted(blocks.items()), Drawn(tuple((j, f, None) for (j, _), f in zip(want, frames)), 0.001)


async def _fused_run(level: int | None, pull: bool = True):
    worker, drawer, loop_renderer = InferenceWorker(), FakeRenderer(), FakeRenderer()
    enc = FusedEncoder(drawer)
    sched = make_scheduler(loop_renderer, worker, encoder=enc)
    sched.state.remote_id = 7  # the renderer state lives "in the inference process": pushes draw
    sched.start()
    try:
        out: list = []
        if level is not None:
            sched.degrade.level = level
        await drive(sched, 1.6, loud=True, out=out, pull=pull)
        return sched, enc, loop_renderer, out
    finally:
        await stop(sched.tasks, worker)


async def test_frames_drawn_with_their_push_skip_the_render_loop():
    sched, enc, loop_renderer, out = await _fused_run(None)
    rest = FakeAvatar().frame(0)
    speech = [f for (s, f, _, _), (_, _, kind) in zip(out, sched.output.history) if kind == "speech"]
    assert enc.drawn >= 15 and len(speech) >= 15  # frames rendered in the push request were sent
    assert all(mouth_darkness(f, rest) > 0 for f in speech)
    assert loop_renderer.calls == []  # no second request for any of them
    assert sched.metrics.frames_rendered.value == enc.drawn
    assert sched.metrics.frames_late.value == 0 and sched.level == 0
    specs = [f.encoder_index for s in enc.specs for f in s.frames]
    assert len(specs) == len(set(specs))  # each frame asked for once
    for s in enc.specs:  # avatar frame and deadline are the session's own for that frame
        for f in s.frames:
            slot = sched.feed.enc_base + f.encoder_index + sched.grid.K
            assert f.avatar_index == sched.grid.avatar_index(slot)
            assert abs(f.deadline - sched.grid.slot_time(slot)) < 1e-9


async def test_frames_drawn_with_their_push_stay_bounded_when_no_video_is_pulled():
    sched, enc, _, _ = await _fused_run(None, pull=False)
    assert enc.drawn >= 8  # the pushes kept drawing ...
    assert 0 < len(sched.frames.ready) <= sched.config.max_frames_ahead  # ... but what waits for a slot is bounded
    assert sched.metrics.frames_dropped.value >= enc.drawn - sched.config.max_frames_ahead


async def test_top_level_thins_frames_before_the_push():
    sched, enc, loop_renderer, out = await _fused_run(MAX_LEVEL)
    asked = [sched.feed.enc_base + f.encoder_index for s in enc.specs for f in s.frames]
    assert asked and all(i % 2 == 0 for i in asked)  # odd frames repeat: never asked for
    kinds = [k for _, _, k in sched.output.history]
    assert kinds.count("repeat") >= 8 and kinds.count("speech") >= 8
    assert loop_renderer.calls == [] and sched.metrics.frames_late.value <= 1


def test_sessions_in_step_take_different_packet_boundaries_at_the_same_latency():
    """Two sessions whose packets arrive together: the second one's slots move by one packet (the
    frame period's other boundary), content with them, so its latency is the same; a closed
    session's boundary is free again."""
    worker = InferenceWorker()
    engine = make_engine(FakeRenderer(), worker)
    phases = engine.phases
    try:
        scheds = []
        for _ in range(3):
            s = make_scheduler(FakeRenderer(), worker, engine=engine)
            s.clock.t0 = 100.0  # clients started together
            scheds.append(s)
        a, b, c = scheds
        for s in (a, b):
            for k in range(10):
                s.ring16.write(np.zeros(320, np.float32))
                s.on_packet(s.ring16.end, 100.3 + 0.02 * k)
        assert a.grid.phi is not None and b.grid.phi is not None
        assert abs(abs(b.video_offset_s - a.video_offset_s) - 0.02) < 1e-9
        assert abs((b.grid.phi - b.video_offset_s) - (a.grid.phi - a.video_offset_s)) < 1e-9  # same delay
        assert max(a.video_offset_s, b.video_offset_s) < 0.04  # less than one frame
        phases.release(a.key)
        for k in range(10):
            c.ring16.write(np.zeros(320, np.float32))
            c.on_packet(c.ring16.end, 100.3 + 0.02 * k)
        assert abs(c.video_offset_s - a.video_offset_s) < 1e-9 and len(phases) == 2
    finally:
        worker.close()


def test_slot_phases_balance_the_frame_period():
    from realtime.session.shared import SlotPhases

    p = SlotPhases()
    picks = [p.choose(k, [0.005, 0.025], 0.04) for k in range(4)]
    assert sorted(picks) == [0, 0, 1, 1]  # two sessions per boundary
    # 0.015 is 10 ms from both loaded boundaries, 0.035 also 10 ms: equal load, the first wins
    assert p.choose(9, [0.015, 0.035], 0.04) == 0 and len(p) == 5
    p.release(9)
    p.release(0)
    assert p.choose(7, [0.005, 0.025], 0.04) == 0  # the freed, less loaded boundary


def test_one_burst_of_late_frames_raises_the_level_one_step():
    from realtime.session.config import LEVEL_UP_LATE, SETTLE_SLOTS

    sched = make_scheduler(FakeRenderer(), worker=None)
    for _ in range(LEVEL_UP_LATE + SETTLE_SLOTS):  # a burst: every slot late for 12 frame times
        sched.output._outcome(False)
    assert sched.level == 1  # one step; the frames after it were scheduled before it took effect
    for _ in range(LEVEL_UP_LATE):  # still late once the step had time to act: the next step
        sched.output._outcome(False)
    assert sched.level == 2
    for _ in range(SETTLE_SLOTS):  # on time while settling: no further step, no recovery yet
        sched.output._outcome(True)
    assert sched.level == 2


async def test_outgoing_audio_leaves_with_the_video_of_the_same_speech():
    """The speech's audio goes out delayed exactly like the frames that show it: the first loud
    audio frame and the first open-mouth frame of an onset leave within a frame of each other (the
    fake encoder opens the mouth up to 40 ms early: its window reaches 40 ms ahead)."""
    video: dict[int, np.ndarray] = {}  # slot -> frame
    audio: dict[int, int] = {}  # outgoing audio frame -> peak
    async with running(FakeRenderer()) as sched:
        clock = sched.clock
        t0 = clock.start()
        pkt = slot = k = 0
        rng = np.random.default_rng(1)
        onset_pkt = 50  # 1 s of silence, then 1 s of speech
        end = time.monotonic() + 2.6
        while time.monotonic() < end:
            t_pkt, t_slot, t_aud = t0 + pkt * 0.02, t0 + sched.video_offset_s + slot * 0.04, t0 + k * 0.02
            await asyncio.sleep(max(0.0, min(t_pkt, t_slot, t_aud) - time.monotonic()))
            now = time.monotonic()
            if now >= t_pkt:
                loud = onset_pkt <= pkt < onset_pkt + 50
                x = (0.3 * rng.standard_normal(320)).astype(np.float32) if loud else np.zeros(320, np.float32)
                sched.ring16.write(x)
                sched.ring48.write(np.full(960, 1000 if loud else 0, np.int16))
                sched.on_packet(sched.ring16.end, now)
                pkt += 1
            if now >= t_slot:
                video[slot] = sched.frame_for(slot)
                slot += 1
            if now >= t_aud:
                audio[k] = int(np.abs(sched.samples_for(k)).max())
                k += 1
    first_audio = min(j for j, peak in audio.items() if peak > 0)
    rest = video[0]
    first_video = min(s for s, f in video.items() if mouth_darkness(f, rest) > 1.0)
    assert all(peak == 0 for j, peak in audio.items() if j < first_audio)
    t_audio = first_audio * 0.02  # departure times on the session clock
    t_video = first_video * 0.04 + sched.video_offset_s
    assert -0.015 <= t_audio - t_video <= 0.055, (t_audio, t_video)
    assert sched.metrics.frames_late.value <= 1


async def test_an_encoder_backlog_is_skipped_and_the_session_carries_on():
    """More than MAX_ENCODE_BACKLOG_S of audio waiting (the server stalled, or a sender caught up
    after a hiccup): the backlog is skipped, speech after it is rendered, nothing fails."""
    from realtime.session.feed import MAX_ENCODE_BACKLOG_S

    async with running(FakeRenderer()) as sched:
        out: list = []
        await drive(sched, 1.0, loud=True, out=out)
        # the process stalled: the packets of that time arrive all at once when it wakes up
        stall = MAX_ENCODE_BACKLOG_S + 0.3
        time.sleep(stall)
        rng = np.random.default_rng(3)
        now = time.monotonic()
        for _ in range(round(stall / 0.02)):
            sched.ring16.write((0.3 * rng.standard_normal(320)).astype(np.float32))
            sched.ring48.write(np.zeros(960, np.int16))
            sched.on_packet(sched.ring16.end, now)
        sched._test_pkt += round(stall / 0.02)
        sched._test_slot += round(stall / 0.04)
        speech_before = sched.counts["speech"]
        await drive(sched, 1.5, loud=True, out=out)
        assert not any(t.done() for t in sched.tasks), [t.exception() for t in sched.tasks if t.done()]
        assert sched.counts["encode_skips"] >= 1
        assert sched.counts["speech"] - speech_before >= 20  # speech after the skip is rendered


def test_arrival_of_a_sample_past_the_input_is_when_it_would_arrive():
    """Frames an end of utterance makes over the assumed silence are timed from when that silence
    would have arrived, not from the last packet (which made their latency look 100+ ms too long)."""
    from realtime.metrics import ServerMetrics
    from realtime.session.config import SessionConfig
    from realtime.session.timeline import MediaClock, TimeGrid

    grid = TimeGrid(SessionConfig(), MediaClock(), ServerMetrics(), key=1)
    for k in range(1, 31):  # 30 packets of 320 samples, one every 20 ms from t = 100 s
        grid.observe(k * 320, 100.0 + k * 0.02, loud=True, quiet=lambda *a: False)
    assert grid.arrival_of(100) == pytest.approx(100.02)  # in the first packet
    assert grid.arrival_of(320) == pytest.approx(100.04)  # the first sample of the second packet
    # 100 ms past the last packet's end: the first sample of the sixth packet after it
    assert grid.arrival_of(30 * 320 + 1600) == pytest.approx(100.6 + 0.12)
    assert grid.arrival_of(30 * 320 + 1599) == pytest.approx(100.6 + 0.10)
