"""VideoOutputTrack (realtime.server.media): one frame per slot of the shared clock; after a stall it
rejoins the schedule instead of sending the missed frames in a burst."""

from __future__ import annotations

import numpy as np

from realtime.server.webrtc.send import VIDEO_CLOCK_RATE, VideoOutputTrack
from realtime.session.timeline import MediaClock


class ManualTime:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


async def test_a_stall_skips_the_missed_slots_and_late_frames_under_two_periods_are_kept():
    now = ManualTime()
    asked = []
    track = VideoOutputTrack(MediaClock(now), 25, lambda slot: asked.append(slot) or np.zeros((16, 16, 3), np.uint8))
    pts = [(await track.recv()).pts]  # slot 0 at t0
    now.t += 0.04 + 0.07  # slot 1 is 70 ms late (under two frame periods): still sent, no skip
    pts.append((await track.recv()).pts)
    now.t += 0.5  # the event loop stalled half a second: slots 2..14 have passed
    pts.append((await track.recv()).pts)
    now.t += 0.041  # back on time
    pts.append((await track.recv()).pts)
    assert asked == [0, 1, 15, 16] and track.skipped == 13
    assert pts == [round(s * 0.04 * VIDEO_CLOCK_RATE) for s in asked]  # timestamps follow the slots
