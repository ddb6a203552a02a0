"""Whisper encoder forward that returns LatentSync's five feature "taps" per encoder step.

LatentSync keeps, for every encoder step, the input of the first block (conv front-end plus
positional embedding) and the output of each encoder block, and never applies ``ln_post``.
For Whisper tiny that is 1 + 4 = 5 taps of width 384.

The pieces are exposed separately (``conv_front``, ``add_positions``, ``block_forward``) so a
streaming encoder can encode short windows at absolute positions and run blocks against cached
keys/values of earlier steps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def conv_front(encoder, mel: Tensor) -> Tensor:
    """Conv front-end: (B, n_mels, 2T) log-mel -> (B, T, C), before positional embedding.

    The second conv has stride 2, so each encoder step covers two mel frames (20 ms).
    """
    assert mel.ndim == 3 and mel.shape[1] == encoder.conv1.in_channels, f"mel must be (B, n_mels, frames), got {tuple(mel.shape)}"
    x = F.gelu(encoder.conv1(mel))
    x = F.gelu(encoder.conv2(x))
    return x.permute(0, 2, 1)  # (B, T, C)


def step_positions(num_steps: int, pos_offset: int = 0, positions: Tensor | None = None) -> Tensor:
    """Absolute positions of ``num_steps`` encoder steps: ``positions`` or ``[pos_offset, pos_offset + T)``."""
    if positions is None:
        return torch.arange(pos_offset, pos_offset + num_steps)
    positions = torch.as_tensor(positions, dtype=torch.long)
    assert positions.shape == (num_steps,), f"positions must have shape ({num_steps},), got {tuple(positions.shape)}"
    return positions


def add_positions(encoder, x: Tensor, pos_offset: int = 0, positions: Tensor | None = None) -> Tensor:
    """Add the encoder's positional embedding at absolute step positions to (B, T, C) features."""
    pos = step_positions(x.shape[1], pos_offset, positions)
    n_ctx = encoder.positional_embedding.shape[0]
    if len(pos) and (int(pos.min()) < 0 or int(pos.max()) >= n_ctx):
        raise ValueError(f"encoder positions must lie in [0, {n_ctx}), got [{int(pos.min())}, {int(pos.max())}]")
    pe = encoder.positional_embedding[pos.to(encoder.positional_embedding.device)]
    return (x + pe).to(x.dtype)


def layer_norm(ln, x: Tensor) -> Tensor:
    """``ln`` applied at least in fp32 (like whisper's LayerNorm) but also in fp64 for fp64 ``x``."""
    dt = torch.promote_types(x.dtype, torch.float32)
    w = None if ln.weight is None else ln.weight.to(dt)
    b = None if ln.bias is None else ln.bias.to(dt)
    return F.layer_norm(x.to(dt), ln.normalized_shape, w, b, ln.eps).to(x.dtype)


def block_forward(
    block, x: Tensor, past_kv: tuple[Tensor, Tensor] | None = None, attn_mask: Tensor | None = None
) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """One encoder block on (B, T, C) ``x`` whose attention also sees cached keys/values.

    ``past_kv`` = (keys, values), each (B, S, C), computed by earlier calls for other steps (at
    their own absolute positions). Queries come from ``x`` only; keys/values are past + new.
    ``attn_mask`` (optional, broadcastable to (T, S + T), bool True = attend or additive float)
    restricts which keys each query sees. Returns (output (B, T, C), (new_keys, new_values) for
    ``x`` only, each (B, T, C)) so the caller decides what to cache.
    With ``past_kv=None`` and no mask this equals ``block(x)``.
    """
    attn = block.attn
    h = layer_norm(block.attn_ln, x)
    q = attn.query(h)
    k_new = attn.key(h)
    v_new = attn.value(h)
    if past_kv is not None:
        k = torch.cat([past_kv[0].to(k_new.dtype), k_new], dim=1)
        v = torch.cat([past_kv[1].to(v_new.dtype), v_new], dim=1)
    else:
        k, v = k_new, v_new
    B, T, C = q.shape
    H = attn.n_head
    qh = q.view(B, T, H, C // H).transpose(1, 2)  # (B, H, T, D)
    kh = k.view(B, k.shape[1], H, C // H).transpose(1, 2)  # (B, H, S+T, D)
    vh = v.view(B, v.shape[1], H, C // H).transpose(1, 2)
    a = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=attn_mask)
    a = a.transpose(1, 2).reshape(B, T, C)
    x = x + attn.out(a)
    x = x + block.mlp(layer_norm(block.mlp_ln, x))
    return x, (k_new, v_new)


def encoder_taps(encoder, mel: Tensor, pos_offset: int = 0, positions: Tensor | None = None) -> Tensor:
    """LatentSync's taps: (B, n_mels, 2T) log-mel -> (B, T, 1 + n_layer, C).

    Tap 0 is conv front-end + positional embedding; tap j is the output of block j; no ``ln_post``.
    Steps sit at absolute positions ``[pos_offset, pos_offset + T)`` (or explicit ``positions``),
    so a short window can be encoded where it lies inside a 30 s Whisper window. A full 3000-frame
    mel at offset 0 gives exactly what LatentSync's hooks on ``AudioEncoder.forward`` give.
    Computes in ``mel``'s dtype (fp64 mel -> fp64 arithmetic with the fp32 weights).
    """
    x = add_positions(encoder, conv_front(encoder, mel), pos_offset, positions)
    taps = [x]
    for block in encoder.blocks:
        x, _ = block_forward(block, x)
        taps.append(x)
    return torch.stack(taps, dim=2)  # (B, T, 5, C)
