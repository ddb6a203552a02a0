"""LatentSync's UNet YAML files (``configs/unet/*.yaml``) as typed dataclasses.

The official files load unchanged: every key they carry (training ones included) has a field, and
an unknown key is an error naming the key and the file (``realtime.config.from_dict``). Only the
``model:`` section matters to inference; ``UNetFileConfig.model_dict()`` is what
``UNet3DConditionModel.from_config`` receives.

LatentSync reads these files with OmegaConf, which parses ``1e-5`` as a float; PyYAML's YAML 1.1
resolver reads it as a string. ``load_latentsync_yaml`` adds the missing float rule.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from realtime.audio.io import SAMPLE_RATE
from realtime.config import ConfigError, from_dict


class _LatentSyncLoader(yaml.SafeLoader):
    """SafeLoader that also reads exponent floats without a dot (``1e-5``), as OmegaConf does."""


_LatentSyncLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


@dataclass
class MotionModuleKwargs:
    num_attention_heads: int = 8
    num_transformer_block: int = 1
    attention_block_types: list[str] = field(default_factory=lambda: ["Temporal_Self", "Temporal_Self"])
    temporal_position_encoding: bool = True
    temporal_position_encoding_max_len: int = 24
    temporal_attention_dim_div: int = 1
    zero_initialize: bool = True


@dataclass
class UNetModelConfig:
    """The ``model:`` section; defaults are stage2's values."""

    act_fn: str = "silu"
    add_audio_layer: bool = True
    attention_head_dim: int = 8
    block_out_channels: list[int] = field(default_factory=lambda: [320, 640, 1280, 1280])
    center_input_sample: bool = False
    cross_attention_dim: int = 384  # 384: Whisper tiny features; 768: small
    down_block_types: list[str] = field(
        default_factory=lambda: ["CrossAttnDownBlock3D"] * 3 + ["DownBlock3D"])
    mid_block_type: str = "UNetMidBlock3DCrossAttn"
    up_block_types: list[str] = field(default_factory=lambda: ["UpBlock3D"] + ["CrossAttnUpBlock3D"] * 3)
    downsample_padding: int = 1
    flip_sin_to_cos: bool = True
    freq_shift: int = 0
    in_channels: int = 13  # noisy(4) + mask(1) + masked image(4) + reference(4) latents
    layers_per_block: int = 2
    mid_block_scale_factor: float = 1.0
    norm_eps: float = 1e-5
    norm_num_groups: int = 32
    out_channels: int = 4
    sample_size: int = 64
    resnet_time_scale_shift: str = "default"
    use_motion_module: bool = True
    motion_module_resolutions: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    motion_module_mid_block: bool = False
    motion_module_decoder_only: bool = False
    motion_module_type: str = "Vanilla"
    motion_module_kwargs: MotionModuleKwargs = field(default_factory=MotionModuleKwargs)
    # v1.0 (second_stage.yaml) only; None = absent from the file
    custom_audio_layer: bool | None = None
    audio_condition_method: str | None = None
    unet_use_cross_frame_attention: bool | None = None
    unet_use_temporal_attention: bool | None = None


@dataclass
class UNetDataConfig:
    syncnet_config_path: str = ""
    train_output_dir: str = ""
    train_fileslist: str = ""
    train_data_dir: str = ""
    audio_embeds_cache_dir: str = ""
    audio_mel_cache_dir: str = ""
    val_video_path: str = ""
    val_audio_path: str = ""
    batch_size: int = 1
    num_workers: int = 12
    num_frames: int = 16  # frames per UNet call
    resolution: int = 256  # face crop size in pixels; latents are resolution / 8
    mask_image_path: str = "latentsync/utils/mask.png"
    mask: str | None = None  # v1.0: "fix_mask"
    audio_sample_rate: int = SAMPLE_RATE
    video_fps: int = 25
    audio_feat_length: list[int] = field(default_factory=lambda: [2, 2])


@dataclass
class UNetCkptConfig:
    resume_ckpt_path: str = "checkpoints/latentsync_unet.pt"
    save_ckpt_steps: int = 10000


@dataclass
class UNetRunConfig:
    pixel_space_supervise: bool = True
    use_syncnet: bool = True
    sync_loss_weight: float = 0.05
    perceptual_loss_weight: float = 0.1
    recon_loss_weight: float = 1.0
    guidance_scale: float = 1.5
    trepa_loss_weight: float = 10.0
    inference_steps: int = 20
    trainable_modules: list[str] = field(default_factory=list)
    seed: int = 1247
    use_mixed_noise: bool = True
    mixed_noise_alpha: float = 1.0
    mixed_precision_training: bool = True
    enable_gradient_checkpointing: bool = True
    enable_xformers_memory_efficient_attention: bool | None = None  # v1.0
    max_train_steps: int = 10000000
    max_train_epochs: int = -1


@dataclass
class UNetOptimizerConfig:
    lr: float = 1e-5
    scale_lr: bool = False
    max_grad_norm: float = 1.0
    lr_scheduler: str = "constant"
    lr_warmup_steps: int = 0


@dataclass
class UNetFileConfig:
    """A whole LatentSync UNet YAML file."""

    model: UNetModelConfig = field(default_factory=UNetModelConfig)
    data: UNetDataConfig = field(default_factory=UNetDataConfig)
    ckpt: UNetCkptConfig = field(default_factory=UNetCkptConfig)
    run: UNetRunConfig = field(default_factory=UNetRunConfig)
    optimizer: UNetOptimizerConfig = field(default_factory=UNetOptimizerConfig)

    def model_dict(self) -> dict:
        """The ``model:`` section as ``UNet3DConditionModel.from_config`` takes it (absent v1.0
        keys dropped)."""
        return {k: v for k, v in dataclasses.asdict(self.model).items() if v is not None}


def load_latentsync_yaml(path: str | Path) -> dict:
    """Reads a YAML mapping the way LatentSync (OmegaConf) does; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; pass an existing YAML file")
    try:
        data = yaml.load(path.read_text(), Loader=_LatentSyncLoader) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    return data


def load_unet_config(path: str | Path) -> UNetFileConfig:
    """Loads a LatentSync UNet YAML (official files unchanged); unknown keys raise ConfigError."""
    data = load_latentsync_yaml(path)
    if "model" not in data:
        raise ConfigError(f"{path}: missing section 'model'")
    return from_dict(UNetFileConfig, data, source=str(path))
