"""Reader of CTranslate2 Whisper ``model.bin`` files and mapping onto openai-whisper's state dict.

Pure bytes -> numpy -> tensors: no file system access here (the loader in
``realtime/audio/whisper_loader.py`` reads the file and hands over its bytes).

Format (binary version 6, little-endian)::

    u32 version, str spec_name, u32 revision, u32 n_vars,
    n_vars x (str name, u8 rank, u32 dims[rank], u8 dtype, u32 nbytes, data),
    u32 n_aliases, n_aliases x (str alias, str target)

where ``str`` is a u16 byte count (including a trailing NUL), the UTF-8 bytes and the NUL.
Rank-0 entries (num_heads, activation, ...) are spec scalars, not weights.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

import numpy as np
import torch
from whisper.model import ModelDimensions, Whisper

# CTranslate2's DataType enum, in its order.
_DTYPES = {
    0: np.dtype("<f4"),
    1: np.dtype("i1"),
    2: np.dtype("<i2"),
    3: np.dtype("<i4"),
    4: np.dtype("<f2"),
    5: None,  # bfloat16: numpy has no such dtype; decoded by hand below
}
_BF16 = 5
_SUPPORTED_VERSIONS = (5, 6)


class CT2FormatError(ValueError):
    """The bytes are not a CTranslate2 Whisper model this reader understands."""


@dataclass
class CT2Model:
    """Parsed ``model.bin``: tensors by CT2 name, aliases resolved to copies of their targets."""

    spec_name: str
    revision: int
    variables: dict[str, np.ndarray]
    scalars: dict[str, np.ndarray]
    aliases: dict[str, str]


class _Cursor:
    def __init__(self, buf: memoryview):
        self.buf = buf
        self.pos = 0

    def take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.buf):
            raise CT2FormatError(f"truncated model.bin: wanted {n} bytes at offset {self.pos}, file has {len(self.buf)}")
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return struct.unpack("<H", self.take(2))[0]

    def u32(self) -> int:
        return struct.unpack("<I", self.take(4))[0]

    def string(self) -> str:
        n = self.u16()
        raw = bytes(self.take(n))
        return raw.rstrip(b"\x00").decode("utf-8")


def _bf16_to_f32(raw: memoryview, count: int) -> np.ndarray:
    # bfloat16 is the upper half of a float32.
    u16 = np.frombuffer(raw, dtype="<u2", count=count).astype(np.uint32)
    return (u16 << 16).view(np.float32)


def parse_ct2(data: bytes | bytearray | memoryview) -> CT2Model:
    """Parse a CTranslate2 ``model.bin`` held in memory. Arrays are copies (safe after ``data`` dies)."""
    cur = _Cursor(memoryview(data).cast("B"))
    version = cur.u32()
    if version not in _SUPPORTED_VERSIONS:
        raise CT2FormatError(f"unsupported CTranslate2 binary version {version} (expected one of {_SUPPORTED_VERSIONS})")
    spec_name = cur.string()
    revision = cur.u32()
    n_vars = cur.u32()
    variables: dict[str, np.ndarray] = {}
    scalars: dict[str, np.ndarray] = {}
    for _ in range(n_vars):
        name = cur.string()
        rank = cur.u8()
        shape = tuple(cur.u32() for _ in range(rank))
        dtype_id = cur.u8()
        if dtype_id not in _DTYPES:
            raise CT2FormatError(f"variable {name!r} has unknown dtype id {dtype_id}")
        nbytes = cur.u32()
        raw = cur.take(nbytes)
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if dtype_id == _BF16:
            itemsize = 2
        else:
            itemsize = _DTYPES[dtype_id].itemsize
        if count * itemsize != nbytes:
            raise CT2FormatError(f"variable {name!r}: {nbytes} bytes do not fit shape {shape} of dtype id {dtype_id}")
        if dtype_id == _BF16:
            arr = _bf16_to_f32(raw, count).reshape(shape)
        else:
            arr = np.frombuffer(raw, dtype=_DTYPES[dtype_id], count=count).reshape(shape).copy()
        (variables if rank > 0 else scalars)[name] = arr
    aliases: dict[str, str] = {}
    if cur.pos < len(cur.buf):  # version 5 files may end without an alias table
        for _ in range(cur.u32()):
            alias = cur.string()
            aliases[alias] = cur.string()
    for alias, target in aliases.items():
        if target in variables:
            variables.setdefault(alias, variables[target])
    return CT2Model(spec_name, revision, variables, scalars, aliases)


def _dequantize(variables: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """int8/int16 weights with a per-row ``weight_scale`` -> float32 (``w_float = w_int / scale``)."""
    out: dict[str, np.ndarray] = {}
    for name, arr in variables.items():
        if name.endswith("/weight_scale"):
            continue
        scale = variables.get(name + "_scale")
        if arr.dtype.kind == "i" and name.endswith("/weight") and scale is not None:
            scale = scale.astype(np.float32).reshape(-1, *([1] * (arr.ndim - 1)))
            arr = arr.astype(np.float32) / scale
        out[name] = arr
    return out


def _count_layers(names, prefix: str) -> int:
    pat = re.compile(rf"^{prefix}/layer_(\d+)/")
    idx = {int(m.group(1)) for n in names if (m := pat.match(n))}
    return max(idx) + 1 if idx else 0


def _num_heads(model: CT2Model, side: str, default: int) -> int:
    for key in (f"{side}/num_heads", "num_heads"):
        if key in model.scalars:
            return int(model.scalars[key])
    return default


def whisper_dims(model: CT2Model) -> ModelDimensions:
    """openai-whisper dimensions read off the tensor shapes (heads from the spec scalars)."""
    v = model.variables
    try:
        conv1 = v["encoder/conv1/weight"]  # (n_state, n_mels, 3)
        enc_pos = v["encoder/position_encodings/encodings"]  # (n_audio_ctx, n_state)
        emb = v["decoder/embeddings/weight"]  # (n_vocab, n_text_state)
        dec_pos = v["decoder/position_encodings/encodings"]  # (n_text_ctx, n_text_state)
    except KeyError as e:
        raise CT2FormatError(f"not a CTranslate2 Whisper model: missing variable {e.args[0]!r}") from None
    n_audio_state = int(conv1.shape[0])
    n_text_state = int(emb.shape[1])
    # 64-dim heads for every released Whisper size; the spec usually stores num_heads anyway.
    return ModelDimensions(
        n_mels=int(conv1.shape[1]),
        n_audio_ctx=int(enc_pos.shape[0]),
        n_audio_state=n_audio_state,
        n_audio_head=_num_heads(model, "encoder", n_audio_state // 64),
        n_audio_layer=_count_layers(v, "encoder"),
        n_vocab=int(emb.shape[0]),
        n_text_ctx=int(dec_pos.shape[0]),
        n_text_state=n_text_state,
        n_text_head=_num_heads(model, "decoder", n_text_state // 64),
        n_text_layer=_count_layers(v, "decoder"),
    )


def _split_rows(w: np.ndarray, parts: int) -> list[np.ndarray]:
    assert w.shape[0] % parts == 0, f"cannot split {w.shape} into {parts} along rows"
    return np.split(w, parts, axis=0)


def _linear(sd, v, src: str, dst: str, bias: bool = True) -> None:
    sd[f"{dst}.weight"] = v[f"{src}/weight"]
    if bias:
        sd[f"{dst}.bias"] = v[f"{src}/bias"]


def _norm(sd, v, src: str, dst: str) -> None:
    sd[f"{dst}.weight"] = v[f"{src}/gamma"]
    sd[f"{dst}.bias"] = v[f"{src}/beta"]


def _self_attention(sd, v, src: str, dst: str) -> None:
    # CT2 fuses q, k, v row-wise; openai-whisper's key projection has no bias (CT2 stores zeros).
    q, k, val = _split_rows(v[f"{src}/linear_0/weight"], 3)
    qb, _kb, vb = _split_rows(v[f"{src}/linear_0/bias"], 3)
    sd[f"{dst}.query.weight"], sd[f"{dst}.query.bias"] = q, qb
    sd[f"{dst}.key.weight"] = k
    sd[f"{dst}.value.weight"], sd[f"{dst}.value.bias"] = val, vb
    _linear(sd, v, f"{src}/linear_1", f"{dst}.out")


def _cross_attention(sd, v, src: str, dst: str) -> None:
    _linear(sd, v, f"{src}/linear_0", f"{dst}.query")
    k, val = _split_rows(v[f"{src}/linear_1/weight"], 2)
    _kb, vb = _split_rows(v[f"{src}/linear_1/bias"], 2)
    sd[f"{dst}.key.weight"] = k
    sd[f"{dst}.value.weight"], sd[f"{dst}.value.bias"] = val, vb
    _linear(sd, v, f"{src}/linear_2", f"{dst}.out")


def _ffn(sd, v, src: str, dst: str) -> None:
    _linear(sd, v, f"{src}/linear_0", f"{dst}.mlp.0")
    _linear(sd, v, f"{src}/linear_1", f"{dst}.mlp.2")
    _norm(sd, v, f"{src}/layer_norm", f"{dst}.mlp_ln")


def ct2_to_whisper_state_dict(model: CT2Model) -> tuple[ModelDimensions, dict[str, np.ndarray]]:
    """Map CT2 names onto openai-whisper ``Whisper.state_dict()`` names (numpy arrays, stored dtype).

    The encoder's stored fp16 sinusoids are kept as they are (they differ from whisper's own
    ``sinusoids()`` by up to 3e-4, and LatentSync's reference features were computed with them).
    """
    dims = whisper_dims(model)
    v = _dequantize(model.variables)
    sd: dict[str, np.ndarray] = {}
    try:
        _linear(sd, v, "encoder/conv1", "encoder.conv1")
        _linear(sd, v, "encoder/conv2", "encoder.conv2")
        sd["encoder.positional_embedding"] = v["encoder/position_encodings/encodings"]
        for i in range(dims.n_audio_layer):
            src, dst = f"encoder/layer_{i}", f"encoder.blocks.{i}"
            _self_attention(sd, v, f"{src}/self_attention", f"{dst}.attn")
            _norm(sd, v, f"{src}/self_attention/layer_norm", f"{dst}.attn_ln")
            _ffn(sd, v, f"{src}/ffn", dst)
        _norm(sd, v, "encoder/layer_norm", "encoder.ln_post")

        # The output projection is an alias of the token embedding in both formats.
        sd["decoder.token_embedding.weight"] = v["decoder/embeddings/weight"]
        sd["decoder.positional_embedding"] = v["decoder/position_encodings/encodings"]
        for i in range(dims.n_text_layer):
            src, dst = f"decoder/layer_{i}", f"decoder.blocks.{i}"
            _self_attention(sd, v, f"{src}/self_attention", f"{dst}.attn")
            _norm(sd, v, f"{src}/self_attention/layer_norm", f"{dst}.attn_ln")
            _cross_attention(sd, v, f"{src}/attention", f"{dst}.cross_attn")
            _norm(sd, v, f"{src}/attention/layer_norm", f"{dst}.cross_attn_ln")
            _ffn(sd, v, f"{src}/ffn", dst)
        _norm(sd, v, "decoder/layer_norm", "decoder.ln")
    except KeyError as e:
        raise CT2FormatError(f"CTranslate2 Whisper model lacks variable {e.args[0]!r}") from None
    return dims, sd


def _alignment_mask(dims: ModelDimensions, heads) -> torch.Tensor:
    """Sparse (n_text_layer, n_text_head) bool mask; default like whisper: all heads of the upper half."""
    mask = torch.zeros(dims.n_text_layer, dims.n_text_head, dtype=torch.bool)
    if heads is None:
        mask[dims.n_text_layer // 2 :] = True
    else:
        for layer, head in heads:
            mask[int(layer), int(head)] = True
    return mask.to_sparse()


def whisper_from_ct2(data: bytes | bytearray | memoryview, dtype: torch.dtype = torch.float32, alignment_heads=None):
    """Build an openai-whisper ``Whisper`` (eval mode, ``dtype`` weights) from ``model.bin`` bytes.

    ``alignment_heads``: optional (layer, head) pairs for word timestamps (CTranslate2 keeps them
    in ``config.json`` beside ``model.bin``); default whisper's "upper half of the layers".
    """
    dims, sd = ct2_to_whisper_state_dict(parse_ct2(data))
    np_dtype = {torch.float32: np.float32, torch.float16: np.float16, torch.float64: np.float64}[dtype]
    # numpy's fp16 -> fp32 cast is several times faster than torch's on CPU. (Whisper cannot be
    # built on the meta device: its __init__ makes a sparse tensor, which meta does not support.)
    tensors = {k: torch.from_numpy(np.ascontiguousarray(a, dtype=np_dtype)) for k, a in sd.items()}
    model = Whisper(dims)
    expected = model.state_dict()
    # Non-persistent buffers are derived from dims by Whisper.__init__, not weights.
    derived = {"alignment_heads", "decoder.mask"}
    missing = sorted(set(expected) - set(tensors) - derived)
    unexpected = sorted(set(tensors) - set(expected))
    misshaped = sorted(k for k in tensors if k in expected and tuple(expected[k].shape) != tuple(tensors[k].shape))
    if missing or unexpected or misshaped:
        raise CT2FormatError(
            f"CT2 -> whisper mapping mismatch: missing {missing[:5]}, unexpected {unexpected[:5]}, misshaped {misshaped[:5]}"
        )
    model.load_state_dict(tensors, strict=False, assign=True)
    model.register_buffer("alignment_heads", _alignment_mask(dims, alignment_heads), persistent=False)
    return model.eval()
