import numpy as np
import pytest

from realtime.render.embedded import BASE_CACHE, VISEMES, EmbeddedRenderer, params_from_prediction
from realtime.render.mouth_warp import MouthParams
from tests.realtime.render.conftest import lip_gap

NAMES = ["jawOpen", "mouthClose", "mouthFunnel", "mouthPucker", "mouthStretchLeft", "mouthStretchRight",
         "mouthRollLower", "mouthRollUpper"]


class RecurrentFake:
    """Stands in for VisemePredictor: deterministic, with recurrent state, so chunking matters."""

    blendshape_names = NAMES

    def new_state(self):
        return {"h": 0.0}

    def predict(self, blocks, state):
        energy = np.abs(blocks).mean(axis=(1, 2))
        probs, shapes = [], []
        for e in energy:
            state["h"] = 0.6 * state["h"] + 0.4 * float(e)  # coarticulation-like memory
            h = state["h"]
            logits = np.zeros(15)
            logits[0] = 6.0 - 12 * h  # silence when quiet
            logits[VISEMES.index("aa")] = 8 * h
            logits[VISEMES.index("PP")] = 2 * np.sin(40 * h)
            p = np.exp(logits - logits.max())
            probs.append(p / p.sum())
            shapes.append(np.clip([1.6 * h, 0, 0.3 * h, 0.1 * h, 0.2 * h, 0.2 * h, 0, 0], 0, 1))
        return np.array(probs, np.float32), np.array(shapes, np.float32)


def blocks_for(n, seed=0):
    rng = np.random.default_rng(seed)
    loud = (np.sin(np.arange(n) / 2.0) > -0.3).astype(np.float32)[:, None, None]
    return (rng.standard_normal((n, 50, 384)) * 0.8 * loud).astype(np.float32)


@pytest.fixture(scope="module")
def renderer():
    return EmbeddedRenderer(predictor=RecurrentFake())


def test_chunked_equals_whole_and_is_deterministic(renderer, default_avatar):
    n = 20
    blocks = blocks_for(n)
    idx = np.arange(n)
    whole = renderer.render_chunk(default_avatar, idx[:16], blocks[:16], renderer.new_state(3))
    state = renderer.new_state(3)
    parts = []
    for s, e in ((0, 5), (5, 6), (6, 16)):
        parts += renderer.render_chunk(default_avatar, idx[s:e], blocks[s:e], state).frames
    assert all(np.array_equal(a, b) for a, b in zip(whole.frames, parts))
    again = renderer.render_chunk(default_avatar, idx[:16], blocks[:16], renderer.new_state(3))
    assert all(np.array_equal(a, b) for a, b in zip(whole.frames, again.frames))
    other_seed = renderer.render_chunk(default_avatar, idx[:16], blocks[:16], renderer.new_state(4))
    assert not all(np.array_equal(a, b) for a, b in zip(whole.frames, other_seed.frames))  # idle differs


def test_events_carry_viseme_probabilities_and_blendshapes(renderer, default_avatar):
    chunk = renderer.render_chunk(default_avatar, np.arange(8), blocks_for(8), renderer.new_state(0))
    assert len(chunk.frames) == len(chunk.events) == 8
    for i, ev in enumerate(chunk.events):
        assert ev.frame == i
        assert list(ev.visemes) == list(VISEMES)
        assert sum(ev.visemes.values()) == pytest.approx(1.0, abs=1e-5)
        assert set(ev.blendshapes) == set(NAMES)
    assert chunk.frames[0].shape == default_avatar.frame(0).shape and chunk.frames[0].dtype == np.uint8


def test_silence_renders_the_rest_frame(renderer, default_avatar):
    state = renderer.new_state(1)
    idx = np.arange(30, 34)
    chunk = renderer.render_chunk(default_avatar, idx, np.zeros((4, 50, 384), np.float32), state)
    for i, f in zip(idx, chunk.frames):
        assert np.array_equal(f, renderer.rest_frame(default_avatar, int(i), renderer.new_state(1)))


def test_rest_frame_mouth_closed_and_speech_opens_it(renderer, default_avatar, facemesh):
    quiet = renderer.rest_frame(default_avatar, 0, renderer.new_state(0))
    assert lip_gap(facemesh, quiet) < 0.03
    loud = renderer.render_params(default_avatar, 0, MouthParams(jawOpen=0.6), renderer.new_state(0))
    assert lip_gap(facemesh, loud) > 0.12


