"""Batched streaming encoder calls across sessions (``push_many``): the same frames as each stream
pushed alone, per-stream errors, streams of different look-ahead in one call."""

import numpy as np
import pytest
import torch

from realtime.audio.streaming import StreamingAudioEncoder, StreamingWeights, push_many
from realtime.errors import AudioInputError

SR = 16000


@pytest.fixture(scope="module")
def weights():
    from whisper.model import ModelDimensions, Whisper

    torch.manual_seed(0)
    dims = ModelDimensions(n_mels=80, n_audio_ctx=1500, n_audio_state=64, n_audio_head=2, n_audio_layer=2,
                           n_vocab=64, n_text_ctx=8, n_text_state=64, n_text_head=2, n_text_layer=1)
    return StreamingWeights(Whisper(dims).eval(), dtype=torch.float32)


def _audio(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(int(seconds * SR)) * 0.1).astype(np.float32)
    x[:400] *= 9  # loudest first: the running log-mel max is fixed from the start
    return x


def test_push_many_matches_single_pushes(weights):
    clips = [_audio(2.0, s) for s in range(3)]
    blocks = [(4, 6), (4, 6), (8, 2)]  # full and low-latency windows share one call
    alone = [StreamingAudioEncoder(weights, block=b) for b in blocks]
    batched = [StreamingAudioEncoder(weights, block=b) for b in blocks]
    want = [[] for _ in clips]
    got = [[] for _ in clips]
    offsets = [0, 160, 480]  # the streams' packets arrive out of phase, as sessions' do
    for pos in range(0, 2 * SR, 320):
        items = []
        for k, clip in enumerate(clips):
            a = clip[max(0, pos - offsets[k]): max(0, pos + 320 - offsets[k])]
            want[k] += alone[k].push(a)
            items.append((batched[k], a))
        for k, res in enumerate(push_many(items)):
            got[k] += res
    for k in range(3):
        assert len(got[k]) == len(want[k]) >= 40
        assert [f.index for f in got[k]] == [f.index for f in want[k]]
        diff = max(float((g.features - w.features).abs().max()) for g, w in zip(got[k], want[k]))
        assert diff < 1e-4, diff  # fp32: only the matmul blocking differs
    # the batched encoders really ran fewer, larger calls than the three streams alone
    assert sum(e.encoder_calls for e in batched) == sum(e.encoder_calls for e in alone)


def test_push_many_reports_bad_audio_per_stream(weights):
    good, bad = StreamingAudioEncoder(weights), StreamingAudioEncoder(weights)
    x = _audio(0.5, 1)
    res = push_many([(good, x), (bad, np.full(320, np.nan, np.float32))])
    assert isinstance(res[1], AudioInputError) and "NaN" in str(res[1])
    assert isinstance(res[0], list) and len(res[0]) >= 5  # the other stream is unaffected
    ref = StreamingAudioEncoder(weights).push(x)
    assert [f.index for f in res[0]] == [f.index for f in ref]


def test_a_stream_whose_encoder_call_fails_does_not_take_the_batch_with_it(weights, monkeypatch):
    import realtime.audio.streaming_calls as streaming

    real = streaming.encode_plans
    broken, broken_alone = StreamingAudioEncoder(weights), StreamingAudioEncoder(weights)
    calls = []

    def encode_plans(w, plans):  # fails whenever a broken stream is in the call
        calls.append(len(plans))
        if any(p.enc in (broken, broken_alone) for p in plans):
            raise RuntimeError("kernel failed")
        return real(w, plans)

    monkeypatch.setattr(streaming, "encode_plans", encode_plans)
    streams = [StreamingAudioEncoder(weights), broken, StreamingAudioEncoder(weights)]
    clips = [_audio(0.6, s) for s in range(3)]
    res = push_many(list(zip(streams, clips)))
    assert isinstance(res[1], RuntimeError) and "kernel failed" in str(res[1])
    assert calls[:4] == [3, 1, 1, 1]  # the batch failed; each stream was then encoded alone
    for k in (0, 2):  # the others got exactly the frames they get alone
        monkeypatch.setattr(streaming, "encode_plans", real)
        ref = StreamingAudioEncoder(weights).push(clips[k])
        monkeypatch.setattr(streaming, "encode_plans", encode_plans)
        assert [f.index for f in res[k]] == [f.index for f in ref] and len(ref) >= 8
        assert max(float((a.features - b.features).abs().max()) for a, b in zip(res[k], ref)) < 1e-4
    with pytest.raises(RuntimeError, match="kernel failed"):  # alone, push raises as before
        broken_alone.push(clips[1])
    monkeypatch.setattr(streaming, "encode_plans", real)
    broken.reset()  # what the server does after a failed push: the stream starts over and works
    assert len(broken.push(clips[1])) == len(StreamingAudioEncoder(weights).push(clips[1]))


def test_light_mode_halves_settling_between_pushes_and_stays_close(weights):
    from realtime.audio.streaming import DEFAULT_SETTLE_STEPS

    clip = _audio(3.0, 7)
    full = StreamingAudioEncoder(weights)
    mixed = StreamingAudioEncoder(weights)
    assert not mixed.light and mixed.settle_steps == DEFAULT_SETTLE_STEPS
    want, got, rows = [], [], []
    for k, pos in enumerate(range(0, 3 * SR, 640)):
        mixed.light = 25 <= k < 50  # the server degrades for a second, then recovers
        assert mixed.settle_steps == (DEFAULT_SETTLE_STEPS // 2 if mixed.light else DEFAULT_SETTLE_STEPS)
        want += full.push(clip[pos : pos + 640])
        rows.append(mixed.window_x.shape[0])  # unsettled steps carried into the next call
        got += mixed.push(clip[pos : pos + 640])
    assert [f.index for f in got] == [f.index for f in want] and len(got) >= 70
    assert max(rows[30:50]) <= DEFAULT_SETTLE_STEPS // 2 < max(rows[60:])  # fewer rows re-encoded per call
    cos = [float(torch.nn.functional.cosine_similarity(g.features.flatten(), w.features.flatten(), dim=0))
           for g, w in zip(got, want)]
    assert min(cos[:20]) > 0.9999  # identical before the switch
    assert 0.9 < min(cos) and np.mean(cos) > 0.97  # close while light (random weights: a loose bound)
