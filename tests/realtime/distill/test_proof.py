"""The CPU proof: a student distilled from a tiny teacher samples in 1-2 steps much closer to the
teacher's 20-step output than the teacher's own 1-2-step DDIM does (numbers over seeds in
docs/distill.md), and it loads and renders through the normal loader and renderer."""

import numpy as np
import pytest
import torch

from realtime.distill.experiment import run_proof
from realtime.render.diffusion import DiffusionRenderer
from realtime.render.samplers import SamplerConfig
from realtime.unet_config import load_unet_config

# Over seeds 0-4 (docs/distill.md) the smallest ratios were 3.6 (1 step) / 3.3 (2 steps) for the whole
# latent and 2.35 / 2.4 for the mouth region (seed 0, tested here: 5.2 / 6.9 and 3.0 / 4.1); the test
# asks for well under them.
MIN_RATIO = 2.5
MIN_MOUTH_RATIO = 1.5


@pytest.fixture(scope="module")
def proof(tmp_path_factory):
    return run_proof(tmp_path_factory.mktemp("proof"), seed=0)


def test_student_is_closer_to_the_teachers_20_steps_than_its_own_few_steps(proof):
    assert [e.steps for e in proof.errors] == [1, 2]
    assert proof.teacher_loss < 0.2  # the teacher learnt its data (noise MSE starts at ~1)
    for e in proof.errors:
        assert e.ratio >= MIN_RATIO, e
        assert e.teacher_mouth / e.student_mouth >= MIN_MOUTH_RATIO, e
    # 2 steps are better than 1 for both, and the student's gap stays far below the teacher's
    assert proof.errors[1].student < proof.errors[0].student
    assert proof.errors[1].teacher < proof.errors[0].teacher
    for e in proof.errors_trailing:  # against the grid it was distilled on, the margin only grows
        assert e.ratio >= MIN_RATIO, e


def test_student_loads_and_renders_through_the_normal_path(proof, tmp_path):
    from models.vae import tiny_autoencoder_kl

    cfg = load_unet_config(proof.student_config)
    assert (cfg.run.inference_steps, cfg.run.guidance_scale, cfg.data.resolution) == (2, 1.0, 32)
    tiny_autoencoder_kl(0).save_pretrained(tmp_path / "vae")
    sampler = SamplerConfig(steps=cfg.run.inference_steps, guidance=cfg.run.guidance_scale)  # as `syncvid render`
    r = DiffusionRenderer.from_files(str(proof.student), str(proof.student_config), str(tmp_path / "vae"), sampler,
                                     device="cpu")
    calls = []
    r.unet.register_forward_hook(lambda m, args, out: calls.append((tuple(args[0].shape), int(args[1]))))
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    audio = rng.standard_normal((2, 50, 384)).astype(np.float32)
    out = r.render_crops([crops], [audio], [0])[0]
    assert out.shape == crops.shape and out.dtype == np.uint8
    # two DDIM steps (trailing: 999, 499), one UNet pass each: guidance 1 has no CFG batch
    assert calls == [((1, 13, 2, 4, 4), 999), ((1, 13, 2, 4, 4), 499)]
    again = r.render_crops([crops], [audio], [0])[0]
    assert np.array_equal(out, again)  # seeded: the same frames every time
    torch.testing.assert_close(r.unet.conv_out.weight, torch.load(proof.student, weights_only=True)["state_dict"]
                               ["conv_out.weight"])
