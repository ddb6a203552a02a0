"""CTranslate2 reader and name mapping: synthetic files (every dtype, errors) and the real
embedded tiny.en, which must transcribe real speech correctly after conversion."""

import struct

import numpy as np
import pytest
import torch
from whisper.model import ModelDimensions, Whisper

from models.whisper_ct2 import CT2FormatError, ct2_to_whisper_state_dict, parse_ct2, whisper_dims, whisper_from_ct2

TINY = ModelDimensions(n_mels=8, n_audio_ctx=12, n_audio_state=16, n_audio_head=2, n_audio_layer=2,
                       n_vocab=40, n_text_ctx=6, n_text_state=16, n_text_head=2, n_text_layer=1)
_DTYPE_IDS = {np.dtype("float32"): 0, np.dtype("int8"): 1, np.dtype("int16"): 2, np.dtype("int32"): 3, np.dtype("float16"): 4}


def _str(s: str) -> bytes:
    b = s.encode() + b"\x00"
    return struct.pack("<H", len(b)) + b


def write_ct2(variables: dict, aliases: dict, version: int = 6) -> bytes:
    out = [struct.pack("<I", version), _str("WhisperSpec"), struct.pack("<I", 3), struct.pack("<I", len(variables))]
    for name, arr in variables.items():
        arr = np.require(arr, requirements="C")  # (ascontiguousarray would turn scalars into 1-D)
        out += [_str(name), struct.pack("<B", arr.ndim), struct.pack(f"<{arr.ndim}I", *arr.shape),
                struct.pack("<B", _DTYPE_IDS[arr.dtype]), struct.pack("<I", arr.nbytes), arr.tobytes()]
    out.append(struct.pack("<I", len(aliases)))
    for a, t in aliases.items():
        out += [_str(a), _str(t)]
    return b"".join(out)


def whisper_to_ct2_vars(model: Whisper, dtype=np.float32) -> dict:
    """The inverse mapping (what CTranslate2's converter does), for round-trip tests."""
    sd = {k: v.numpy() for k, v in model.state_dict().items() if k != "alignment_heads"}
    v = {}

    def lin(src, dst, bias=True):
        v[f"{dst}/weight"] = sd[f"{src}.weight"]
        if bias:
            v[f"{dst}/bias"] = sd[f"{src}.bias"]

    def norm(src, dst):
        v[f"{dst}/gamma"], v[f"{dst}/beta"] = sd[f"{src}.weight"], sd[f"{src}.bias"]

    def self_attn(src, dst):
        v[f"{dst}/linear_0/weight"] = np.concatenate([sd[f"{src}.{n}.weight"] for n in ("query", "key", "value")])
        zeros = np.zeros_like(sd[f"{src}.query.bias"])
        v[f"{dst}/linear_0/bias"] = np.concatenate([sd[f"{src}.query.bias"], zeros, sd[f"{src}.value.bias"]])
        lin(f"{src}.out", f"{dst}/linear_1")

    def ffn(src, dst):
        lin(f"{src}.mlp.0", f"{dst}/linear_0")
        lin(f"{src}.mlp.2", f"{dst}/linear_1")
        norm(f"{src}.mlp_ln", f"{dst}/layer_norm")

    lin("encoder.conv1", "encoder/conv1")
    lin("encoder.conv2", "encoder/conv2")
    v["encoder/position_encodings/encodings"] = sd["encoder.positional_embedding"]
    for i in range(model.dims.n_audio_layer):
        self_attn(f"encoder.blocks.{i}.attn", f"encoder/layer_{i}/self_attention")
        norm(f"encoder.blocks.{i}.attn_ln", f"encoder/layer_{i}/self_attention/layer_norm")
        ffn(f"encoder.blocks.{i}", f"encoder/layer_{i}/ffn")
    norm("encoder.ln_post", "encoder/layer_norm")
    v["decoder/embeddings/weight"] = sd["decoder.token_embedding.weight"]
    v["decoder/position_encodings/encodings"] = sd["decoder.positional_embedding"]
    for i in range(model.dims.n_text_layer):
        p, q = f"decoder.blocks.{i}", f"decoder/layer_{i}"
        self_attn(f"{p}.attn", f"{q}/self_attention")
        norm(f"{p}.attn_ln", f"{q}/self_attention/layer_norm")
        lin(f"{p}.cross_attn.query", f"{q}/attention/linear_0")
        v[f"{q}/attention/linear_1/weight"] = np.concatenate([sd[f"{p}.cross_attn.key.weight"], sd[f"{p}.cross_attn.value.weight"]])
        v[f"{q}/attention/linear_1/bias"] = np.concatenate([np.zeros_like(sd[f"{p}.cross_attn.value.bias"]), sd[f"{p}.cross_attn.value.bias"]])
        lin(f"{p}.cross_attn.out", f"{q}/attention/linear_2")
        norm(f"{p}.cross_attn_ln", f"{q}/attention/layer_norm")
        ffn(p, f"{q}/ffn")
    norm("decoder.ln", "decoder/layer_norm")
    v = {k: a.astype(dtype) for k, a in v.items()}
    v["encoder/num_heads"] = np.array(model.dims.n_audio_head, np.int16)
    v["decoder/num_heads"] = np.array(model.dims.n_text_head, np.int16)
    return v


