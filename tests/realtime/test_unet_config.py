"""realtime.unet_config: LatentSync's UNet YAML files load unchanged; unknown keys name key and file."""

import json
from pathlib import Path

import pytest

from realtime.config import REPO_ROOT, ConfigError
from realtime.unet_config import load_latentsync_yaml, load_unet_config

KEYS = Path(__file__).resolve().parents[1] / "fixtures" / "unet_keys"


@pytest.mark.parametrize("name", ["stage2", "stage2_512", "stage2_efficient", "second_stage"])
def test_shipped_configs_give_latentsync_model_sections(name):
    cfg = load_unet_config(REPO_ROOT / "configs" / "unet" / f"{name}.yaml")
    ref = json.loads((KEYS / f"latentsync_unet_keys_{name}.json").read_text())["model_config"]
    assert cfg.model_dict() == ref  # exactly the config LatentSync's key lists were built from
    assert cfg.data.resolution == (512 if name == "stage2_512" else 256)
    assert cfg.run.guidance_scale == (1.0 if name == "second_stage" else 1.5)
    assert cfg.run.inference_steps == 20 and cfg.data.num_frames == 16
    assert cfg.optimizer.lr == 1e-5 and isinstance(cfg.model.norm_eps, float)


def test_exponent_floats_parse_like_omegaconf(tmp_path):
    p = tmp_path / "f.yaml"
    p.write_text("a: 1e-5\nb: -2.5E+3\nc: 1_000\nd: '1e-5'\ne: 7\n")
    assert load_latentsync_yaml(p) == {"a": 1e-5, "b": -2500.0, "c": 1000, "d": "1e-5", "e": 7}


def test_unknown_key_names_key_and_file(tmp_path):
    text = (REPO_ROOT / "configs" / "unet" / "stage2.yaml").read_text()
    p = tmp_path / "typo.yaml"
    p.write_text(text.replace("  layers_per_block: 2", "  layers_per_blok: 2"))
    with pytest.raises(ConfigError, match=r"typo\.yaml.*model\.layers_per_blok"):
        load_unet_config(p)
    p.write_text(text.replace("    num_transformer_block: 1", "    num_transformer_blocks: 1"))
    with pytest.raises(ConfigError, match="model.motion_module_kwargs.num_transformer_blocks"):
        load_unet_config(p)


def test_missing_model_section_and_missing_file(tmp_path):
    p = tmp_path / "empty.yaml"
    p.write_text("data:\n  resolution: 256\n")
    with pytest.raises(ConfigError, match="missing section 'model'"):
        load_unet_config(p)
    with pytest.raises(ConfigError, match="does not exist"):
        load_unet_config(tmp_path / "nope.yaml")
