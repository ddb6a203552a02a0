import numpy as np
import pytest
import torch

import functools

from diffusion_fixtures import PerFrameUNet, TinyAvatar, audio_blocks
from models.vae import tiny_autoencoder_kl, tiny_autoencoder_tiny
from realtime.face.mask import fixed_mask
from realtime.render.diffusion import ChunkRequest, DiffusionRenderer
from realtime.render.samplers import SamplerConfig

R = 64  # crop size: 8 x 8 latents


def _renderer(steps=2, guidance=1.5, vae=tiny_autoencoder_kl, **kw):
    torch.manual_seed(0)
    return DiffusionRenderer(PerFrameUNet(), vae(), SamplerConfig(steps=steps, guidance=guidance, **kw))


def _render(renderer, avatar, n, chunk, seed=3, audio=None):
    audio = audio_blocks(n) if audio is None else audio
    state = renderer.new_state(seed)
    frames = []
    for s in range(0, n, chunk):
        idx = np.arange(s, min(n, s + chunk))
        frames += renderer.render_chunk(avatar, idx, audio[idx], state).frames
    return np.stack(frames)


def test_unet_input_layout_and_shapes():
    r = _renderer(steps=2)
    avatar = TinyAvatar(resolution=R)
    out = r.render_chunk(avatar, np.arange(3), audio_blocks(3), r.new_state(0))
    assert len(out.frames) == 3 and out.frames[0].shape == (80, 96, 3) and out.frames[0].dtype == np.uint8
    calls = r.unet.calls
    assert len(calls) == 2  # one UNet call per step (CFG doubles the batch instead)
    assert calls[0]["shape"] == (2, 13, 3, 8, 8)
    assert calls[0]["t"] == 999 and calls[1]["t"] == 499
    assert calls[0]["audio"].shape == (2, 3, 50, 384) and torch.count_nonzero(calls[0]["audio"][0]) == 0


def test_conditioning_channels_follow_latentsync_order(monkeypatch):
    seen = {}
    import realtime.render.diffusion as diffusion

    def fake_sample(denoise, noise, conditioning, audio, cfg, seeds):
        seen["cond"] = conditioning
        seen["noise"] = noise
        return noise

    monkeypatch.setattr(diffusion, "sample_latents", fake_sample)
    r = _renderer()
    avatar = TinyAvatar(resolution=R)
    crops = np.stack([avatar.crop(i) for i in range(2)])
    r.render_crops([crops], [audio_blocks(2)], [5])
    cond = seen["cond"]
    assert cond.shape == (1, 9, 2, 8, 8)
    mask_lat = torch.nn.functional.interpolate(torch.tensor(fixed_mask(R), dtype=torch.float32)[None, None], (8, 8))
    torch.testing.assert_close(cond[0, 0, 0], mask_lat[0, 0])  # channel 0: keep-mask at latent size
    from models.vae import encode_latents
    px = torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        ref = encode_latents(r.vae, px)
        masked = encode_latents(r.vae, px * torch.tensor(fixed_mask(R), dtype=torch.float32))
    torch.testing.assert_close(cond[0, 1:5].permute(1, 0, 2, 3), masked)  # masked-image latents
    torch.testing.assert_close(cond[0, 5:9].permute(1, 0, 2, 3), ref)  # reference latents
    assert torch.equal(seen["noise"][:, :, 0], seen["noise"][:, :, 1])  # one noise repeated over frames


def test_only_mouth_region_changes():
    r = _renderer()
    avatar = TinyAvatar(resolution=R)
    out = r.render_chunk(avatar, np.arange(2), audio_blocks(2), r.new_state(0)).frames[0]
    src = avatar.frame(0)
    keep = fixed_mask(R) == 1.0
    crop_out = out[avatar.y0:avatar.y0 + R, avatar.x0:avatar.x0 + R]
    crop_src = src[avatar.y0:avatar.y0 + R, avatar.x0:avatar.x0 + R]
    # keep region: reference pixels back through [-1, 1] and truncation (at most 1 level off)
    assert np.abs(crop_out[keep].astype(int) - crop_src[keep]).max() <= 1
    assert np.abs(crop_out[~keep].astype(int) - crop_src[~keep]).mean() > 5  # the mouth was repainted
    outside = np.ones(src.shape[:2], bool)
    outside[avatar.y0:avatar.y0 + R, avatar.x0:avatar.x0 + R] = False
    assert np.array_equal(out[outside], src[outside])


