"""load_whisper: the embedded weights, user openai-whisper checkpoints, clear WeightsErrors, identity."""

import pytest
import torch
from whisper.model import ModelDimensions, Whisper

from realtime.audio.whisper_loader import embedded_model_path, load_whisper, model_identity
from realtime.errors import WeightsError

DIMS = ModelDimensions(80, 1500, 16, 2, 2, 10, 4, 16, 2, 1)


class Arbitrary:
    """An arbitrary pickled class: exactly what weights_only=True must refuse to unpickle."""


def _save_ckpt(path, seed=0):
    torch.manual_seed(seed)
    model = Whisper(DIMS)
    sd = {k: v for k, v in model.state_dict().items() if k != "alignment_heads"}
    torch.save({"dims": DIMS.__dict__, "model_state_dict": sd}, path)
    return model


def test_embedded_is_cached_fp32_eval(embedded_whisper):
    assert load_whisper() is embedded_whisper
    assert not embedded_whisper.training
    assert all(p.dtype == torch.float32 and not p.requires_grad for p in embedded_whisper.parameters())
    assert embedded_model_path().name == "model.bin"
    ident = model_identity()
    assert ident.startswith("whisper:ct2-tiny.en:") and ident == model_identity()


def test_openai_checkpoint_loads(tmp_path):
    path = tmp_path / "tiny.pt"
    ref = _save_ckpt(path)
    model = load_whisper(path)
    assert model.dims == DIMS
    torch.testing.assert_close(model.encoder.conv1.weight, ref.encoder.conv1.weight)
    assert load_whisper(str(path)) is model  # cached per (path, device)
    other = tmp_path / "other.pt"
    _save_ckpt(other, seed=1)
    assert model_identity(path).startswith("whisper:pt-tiny:")
    assert model_identity(path) != model_identity(other) != model_identity()


def test_missing_checkpoint_names_path(tmp_path):
    path = tmp_path / "nope.pt"
    with pytest.raises(WeightsError, match="does not exist") as e:
        load_whisper(path)
    assert str(path) in str(e.value)


def test_unsafe_or_wrong_checkpoints_are_weights_errors(tmp_path):
    unsafe = tmp_path / "unsafe.pt"
    torch.save({"dims": Arbitrary(), "model_state_dict": {}}, unsafe)  # not allowed by weights_only
    with pytest.raises(WeightsError, match="cannot be loaded safely") as e:
        load_whisper(unsafe)
    assert str(unsafe) in str(e.value)
    nodims = tmp_path / "nodims.pt"
    torch.save({"state_dict": {}}, nodims)
    with pytest.raises(WeightsError, match="lacks 'dims'"):
        load_whisper(nodims)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00\x01garbage")
    with pytest.raises(WeightsError):
        load_whisper(garbage)
    bad_shapes = tmp_path / "shapes.pt"
    torch.save({"dims": {**DIMS.__dict__, "n_audio_state": 32}, "model_state_dict": Whisper(DIMS).state_dict()}, bad_shapes)
    with pytest.raises(WeightsError, match="does not match"):
        load_whisper(bad_shapes)


def test_ct2_directory_or_file_path(embedded_whisper):
    path = embedded_model_path()
    for given in (path, path.parent):
        model = load_whisper(given)
        assert model is not embedded_whisper and model.dims == embedded_whisper.dims
        torch.testing.assert_close(model.encoder.conv2.weight, embedded_whisper.encoder.conv2.weight, rtol=0, atol=0)
    assert model_identity(path.parent).startswith("whisper:ct2-model:")
    assert model_identity(path).split(":")[-1] == model_identity().split(":")[-1]