@pytest.fixture(scope="module")
def tiny_whisper():
    torch.manual_seed(0)
    model = Whisper(TINY).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.1)
    return model


def _max_sd_diff(a: Whisper, b: Whisper) -> float:
    sa, sb = a.state_dict(), b.state_dict()
    return max(float((sa[k].float() - sb[k].float()).abs().max()) for k in sa if k != "alignment_heads")


def test_roundtrip_f32_is_exact(tiny_whisper):
    blob = write_ct2(whisper_to_ct2_vars(tiny_whisper), {"decoder/projection/weight": "decoder/embeddings/weight"})
    parsed = parse_ct2(blob)
    assert parsed.spec_name == "WhisperSpec" and parsed.revision == 3
    assert int(parsed.scalars["encoder/num_heads"]) == 2
    assert whisper_dims(parsed) == TINY
    # the alias resolves to the same array as its target
    assert parsed.variables["decoder/projection/weight"] is parsed.variables["decoder/embeddings/weight"]
    assert _max_sd_diff(whisper_from_ct2(blob), tiny_whisper) == 0.0


def test_roundtrip_f16_within_half_precision(tiny_whisper):
    blob = write_ct2(whisper_to_ct2_vars(tiny_whisper, np.float16), {})
    assert 0 < _max_sd_diff(whisper_from_ct2(memoryview(blob)), tiny_whisper) < 1e-3


def test_int8_weights_with_scale_are_dequantised(tiny_whisper):
    v = whisper_to_ct2_vars(tiny_whisper)
    w = v["encoder/layer_0/ffn/linear_0/weight"]  # (4C, C)
    scale = (127.0 / np.abs(w).max(axis=1)).astype(np.float32)
    v["encoder/layer_0/ffn/linear_0/weight"] = np.round(w * scale[:, None]).astype(np.int8)
    v["encoder/layer_0/ffn/linear_0/weight_scale"] = scale
    _, sd = ct2_to_whisper_state_dict(parse_ct2(write_ct2(v, {})))
    got = sd["encoder.blocks.0.mlp.0.weight"]
    assert got.dtype == np.float32
    assert np.abs(got - w).max() <= 0.5 / scale.min() + 1e-7


def test_qkv_split_and_key_bias_dropped(tiny_whisper):
    _, sd = ct2_to_whisper_state_dict(parse_ct2(write_ct2(whisper_to_ct2_vars(tiny_whisper), {})))
    ref = tiny_whisper.state_dict()
    for name in ("query.weight", "key.weight", "value.weight", "query.bias", "value.bias"):
        np.testing.assert_array_equal(sd[f"encoder.blocks.1.attn.{name}"], ref[f"encoder.blocks.1.attn.{name}"].numpy())
    assert "encoder.blocks.1.attn.key.bias" not in sd
    assert "decoder.blocks.0.cross_attn.key.bias" not in sd


@pytest.mark.parametrize("cut", [3, 20, 200, -5])
def test_truncated_or_bad_bytes_raise_format_error(tiny_whisper, cut):
    blob = write_ct2(whisper_to_ct2_vars(tiny_whisper), {})
    with pytest.raises(CT2FormatError):
        parse_ct2(blob[:cut] if cut > 0 else blob[:cut - 2000])


def test_unknown_version_and_missing_variables():
    with pytest.raises(CT2FormatError, match="version 99"):
        parse_ct2(struct.pack("<I", 99) + b"\x00" * 16)
    with pytest.raises(CT2FormatError, match="missing variable"):
        whisper_dims(parse_ct2(write_ct2({"x/weight": np.zeros((2, 2), np.float32)}, {})))


# --- the real embedded weights -------------------------------------------------------------------

def test_embedded_dims_and_stored_positions(embedded_whisper):
    from realtime.audio.whisper_loader import embedded_model_path

    assert embedded_whisper.dims == ModelDimensions(80, 1500, 384, 6, 4, 51864, 448, 384, 6, 4)
    ct2 = parse_ct2(embedded_model_path().read_bytes())
    stored = ct2.variables["encoder/position_encodings/encodings"].astype(np.float32)
    np.testing.assert_array_equal(embedded_whisper.encoder.positional_embedding.numpy(), stored)
    # the stored sinusoids are fp16-rounded, so they differ slightly from whisper's own
    from whisper.model import sinusoids
    d = float(np.abs(stored - sinusoids(1500, 384).numpy()).max())
    assert 1e-5 < d < 5e-4


def test_embedded_model_transcribes_real_speech(embedded_whisper, arctic_audio):
    import whisper

    mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(arctic_audio))
    result = whisper.decode(embedded_whisper, mel, whisper.DecodingOptions(language="en", fp16=False, without_timestamps=True))
    text = "".join(c for c in result.text.lower() if c.isalpha() or c == " ").split()
    assert text == "and you always want to see it in the superlative degree".split()
    assert result.avg_logprob > -0.5