def test_streaming_equals_offline_and_deterministic():
    avatar = TinyAvatar(frames=4, resolution=R)
    n = 11
    audio = audio_blocks(n, seed=1)
    offline = _render(_renderer(steps=3), avatar, n, chunk=16, audio=audio)
    streamed = _render(_renderer(steps=3), avatar, n, chunk=3, audio=audio)
    single = _render(_renderer(steps=3), avatar, n, chunk=1, audio=audio)
    assert offline.shape == (n, 80, 96, 3)
    # float reductions may differ in the last bit between batch shapes; uint8 at most 1 level apart
    assert np.abs(offline.astype(int) - streamed).max() <= 1
    assert np.abs(offline.astype(int) - single).max() <= 1
    assert (offline != streamed).mean() < 1e-3
    again = _render(_renderer(steps=3), avatar, n, chunk=16, audio=audio)
    assert np.array_equal(offline, again)
    other_seed = _render(_renderer(steps=3), avatar, n, chunk=16, seed=4, audio=audio)
    assert not np.array_equal(offline, other_seed)


def test_render_batch_matches_single_sessions():
    a1, a2 = TinyAvatar(frames=3, resolution=R, seed=1), TinyAvatar(frames=2, resolution=R, seed=2)
    r = _renderer(steps=2)
    s1, s2 = r.new_state(1), r.new_state(2)
    aud1, aud2 = audio_blocks(4, seed=5), audio_blocks(4, seed=6)
    batch = r.render_batch([ChunkRequest(a1, np.arange(4), aud1, s1), ChunkRequest(a2, np.arange(2, 6), aud2, s2)])
    solo1 = _renderer(steps=2).render_chunk(a1, np.arange(4), aud1, s1)
    solo2 = _renderer(steps=2).render_chunk(a2, np.arange(2, 6), aud2, s2)
    for got, want in [(batch[0], solo1), (batch[1], solo2)]:
        assert np.abs(np.stack(got.frames).astype(int) - np.stack(want.frames)).max() <= 1


def test_frames_without_face_pass_through():
    avatar = TinyAvatar(frames=4, resolution=R, no_face={1})
    r = _renderer()
    out = r.render_chunk(avatar, np.arange(3), audio_blocks(3), r.new_state(0))
    assert np.array_equal(out.frames[1], avatar.frame(1))
    assert not np.array_equal(out.frames[0], avatar.frame(0))
    assert [e.face for e in out.events] == [True, False, True]


def test_taesd_and_no_cfg():
    r = _renderer(steps=1, guidance=1.0, vae=tiny_autoencoder_tiny)
    out = r.render_chunk(TinyAvatar(resolution=R), np.arange(2), audio_blocks(2), r.new_state(0))
    assert r.unet.calls[0]["shape"][0] == 1  # no unconditional branch
    assert len(out.frames) == 2


def test_chunk_bounds():
    r = _renderer()
    with pytest.raises(ValueError, match="1..16"):
        r.render_chunk(TinyAvatar(resolution=R), np.arange(17), audio_blocks(17), r.new_state(0))


def _real_tiny_unet():
    """The tiny UNet with every weight random: a fresh one's zero-initialised output convolution
    would make it answer 0 whatever its input, and these tests would see nothing of it."""
    unet_mod = pytest.importorskip("models.unet")
    return unet_mod.UNet3DConditionModel.from_config(unet_mod.tiny_config()).randomize_(0).eval()


def test_real_tiny_unet_chunks_are_independent_of_history():
    """LatentSync's UNet shares GroupNorm statistics (and motion-module attention) across the frames of
    one call, so a frame depends on its chunk; but never on earlier chunks or RNG history."""
    unet = _real_tiny_unet()
    avatar = TinyAvatar(frames=5, resolution=R)
    audio = audio_blocks(8, seed=2)
    r = DiffusionRenderer(unet, tiny_autoencoder_kl(), SamplerConfig(steps=2, guidance=1.5))
    state = r.new_state(9)
    full = [r.render_chunk(avatar, np.arange(s, s + 4), audio[s:s + 4], state).frames for s in (0, 4)]
    fresh = DiffusionRenderer(unet, tiny_autoencoder_kl(), SamplerConfig(steps=2, guidance=1.5))
    second = fresh.render_chunk(avatar, np.arange(4, 8), audio[4:8], fresh.new_state(9)).frames
    assert np.array_equal(np.stack(full[1]), np.stack(second))


