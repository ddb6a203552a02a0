"""A random-weight teacher of the proof UNet config and synthetic data, for the plumbing tests."""

import pytest
import yaml

from realtime.config import CONFIG_DIR

TINY = CONFIG_DIR / "distill" / "tiny.yaml"


@pytest.fixture(scope="session")
def random_teacher(tmp_path_factory):
    """(teacher.pt, teacher.yaml): the proof UNet with seeded random weights, LatentSync's layout."""
    from models.unet import UNet3DConditionModel
    from realtime.distill.synthetic import proof_unet_config
    from realtime.distill.teacher import save_teacher

    model = UNet3DConditionModel.from_config(proof_unet_config()).randomize_(0)
    return save_teacher(model, proof_unet_config(), tmp_path_factory.mktemp("teacher"), resolution=32, frames=2)


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory):
    from realtime.distill.synthetic import SyntheticSpec, write_synthetic_data

    return write_synthetic_data(tmp_path_factory.mktemp("data"), SyntheticSpec(clips=4, frames=16, seed=0))


@pytest.fixture
def small_config(tmp_path):
    """configs/distill/tiny.yaml cut down to a few cheap steps."""
    data = yaml.safe_load(TINY.read_text())
    data["train"].update(batch_size=4, pool_size=8, pool_refresh=2, max_steps=4, checkpoint_every=2, log_every=1,
                         keep_checkpoints=2)
    data["teacher"]["steps"] = 4  # 4 trailing teacher steps hold the 1- and 2-step grids
    data["data"]["eval_fraction"] = 0.25  # one of the 4 synthetic clips held out
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(data))
    return path