def test_photo_idle_blinks_and_sways(renderer, default_avatar):
    """Rest frames of a photo over 10 s are not frozen: the eyes close at least once, the head moves."""
    state = renderer.new_state(0)
    lm = default_avatar.landmarks(0)
    eye = (slice(int(lm[159, 1]) - 3, int(lm[145, 1]) + 4), slice(int(lm[33, 0]), int(lm[133, 0]) + 1))
    frames = [renderer.rest_frame(default_avatar, i, state) for i in range(0, 250, 2)]
    dark = np.array([np.percentile(f[eye].mean(2), 5) for f in frames])
    assert dark.max() - np.median(dark) > 20  # the pupil disappears during a blink
    assert 0.3 < np.abs(frames[0].astype(np.float32) - frames[len(frames) // 2]).mean() < 20


def test_photo_frames_share_the_moved_frame_and_match_warping_the_whole_frame(default_avatar):
    """A photo frame = the head-moved frame of that moment (cached, shared by every session with the
    seed) with only the pasted box warped per frame: the same pixels as warping the whole pasted
    frame, to the warp's 1/32-pixel rounding."""
    from realtime.render.idle import move_frame

    r = EmbeddedRenderer(predictor=RecurrentFake())
    a, b, other = r.new_state(0), r.new_state(0), r.new_state(5)
    for k, jaw in ((3, 0.0), (40, 0.5), (77, 1.0)):
        p = MouthParams(jawOpen=jaw, mouthFunnel=0.2)
        got = r.render_params(default_avatar, k, p, a)
        frame = np.asarray(default_avatar.frame(k))
        rig, interior = r.rig(default_avatar, k)
        idle, t = a.idle, k / 25
        region = r._deformed_region(default_avatar, k, frame, rig, interior, p.replace(eyeBlink=idle.blink(t)))
        lm = rig.region.to_frame(rig.landmarks)
        pivot = lm[152] + 0.5 * (lm[152] - lm[6])
        whole = move_frame(rig.paste_back(frame, region), idle.head_matrix(t, tuple(map(float, pivot)), frame.shape[:2]))
        d = np.abs(got.astype(np.int16) - whole)
        assert d.max() <= 8 and (d > 0).mean() < 0.005, (d.max(), (d > 0).mean())
        bases = len(r._bases[default_avatar])
        assert np.array_equal(r.render_params(default_avatar, k, p, b), got)  # another session: shared
        assert len(r._bases[default_avatar]) == bases
        r.render_params(default_avatar, k, p, other)  # another seed: its own head pose
        assert len(r._bases[default_avatar]) == min(bases + 1, BASE_CACHE)


def test_silence_and_bilabials_close_the_lips():
    probs = np.full((3, 15), 0.01)
    probs[0, 0] = 0.9  # silence
    probs[1, VISEMES.index("PP")] = 0.9  # p/b/m
    probs[2, VISEMES.index("aa")] = 0.9
    probs /= probs.sum(1, keepdims=True)
    shapes = np.tile(np.array([[0.6, 0, 0.2, 0, 0, 0, 0, 0]]), (3, 1))
    p = params_from_prediction(probs, shapes, NAMES)
    assert p[0].jawOpen == pytest.approx(0.0, abs=1e-6)
    assert p[1].mouthClose >= p[1].jawOpen  # lips sealed, jaw may stay a little open
    assert p[2].jawOpen == pytest.approx(0.6) and p[2].mouthClose == 0


def test_frame_without_face_passes_through(renderer):
    class NoFace:
        is_photo = False
        fps = 25.0

        def frame(self, i):
            return np.full((64, 64, 3), 7, np.uint8)

        def landmarks(self, i):
            return None

        def source_index(self, i):
            return i

    out = renderer.render_params(NoFace(), 0, MouthParams(jawOpen=1.0), renderer.new_state())
    assert np.array_equal(out, np.full((64, 64, 3), 7, np.uint8))


def test_rejects_bad_chunks(renderer, default_avatar):
    with pytest.raises(ValueError):
        renderer.render_chunk(default_avatar, np.arange(17), np.zeros((17, 50, 384), np.float32), renderer.new_state())
    with pytest.raises(ValueError):
        EmbeddedRenderer(lookahead="medium")


class DriftingVideo:
    """A 3-frame "video": the astronaut shifted a few pixels per frame, landmarks shifted with it."""

    is_photo = False
    fps = 25.0

    def __init__(self, img, lm):
        import cv2

        self.shifts = [(0, 0), (3, 1), (6, 2)]
        self.frames = [cv2.warpAffine(img, np.float64([[1, 0, dx], [0, 1, dy]]), img.shape[1::-1],
                                      borderMode=cv2.BORDER_REPLICATE) for dx, dy in self.shifts]
        self.lms = [lm + s for s in self.shifts]

    def source_index(self, i):
        from realtime.face.avatar import pingpong_index

        return pingpong_index(int(i), 3)

    def frame(self, i):
        return self.frames[self.source_index(i)]

    def landmarks(self, i):
        return self.lms[self.source_index(i)]


def test_video_avatar_uses_each_frames_landmarks(renderer, astronaut, facemesh):
    video = DriftingVideo(*astronaut)
    state = renderer.new_state(0)
    frames = [renderer.rest_frame(video, i, state) for i in range(6)]  # 0 1 2 2 1 0
    assert np.array_equal(frames[0], frames[5]) and np.array_equal(frames[2], frames[3])
    for f in frames[:3]:
        assert lip_gap(facemesh, f) < 0.03
    # No idle motion on videos: away from the face the frame is untouched.
    assert np.array_equal(frames[1][:100], video.frame(1)[:100])
    assert len(renderer._rigs[video]) == 3  # one rig per source frame, reused on the way back


@pytest.mark.slow
def test_render_embedded_real_model_on_real_speech(default_avatar, arctic_audio, facemesh):
    """The shipped viseme model on 2 s of real speech: the mouth opens during speech, shut in the
    leading silence (arctic_a0007 starts with 0.37 s of silence)."""
    runtime = pytest.importorskip("realtime.visemes.runtime")
    if not runtime.weights_path("full").is_file():
        pytest.skip("the viseme model's weights are not in models/weights yet")
    from realtime.render.embedded import render_embedded

    frames = render_embedded(default_avatar, arctic_audio[:32000], fps=25.0, seed=0)
    assert len(frames) == 50
    gaps = np.array([lip_gap(facemesh, f) for f in frames[::2]])
    assert gaps[:3].max() < 0.03
    assert gaps.max() > 0.1


@pytest.mark.parametrize("lookahead", ["full", "low"])
def test_shipped_model_chunked_equals_whole(default_avatar, lookahead):
    runtime = pytest.importorskip("realtime.visemes.runtime")
    if not runtime.weights_path(lookahead).is_file():
        pytest.skip("the viseme model's weights are not in models/weights yet")
    r = EmbeddedRenderer(lookahead=lookahead)
    blocks = blocks_for(12, seed=5)
    idx = np.arange(100, 112)
    whole = r.render_chunk(default_avatar, idx, blocks, r.new_state(2))
    state = r.new_state(2)
    a = r.render_chunk(default_avatar, idx[:5], blocks[:5], state)
    b = r.render_chunk(default_avatar, idx[5:], blocks[5:], state)
    assert all(np.array_equal(x, y) for x, y in zip(whole.frames, a.frames + b.frames))
    for x, y in zip(whole.events, a.events + b.events):
        assert x.visemes == pytest.approx(y.visemes, abs=1e-6)
        assert sum(x.visemes.values()) == pytest.approx(1.0, abs=1e-5)
        assert len(x.visemes) == 15


def test_warm_up_loads_the_model_the_rig_and_the_warp_kernel(default_avatar):
    from realtime.render import raster

    r = EmbeddedRenderer()
    assert r._predictor is None
    r.warm_up(default_avatar)
    assert r._predictor is not None and r.predictor.blendshape_names  # the viseme model is loaded
    assert len(r._rigs[default_avatar]) == 1  # frame 0's rig is built
    assert raster._fill.signatures  # the kernel is compiled (or loaded from its cache)
    assert len(r._rois[default_avatar]) == 2  # the rest and the open mouth were rendered
