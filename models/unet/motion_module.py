"""AnimateDiff-style temporal motion module ("Vanilla"), as LatentSync's stage-2 UNets carry it.

Each spatial position of each clip attends over the clip's frames. Module and parameter names
follow LatentSync's tree (``temporal_transformer.transformer_blocks.N.attention_blocks.M...``) so
checkpoints load unchanged; the attention itself is diffusers' ``Attention`` (processor-based,
SDPA by default).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from diffusers.models.attention import FeedForward
from diffusers.models.attention_processor import Attention
from torch import nn

# LatentSync's TemporalTransformer3DModel keeps the default 32 groups whatever the UNet's
# norm_num_groups is, so channel counts of blocks with motion modules must be multiples of 32.
MOTION_NORM_GROUPS = 32


class SinusoidalPositionalEncoding(nn.Module):
    """Fixed sin/cos table over frame index, added to the temporal tokens.

    ``pe`` is a persistent buffer (1, max_len, dim): it is part of the official state dicts.
    """

    def __init__(self, dim: int, max_len: int):
        super().__init__()
        position = torch.arange(max_len, dtype=torch.float32)[:, None]
        inv_freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
        pe = torch.zeros(1, max_len, dim)
        pe[0, :, 0::2] = torch.sin(position * inv_freq)
        pe[0, :, 1::2] = torch.cos(position * inv_freq)
        self.register_buffer("pe", pe, persistent=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, F, C) -> x + pe[:F]."""
        if x.shape[1] > self.pe.shape[1]:
            raise ValueError(f"{x.shape[1]} frames exceed the motion module's maximum of {self.pe.shape[1]}")
        return x + self.pe[:, : x.shape[1]].to(x.dtype)


class TemporalSelfAttention(Attention):
    """Self-attention across frames at every spatial position (LatentSync's VersatileAttention)."""

    def __init__(self, dim: int, heads: int, dim_head: int, pos_max_len: int | None):
        super().__init__(query_dim=dim, heads=heads, dim_head=dim_head, bias=False)
        self.pos_encoder = SinusoidalPositionalEncoding(dim, pos_max_len) if pos_max_len else None

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:  # type: ignore[override]
        """x: (B*F, D, C) tokens per frame -> same shape."""
        bf, d, c = x.shape
        b = bf // num_frames
        t = x.view(b, num_frames, d, c).transpose(1, 2).reshape(b * d, num_frames, c)  # (B*D, F, C)
        if self.pos_encoder is not None:
            t = self.pos_encoder(t)
        t = super().forward(t)
        return t.view(b, d, num_frames, c).transpose(1, 2).reshape(bf, d, c)


class TemporalTransformerBlock(nn.Module):
    """Pre-norm temporal attention blocks, then a GEGLU feed-forward."""

    def __init__(self, dim: int, heads: int, dim_head: int, block_types: Sequence[str], pos_max_len: int | None):
        super().__init__()
        for name in block_types:
            if name != "Temporal_Self":
                raise NotImplementedError(f"motion module attention block {name!r} is not supported")
        self.attention_blocks = nn.ModuleList(
            [TemporalSelfAttention(dim, heads, dim_head, pos_max_len) for _ in block_types]
        )
        self.norms = nn.ModuleList([nn.LayerNorm(dim) for _ in block_types])
        self.ff = FeedForward(dim, activation_fn="geglu")
        self.ff_norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        for attn, norm in zip(self.attention_blocks, self.norms):
            x = attn(norm(x), num_frames) + x
        return self.ff(self.ff_norm(x)) + x


class TemporalTransformer3DModel(nn.Module):
    def __init__(self, channels: int, heads: int, dim_head: int, num_layers: int, block_types: Sequence[str],
                 pos_max_len: int | None):
        super().__init__()
        inner = heads * dim_head
        self.norm = nn.GroupNorm(MOTION_NORM_GROUPS, channels, eps=1e-6, affine=True)
        self.proj_in = nn.Linear(channels, inner)
        self.transformer_blocks = nn.ModuleList(
            [TemporalTransformerBlock(inner, heads, dim_head, block_types, pos_max_len) for _ in range(num_layers)]
        )
        self.proj_out = nn.Linear(inner, channels)

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        """x: (B*F, C, H, W) -> same shape (residual)."""
        bf, c, h, w = x.shape
        t = self.norm(x).permute(0, 2, 3, 1).reshape(bf, h * w, c)  # per-frame norm, (B*F, HW, C)
        t = self.proj_in(t)
        for block in self.transformer_blocks:
            t = block(t, num_frames)
        t = self.proj_out(t)
        return t.reshape(bf, h, w, c).permute(0, 3, 1, 2) + x


class VanillaTemporalModule(nn.Module):
    """The ``motion_modules.N`` entry of a UNet block; kwargs are LatentSync's motion_module_kwargs."""

    def __init__(self, in_channels: int, num_attention_heads: int = 8, num_transformer_block: int = 2,
                 attention_block_types: Sequence[str] = ("Temporal_Self", "Temporal_Self"),
                 cross_frame_attention_mode: str | None = None, temporal_position_encoding: bool = False,
                 temporal_position_encoding_max_len: int = 24, temporal_attention_dim_div: int = 1,
                 zero_initialize: bool = True):
        super().__init__()
        if cross_frame_attention_mode is not None:
            raise NotImplementedError("cross_frame_attention_mode is not supported")
        dim_head = in_channels // num_attention_heads // temporal_attention_dim_div
        self.temporal_transformer = TemporalTransformer3DModel(
            in_channels, num_attention_heads, dim_head, num_transformer_block, attention_block_types,
            temporal_position_encoding_max_len if temporal_position_encoding else None,
        )
        if zero_initialize:
            # Starts as identity so inserting the module does not disturb a pretrained image UNet.
            nn.init.zeros_(self.temporal_transformer.proj_out.weight)
            nn.init.zeros_(self.temporal_transformer.proj_out.bias)

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        return self.temporal_transformer(x, num_frames)
