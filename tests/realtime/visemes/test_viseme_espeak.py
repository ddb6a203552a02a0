import numpy as np
import pytest

from realtime.visemes import espeak
from tests.system_packages import needs
from realtime.visemes.dataset import DataConfig, augment, utterance_visemes_ms, voice_lists
from realtime.visemes.phonemes import PP, VISEMES

pytestmark = needs("espeak-ng")


@pytest.fixture(scope="module")
def synth():
    return espeak.EspeakSynth()


def test_phoneme_events_are_monotonic_and_cover_the_audio(synth):
    utt = synth.synthesize("Maybe the happy puppy would like some apple pie.", "en-us+f2", rate=170)
    assert utt.sample_rate == 22050
    assert 1.5 < len(utt.audio) / utt.sample_rate < 5
    assert len(utt.phonemes) >= 25
    assert np.all(np.diff(utt.starts) >= 0)
    assert utt.starts[0] < 0.05 * utt.sample_rate
    assert utt.starts[-1] <= len(utt.audio)
    # the last phonemes are the final pause, near the end of the audio
    assert utt.phonemes[-1].startswith("_") and utt.starts[-1] > 0.8 * len(utt.audio)
    assert sum(p in ("p", "b", "m") for p in utt.phonemes) >= 6


def test_voiceless_stop_closure_is_labelled_closed(synth):
    utt = synth.synthesize("a papa", "en-us")
    vis = utterance_visemes_ms(utt)
    k = utt.phonemes.index("p")
    burst_ms = int(utt.starts[k] * 1000 // utt.sample_rate)
    assert vis[burst_ms] == PP
    assert vis[burst_ms - 15] == PP  # the silent closure before the burst is lips-closed too
    assert {"sil", "PP"} <= {VISEMES[v] for v in vis}


def test_held_out_voices_never_in_training():
    train, held = voice_lists(DataConfig())
    assert not set(train) & set(held)
    assert all(v.startswith("en-029") or v.split("+")[-1] in DataConfig().eval_variants for v in held)


def test_augment_keeps_length_and_range():
    rng = np.random.default_rng(0)
    x = np.sin(np.arange(16000) / 10).astype(np.float32) * 0.5
    y = augment(x, DataConfig(noise_prob=1.0, eq_prob=1.0, reverb_prob=1.0), rng)
    assert y.shape == x.shape and y.dtype == np.float32
    assert np.isfinite(y).all() and np.abs(y).max() <= 1.0
