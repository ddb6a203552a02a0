"""UNet stages of LatentSync's 3D UNet: down, mid and up blocks, run layer by layer.

Each layer is resnet -> (audio transformer) -> (motion module), LatentSync's order. The
``CrossAttn*`` and plain variants are one class each here: a plain block is built with
``cross_attention=False`` and simply has no ``attentions`` entries. Layers can be run in ranges so
the UNet can execute only the shallow part of the network when deep features are cached.
All activations are (B*F, C, H, W); see ``resnet3d``.
"""

from __future__ import annotations

from typing import Sequence

import torch
from diffusers.models.downsampling import Downsample2D
from diffusers.models.upsampling import Upsample2D
from torch import nn

from .attention import build_audio_transformer, run_audio_transformer
from .motion_module import VanillaTemporalModule
from .resnet3d import ResnetBlock3D


class _LayerStack(nn.Module):
    """resnets / attentions / motion_modules lists shared by all block kinds."""

    def _build(self, in_out: Sequence[tuple[int, int]], temb_channels: int, eps: float, act: str, groups: int,
               heads: int, cross_attention: bool, cross_attention_dim: int | None,
               motion_kwargs: dict | None, output_scale_factor: float = 1.0) -> None:
        self.resnets = nn.ModuleList(
            ResnetBlock3D(in_channels=i, out_channels=o, temb_channels=temb_channels, eps=eps, groups=groups,
                          non_linearity=act, output_scale_factor=output_scale_factor)
            for i, o in in_out
        )
        self.attentions = nn.ModuleList(
            build_audio_transformer(o, heads, cross_attention_dim, groups) for _, o in in_out
        ) if cross_attention else nn.ModuleList()
        # LatentSync keeps a list of None when motion modules are off: no state-dict entries.
        self.motion_modules = nn.ModuleList(
            VanillaTemporalModule(o, **motion_kwargs) if motion_kwargs is not None else None for _, o in in_out
        )

    def run_layer(self, i: int, h: torch.Tensor, temb: torch.Tensor, audio: torch.Tensor | None,
                  num_frames: int) -> torch.Tensor:
        h = self.resnets[i](h, temb, num_frames)
        if len(self.attentions):
            h = run_audio_transformer(self.attentions[i], h, audio)
        if self.motion_modules[i] is not None:
            h = self.motion_modules[i](h, num_frames)
        return h


class DownBlock3D(_LayerStack):
    def __init__(self, in_channels: int, out_channels: int, temb_channels: int, num_layers: int,
                 add_downsample: bool, eps: float, act: str, groups: int, heads: int, cross_attention: bool,
                 cross_attention_dim: int | None, downsample_padding: int, motion_kwargs: dict | None):
        super().__init__()
        in_out = [(in_channels if i == 0 else out_channels, out_channels) for i in range(num_layers)]
        self._build(in_out, temb_channels, eps, act, groups, heads, cross_attention, cross_attention_dim,
                    motion_kwargs)
        # name="op" keeps diffusers from registering the conv twice (as `conv` and `Conv2d_0`).
        self.downsamplers = nn.ModuleList(
            [Downsample2D(out_channels, use_conv=True, out_channels=out_channels, padding=downsample_padding,
                          name="op")]
        ) if add_downsample else None

    def forward(self, h, temb, audio, num_frames, num_layers: int | None = None, downsample: bool = True):
        """Runs the first ``num_layers`` layers (all by default), then the downsampler if asked.

        Returns (h, skips): one skip per layer run, plus the downsampled output.
        """
        n = len(self.resnets) if num_layers is None else num_layers
        skips = []
        for i in range(n):
            h = self.run_layer(i, h, temb, audio, num_frames)
            skips.append(h)
        if downsample and n == len(self.resnets) and self.downsamplers is not None:
            h = self.downsamplers[0](h)
            skips.append(h)
        return h, skips


class MidBlock3D(_LayerStack):
    """resnet, then (audio transformer, [motion], resnet) — note the resnet comes last in a layer."""

    def __init__(self, channels: int, temb_channels: int, eps: float, act: str, groups: int, heads: int,
                 cross_attention_dim: int | None, output_scale_factor: float, motion_kwargs: dict | None):
        super().__init__()
        self.resnets = nn.ModuleList(
            ResnetBlock3D(in_channels=channels, out_channels=channels, temb_channels=temb_channels, eps=eps,
                          groups=groups, non_linearity=act, output_scale_factor=output_scale_factor)
            for _ in range(2)
        )
        self.attentions = nn.ModuleList([build_audio_transformer(channels, heads, cross_attention_dim, groups)])
        self.motion_modules = nn.ModuleList(
            [VanillaTemporalModule(channels, **motion_kwargs) if motion_kwargs is not None else None]
        )

    def forward(self, h, temb, audio, num_frames):
        h = self.resnets[0](h, temb, num_frames)
        h = run_audio_transformer(self.attentions[0], h, audio)
        if self.motion_modules[0] is not None:
            h = self.motion_modules[0](h, num_frames)
        return self.resnets[1](h, temb, num_frames)


class UpBlock3D(_LayerStack):
    def __init__(self, in_channels: int, prev_output_channels: int, out_channels: int, temb_channels: int,
                 num_layers: int, add_upsample: bool, eps: float, act: str, groups: int, heads: int,
                 cross_attention: bool, cross_attention_dim: int | None, motion_kwargs: dict | None):
        super().__init__()
        in_out = []
        for i in range(num_layers):
            skip_ch = in_channels if i == num_layers - 1 else out_channels
            res_in = prev_output_channels if i == 0 else out_channels
            in_out.append((res_in + skip_ch, out_channels))
        self._build(in_out, temb_channels, eps, act, groups, heads, cross_attention, cross_attention_dim,
                    motion_kwargs)
        self.upsamplers = nn.ModuleList(
            [Upsample2D(out_channels, use_conv=True, out_channels=out_channels)]
        ) if add_upsample else None

    def forward(self, h, skips: Sequence[torch.Tensor], temb, audio, num_frames, upsample_size=None,
                start: int = 0, stop: int | None = None):
        """Runs layers [start, stop). Layer i concatenates ``skips[n-1-i]`` (n = number of layers),
        so ``skips`` is this block's slice of the down path in down order; a shallow run may pass
        only its first elements. The upsampler runs when the last layer does."""
        n = len(self.resnets)
        stop = n if stop is None else stop
        for i in range(start, stop):
            h = torch.cat([h, skips[n - 1 - i]], dim=1)
            h = self.run_layer(i, h, temb, audio, num_frames)
        if stop == n and self.upsamplers is not None:
            h = self.upsamplers[0](h, output_size=upsample_size)
        return h
