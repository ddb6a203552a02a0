"""LatentSync-exact features: parity with LatentSync's own output on real speech, chunking at
any fps, frame counts, and long audio over several 30 s windows."""

import numpy as np
import pytest
import torch
from whisper.model import ModelDimensions, Whisper

from realtime.audio.features import (
    BLOCK_ROWS,
    LOOKAHEAD_SECONDS,
    STEPS_PER_BLOCK,
    STEPS_PER_SECOND,
    Audio2Feature,
    chunk_features,
    compute_features,
    frame_block,
    frame_center_step,
    frame_step_indices,
    last_step_needed,
    num_steps,
    num_video_frames,
)


@pytest.fixture(scope="module")
def arctic_features(embedded_whisper, arctic_audio):
    return compute_features(embedded_whisper, arctic_audio)


def test_constants():
    assert (STEPS_PER_SECOND, STEPS_PER_BLOCK, BLOCK_ROWS) == (50, 10, 50)
    assert LOOKAHEAD_SECONDS == pytest.approx(0.12)


def test_full_features_match_latentsync(arctic_features, latentsync_reference):
    ref = latentsync_reference["feature_array"]
    assert arctic_features.shape == ref.shape == (200, 5, 384)
    assert arctic_features.dtype == np.float32
    diff = np.abs(arctic_features - ref)
    assert diff.max() <= 1e-3
    assert diff[:, :4].max() <= 1e-4  # the first four taps are small; only tap 4's |x| ~ 600 outliers are loose
    assert np.abs(ref).max() > 600  # the massive activations are really there


def test_chunks_25fps_match_latentsync(arctic_features, arctic_audio, latentsync_reference):
    ref = latentsync_reference
    n = num_video_frames(len(arctic_audio), 25)
    assert n == 100 == int(ref["num_frames"]) - 2  # LatentSync's loop yields two extra chunks
    chunks = chunk_features(arctic_features, 25, n)
    assert chunks.shape == (100, 50, 384)
    expected = ref["feature_array"][ref["chunk_indices"][:n]].reshape(n, 50, 384)
    assert np.abs(chunks - expected).max() <= 1e-3
    assert np.abs(chunks[:3] - ref["chunks_first3"]).max() <= 1e-3
    # the reference's last three chunks are its frames 99, 100, 101 (two past the video's end)
    last3 = np.stack([frame_block(arctic_features, i, 25) for i in (99, 100, 101)])
    assert np.abs(last3 - ref["chunks_last3"]).max() <= 1e-3


@pytest.mark.parametrize("fps,key", [(25, "chunk_indices"), (30, "chunk_indices_fps30")])
def test_chunk_indices_match_latentsync(latentsync_reference, fps, key):
    ref = latentsync_reference[key]
    got = np.stack([frame_step_indices(i, fps, 200) for i in range(len(ref))])
    np.testing.assert_array_equal(got, ref)


def test_fps30_chunks_and_flattening(arctic_features, latentsync_reference):
    ref = latentsync_reference
    chunks = chunk_features(arctic_features, 30, 120)
    expected = ref["feature_array"][ref["chunk_indices_fps30"][:120]].reshape(120, 50, 384)
    assert np.abs(chunks - expected).max() <= 1e-3
    # index-major, tap-minor: row 5*j + t is step j, tap t
    np.testing.assert_array_equal(chunks[60, 5 * 3 + 2], arctic_features[frame_step_indices(60, 30, 200)[3], 2])


def test_frame_counts_and_centres():
    assert num_steps(64000) == 200
    assert num_video_frames(64000, 25) == 100
    assert num_video_frames(64000, 30) == 120
    assert num_video_frames(64000, 29.97) == 119
    assert num_video_frames(63999, 25) == 99
    assert [frame_center_step(i, 30) for i in range(4)] == [0, 1, 3, 5]
    assert last_step_needed(10, 25) == 25  # steps [16, 26)
    assert num_steps(16000 * 30) == 1500 and num_steps(16000 * 31) == 1550
    assert num_steps(10) == 1  # shorter than one STFT window: padded to 25 ms


def test_long_audio_spans_several_windows():
    # tiny random encoder with Whisper's real context so the 30 s windowing is exercised cheaply
    torch.manual_seed(0)
    dims = ModelDimensions(80, 1500, 16, 2, 2, 10, 4, 16, 2, 1)
    model = Whisper(dims).eval()
    audio = np.random.default_rng(0).standard_normal(16000 * 31 + 500).astype(np.float32) * 0.1
    feats = compute_features(model, audio, dtype=torch.float32)
    assert feats.shape == (num_steps(len(audio)), 3, 16) == (1551, 3, 16)
    assert np.isfinite(feats).all()
    # the second window starts again at position 0: its first step's tap 0 is conv + pos[0]
    assert not np.allclose(feats[1500], feats[1499])


def test_audio2feature_end_to_end(embedded_whisper, arctic_wav, arctic_features):
    a2f = Audio2Feature(embedded_whisper)
    feats, chunks = a2f(arctic_wav, fps=25)
    np.testing.assert_array_equal(feats, arctic_features)
    assert chunks.shape == (100, 50, 384)
