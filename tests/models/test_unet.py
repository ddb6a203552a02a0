"""models.unet: LatentSync key/shape parity (full configs on the meta device), tiny-preset numerics,
DeepCache hooks, per-frame audio routing, v1.0 checkpoint names."""

import json
import time
from pathlib import Path

import pytest
import torch

from models.unet import UNet3DConditionModel, rename_v10_key, tiny_config
from models.unet.motion_module import VanillaTemporalModule
from models.unet.resnet3d import group_norm_over_frames

KEYS = Path(__file__).resolve().parents[1] / "fixtures" / "unet_keys"
CONFIGS = ["stage2", "stage2_512", "stage2_efficient", "second_stage"]
# (state-dict entries, parameters) from LatentSync's own model class, per latentsync.md
EXPECTED = {
    "stage2": (1246, 1_267_099_844),
    "stage2_512": (1246, 1_267_099_844),
    "stage2_efficient": (1022, 1_100_244_804),
    "second_stage": (686, 849_962_244),
}


def reference(name):
    return json.loads((KEYS / f"latentsync_unet_keys_{name}.json").read_text())


def tiny(seed=0, **overrides):
    cfg = tiny_config() | overrides
    return UNet3DConditionModel.from_config(cfg).randomize_(seed).eval()


@pytest.fixture(scope="module")
def model():
    """Tiny preset with seeded weights, shared by the tests that do not modify it."""
    return tiny(seed=0)


def inputs(b=1, f=2, h=8, w=8, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 13, f, h, w, generator=g), torch.randn(b, f, 50, 384, generator=g)


@pytest.mark.parametrize("name", CONFIGS)
def test_state_dict_matches_latentsync_key_for_key(name):
    ref = reference(name)
    start = time.perf_counter()
    with torch.device("meta"):
        model = UNet3DConditionModel.from_config(ref["model_config"])
    assert time.perf_counter() - start < 10  # meta build: no weights allocated
    got = {k: list(v.shape) for k, v in model.state_dict().items()}
    # v1.0 files say audio_cross_attn.{attn,norm} where this model (and later LatentSync) says attn2/norm2
    want = {rename_v10_key(k): shape for k, shape, _ in ref["state_dict"]}
    assert sorted(set(want) - set(got)) == []
    assert sorted(set(got) - set(want)) == []
    assert {k: s for k, s in got.items() if want[k] != s} == {}
    n_entries, n_params = EXPECTED[name]
    assert len(got) == ref["num_state_dict_entries"] == n_entries
    assert sum(p.numel() for p in model.parameters()) == ref["total_parameters"] == n_params
    buffers = sorted(k for k in got if k.endswith("pos_encoder.pe"))
    assert buffers == sorted(ref["buffer_keys_in_state_dict"])  # persistent positional tables


def test_from_config_takes_a_plain_yaml_model_section():
    import yaml

    from realtime.config import REPO_ROOT

    section = yaml.safe_load((REPO_ROOT / "configs" / "unet" / "stage2_efficient.yaml").read_text())["model"]
    assert section["norm_eps"] == "1e-5"  # PyYAML's YAML 1.1 reading; OmegaConf gives a float
    with torch.device("meta"):
        model = UNet3DConditionModel.from_config(section)
    assert model.conv_norm_out.eps == 1e-5
    assert len(model.state_dict()) == EXPECTED["stage2_efficient"][0]


def test_v10_key_names_map_onto_attn2_norm2():
    keys = [k for k, _, _ in reference("second_stage")["state_dict"] if "audio_cross_attn" in k]
    assert len(keys) == 16 * 7  # 16 transformers x (norm w/b + q, k, v, out w/b)
    assert rename_v10_key("mid_block.attentions.0.transformer_blocks.0.audio_cross_attn.attn.to_k.weight") == \
        "mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight"
    assert rename_v10_key("x.transformer_blocks.0.audio_cross_attn.norm.bias") == "x.transformer_blocks.0.norm2.bias"
    assert rename_v10_key("conv_in.weight") == "conv_in.weight"


