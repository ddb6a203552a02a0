"""CUDA speed options of the diffusion path and their CPU fallbacks (realtime.render.accel)."""

import pytest
import torch

from models.unet import UNet3DConditionModel, tiny_config
from realtime.render.accel import (
    attention_processors,
    optimize_unet,
    resolve_dtype,
    warm_up,
)


def test_dtype_falls_back_to_fp32_on_cpu():
    assert resolve_dtype("cpu") == torch.float32
    assert resolve_dtype("cpu", "bf16") == torch.float32 and resolve_dtype("cpu", "fp16") == torch.float32
    with pytest.raises(ValueError, match="dtype must be"):
        resolve_dtype("cpu", "fp8")


@pytest.mark.gpu
def test_dtype_on_cuda():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    assert resolve_dtype("cuda") == torch.float16
    assert resolve_dtype("cuda", "bf16") in (torch.bfloat16, torch.float16)


def test_every_attention_layer_uses_scaled_dot_product_attention():
    unet = UNet3DConditionModel.from_config(tiny_config())
    procs = attention_processors(unet)
    assert procs == {"AttnProcessor2_0": 72}  # spatial self/audio cross (32) + temporal (40)


def test_channels_last_gives_the_same_output_and_compile_is_skipped_on_cpu(caplog):
    unet = UNet3DConditionModel.from_config(tiny_config()).randomize_(0).eval()
    gen = torch.Generator().manual_seed(0)
    x, audio = torch.randn(1, 13, 2, 8, 8, generator=gen), torch.randn(1, 2, 50, 384, generator=gen)
    with torch.no_grad():
        ref = unet(x, 500, audio).sample
        same = optimize_unet(unet, channels_last=True, compile=True)
        assert same is unet and unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(unet(x, 500, audio).sample, ref, atol=1e-4, rtol=1e-3)  # NHWC reduction order
    assert "CUDA only" in caplog.text


def test_warm_up_renders_each_bucket_and_restores_the_sampler():
    from models.vae import tiny_autoencoder_kl
    from realtime.render.diffusion import DiffusionRenderer
    from realtime.render.samplers import SamplerConfig
    from tests.realtime.render.diffusion_fixtures import PerFrameUNet

    r = DiffusionRenderer(PerFrameUNet(), tiny_autoencoder_kl(), SamplerConfig(steps=2, guidance=1.0))
    times = warm_up(r, 64, chunks=(1, 3), sessions=(1, 2), steps=(1, 2))
    assert sorted(times) == [(k, f, b) for k in (1, 2) for f in (1, 3) for b in (1, 2)]
    assert all(t > 0 for t in times.values()) and r.sampler.steps == 2
    assert [c["shape"] for c in r.unet.calls[-2:]] == [(2, 13, 3, 8, 8)] * 2  # last bucket: 2 sessions, 2 steps
