"""LatentSync's audio-conditioned 3D UNet as a diffusers ModelMixin/ConfigMixin.

``UNet3DConditionModel.from_config(model_section)`` takes the ``model:`` section of LatentSync's
YAML files unchanged; ``state_dict()`` matches LatentSync's key names and shapes (SD-1.5 layout
with per-frame audio cross-attention and optional AnimateDiff motion modules).

Tensor layouts (public):
  sample                (B, in_channels, F, H, W)  latents; 13 = noisy(4) + mask(1) + masked(4) + ref(4)
  timestep              int/float, 0-d tensor, or (B,) tensor
  encoder_hidden_states (B*F, N, D) or (B, F, N, D) per-frame audio tokens (N=50, D=384 for tiny Whisper)
  output.sample         (B, out_channels, F, H, W)
DeepCache: see ``forward``. Internally activations are (B*F, C, H, W) (batch-major, frame-minor).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import nn

from .attention import v10_load_state_dict_pre_hook
from .blocks import DownBlock3D, MidBlock3D, UpBlock3D
from .resnet3d import group_norm_over_frames

_DOWN_TYPES = {"CrossAttnDownBlock3D": True, "DownBlock3D": False}
_UP_TYPES = {"CrossAttnUpBlock3D": True, "UpBlock3D": False}


@dataclass
class UNet3DConditionOutput(BaseOutput):
    """sample: (B, out_channels, F, H, W). deep_cache: (B*F, C, H, W) deep feature captured for
    ``cache_branch_id`` (C = block_out_channels[0] for branch 0), None unless requested."""

    sample: torch.Tensor
    deep_cache: torch.Tensor | None = None


class UNet3DConditionModel(ModelMixin, ConfigMixin):
    @register_to_config
    def __init__(
        self,
        sample_size: int | None = None,
        in_channels: int = 13,
        out_channels: int = 4,
        center_input_sample: bool = False,
        flip_sin_to_cos: bool = True,
        freq_shift: int = 0,
        down_block_types: Sequence[str] = ("CrossAttnDownBlock3D",) * 3 + ("DownBlock3D",),
        mid_block_type: str = "UNetMidBlock3DCrossAttn",
        up_block_types: Sequence[str] = ("UpBlock3D",) + ("CrossAttnUpBlock3D",) * 3,
        block_out_channels: Sequence[int] = (320, 640, 1280, 1280),
        layers_per_block: int = 2,
        downsample_padding: int = 1,
        mid_block_scale_factor: float = 1.0,
        act_fn: str = "silu",
        norm_num_groups: int = 32,
        norm_eps: float = 1e-5,
        cross_attention_dim: int = 384,
        attention_head_dim: int | Sequence[int] = 8,
        resnet_time_scale_shift: str = "default",
        add_audio_layer: bool = True,
        use_motion_module: bool = False,
        motion_module_resolutions: Sequence[int] = (1, 2, 4, 8),
        motion_module_mid_block: bool = False,
        motion_module_decoder_only: bool = False,
        motion_module_type: str | None = None,
        motion_module_kwargs: dict | None = None,
        # v1.0 (second_stage.yaml) keys; only the values its checkpoints were trained with work.
        custom_audio_layer: bool = False,
        audio_condition_method: str = "cross_attn",
        unet_use_cross_frame_attention: bool = False,
        unet_use_temporal_attention: bool = False,
        # SD-style keys some configs carry; only LatentSync's values are supported.
        use_inflated_groupnorm: bool = False,
        use_linear_projection: bool = False,
        upcast_attention: bool = False,
        only_cross_attention: bool = False,
        dual_cross_attention: bool = False,
        class_embed_type: str | None = None,
        num_class_embeds: int | None = None,
    ):
        super().__init__()
        unsupported = {
            "custom_audio_layer": (custom_audio_layer, False), "audio_condition_method": (audio_condition_method, "cross_attn"),
            "unet_use_cross_frame_attention": (unet_use_cross_frame_attention, False),
            "unet_use_temporal_attention": (unet_use_temporal_attention, False),
            "use_inflated_groupnorm": (use_inflated_groupnorm, False), "use_linear_projection": (use_linear_projection, False),
            "upcast_attention": (upcast_attention, False), "only_cross_attention": (only_cross_attention, False),
            "dual_cross_attention": (dual_cross_attention, False), "class_embed_type": (class_embed_type, None),
            "num_class_embeds": (num_class_embeds, None), "mid_block_type": (mid_block_type, "UNetMidBlock3DCrossAttn"),
        }
        for name, (value, ok) in unsupported.items():
            if value != ok:
                raise NotImplementedError(f"UNet config {name}={value!r} is not supported (only {ok!r})")
        # A plain yaml.safe_load reads LatentSync's `norm_eps: 1e-5` as a string (OmegaConf does not).
        norm_eps, mid_block_scale_factor = float(norm_eps), float(mid_block_scale_factor)
        n = len(block_out_channels)
        if len(down_block_types) != n or len(up_block_types) != n:
            raise ValueError("down_block_types, up_block_types and block_out_channels must have the same length")
        if use_motion_module and motion_module_type != "Vanilla":
            raise NotImplementedError(f"motion_module_type={motion_module_type!r} is not supported (only 'Vanilla')")
        heads = [attention_head_dim] * n if isinstance(attention_head_dim, int) else list(attention_head_dim)
        audio_dim = cross_attention_dim if add_audio_layer else None
        mm_kwargs = dict(motion_module_kwargs or {})
        time_dim = block_out_channels[0] * 4

        def motion(res: int, allowed: bool = True) -> dict | None:
            return mm_kwargs if (use_motion_module and allowed and res in motion_module_resolutions) else None

        self.conv_in = nn.Conv2d(in_channels, block_out_channels[0], kernel_size=3, padding=1)
        self.time_proj = Timesteps(block_out_channels[0], flip_sin_to_cos, freq_shift)
        self.time_embedding = TimestepEmbedding(block_out_channels[0], time_dim)
        common = dict(temb_channels=time_dim, eps=norm_eps, act=act_fn, groups=norm_num_groups,
                      cross_attention_dim=audio_dim)

        self.down_blocks = nn.ModuleList()
        out_ch = block_out_channels[0]
        for i, kind in enumerate(down_block_types):
            in_ch, out_ch = out_ch, block_out_channels[i]
            self.down_blocks.append(DownBlock3D(
                in_ch, out_ch, num_layers=layers_per_block, add_downsample=i < n - 1, heads=heads[i],
                cross_attention=_kind(kind, _DOWN_TYPES), downsample_padding=downsample_padding,
                motion_kwargs=motion(2**i, not motion_module_decoder_only), **common))
        self.mid_block = MidBlock3D(block_out_channels[-1], heads=heads[-1], output_scale_factor=mid_block_scale_factor,
                                    motion_kwargs=mm_kwargs if use_motion_module and motion_module_mid_block else None,
                                    **common)
        self.up_blocks = nn.ModuleList()
        rev, rev_heads = list(reversed(block_out_channels)), list(reversed(heads))
        out_ch = rev[0]
        for i, kind in enumerate(up_block_types):
            prev, out_ch = out_ch, rev[i]
            self.up_blocks.append(UpBlock3D(
                rev[min(i + 1, n - 1)], prev, out_ch, num_layers=layers_per_block + 1, add_upsample=i < n - 1,
                heads=rev_heads[i], cross_attention=_kind(kind, _UP_TYPES), motion_kwargs=motion(2 ** (n - 1 - i)),
                **common))
        self.conv_norm_out = nn.GroupNorm(norm_num_groups, block_out_channels[0], eps=norm_eps)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(block_out_channels[0], out_channels, kernel_size=3, padding=1)
        # LatentSync zero-initialises both ends (new 13-channel input, noise prediction output).
        for conv in (self.conv_in, self.conv_out):
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)
        self._register_load_state_dict_pre_hook(v10_load_state_dict_pre_hook)

    # ------------------------------------------------------------------ helpers
    @property
    def deep_cache_branches(self) -> int:
        """Valid ``cache_branch_id`` values are ``range(deep_cache_branches)``."""
        return self.config.layers_per_block

    def randomize_(self, seed: int = 0) -> "UNet3DConditionModel":
        """Fills every parameter from a seeded generator (fan-in scaled uniform; norms 1/0).

        For tests and benchmarks only: a fresh model outputs exactly zero (zero-initialised conv_out),
        and this makes random-init results independent of the global RNG.
        """
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for module in self.modules():
                is_norm = isinstance(module, (nn.GroupNorm, nn.LayerNorm))
                for name, p in module.named_parameters(recurse=False):
                    if is_norm:
                        p.fill_(1.0 if name == "weight" else 0.0)
                    else:
                        bound = p[0].numel() ** -0.5 if p.ndim >= 2 else 0.05  # fan-in scaled
                        p.copy_(((torch.rand(p.shape, generator=gen) * 2 - 1) * bound).to(p.dtype))
        return self

    def _embed_time(self, timestep, batch: int, device) -> torch.Tensor:
        t = timestep if torch.is_tensor(timestep) else torch.tensor(timestep, device=device)
        t = t.to(device).reshape(-1)
        if t.numel() == 1:
            t = t.expand(batch)
        if t.numel() != batch:
            raise ValueError(f"timestep has {t.numel()} values for a batch of {batch}")
        # Timesteps returns fp32; the embedding MLP runs in the model's dtype.
        return self.time_embedding(self.time_proj(t).to(self.dtype))  # (B, 4*C0)

    # ------------------------------------------------------------------ forward
    def forward(self, sample: torch.Tensor, timestep, encoder_hidden_states: torch.Tensor, *,
                cache_branch_id: int | None = None, deep_cache: torch.Tensor | None = None,
                return_dict: bool = True):
        """Predicts noise for a batch of clips.

        sample (B, C_in, F, H, W); timestep scalar or (B,); encoder_hidden_states (B*F, N, D) or
        (B, F, N, D), one block of audio tokens per frame (all zeros for the unconditional branch).

        DeepCache (reuse of deep features across sampler steps):
          * ``cache_branch_id=k`` with ``deep_cache=None``: full pass; ``output.deep_cache`` holds the
            activation entering layer ``L-1-k`` of the last up block (L = layers_per_block).
          * ``cache_branch_id=k`` with ``deep_cache=T``: shallow pass. Only conv_in, the first k+1
            layers of ``down_blocks[0]``, the last k+2 layers of ``up_blocks[-1]`` and the output
            head run; T replaces everything deeper. Exact when T comes from a full pass on the same
            inputs; across nearby timesteps it is DeepCache's approximation.
        Returns ``UNet3DConditionOutput`` (or ``(sample, deep_cache)`` when ``return_dict`` is False).
        """
        if sample.ndim != 5 or sample.shape[1] != self.config.in_channels:
            raise ValueError(f"sample must be (B, {self.config.in_channels}, F, H, W), got {tuple(sample.shape)}")
        b, c, f, hgt, wid = sample.shape
        audio = _frames_audio(encoder_hidden_states, b, f)
        if cache_branch_id is not None and not 0 <= cache_branch_id < self.deep_cache_branches:
            raise ValueError(f"cache_branch_id must be in [0, {self.deep_cache_branches}), got {cache_branch_id}")
        if deep_cache is not None and cache_branch_id is None:
            raise ValueError("deep_cache needs the cache_branch_id it was captured with")
        if self.config.center_input_sample:
            sample = 2 * sample - 1.0
        temb = self._embed_time(timestep, b, sample.device)
        h = sample.permute(0, 2, 1, 3, 4).reshape(b * f, c, hgt, wid)  # (B*F, C, H, W)
        h = self.conv_in(h)
        skips = [h]
        # LatentSync forces the upsampling size only when H or W is not a multiple of the total factor.
        force_size = any(s % 2 ** (len(self.up_blocks) - 1) for s in (hgt, wid))
        last_up = self.up_blocks[-1]
        n_last = len(last_up.resnets)

        if deep_cache is None:
            for block in self.down_blocks:
                h, res = block(h, temb, audio, f)
                skips.extend(res)
            h = self.mid_block(h, temb, audio, f)
            for i, block in enumerate(self.up_blocks):
                n = len(block.resnets)
                res, skips = skips[-n:], skips[:-n]
                size = tuple(skips[-1].shape[-2:]) if force_size and skips else None
                if i < len(self.up_blocks) - 1:
                    h = block(h, res, temb, audio, f, upsample_size=size)
                elif cache_branch_id is None:
                    h = block(h, res, temb, audio, f)
                else:
                    start = n_last - 2 - cache_branch_id
                    h = block(h, res, temb, audio, f, stop=start)
                    deep_cache = h
                    h = block(h, res, temb, audio, f, start=start)
        else:
            start = n_last - 2 - cache_branch_id
            expected = (b * f, last_up.resnets[start].in_channels - self.config.block_out_channels[0], hgt, wid)
            if tuple(deep_cache.shape) != expected:
                raise ValueError(f"deep_cache has shape {tuple(deep_cache.shape)}, expected {expected}")
            _, res = self.down_blocks[0](h, temb, audio, f, num_layers=cache_branch_id + 1, downsample=False)
            skips.extend(res)
            h = last_up(deep_cache, skips, temb, audio, f, start=start)

        h = self.conv_act(group_norm_over_frames(self.conv_norm_out, h, f))
        h = self.conv_out(h)
        out = h.reshape(b, f, -1, hgt, wid).permute(0, 2, 1, 3, 4)  # (B, C_out, F, H, W)
        if not return_dict:
            return out, deep_cache
        return UNet3DConditionOutput(sample=out, deep_cache=deep_cache)


def _kind(name: str, table: dict) -> bool:
    if name not in table:
        raise ValueError(f"unknown block type {name!r} (expected one of {sorted(table)})")
    return table[name]


def _frames_audio(audio: torch.Tensor | None, b: int, f: int) -> torch.Tensor:
    """Per-frame audio tokens as (B*F, N, D), batch-major like the video activations."""
    if audio is None:
        raise ValueError("encoder_hidden_states is required; pass all-zero audio for the unconditional branch")
    if audio.ndim == 4 and audio.shape[:2] == (b, f):
        return audio.reshape(b * f, *audio.shape[2:])
    if audio.ndim == 3 and audio.shape[0] == b * f:
        return audio
    raise ValueError(f"encoder_hidden_states must be ({b * f}, N, D) or ({b}, {f}, N, D), got {tuple(audio.shape)}")