def test_unsupported_config_values_are_rejected():
    with pytest.raises(NotImplementedError, match="custom_audio_layer"):
        UNet3DConditionModel.from_config(tiny_config() | {"custom_audio_layer": True})
    with pytest.raises(ValueError, match="block type"):
        UNet3DConditionModel.from_config(tiny_config() | {"down_block_types": ["Foo"] * 4})


def test_fresh_model_is_zero_initialised_like_latentsync():
    model = UNet3DConditionModel.from_config(tiny_config()).eval()
    x, a = inputs()
    assert torch.count_nonzero(model.conv_in.weight) == 0
    with torch.no_grad():
        assert torch.count_nonzero(model(x, 10, a).sample) == 0


def test_tiny_forward_shape_determinism_and_golden_numbers(model):
    assert sum(p.numel() for p in model.parameters()) == 4_091_556
    x, a = inputs(b=2, f=2)
    t = torch.tensor([999, 10])
    with torch.no_grad():
        out = model(x, t, a).sample
        again = tiny(seed=0)(x, t, a).sample
    assert out.shape == (2, 4, 2, 8, 8)
    assert torch.equal(out, again)
    assert out.sum().item() == pytest.approx(31.6076, abs=0.02)
    assert out.abs().mean().item() == pytest.approx(0.236559, rel=1e-4)
    assert out[1, :, 1, 5, 5].tolist() == pytest.approx([0.170616, 0.171780, -0.135779, 0.027499], abs=1e-4)
    with torch.no_grad():
        other = tiny(seed=1)(x, t, a).sample
    assert (other - out).abs().mean() > 0.05


def test_audio_layouts_and_timestep_forms_are_equivalent(model):
    x, a = inputs(b=2, f=2)
    with torch.no_grad():
        ref = model(x, 500, a).sample
        flat = model(x, torch.tensor([500, 500]), a.reshape(4, 50, 384)).sample
        zero_d = model(x, torch.tensor(500), a).sample
    assert torch.equal(ref, flat) and torch.equal(ref, zero_d)
    with pytest.raises(ValueError, match="encoder_hidden_states"):
        model(x, 500, a[:, :1])
    with pytest.raises(ValueError, match="required"):
        model(x, 500, None)


def test_each_frame_attends_to_its_own_audio():
    """Without motion modules the network is equivariant to permuting frames (GroupNorm statistics are
    symmetric), so permuting video and audio together permutes the output, while permuting the audio
    alone changes it: frame i's video tokens query frame i's audio tokens."""
    model = tiny(use_motion_module=False)
    x, a = inputs(f=3, h=8, w=8)
    perm = torch.tensor([2, 0, 1])
    with torch.no_grad():
        out = model(x, 300, a).sample
        both = model(x[:, :, perm], 300, a[:, perm]).sample
        audio_only = model(x, 300, a[:, perm]).sample
    torch.testing.assert_close(both, out[:, :, perm], atol=1e-5, rtol=1e-5)
    assert (audio_only - out).abs().mean() > 1e-3


