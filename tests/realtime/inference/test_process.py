"""The inference process: the same blocks and frames as the in-process models, state per session,
errors delivered to the caller, and a new child after the old one dies."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest

from realtime.inference.messages import DrawFrame, DrawSpec
from realtime.inference.process import EncoderProxy, ProcessBackend, RendererProxy
from realtime.inference.worker import WorkerBusy

NICE = min(19, os.getpriority(os.PRIO_PROCESS, 0) + 2)  # raising it needs no privilege


@pytest.fixture(scope="module")
def backend(default_avatar):
    b = ProcessBackend(str(default_avatar.directory), "embedded", 25, connections=3, nice=NICE)
    yield b
    b.close()


def test_the_inference_process_runs_at_its_nice_value(backend):
    assert os.getpriority(os.PRIO_PROCESS, backend.pid) == NICE
    for tid in os.listdir(f"/proc/{backend.pid}/task"):  # threads started after it inherit it
        assert os.getpriority(os.PRIO_PROCESS, int(tid)) == NICE


def _packets(x: np.ndarray):
    for i in range(0, len(x), 320):
        yield x[i : i + 320]


def test_encoder_and_renderer_match_in_process(backend, default_avatar, arctic_audio):
    from realtime.audio.streaming import StreamingAudioEncoder, StreamingWeights
    from realtime.audio.whisper_loader import load_whisper
    from realtime.render.embedded import EmbeddedRenderer

    x = arctic_audio[3200:16000]
    remote = EncoderProxy(backend, "full", 25)
    local = StreamingAudioEncoder(StreamingWeights(load_whisper()), fps=25, block=(4, 6))
    got, want = [], []
    for p in _packets(x):
        got += remote.push(p)
        want += local.push(p)
    assert [j for j, _ in got] == [f.index for f in want] and len(got) >= 15
    for (_, b), f in zip(got, want):
        assert b.shape == (50, 384) and b.dtype == np.float32
        np.testing.assert_allclose(b, f.features.numpy(), atol=1e-5)

    renderer, ref = RendererProxy(backend, "full"), EmbeddedRenderer("full")
    state, ref_state = renderer.new_state(3), ref.new_state(3)
    blocks = np.stack([b for _, b in got[:8]])
    for lo in (0, 4):  # the child keeps this session's viseme/idle state between chunks
        idx = np.arange(lo, lo + 4)
        a = renderer.render_chunk(default_avatar, idx, blocks[lo : lo + 4], state)
        b = ref.render_chunk(default_avatar, idx, blocks[lo : lo + 4], ref_state)
        assert len(a.frames) == 4 and len(a.events) == 4
        for fa, fb in zip(a.frames, b.frames):
            assert fa.shape == (512, 512, 3) and np.array_equal(fa, fb)
    rest = renderer.rest_frame(default_avatar, 10, renderer.new_state(0))
    assert np.array_equal(rest, ref.rest_frame(default_avatar, 10, ref.new_state(0)))
    renderer.release(state)
    remote.release()


def test_errors_reach_the_caller_and_the_child_survives(backend, default_avatar):
    pid = backend.pid
    renderer = RendererProxy(backend, "full")
    with pytest.raises(ValueError, match="audio_blocks"):
        renderer.render_chunk(default_avatar, np.arange(2), np.zeros((3, 50, 384), np.float32), renderer.new_state())
    enc = EncoderProxy(backend, "low", 25)
    with pytest.raises(Exception, match="NaN"):
        enc.push(np.full(320, np.nan, np.float32))
    assert enc.push(np.zeros(3200, np.float32))  # the same process still serves
    assert backend.pid == pid


def test_a_dead_child_is_replaced(backend, default_avatar):
    enc = EncoderProxy(backend, "full", 25)
    enc.push(np.zeros(3200, np.float32))
    old = backend.pid
    os.kill(old, signal.SIGKILL)
    with pytest.raises(WorkerBusy, match="restarting"):
        enc.push(np.zeros(320, np.float32))
    assert backend.pid != old
    # the new child does not have this encoder: the push says so (the scheduler then restarts its
    # frame grid) instead of quietly numbering frames from 0 again
    with pytest.raises(LookupError, match="restarted"):
        enc.push(np.zeros(3200, np.float32))
    enc.reset()
    out = enc.push(np.zeros(3200, np.float32))
    assert out and out[0][0] == 0
    fresh = EncoderProxy(backend, "full", 25)  # a new session's first push creates its encoder
    assert fresh.push(np.zeros(3200, np.float32))[0][0] == 0


def test_a_hung_child_is_replaced(backend):
    import time

    enc = EncoderProxy(backend, "full", 25)
    enc.push(np.zeros(3200, np.float32))
    old, timeout = backend.pid, backend.call_timeout
    backend.call_timeout = 1.0
    restarted = []
    real_restart = backend._restart
    backend._restart = lambda *a: (restarted.append(time.monotonic()), real_restart(*a))[1]
    os.kill(old, signal.SIGSTOP)  # alive but never answers
    try:
        t = time.monotonic()
        with pytest.raises(WorkerBusy, match="TimeoutError.*restarting"):
            enc.push(np.zeros(320, np.float32))
        assert len(restarted) == 1 and 1.0 <= restarted[0] - t < 1.5, restarted  # after the call timeout
    finally:
        del backend._restart
        backend.call_timeout = timeout
        if backend.pid == old:
            os.kill(old, signal.SIGCONT)
    assert backend.pid != old and backend.down is None
    enc.reset()
    assert enc.push(np.zeros(3200, np.float32))


def test_a_child_that_cannot_start_is_retried_and_calls_fail_fast(backend, tmp_path):
    import time

    enc = EncoderProxy(backend, "full", 25)
    enc.push(np.zeros(3200, np.float32))
    import dataclasses

    good = backend.spec
    backend.spec = dataclasses.replace(good, avatar_dir=str(tmp_path / "no-avatar"))  # the next child fails to load
    try:
        os.kill(backend.pid, signal.SIGKILL)
        with pytest.raises(WorkerBusy, match="restarting"):
            enc.push(np.zeros(320, np.float32))
        assert backend.down and "failed to start" in backend.down
        t = time.monotonic()
        with pytest.raises(WorkerBusy, match="down"):  # at once, not after a 5 s wait for a pipe
            enc.push(np.zeros(320, np.float32))
        assert time.monotonic() - t < 0.5
    finally:
        backend.spec = good
    backend._next_try = 0.0  # the back-off has passed: the next call starts a child
    enc.reset()
    assert enc.push(np.zeros(3200, np.float32))
    assert backend.down is None


def test_push_render_draws_the_frames_it_completes(backend, default_avatar, arctic_audio):
    """One request: the encoder frames (as ``push``) and the named frames rendered with the
    session's renderer state, identical to rendering them in process. A frame the push does not
    complete, or whose deadline has passed, is not drawn."""
    import time

    from realtime.render.embedded import EmbeddedRenderer

    x = arctic_audio[3200:16000]
    plain, fused = EncoderProxy(backend, "full", 25), EncoderProxy(backend, "full", 25)
    renderer, ref = RendererProxy(backend, "full"), EmbeddedRenderer("full")
    state, ref_state = renderer.new_state(5), ref.new_state(5)
    far = time.monotonic() + 60.0
    drawn_all, n_blocks, skipped = {}, 0, 0
    for k, p in enumerate(_packets(x)):
        want = plain.push(p)
        nxt = n_blocks
        # ask for the next two frames (the second is usually not complete yet); every third packet
        # the first one's deadline has passed already
        spec = DrawSpec(state.remote_id, 5, (DrawFrame(nxt, 100 + nxt, 0.0 if k % 3 == 2 else far),
                                             DrawFrame(nxt + 1, 101 + nxt, far)), "full")
        got, drawn = fused.push_render(p, spec)
        assert [j for j, _ in got] == [j for j, _ in want]
        for (_, a), (_, b) in zip(got, want):
            np.testing.assert_array_equal(a, b)
        done = {j for j, _ in got}
        drawn_frames = {j: f for j, f, _ in drawn.frames}
        assert list(drawn_frames) == [f.encoder_index for f in spec.frames if f.encoder_index in done and f.deadline > 0]
        skipped += sum(1 for f in spec.frames if f.encoder_index in done and f.deadline == 0)
        assert drawn.seconds >= 0
        assert all(ev is not None and ev.visemes for _, _, ev in drawn.frames)  # events come with the frames
        drawn_all.update(drawn_frames)
        ref_frames = {}
        for j, block in got:
            if j in drawn_frames:
                ref_frames[j] = ref.render_chunk(default_avatar, np.array([100 + j]), block[None], ref_state).frames[0]
        for j, f in drawn_frames.items():
            assert f.shape == (512, 512, 3) and np.array_equal(f, ref_frames[j])
        n_blocks += len(got)
    assert n_blocks >= 15 and len(drawn_all) >= 10 and skipped >= 2
    renderer.release(state)
    plain.release()
    fused.release()


def test_each_request_renders_the_avatar_it_names(backend, default_avatar, arctic_audio, tmp_path):
    """Renders, rest frames and the fused push name their avatar by folder: the child loads it and
    draws exactly what the renderer draws on it in this process; the default stays the default."""
    import shutil
    import time

    from realtime.face.avatar import Avatar
    from realtime.render.embedded import EmbeddedRenderer

    neg = shutil.copytree(default_avatar.directory, tmp_path / "negative")
    np.save(neg / "frames.npy", 255 - np.load(neg / "frames.npy"))
    negative = Avatar.load(neg)
    renderer, ref = RendererProxy(backend, "full"), EmbeddedRenderer("full")
    rests = {}
    for av in (default_avatar, negative, default_avatar):
        rests[id(av)] = renderer.rest_frame(av, 10, renderer.new_state(0))
        assert np.array_equal(rests[id(av)], ref.rest_frame(av, 10, ref.new_state(0)))
    assert np.abs(rests[id(default_avatar)].astype(int) - rests[id(negative)]).mean() > 50
    enc = EncoderProxy(backend, "full", 25)
    blocks = []
    for p in _packets(arctic_audio[3200:12800]):
        blocks += enc.push(p)
    chunk = np.stack([b for _, b in blocks[:3]])
    state, ref_state = renderer.new_state(4), ref.new_state(4)
    got = renderer.render_chunk(negative, np.arange(3), chunk, state).frames
    want = ref.render_chunk(negative, np.arange(3), chunk, ref_state).frames
    assert all(np.array_equal(a, b) for a, b in zip(got, want))
    fused, n, n_drawn = EncoderProxy(backend, "full", 25), 0, 0  # the fused push draws on the named avatar too
    far = time.monotonic() + 60.0
    for p in _packets(arctic_audio[3200:12800]):
        spec = DrawSpec(state.remote_id, 4, (DrawFrame(n, 3 + n, far),), "full", avatar=str(neg))
        out, drawn = fused.push_render(p, spec)
        for j, img, _ in drawn.frames:
            want = ref.render_chunk(negative, np.array([3 + j]), dict(out)[j][None], ref_state).frames[0]
            assert np.array_equal(img, want)
        n, n_drawn = n + len(out), n_drawn + len(drawn.frames)
    assert n >= 10 and n_drawn >= 10
    renderer.release(state)
    enc.release()
    fused.release()
