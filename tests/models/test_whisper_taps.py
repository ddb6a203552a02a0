"""Encoder taps on a tiny random-init Whisper: shapes, equivalence with whisper's own forward,
absolute positions, and cached keys/values."""

import pytest
import torch
from whisper.model import AudioEncoder

from models.whisper_taps import add_positions, block_forward, conv_front, encoder_taps, step_positions


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    enc = AudioEncoder(n_mels=8, n_ctx=20, n_state=16, n_head=2, n_layer=4).eval()
    with torch.no_grad():
        for p in enc.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    return enc


def _mel(frames, seed=1):
    return torch.randn(2, 8, frames, generator=torch.Generator().manual_seed(seed))


def test_tap_shapes_and_match_hooks_on_stock_forward(encoder):
    mel = _mel(40)  # full context: 20 steps
    taps = encoder_taps(encoder, mel)
    assert taps.shape == (2, 20, 5, 16)
    outs = []
    hooks = [b.register_forward_hook(lambda m, i, o: outs.append(o)) for b in encoder.blocks]
    try:
        with torch.no_grad():
            final = encoder(mel)
    finally:
        for h in hooks:
            h.remove()
    torch.testing.assert_close(taps[:, :, 1:], torch.stack(outs, 2), rtol=0, atol=1e-6)
    # no ln_post on the last tap
    torch.testing.assert_close(encoder.ln_post(taps[:, :, 4]), final, rtol=0, atol=1e-6)


def test_short_window_at_offset_uses_absolute_positions(encoder):
    mel = _mel(10)  # 5 steps
    a = encoder_taps(encoder, mel, pos_offset=7)
    b = encoder_taps(encoder, mel, positions=torch.arange(7, 12))
    assert a.shape == (2, 5, 5, 16)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    x = conv_front(encoder, mel)
    torch.testing.assert_close(a[:, :, 0], x + encoder.positional_embedding[7:12], rtol=0, atol=1e-7)
    assert not torch.allclose(a, encoder_taps(encoder, mel, pos_offset=0))
    with pytest.raises(ValueError, match="positions"):
        encoder_taps(encoder, mel, pos_offset=16)  # 16..20 runs past n_ctx = 20
    assert step_positions(3, 4).tolist() == [4, 5, 6]


def test_block_with_cached_past_equals_full_block(encoder):
    x = add_positions(encoder, conv_front(encoder, _mel(40)))  # (2, 20, 16)
    block = encoder.blocks[0]
    with torch.no_grad():
        full = block(x)
        _, (k_past, v_past) = block_forward(block, x[:, :12])
        out, (k_new, v_new) = block_forward(block, x[:, 12:], past_kv=(k_past, v_past))
    assert k_new.shape == v_new.shape == (2, 8, 16)
    torch.testing.assert_close(out, full[:, 12:], rtol=0, atol=1e-5)


def test_fp64_activations_with_fp32_weights(encoder):
    mel = _mel(40)
    t32 = encoder_taps(encoder, mel)
    t64 = encoder_taps(encoder, mel.double())
    assert t64.dtype == torch.float64
    torch.testing.assert_close(t64.float(), t32, rtol=0, atol=1e-4)
