"""Streaming Whisper encoder: shapes, chunking determinism, emission timing, reset, silence,
window re-anchoring, bounded memory (tiny random-init model) and fidelity to the offline features
(real embedded tiny.en on arctic_a0007)."""

import numpy as np
import pytest
import torch

from realtime.audio.features import chunk_features, compute_features, num_video_frames
from realtime.audio.streaming import FrameFeatures, StreamingAudioEncoder, StreamingWeights
from realtime.errors import AudioInputError

SR = 16000


@pytest.fixture(scope="module")
def tiny_weights():
    from whisper.model import ModelDimensions, Whisper

    torch.manual_seed(0)
    dims = ModelDimensions(
        n_mels=80, n_audio_ctx=1500, n_audio_state=64, n_audio_head=2, n_audio_layer=2,
        n_vocab=64, n_text_ctx=8, n_text_state=64, n_text_head=2, n_text_layer=1,
    )
    model = Whisper(dims).eval()
    return model, StreamingWeights(model, dtype=torch.float32)


def _speechlike(seconds: float, seed: int = 0) -> np.ndarray:
    """Noise bursts with silences, loudest at the very start so the running log-mel max equals
    the clip's max from the first frame on (then the front-end is exact)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    env = (np.sin(np.arange(n) / SR * 2 * np.pi * 1.7) > -0.3).astype(np.float32)
    x = (rng.standard_normal(n) * 0.1 * env).astype(np.float32)
    x[:400] = rng.standard_normal(400).astype(np.float32) * 0.9
    return x


def _run(enc, audio, chunks):
    frames, pos = [], 0
    for n in chunks:
        frames += enc.push(audio[pos : pos + n])
        pos += n
    assert pos >= len(audio)
    return frames + enc.flush()


def test_shapes_and_frame_count(tiny_weights):
    _, w = tiny_weights
    audio = _speechlike(3.03)
    enc = StreamingAudioEncoder(w)
    frames = _run(enc, audio, [640] * (len(audio) // 640 + 1))
    assert [f.index for f in frames] == list(range(num_video_frames(len(audio), 25))) == list(range(75))
    for f in frames:
        assert isinstance(f, FrameFeatures)
        assert f.features.shape == (30, 64) and f.features.dtype == torch.float32
        assert torch.isfinite(f.features).all()
    # Rolling cache: each step is encoded settle_steps / (steps per call) + 1 = 8 / 2 + 1 times.
    total_steps = 151
    assert 4.5 * total_steps <= enc.steps_encoded <= 5 * total_steps + 10
    enc2 = StreamingAudioEncoder(w, fps=30, block=(8, 2))
    frames = _run(enc2, audio, [len(audio)])
    assert len(frames) == num_video_frames(len(audio), 30) == 90
    assert frames[0].features.shape == (30, 64)


def test_any_chunking_gives_identical_features(tiny_weights):
    _, w = tiny_weights
    audio = _speechlike(4.0, seed=1)
    rng = np.random.default_rng(3)
    sizes = rng.integers(160, 16000, size=100).tolist()  # 10 ms .. 1 s
    ref = _run(StreamingAudioEncoder(w, extra_lookahead_ms=100), audio, [len(audio)])
    got = _run(StreamingAudioEncoder(w, extra_lookahead_ms=100), audio, sizes)
    assert len(ref) == len(got) == 100
    for a, b in zip(ref, got):
        assert a.index == b.index and a.needed_samples == b.needed_samples
        assert torch.equal(a.features, b.features)


def test_catch_up_encodes_a_bunch_of_hops_in_one_call(tiny_weights):
    _, w = tiny_weights
    audio = _speechlike(2.0, seed=2)
    # Pushes that complete at most one hop each: the same calls, bit-identical frames.
    ref = _run(StreamingAudioEncoder(w), audio, [320] * 100)
    got = _run(StreamingAudioEncoder(w, catch_up=True), audio, [320] * 100)
    assert len(ref) == len(got) == 50
    assert all(torch.equal(a.features, b.features) for a, b in zip(ref, got))
    # A restart with 0.26 s at once: the same frames as without catch-up, in one call instead of 4.
    plain, fast = StreamingAudioEncoder(w), StreamingAudioEncoder(w, catch_up=True)
    a, b = plain.push(audio[:4160]), fast.push(audio[:4160])
    assert [f.index for f in a] == [f.index for f in b] == [0, 1, 2, 3]
    assert [f.needed_samples for f in a] == [f.needed_samples for f in b]
    assert (plain.encoder_calls, fast.encoder_calls) == (4, 1)
    assert fast.frontier == plain.frontier
    # From then on both stream on, one hop per push.
    a, b = plain.push(audio[4160:4800]), fast.push(audio[4160:4800])
    assert [f.index for f in a] == [f.index for f in b] == [4]


@pytest.mark.parametrize("block,extra_ms,hop", [((4, 6), 0, 1), ((4, 6), 100, 1), ((8, 2), 0, 1), ((4, 6), 0, 2)])
def test_frames_emitted_as_soon_as_their_audio_exists(tiny_weights, block, extra_ms, hop):
    _, w = tiny_weights
    audio = _speechlike(2.0, seed=2)
    enc = StreamingAudioEncoder(w, block=block, extra_lookahead_ms=extra_ms, hop_frames=hop)
    chunk = 160  # 10 ms pushes
    emitted = []
    for pos in range(0, len(audio), chunk):
        pushed = pos + chunk
        for f in enc.push(audio[pos:pushed]):
            emitted.append((f.index, pushed))
            assert f.emitted_samples == pushed
            assert f.needed_samples <= pushed  # never before its audio exists
    assert emitted, "no frame emitted while streaming"
    for i, pushed in emitted:
        # Step c + future - 1 + extra needs mel frames up to 2 * step + 2: 160 * that + 200 samples.
        need_step = 2 * i + block[1] - 1 + extra_ms // 20
        needed = 160 * (2 * need_step + 2) + 200
        group_last = (i // hop + 1) * hop - 1  # with hop_frames > 1 a frame waits for its group
        needed_group = 160 * (2 * (2 * group_last + block[1] - 1 + extra_ms // 20) + 2) + 200
        assert enc.needed_samples(i) == needed
        assert needed_group <= pushed < needed_group + chunk, (i, pushed, needed_group)


def test_front_end_matches_offline_across_window_boundary(tiny_weights):
    """Tap 0 (conv front-end + positional embedding) needs no future beyond the block, so the
    streamed tap 0 equals the offline one, including the re-anchoring at the 30 s boundary."""
    model, w = tiny_weights
    audio = _speechlike(31.0, seed=4)
    frames = _run(StreamingAudioEncoder(w, hop_frames=4), audio, [8000] * 63)
    off = chunk_features(compute_features(model, audio, dtype=torch.float32), 25, num_video_frames(len(audio), 25))
    got = torch.stack([f.features for f in frames]).numpy()
    assert got.shape == off.shape == (775, 30, 64)
    tap0 = slice(0, 30, 3)  # rows are index-major, tap-minor
    np.testing.assert_allclose(got[:, tap0], off[:, tap0], atol=2e-4)
    # Deeper taps differ (no future audio), but the window re-anchoring keeps them close.
    cos = (got * off).sum((1, 2)) / np.linalg.norm(got, axis=(1, 2)) / np.linalg.norm(off, axis=(1, 2))
    assert cos[740:760].mean() > 0.9


def test_reset_drops_pending_audio_and_restarts_timeline(tiny_weights):
    _, w = tiny_weights
    a, b = _speechlike(1.5, seed=5), _speechlike(1.0, seed=6)
    enc = StreamingAudioEncoder(w)
    first = enc.push(a[:10000])  # frames pending (audio for later frames partly in)
    assert first and enc.samples_pushed == 10000
    enc.reset()
    assert enc.samples_pushed == 0 and enc.next_frame == 0
    got = _run(enc, b, [1234] * 13)
    ref = _run(StreamingAudioEncoder(w), b, [len(b)])
    assert [f.index for f in got] == list(range(25))
    for x, y in zip(got, ref):
        assert torch.equal(x.features, y.features)


def test_silence_gives_valid_features(tiny_weights):
    _, w = tiny_weights
    enc = StreamingAudioEncoder(w)
    frames = _run(enc, np.zeros(SR, np.float32), [320] * 50)
    assert len(frames) == 25
    assert all(torch.isfinite(f.features).all() and f.features.shape == (30, 64) for f in frames)
    assert _run(enc, np.zeros(100, np.float32), [100]) == []  # too short for a frame


def test_bad_input_is_a_clear_error(tiny_weights):
    _, w = tiny_weights
    enc = StreamingAudioEncoder(w)
    with pytest.raises(AudioInputError, match="NaN"):
        enc.push(np.array([0.0, np.nan], np.float32))
    with pytest.raises(AudioInputError, match="mono"):
        enc.push(np.zeros((2, 100), np.float32))
    with pytest.raises(ValueError):
        StreamingAudioEncoder(w, block=(4, 0))


def test_memory_bounded_for_long_streams(tiny_weights):
    import tracemalloc

    _, w = tiny_weights
    rng = np.random.default_rng(7)
    chunk = rng.standard_normal(SR).astype(np.float32) * 0.1
    enc = StreamingAudioEncoder(w, hop_frames=5)
    for _ in range(10):
        enc.push(chunk)
    after_10s = enc.state_nbytes()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for _ in range(110):  # two more 30 s windows
        enc.push(chunk)
    grown = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    assert enc.next_frame >= 120 * 25 - 10
    assert enc.state_nbytes() == after_10s  # fixed-size rolling buffers
    assert grown < 200_000, grown


@pytest.mark.slow
def test_fidelity_on_real_speech(embedded_whisper, arctic_audio, latentsync_reference):
    ref = latentsync_reference
    n = num_video_frames(len(arctic_audio), 25)
    offline = ref["feature_array"][ref["chunk_indices"][:n]].reshape(n, 50, 384)
    w = StreamingWeights(embedded_whisper)
    results = {}
    for extra_ms, floor in ((0, 0.88), (100, 0.93)):
        frames = _run(StreamingAudioEncoder(w, extra_lookahead_ms=extra_ms), arctic_audio, [640] * 101)
        got = torch.stack([f.features for f in frames]).numpy()
        assert got.shape == offline.shape
        cos = (got * offline).sum((1, 2)) / np.linalg.norm(got, axis=(1, 2)) / np.linalg.norm(offline, axis=(1, 2))
        results[extra_ms] = (float(cos.mean()), float(cos.min()))
        print(f"arctic_a0007 +{extra_ms} ms: mean cosine {cos.mean():.4f}, min {cos.min():.4f}")
        assert cos.mean() >= floor
    assert results[100][0] > results[0][0]


@pytest.mark.slow
def test_catch_up_after_a_restart_is_closer_to_offline(embedded_whisper, arctic_audio):
    """A stream restarting mid-utterance with 0.26 s of audio (what the server's silence gate
    does at a speech onset): the first frames encoded in one call match the offline features of
    the same audio better than one call per hop (measured on both fixtures: +0.007..+0.033)."""
    seg = arctic_audio[8000:]
    n = num_video_frames(len(seg), 25)
    offline = chunk_features(compute_features(embedded_whisper, seg), 25, n).reshape(n, -1)
    w = StreamingWeights(embedded_whisper)
    cos = {}
    for catch_up in (False, True):
        enc = StreamingAudioEncoder(w, catch_up=catch_up)
        frames = enc.push(seg[:4160]) + enc.push(seg[4160:4800])
        got = torch.stack([f.features for f in frames]).numpy().reshape(len(frames), -1)
        ref = offline[: len(frames)]
        cos[catch_up] = float(((got * ref).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1))[:4].mean())
    print("first 4 frames, mean cosine to offline: per hop %.4f, caught up %.4f" % (cos[False], cos[True]))
    assert cos[True] > cos[False] + 0.005


@pytest.mark.parametrize("burst_s", [0.6, 1.5, 3.0])
def test_catch_up_after_a_long_burst_encodes_it_in_calls_the_taps_ring_holds(tiny_weights, burst_s):
    """A sender that stalled and caught up, or a server that did: seconds of audio in one push.
    Catch-up encodes it in as few calls as the taps ring holds, every frame comes out once, in
    order, as without catch-up (before: an overflowing ring, or 'taps ring too small')."""
    _, w = tiny_weights
    audio = _speechlike(1.0 + burst_s + 0.4, seed=4)
    n_first, n_burst = 16000, int(burst_s * SR)
    plain, fast = StreamingAudioEncoder(w), StreamingAudioEncoder(w, catch_up=True)
    ref = _run(plain, audio, [320] * 50 + [n_burst] + [320] * 21)
    got = []
    for piece in (audio[:n_first], audio[n_first:n_first + n_burst], audio[n_first + n_burst:]):
        got += fast.push(piece)
    got += fast.flush()
    assert [f.index for f in got] == [f.index for f in ref] == list(range(len(ref)))
    assert [f.needed_samples for f in got] == [f.needed_samples for f in ref]
    assert plain.encoder_calls > fast.encoder_calls  # still fewer calls than one per hop
