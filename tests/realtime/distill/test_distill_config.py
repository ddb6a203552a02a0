import pytest

from realtime.config import CONFIG_DIR, ConfigError
from realtime.distill.config import DistillConfig, load_distill_config
from realtime.distill.synthetic import proof_unet_config
from realtime.unet_config import load_unet_config


def test_shipped_configs_load():
    full = load_distill_config(CONFIG_DIR / "distill" / "stage2.yaml")
    assert full.student.steps == [1, 2, 4] and full.teacher.steps == 20 and full.teacher.guidance == 1.5
    assert full.student.features == "streaming" and full.teacher.features == "offline"
    assert full.serve_steps == 4 and full.data.frames == 16
    load_unet_config(CONFIG_DIR / "unet" / "stage2.yaml")  # its teacher config
    tiny = load_distill_config(CONFIG_DIR / "distill" / "tiny.yaml")
    assert tiny.student.steps == [1, 2] and tiny.serve_steps == 2 and tiny.train.device == "cpu"
    assert proof_unet_config()["block_out_channels"] == [32] and proof_unet_config()["use_motion_module"] is False


def _write(tmp_path, text):
    p = tmp_path / "d.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("text, message", [
    ("train:\n  lrr: 0.1\n", "unknown key 'train.lrr'"),
    ("bogus: 1\n", "unknown key 'bogus'"),
    ("student:\n  steps: [3]\n", "do not divide teacher.steps 20"),
    ("teacher:\n  steps: 30\n", "must divide 1000"),
    ("student:\n  features: live\n", "student.features must be one of"),
    ("train:\n  dtype: fp8\n", "train.dtype"),
    ("train:\n  pool_size: 4\n  batch_size: 8\n", "smaller than train.batch_size"),
    ("train:\n  lr: fast\n", "'train.lr' must be float"),
])
def test_config_errors_name_the_key_and_file(tmp_path, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_distill_config(path)
    assert message in str(e.value) and str(path) in str(e.value)
    assert "\n" not in str(e.value)


def test_defaults_are_valid():
    cfg = DistillConfig()
    assert cfg.to_dict()["train"]["pool_size"] == 0 and cfg.serve_steps == 4


def test_student_yaml_of_an_official_config_loads_with_the_same_model(tmp_path):
    from realtime.distill.checkpoint import write_unet_yaml
    from realtime.unet_config import load_latentsync_yaml

    for name in ("stage2", "stage2_512", "second_stage"):
        src = CONFIG_DIR / "unet" / f"{name}.yaml"
        out = write_unet_yaml(tmp_path / f"{name}.yaml", load_latentsync_yaml(src), inference_steps=4,
                              guidance_scale=1.0, header="student\nof a test")
        assert out.read_text().startswith("# student\n# of a test\n")
        a, b = load_unet_config(src), load_unet_config(out)
        assert b.model_dict() == a.model_dict() and b.data == a.data and b.optimizer.lr == 1e-5
        assert (b.run.inference_steps, b.run.guidance_scale) == (4, 1.0)
