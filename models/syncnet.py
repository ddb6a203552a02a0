"""LatentSync's StableSyncNet: a lip-sync judge embedding 16 frames of lower face and their audio.

Two convolutional encoders (one ResNet block per level, each downsampling by its factor, optional
self-attention blocks) map (B, 48, 128, 256) pixel windows -- 16 RGB frames stacked frame-major
(``f c``), the lower half of the 256 x 256 aligned face, in [-1, 1] -- and (B, 1, 80, 52) Wav2Lip
mel windows to unit vectors; matching windows have high cosine similarity.

Parameter names equal LatentSync's ``stable_syncnet.py`` (checkpoints load strictly): an encoder is
``conv_in``, ``down_blocks.{k}`` (ResNet and attention blocks interleaved in one list), ``norm_out``.
Pure tensor code; loading from files lives in ``realtime.evaluate.sync``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from diffusers.models.attention import FeedForward
from diffusers.models.attention_processor import Attention
from torch import nn

Factor = int | list[int]


@dataclass
class EncoderConfig:
    in_channels: int
    block_out_channels: list[int]
    downsample_factors: list[Factor]  # per level: int, or [height, width]
    attn_blocks: list[int]  # 1: an attention block after that level's ResNet block
    dropout: float = 0.0
    norm_num_groups: int = 32  # LatentSync hard-codes 32; the tiny preset needs fewer


@dataclass
class SyncNetConfig:
    """The ``model:`` section of LatentSync's ``configs/syncnet/*.yaml``; defaults: syncnet_16_pixel_attn."""

    audio_encoder: EncoderConfig = field(default_factory=lambda: EncoderConfig(
        in_channels=1,  # (1, 80, 52): 80 mel bins x 52 mel frames (16 video frames at 80 mel frames/s)
        block_out_channels=[32, 64, 128, 256, 512, 1024, 2048],
        downsample_factors=[[2, 1], 2, 2, 1, 2, 2, [2, 3]],
        attn_blocks=[0, 0, 0, 1, 1, 0, 0]))
    visual_encoder: EncoderConfig = field(default_factory=lambda: EncoderConfig(
        in_channels=48,  # 16 frames x RGB of the lower face half, (48, 128, 256)
        block_out_channels=[64, 128, 256, 256, 512, 1024, 2048, 2048],
        downsample_factors=[[1, 2], 2, 2, 2, 2, 2, 2, 2],
        attn_blocks=[0, 0, 0, 0, 1, 1, 0, 0]))


def tiny_config() -> SyncNetConfig:
    """Test preset: same block types and input shapes; both encoders still end at 1 x 1."""
    return SyncNetConfig(
        audio_encoder=EncoderConfig(1, [8, 16, 32], [4, 4, 4], [0, 1, 0], norm_num_groups=4),
        visual_encoder=EncoderConfig(48, [8, 16, 16, 32, 32], [[1, 2], 4, 4, 4, 4], [0, 0, 0, 1, 0], norm_num_groups=4),
    )


class ResnetDownBlock(nn.Module):
    """Pre-norm ResNet block, then a 3x3 strided conv with asymmetric zero padding (LatentSync's)."""

    def __init__(self, in_channels: int, out_channels: int, factor: Factor, groups: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels, eps=1e-6)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, out_channels, eps=1e-6)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None
        fh, fw = (factor, factor) if isinstance(factor, int) else tuple(factor)
        if (fh, fw) == (1, 1):
            self.downsample_conv = None
        else:
            self.downsample_conv = nn.Conv2d(out_channels, out_channels, 3, stride=(fh, fw), padding=0)
        # F.pad order (left, right, top, bottom): pad after the image, except keep an axis that is not
        # downsampled at its size by padding both of its sides.
        self.pad = (0, 1, 1, 1) if fh == 1 else (1, 1, 0, 1) if fw == 1 else (0, 1, 0, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        h = h + (self.conv_shortcut(x) if self.conv_shortcut is not None else x)
        if self.downsample_conv is not None:
            h = self.downsample_conv(F.pad(h, self.pad))
        return h


class AttentionBlock(nn.Module):
    """Spatial self-attention (8 heads) + GEGLU feed-forward between 1x1 convs, residual around all."""

    def __init__(self, dim: int, groups: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, dim, eps=1e-6)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, dropout=dropout, activation_fn="geglu")
        self.conv_in = nn.Conv2d(dim, dim, 1)
        self.conv_out = nn.Conv2d(dim, dim, 1)
        self.attn = Attention(query_dim=dim, heads=8, dim_head=dim // 8, dropout=dropout, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        t = self.conv_in(self.norm1(x)).flatten(2).transpose(1, 2)  # (B, H*W, C)
        t = self.attn(self.norm2(t)) + t
        t = self.ff(self.norm3(t)) + t
        return self.conv_out(t.transpose(1, 2).reshape(b, c, h, w)) + x


class DownEncoder(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        assert len(cfg.block_out_channels) == len(cfg.downsample_factors) == len(cfg.attn_blocks)
        self.conv_in = nn.Conv2d(cfg.in_channels, cfg.block_out_channels[0], 3, padding=1)
        blocks: list[nn.Module] = []
        prev = cfg.block_out_channels[0]
        for ch, factor, attn in zip(cfg.block_out_channels, cfg.downsample_factors, cfg.attn_blocks):
            blocks.append(ResnetDownBlock(prev, ch, factor, cfg.norm_num_groups, cfg.dropout))
            if attn:
                blocks.append(AttentionBlock(ch, cfg.norm_num_groups, cfg.dropout))
            prev = ch
        self.down_blocks = nn.ModuleList(blocks)
        self.norm_out = nn.GroupNorm(cfg.norm_num_groups, prev, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for block in self.down_blocks:
            h = block(h)
        return F.relu(self.norm_out(h))


class StableSyncNet(nn.Module):
    def __init__(self, config: SyncNetConfig | None = None):
        super().__init__()
        self.config = config or SyncNetConfig()
        self.audio_encoder = DownEncoder(self.config.audio_encoder)
        self.visual_encoder = DownEncoder(self.config.visual_encoder)

    def embed_video(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, 48, 128, 256) -> (B, D) unit vectors."""
        return F.normalize(self.visual_encoder(frames).flatten(1), dim=1)

    def embed_audio(self, mel: torch.Tensor) -> torch.Tensor:
        """(B, 1, 80, 52) -> (B, D) unit vectors."""
        return F.normalize(self.audio_encoder(mel).flatten(1), dim=1)

    def forward(self, frames: torch.Tensor, mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (vision_embeds, audio_embeds), each (B, D) with unit L2 norm."""
        return self.embed_video(frames), self.embed_audio(mel)