def test_real_tiny_unet_deep_cache():
    unet = _real_tiny_unet()
    avatar = TinyAvatar(frames=3, resolution=R)
    audio = audio_blocks(3, seed=2)
    calls = []
    orig = unet.forward

    @functools.wraps(orig)
    def spy(*a, **kw):
        calls.append(kw.get("deep_cache") is not None)
        return orig(*a, **kw)

    unet.forward = spy
    r = DiffusionRenderer(unet, tiny_autoencoder_kl(), SamplerConfig(steps=4, guidance=1.5, deep_cache_interval=3))
    cached = np.stack(r.render_chunk(avatar, np.arange(3), audio, r.new_state(1)).frames)
    assert calls == [False, True, True, False]
    plain_r = DiffusionRenderer(unet, tiny_autoencoder_kl(), SamplerConfig(steps=4, guidance=1.5))
    plain = np.stack(plain_r.render_chunk(avatar, np.arange(3), audio, plain_r.new_state(1)).frames)
    gap = np.abs(cached.astype(int) - plain).mean()
    other = DiffusionRenderer(unet, tiny_autoencoder_kl(), SamplerConfig(steps=4, guidance=1.5))
    reseeded = np.stack(other.render_chunk(avatar, np.arange(3), audio, other.new_state(2)).frames)
    # an approximation of the full passes: close to them, much closer than another seed's render
    assert 0 < gap < 0.25 * np.abs(reseeded.astype(int) - plain).mean()


def test_avatar_stored_latents_are_used_when_they_match():
    from types import SimpleNamespace

    from models.vae import encode_latents

    r = _renderer(steps=2)
    avatar = TinyAvatar(frames=3, resolution=R)
    keep = torch.tensor(fixed_mask(R), dtype=torch.float32)
    crops = torch.from_numpy(np.stack([avatar.crop(i) for i in range(3)])).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        lat = torch.stack([encode_latents(r.vae, crops), encode_latents(r.vae, crops * keep)], dim=1).numpy()
    avatar.has_latents = True
    avatar.latents = lambda i: lat[avatar._src(i)]
    avatar.meta = SimpleNamespace(latents={"vae": "AutoencoderKL", "scaling_factor": 0.18215,
                                           "order": ["reference", "masked"]})
    assert r._can_use_stored_latents(avatar)
    stored = np.stack(r.render_chunk(avatar, np.arange(3), audio_blocks(3), r.new_state(0)).frames)
    assert len(r._latent_cache) == 0  # nothing encoded: the stored latents were used
    plain = _renderer(steps=2)
    plain.use_avatar_latents = False
    computed = np.stack(plain.render_chunk(avatar, np.arange(3), audio_blocks(3), plain.new_state(0)).frames)
    assert np.abs(stored.astype(int) - computed).max() <= 1
    avatar.meta.latents["vae"] = "AutoencoderTiny"  # prepared with another VAE: ignored
    assert not r._can_use_stored_latents(avatar)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_plumbing(dtype):
    """fp16 is what runs on CUDA; on the CPU this only checks that every tensor meets the model's dtype."""
    unet = _real_tiny_unet()
    torch.nn.Module.to(unet, dtype=dtype)
    vae = tiny_autoencoder_kl()
    torch.nn.Module.to(vae, dtype=dtype)
    r = DiffusionRenderer(unet, vae, SamplerConfig(steps=2, kind="lcm"), dtype=dtype)
    out = r.render_chunk(TinyAvatar(resolution=R), np.arange(2), audio_blocks(2), r.new_state(0))
    assert out.frames[0].dtype == np.uint8 and out.frames[0].shape == (80, 96, 3)


def test_constructing_without_weights_is_a_clear_error():
    from realtime.errors import WeightsError

    with pytest.raises(WeightsError, match="from_files"):
        DiffusionRenderer()


def test_render_batch_groups_by_length_and_resolution():
    r = _renderer(steps=1)
    small, large = TinyAvatar(frames=3, resolution=R), TinyAvatar(frames=3, resolution=2 * R, frame_hw=(160, 160))
    reqs = [ChunkRequest(small, np.arange(2), audio_blocks(2), r.new_state(0)),
            ChunkRequest(large, np.arange(2), audio_blocks(2), r.new_state(0)),
            ChunkRequest(small, np.arange(3), audio_blocks(3), r.new_state(1))]
    out = r.render_batch(reqs)
    assert [len(o.frames) for o in out] == [2, 2, 3] and out[1].frames[0].shape == (160, 160, 3)
    assert sorted(c["shape"][0] for c in r.unet.calls) == [2, 2, 2]  # three groups, CFG-doubled batch of 1