def test_cfg_batch_rows_are_independent(model):
    x, a = inputs(b=2, f=2)
    with torch.no_grad():
        both = model(x, 700, a).sample
        first = model(x[:1], 700, a[:1]).sample
    torch.testing.assert_close(both[:1], first, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("branch", [0, 1])
def test_deep_cache_shallow_pass_reproduces_full_pass(model, branch):
    x, a = inputs(b=2, f=2)
    with torch.no_grad():
        plain = model(x, 400, a).sample
        full = model(x, 400, a, cache_branch_id=branch)
        shallow = model(x, 400, a, cache_branch_id=branch, deep_cache=full.deep_cache)
        later = model(x * 0.9, 350, a, cache_branch_id=branch, deep_cache=full.deep_cache).sample
    assert torch.equal(full.sample, plain)
    channels = 32  # block_out_channels[0] (branch 0) or [1] (branch 1) of the tiny preset
    assert full.deep_cache.shape == (4, channels, 8, 8)
    torch.testing.assert_close(shallow.sample, plain, atol=1e-5, rtol=1e-5)
    assert shallow.deep_cache is full.deep_cache
    assert (later - plain).abs().mean() > 1e-3  # the shallow part does respond to new inputs


def test_deep_cache_argument_errors(model):
    x, a = inputs()
    assert model.deep_cache_branches == 2
    with pytest.raises(ValueError, match="cache_branch_id"):
        model(x, 1, a, cache_branch_id=2)
    with pytest.raises(ValueError, match="needs the cache_branch_id"):
        model(x, 1, a, deep_cache=torch.zeros(2, 32, 8, 8))
    with pytest.raises(ValueError, match="deep_cache has shape"):
        model(x, 1, a, cache_branch_id=0, deep_cache=torch.zeros(2, 32, 4, 4))


def test_odd_latent_sizes_and_single_frame(model):
    x, a = inputs(f=1, h=12, w=20)
    with torch.no_grad():
        assert model(x, 5, a).sample.shape == (1, 4, 1, 12, 20)


def test_bfloat16_forward_tracks_float32():
    model = tiny()
    x, a = inputs(f=1)
    with torch.no_grad():
        ref = model(x, 250, a).sample
        low = torch.nn.Module.to(model, torch.bfloat16)(x.bfloat16(), 250, a.bfloat16()).sample
    assert low.dtype == torch.bfloat16
    assert (low.float() - ref).abs().max() < 0.05 * ref.abs().max()


def test_group_norm_statistics_span_the_clip():
    norm = torch.nn.GroupNorm(4, 8)
    g = torch.Generator().manual_seed(0)
    x5 = torch.randn(2, 8, 3, 5, 5, generator=g) * torch.arange(1, 4).view(1, 1, 3, 1, 1)
    frames = x5.permute(0, 2, 1, 3, 4).reshape(6, 8, 5, 5)
    ours = group_norm_over_frames(norm, frames, 3)
    torch.testing.assert_close(ours, norm(x5).permute(0, 2, 1, 3, 4).reshape(6, 8, 5, 5))
    assert not torch.allclose(ours, norm(frames), atol=1e-3)  # per-frame stats would differ


def test_motion_module_is_identity_at_init_and_mixes_only_across_frames():
    mm = VanillaTemporalModule(32, num_attention_heads=4, num_transformer_block=1,
                               temporal_position_encoding=True, temporal_position_encoding_max_len=24).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2 * 4, 32, 3, 3, generator=g)  # (B*F, C, H, W), B=2, F=4
    with torch.no_grad():
        assert torch.equal(mm(x, 4), x)  # zero-initialised proj_out
        torch.nn.init.normal_(mm.temporal_transformer.proj_out.weight, std=0.1, generator=g)
        base = mm(x, 4)
        bumped = x.clone()
        bumped[1, :, 0, 0] += 5.0  # clip 0, frame 1, pixel (0, 0)
        diff = (mm(bumped, 4) - base).abs().amax(dim=1)  # (B*F, H, W)
    assert diff[0:4, 0, 0].min() > 1e-4  # every frame of clip 0 at that pixel changes
    assert diff[4:].max() == 0  # clip 1 is untouched: attention never crosses clips
    pe = mm.temporal_transformer.transformer_blocks[0].attention_blocks[0].pos_encoder.pe
    assert pe.shape == (1, 24, 32)
    assert pe[0, 0, 0::2].abs().max() == 0 and pe[0, 0, 1::2].min() == 1  # sin(0), cos(0)
    with pytest.raises(ValueError, match="exceed"):
        mm(torch.randn(25, 32, 1, 1), 25)


def test_v10_named_checkpoint_loads_strictly_through_pre_hook(model):
    v10 = {}
    for k, v in model.state_dict().items():
        k = k.replace(".attn2.", ".audio_cross_attn.attn.").replace(".norm2.", ".audio_cross_attn.norm.") \
            if ".transformer_blocks." in k and "attentions." in k and "motion" not in k else k
        v10[k] = v.clone()
    assert sum(".audio_cross_attn." in k for k in v10) == 16 * 7
    fresh = UNet3DConditionModel.from_config(tiny_config())
    result = fresh.load_state_dict(v10, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    x, a = inputs()
    with torch.no_grad():
        assert torch.equal(fresh.eval()(x, 7, a).sample, model(x, 7, a).sample)
    assert torch.equal(fresh.conv_in.weight, model.conv_in.weight)
    assert any(".audio_cross_attn." in k for k in v10)  # the caller's dict is not renamed
