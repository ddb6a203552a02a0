"""Spatial transformer with per-frame audio cross-attention, and the v1.0 checkpoint name mapping.

LatentSync's ``Transformer3DModel`` is diffusers' continuous-input ``Transformer2DModel`` applied to
every frame: GroupNorm(eps 1e-6) -> 1x1 conv -> BasicTransformerBlock (self-attention ``attn1``,
audio cross-attention ``attn2``, GEGLU feed-forward) -> 1x1 conv, plus a residual. The video
tokens of frame i query only frame i's audio tokens ([50, 384] Whisper features), which falls out
of running the 2D transformer on the ``(B*F)`` batch with audio laid out as ``(B*F, 50, 384)``.
"""

from __future__ import annotations

import torch
from diffusers.models.transformers.transformer_2d import Transformer2DModel

# v1.0 (second_stage) code wrapped the audio cross-attention in an `audio_cross_attn` module;
# later code (and this package) uses diffusers' names. Order matters only for readability.
V10_RENAMES = ((".audio_cross_attn.attn.", ".attn2."), (".audio_cross_attn.norm.", ".norm2."))


def build_audio_transformer(channels: int, heads: int, cross_attention_dim: int | None, groups: int
                            ) -> Transformer2DModel:
    """One ``attentions.N`` entry: ``heads`` heads of ``channels // heads`` dims, one block."""
    return Transformer2DModel(
        num_attention_heads=heads,
        attention_head_dim=channels // heads,
        in_channels=channels,
        num_layers=1,
        cross_attention_dim=cross_attention_dim,  # None: no attn2/norm2 (add_audio_layer false)
        norm_num_groups=groups,
        use_linear_projection=False,
    )


def run_audio_transformer(block: Transformer2DModel, x: torch.Tensor, audio: torch.Tensor | None) -> torch.Tensor:
    """x: (B*F, C, H, W); audio: (B*F, N, D) per-frame tokens -> (B*F, C, H, W)."""
    return block(x, encoder_hidden_states=audio, return_dict=False)[0]


def rename_v10_key(key: str) -> str:
    """Maps a v1.0 checkpoint key onto this model's names (identity for other keys)."""
    for old, new in V10_RENAMES:
        if old in key:
            return key.replace(old, new)
    return key


def v10_load_state_dict_pre_hook(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                 error_msgs) -> None:
    """``load_state_dict`` pre-hook: renames v1.0 audio cross-attention keys in place.

    Registered on the UNet so both layouts load with ``strict=True`` (LatentSync's own later code
    loads v1.0 files with strict=False and silently drops those weights).
    """
    for key in [k for k in state_dict if k.startswith(prefix) and ".audio_cross_attn." in k]:
        state_dict[prefix + rename_v10_key(key[len(prefix):])] = state_dict.pop(key)
