"""LatentSync-compatible audio-conditioned 3D UNet (see ``unet3d`` for tensor layouts)."""

from .attention import rename_v10_key
from .unet3d import UNet3DConditionModel, UNet3DConditionOutput


def tiny_config() -> dict:
    """Same topology as LatentSync's stage2 (4 levels, 3 cross-attention levels, motion modules at
    every level, 2 layers per block) with small channels, for tests. Channels are multiples of 32
    because motion modules use 32 GroupNorm groups regardless of ``norm_num_groups``."""
    return {
        "sample_size": 16,
        "in_channels": 13,
        "out_channels": 4,
        "block_out_channels": [32, 32, 64, 64],
        "layers_per_block": 2,
        "down_block_types": ["CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"],
        "up_block_types": ["UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"],
        "mid_block_type": "UNetMidBlock3DCrossAttn",
        "attention_head_dim": 2,
        "cross_attention_dim": 384,
        "norm_num_groups": 8,
        "norm_eps": 1e-5,
        "add_audio_layer": True,
        "use_motion_module": True,
        "motion_module_resolutions": [1, 2, 4, 8],
        "motion_module_type": "Vanilla",
        "motion_module_kwargs": {
            "num_attention_heads": 4,
            "num_transformer_block": 1,
            "attention_block_types": ["Temporal_Self", "Temporal_Self"],
            "temporal_position_encoding": True,
            "temporal_position_encoding_max_len": 24,
            "temporal_attention_dim_div": 1,
            "zero_initialize": True,
        },
    }


__all__ = ["UNet3DConditionModel", "UNet3DConditionOutput", "tiny_config", "rename_v10_key"]
