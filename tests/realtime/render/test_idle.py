import numpy as np
import pytest

from realtime.render.idle import HEAD_ROT_DEG, HEAD_SHIFT, IdleMotion
from realtime.render.mouth_warp import FaceRig, MouthParams

FPS = 25.0


def blink_track(seed: int, seconds: float = 10.0) -> np.ndarray:
    idle = IdleMotion(seed)
    return np.array([idle.blink(i / FPS) for i in range(int(seconds * FPS))])


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_blinks_within_ten_seconds(seed):
    b = blink_track(seed)
    closed = b > 0.9
    starts = np.flatnonzero(closed[1:] & ~closed[:-1]) + 1
    assert 2 <= len(starts) <= 6  # one every 2-6 s, the first within 2.5 s
    assert np.all(np.diff(starts) >= 2.0 * FPS - 1)
    # Each blink is short: at most 5 frames (200 ms) more than half closed.
    half = b > 0.5
    runs = np.diff(np.flatnonzero(np.diff(np.r_[0, half.astype(int), 0])))[::2]
    assert runs.max() <= 5 and runs.min() >= 1
    assert b.min() == 0.0 and np.mean(b > 0.05) < 0.15


def test_schedule_deterministic_and_order_independent():
    a = blink_track(3)
    idle = IdleMotion(3)
    # Asking for a late time first must not change earlier answers (chunked == whole).
    late = idle.blink(9.0)
    again = np.array([idle.blink(i / FPS) for i in range(250)])
    assert np.array_equal(a, again) and late == a[225]
    assert not np.array_equal(a, blink_track(4))


def test_blinks_stay_spaced_across_minutes_and_cost_nothing_to_reach_late_times():
    """The schedule is drawn per minute: a session a week old asks for a blink without replaying the
    week, keeps a few minutes of it in memory, and gets the same answer as a fresh one."""
    idle = IdleMotion(11)
    track = np.array([idle.blink(i / FPS) for i in range(int(600 * FPS))])  # 10 minutes
    closed = track > 0.9
    starts = (np.flatnonzero(closed[1:] & ~closed[:-1]) + 1) / FPS
    gaps = np.diff(starts)
    assert len(starts) >= 100 and gaps.min() >= 2.0 - 2 / FPS and gaps.max() <= 10.0
    assert len(idle._blocks) <= 4
    week = 7 * 24 * 3600.0
    late = [idle.blink(week + i / FPS) for i in range(int(60 * FPS))]
    fresh = IdleMotion(11)
    assert late[-1] == fresh.blink(week + (len(late) - 1) / FPS) and max(late) > 0.9
    assert len(idle._blocks) <= 4


def test_head_motion_bounded_and_smooth():
    idle = IdleMotion(5)
    poses = np.array([idle.head_pose(i / FPS) for i in range(int(60 * FPS))])
    assert np.abs(poses[:, 0]).max() <= HEAD_ROT_DEG
    assert np.abs(poses[:, 1:]).max() <= HEAD_SHIFT
    assert np.abs(poses[:, 0]).max() > 0.25 * HEAD_ROT_DEG  # it does move
    assert np.abs(np.diff(poses[:, 0])).max() < 0.05  # degrees per frame: no jumps


def test_move_head_keeps_frame_shape_and_moves_little(astronaut):
    img, lm = astronaut
    idle = IdleMotion(0)
    t = float(np.argmax([abs(idle.head_pose(i / FPS)[0]) for i in range(250)])) / FPS
    out = idle.move_head(img, t, (float(lm[152, 0]), float(lm[152, 1]) + 40))
    assert out.shape == img.shape and out.dtype == np.uint8
    diff = np.abs(out.astype(np.float32) - img).mean()
    assert 0.5 < diff < 25


def test_eyelid_warp_closes_the_eyes(facemesh, astronaut):
    import cv2

    from realtime.render.idle import EYES

    img, lm = astronaut
    rig = FaceRig.build(lm, img.shape[:2], eyes=True)
    shut = rig.paste_back(img, rig.warp(img, rig.displacement(MouthParams(eyeBlink=1.0))))
    open_ = rig.paste_back(img, rig.warp(img, rig.displacement(MouthParams())))

    # The open eye has a dark pupil and a white sclera; a closed lid is one even-toned surface.
    eyes = np.zeros(img.shape[:2], np.uint8)
    for upper, lower, _ in EYES:
        cv2.fillPoly(eyes, [np.round(lm[upper + lower[::-1]]).astype(np.int32)], 255)

    def lum(x):
        return np.percentile(cv2.cvtColor(x, cv2.COLOR_RGB2GRAY)[eyes > 0], [5, 25, 75])

    o, c = lum(open_), lum(shut)
    assert c[0] > o[0] + 20  # the pupil is gone
    assert c[2] - c[1] < 0.6 * (o[2] - o[1])

    # FaceMesh under-reads blinks on stills, but it still sees the lids come down.
    def eye_open(x):
        m = facemesh.detect(x)
        return (np.linalg.norm(m[159] - m[145]) + np.linalg.norm(m[386] - m[374])) / np.linalg.norm(m[33] - m[263])

    assert eye_open(shut) < 0.75 * eye_open(open_)
