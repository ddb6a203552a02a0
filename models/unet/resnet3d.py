"""Inflated residual block: diffusers' ResnetBlock2D weights, applied to every frame of a clip.

Layout convention of this package: inside the UNet, video activations travel as
``(B*F, C, H, W)`` (batch-major, frame-minor), so 2D convolutions, attention and up/down sampling
run on all frames at once without copies. Only GroupNorm needs the frame axis back: LatentSync
builds its resnets with a plain ``nn.GroupNorm`` applied to the 5D ``(B, C, F, H, W)`` tensor
(``use_inflated_groupnorm`` false), so the statistics of each group are shared across all F frames
of a clip. Normalising per frame instead would silently change the numerics of the official
checkpoints, hence ``group_norm_over_frames``.
"""

from __future__ import annotations

import torch
from diffusers.models.resnet import ResnetBlock2D
from torch import nn


def group_norm_over_frames(norm: nn.GroupNorm, x: torch.Tensor, num_frames: int) -> torch.Tensor:
    """GroupNorm whose statistics span all frames of a clip. x: (B*F, C, H, W) -> same shape."""
    bf, c, h, w = x.shape
    x5 = x.view(bf // num_frames, num_frames, c, h, w).transpose(1, 2)  # (B, C, F, H, W) view
    y = norm(x5)
    return y.transpose(1, 2).reshape(bf, c, h, w)


class ResnetBlock3D(ResnetBlock2D):
    """ResnetBlock2D (same parameters and names) whose norms see the whole clip.

    Only LatentSync's configuration is supported: pre-norm, ``time_embedding_norm="default"``,
    no up/down sampling inside the block.
    """

    def __init__(self, *, in_channels: int, out_channels: int, temb_channels: int, eps: float,
                 groups: int, non_linearity: str = "silu", output_scale_factor: float = 1.0,
                 time_embedding_norm: str = "default"):
        if time_embedding_norm != "default":
            # LatentSync's scale_shift variant has an extra `double_len_linear`; no official
            # checkpoint uses it.
            raise NotImplementedError(f"resnet_time_scale_shift={time_embedding_norm!r} is not supported")
        super().__init__(in_channels=in_channels, out_channels=out_channels, temb_channels=temb_channels,
                         eps=eps, groups=groups, non_linearity=non_linearity,
                         output_scale_factor=output_scale_factor, time_embedding_norm="default")

    def forward(self, x: torch.Tensor, temb: torch.Tensor, num_frames: int) -> torch.Tensor:  # type: ignore[override]
        """x: (B*F, C_in, H, W); temb: (B, T) one embedding per clip -> (B*F, C_out, H, W)."""
        h = self.nonlinearity(group_norm_over_frames(self.norm1, x, num_frames))
        h = self.conv1(h)
        bf, c, hh, ww = h.shape
        t = self.time_emb_proj(self.nonlinearity(temb))  # (B, C_out)
        h5 = h.view(bf // num_frames, num_frames, c, hh, ww) + t[:, None, :, None, None]
        h5 = self.norm2(h5.transpose(1, 2))  # (B, C, F, H, W): stats over the clip
        h = self.nonlinearity(h5).transpose(1, 2).reshape(bf, c, hh, ww)
        h = self.conv2(self.dropout(h))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        return (x + h) / self.output_scale_factor
