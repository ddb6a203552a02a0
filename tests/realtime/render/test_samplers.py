import pytest
import torch


from realtime.render.samplers import (
    SamplerConfig,
    guided,
    initial_noise,
    latentsync_scheduler_config,
    make_scheduler,
    sample_latents,
)


def test_latentsync_ddim_config():
    cfg = latentsync_scheduler_config()
    assert cfg["beta_start"] == 0.00085 and cfg["beta_end"] == 0.012
    assert cfg["beta_schedule"] == "scaled_linear" and cfg["num_train_timesteps"] == 1000
    assert cfg["steps_offset"] == 1 and cfg["clip_sample"] is False and cfg["set_alpha_to_one"] is False
    sched = make_scheduler(SamplerConfig())
    assert type(sched).__name__ == "DDIMScheduler"
    # LatentSync's 20 DDIM steps: leading spacing, offset 1.
    assert sched.timesteps.tolist() == list(range(951, 0, -50))
    # scaled_linear: sqrt-linear betas between the two ends.
    assert float(sched.betas[0]) == pytest.approx(0.00085, rel=1e-6)
    assert float(sched.betas[-1]) == pytest.approx(0.012, rel=1e-6)
    assert float(sched.alphas_cumprod[-1]) == pytest.approx(0.0046600, abs=2e-6)


@pytest.mark.parametrize("steps,expected", [(1, [999]), (2, [999, 499]), (4, [999, 749, 499, 249])])
def test_few_step_ddim_starts_at_pure_noise(steps, expected):
    assert make_scheduler(SamplerConfig(steps=steps)).timesteps.tolist() == expected


@pytest.mark.parametrize("kind", ["lcm", "tcd"])
def test_few_step_kinds(kind):
    sched = make_scheduler(SamplerConfig(kind=kind, steps=4))
    assert sched.timesteps.tolist() == [999, 759, 499, 259]


def test_bad_config():
    with pytest.raises(ValueError, match="kind"):
        SamplerConfig(kind="euler")
    with pytest.raises(ValueError, match="steps"):
        SamplerConfig(steps=0)


def test_initial_noise_is_one_draw_repeated_over_frames():
    n = initial_noise(7, (4, 4), frames=5)
    assert n.shape == (1, 4, 5, 4, 4)
    assert torch.equal(n[:, :, 0], n[:, :, 4])
    assert torch.equal(initial_noise(7, (4, 4), 2), n[:, :, :2])  # frame count does not change the draw
    assert not torch.equal(initial_noise(8, (4, 4), 1), n[:, :, :1])
    g = torch.Generator().manual_seed(7)
    assert torch.equal(n[:, :, 0:1], torch.randn((1, 4, 1, 4, 4), generator=g))


def _affine_denoiser(record=None):
    w = torch.linspace(-1, 1, 13).view(1, 13, 1, 1, 1)

    def denoise(x, t, audio, reuse):
        if record is not None:
            record.append((audio.clone(), reuse))
        a = audio.mean(dim=(2, 3))[:, None, :, None, None]  # (B, 1, F, 1, 1)
        return torch.tanh((x * w).sum(1, keepdim=True).expand(-1, 4, -1, -1, -1) * 0.1 + a)

    return denoise


def _inputs(b=2, f=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    noise = torch.cat([initial_noise(s, (4, 4), f) for s in range(b)])
    cond = torch.randn((b, 9, f, 4, 4), generator=g)
    audio = torch.randn((b, f, 50, 384), generator=g)
    return noise, cond, audio


def test_cfg_uses_zero_audio_for_unconditional_branch():
    record = []
    noise, cond, audio = _inputs(b=1, f=3)
    cfg = SamplerConfig(steps=2, guidance=1.5)
    sample_latents(_affine_denoiser(record), noise, cond, audio, cfg, [0])
    assert len(record) == 2
    aud, _ = record[0]
    assert aud.shape == (2, 3, 50, 384)
    assert torch.count_nonzero(aud[0]) == 0 and torch.equal(aud[1], audio[0])
    # guidance <= 1: a single conditional pass per step
    record.clear()
    sample_latents(_affine_denoiser(record), noise, cond, audio, SamplerConfig(steps=2, guidance=1.0), [0])
    assert record[0][0].shape[0] == 1


def test_guided_formula():
    eps = torch.tensor([[1.0], [3.0]])
    assert guided(eps, 1.5).item() == pytest.approx(1.0 + 1.5 * 2.0)


@pytest.mark.parametrize("kind,eta", [("ddim", 0.0), ("ddim", 1.0), ("lcm", 0.0), ("tcd", 0.3)])
def test_deterministic_and_chunk_invariant(kind, eta):
    cfg = SamplerConfig(kind=kind, steps=4, guidance=1.5, eta=eta)
    noise, cond, audio = _inputs(b=2, f=6)
    den = _affine_denoiser()
    full = sample_latents(den, noise, cond, audio, cfg, [11, 12])
    again = sample_latents(den, noise, cond, audio, cfg, [11, 12])
    assert torch.equal(full, again)
    # the same frames split into chunks of 4 + 2 and run one batch element at a time
    parts = []
    for b in range(2):
        chunks = [sample_latents(den, noise[b:b + 1, :, s:e], cond[b:b + 1, :, s:e], audio[b:b + 1, s:e], cfg,
                                 [11 + b]) for s, e in [(0, 4), (4, 6)]]
        parts.append(torch.cat(chunks, dim=2))
    torch.testing.assert_close(torch.cat(parts), full, atol=1e-6, rtol=0)
    other = sample_latents(den, noise, cond, audio, cfg, [13, 12])
    if kind == "lcm" or eta > 0:  # injected step noise depends on the seed
        assert not torch.allclose(other[0], full[0])
    torch.testing.assert_close(other[1], full[1], atol=1e-6, rtol=0)


def test_deep_cache_flags():
    record = []
    noise, cond, audio = _inputs(b=1, f=2)
    sample_latents(_affine_denoiser(record), noise, cond, audio,
                   SamplerConfig(steps=7, guidance=1.0, deep_cache_interval=3), [0])
    assert [r for _, r in record] == [False, True, True, False, True, True, False]
