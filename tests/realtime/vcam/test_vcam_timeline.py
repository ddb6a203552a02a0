"""The virtual camera's timeline on a simulated clock: packets, slots and camera frames when due,
the sound card's blocks on the video's timeline, and no drift over hours."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from realtime.session.live import SlotFrame
from realtime.session.timeline import MAX_CATCH_UP_PACKETS, MediaClock, PacketSchedule
from realtime.vcam.timeline import HARD_ERROR_S, SOFT_ERROR_S, AudioPlayout, FrameLoop

LOUD = np.full(960, 3000, np.int16)
QUIET = np.zeros(960, np.int16)


class StubSession:
    """A session's output: slot ``n`` is a frame that remembers ``n``; the output audio alternates
    3 s of loud speech and 2 s of silence."""

    def __init__(self, offset: float = 0.013) -> None:
        self.video_offset_s = offset
        self.image = np.zeros((4, 4, 3), np.uint8)
        self.taken: list[int] = []

    def slot(self, n: int) -> SlotFrame:
        self.taken.append(n)
        return SlotFrame(n, self.image, "speech", None)

    def samples_for(self, k: int) -> np.ndarray:
        return LOUD if (k * 0.02) % 5.0 < 3.0 else QUIET


def sim_clock(t: float = 100.0):
    sim = SimpleNamespace(t=t)
    return sim, MediaClock(now=lambda: sim.t)


def test_packets_are_due_on_an_absolute_schedule_and_a_stall_hands_over_at_most_half_a_second():
    s = PacketSchedule(start=10.0)
    assert list(s.due(10.019)) == [] and s.next_time() == pytest.approx(10.02)
    assert list(s.due(10.02)) == [0]
    assert list(s.due(10.0605)) == [1, 2]  # late wake-ups do not shift later packets
    assert s.arrival(2) == pytest.approx(10.06)
    got = list(s.due(12.0))  # a 2 s stall: the newest 25 packets, the rest skipped
    assert len(got) == MAX_CATCH_UP_PACKETS and got[-1] == 99 and s.skipped == 100 - 3 - MAX_CATCH_UP_PACKETS


def run_frames(session, camera_fps: float, seconds: float, stall_at: float | None = None, stall_s: float = 0.0):
    """Steps a FrameLoop at the times it asks for (plus ``stall_s`` once at ``stall_at``)."""
    sim, clock = sim_clock()
    loop = FrameLoop(session, clock, 25, camera_fps)
    t0 = clock.start()
    sent = []
    while sim.t < t0 + seconds:
        frame, wake = loop.step()
        if frame is not None:
            sent.append((sim.t, frame))
        sim.t = wake
        if stall_at is not None and sim.t >= t0 + stall_at:
            sim.t += stall_s
            stall_at = None
    return t0, loop, sent


def test_at_the_engine_rate_camera_frame_j_is_slot_j_sent_when_it_departs():
    session = StubSession()
    t0, _, sent = run_frames(session, 25, 4.0)
    assert [f.slot for _, f in sent] == [f.index for _, f in sent] == list(range(len(sent)))
    assert len(sent) == 100 and session.taken == list(range(100))
    for t, f in sent:
        assert t == pytest.approx(t0 + session.video_offset_s + f.slot / 25)


def test_at_another_camera_rate_each_frame_shows_the_newest_slot_and_every_slot_is_taken_once():
    session = StubSession()
    t0, _, sent = run_frames(session, 30, 10.0)
    assert len(sent) == 300 and [f.index for _, f in sent] == list(range(300))
    assert session.taken == list(range(250))  # thinned or repeated on screen, never skipped in the session
    extra = np.array([t - (t0 + session.video_offset_s + f.slot / 25) for t, f in sent])
    assert extra.min() >= -1e-9 and extra.max() < 1 / 25  # shown at most one engine frame after it departs
    intervals = np.diff([t for t, _ in sent])
    assert np.allclose(intervals, 1 / 30)  # the camera's own constant rate


def test_a_stalled_loop_rejoins_the_schedule_without_a_burst():
    session = StubSession()
    t0, loop, sent = run_frames(session, 25, 3.0, stall_at=1.0, stall_s=0.3)
    times = np.array([t for t, _ in sent])
    gaps = np.sort(np.diff(times))
    # one gap for the stall, the late frame 20 ms before the next one on schedule, no catching up
    assert gaps[-1] == pytest.approx(0.34) and gaps[0] == pytest.approx(0.02) and np.allclose(gaps[1:-1], 0.04)
    assert loop.skipped_frames == 7 and loop.skipped_slots == 7
    assert all(t - (t0 + session.video_offset_s + f.slot / 25) < 1 / 25 for t, f in sent)  # always the current slot


def test_playout_follows_the_clock_and_is_silent_before_the_session_starts():
    _, clock = sim_clock()
    playout = AudioPlayout(lambda k: np.arange(k * 960, (k + 1) * 960), clock)  # sample = its index
    assert not playout.block(960, 100.5).any()  # no t0 yet
    t0 = clock.start()
    x = playout.block(960, t0 + 1.2345)  # the sample due at that time, whatever the block grid
    assert x[0] == round(1.2345 * 48000) and np.all(np.diff(x) == 1)
    x2 = playout.block(960, t0 + 1.2345 + 0.02)
    assert x2[0] == x[-1] + 1  # contiguous


def test_playout_corrects_small_errors_in_silence_large_ones_at_once_and_resyncs_an_underrun():
    _, clock = sim_clock()
    loud = {"on": True}
    playout = AudioPlayout(lambda k: LOUD if loud["on"] else QUIET, clock)
    t0 = clock.start()
    dac = t0 + 1.0
    playout.block(960, dac)
    for _ in range(100):  # the card runs 5 ms behind: small error, speech: no jump yet
        dac += 0.02
        playout.block(960, dac + 0.005)
    assert playout.jumps == 0 and playout.error / 48000 == pytest.approx(0.005, abs=0.0003)
    loud["on"] = False
    for _ in range(3):
        dac += 0.02
        playout.block(960, dac + 0.005)
    assert playout.jumps == 1 and abs(playout.error) / 48000 < SOFT_ERROR_S  # moved in the silence
    loud["on"] = True
    for _ in range(200):  # 20 ms off during speech: above the hard limit, moved at once
        dac += 0.02
        playout.block(960, dac + 0.025)
    assert playout.jumps >= 2 and abs(playout.error) / 48000 < HARD_ERROR_S
    before = playout.jumps
    dac += 0.02 + 0.2  # an underrun: the card lost 200 ms
    playout.block(960, dac + 0.025)
    assert playout.jumps == before + 1 and playout.pos == round((dac + 0.025 - t0) * 48000) + 960


@pytest.mark.parametrize("ppm,hours", [(100.0, 2.0), (-100.0, 0.5)])
def test_no_drift_over_hours_with_a_drifting_sound_card_and_a_jittery_loop(ppm, hours):
    """A simulated run: the card's crystal ``ppm`` off the clock, its timestamps jittering 0.5 ms,
    the frame loop waking 0..4 ms late and stalling 150 ms every 10 minutes."""
    rng = np.random.default_rng(0)
    session = StubSession()
    sim, clock = sim_clock()
    frames = FrameLoop(session, clock, 25, 25)
    playout = AudioPlayout(session.samples_for, clock)
    t0 = clock.start()
    block, card_rate = 4800, 48000 * (1 + ppm * 1e-6)  # 100 ms blocks
    first_play, latency = t0 + 0.25, 0.03
    end = t0 + hours * 3600
    n_audio, n_video = int(hours * 36000) + 100, int(hours * 90000) + 100
    stamp_noise = rng.normal(0, 0.0005, n_audio)
    wake_late = rng.uniform(0, 0.004, n_video)
    video_err, audio_err, audio_t = [], [], []
    k = j = 0
    wake, next_stall = t0, t0 + 600
    while True:
        plays = first_play + k * block / card_rate  # when the card really plays block k's first sample
        if min(plays - latency, wake) > end:
            break
        if plays - latency <= wake:  # the card's callback
            sim.t = plays - latency
            playout.block(block, plays + stamp_noise[k])
            start = playout.pos - block
            audio_err.append(plays - (t0 + start / 48000))  # > 0: the voice later than its timeline
            audio_t.append(plays - t0)
            k += 1
        else:
            sim.t = wake + wake_late[j]
            if sim.t >= next_stall:
                sim.t += 0.15
                next_stall += 600
            frame, wake = frames.step()
            if frame is not None:
                video_err.append(sim.t - (t0 + session.video_offset_s + frame.slot / 25))
            j += 1
    a, v, at = np.array(audio_err), np.array(video_err), np.array(audio_t)
    first, last = np.abs(a[at < 600]).mean(), np.abs(a[at > at[-1] - 600]).mean()
    print(f"{ppm:+.0f} ppm over {hours:g} h: audio error max {np.abs(a).max() * 1000:.2f} ms (mean |.| first "
          f"10 min {first * 1000:.2f} ms, last 10 min {last * 1000:.2f} ms), {playout.jumps} re-anchors; video "
          f"error p99 {np.percentile(v, 99) * 1000:.2f} ms, max {v.max() * 1000:.1f} ms (stalls); an uncorrected "
          f"card would be {abs(ppm) * 1e-6 * hours * 3600 * 1000:.0f} ms off")
    assert np.abs(a).max() < SOFT_ERROR_S + 0.003  # corrected in the silences, never near the hard limit
    assert abs(last - first) < 0.001  # no drift: the error at the end is the error at the start
    assert np.percentile(v, 99) < 0.005 and v.max() < 1 / 25 and v.min() >= 0  # the video on its slots
    assert len(v) >= hours * 90000 * 0.99  # every frame but those of the stalls
