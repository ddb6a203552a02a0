import torch

from models.visemes import VisemeModel, VisemeModelConfig, checkpoint_dict, model_from_checkpoint


def _tiny(seed=0):
    torch.manual_seed(seed)
    return VisemeModel(VisemeModelConfig.tiny()).eval()


def test_tiny_shapes_and_ranges():
    m = _tiny()
    cfg = m.cfg
    x = torch.randn(2, 7, cfg.steps * cfg.n_taps, cfg.n_state, generator=torch.Generator().manual_seed(1))
    out = m(x)
    assert out.logits.shape == (2, 7, 15)
    assert out.blendshapes.shape == (2, 7, 8)
    assert out.state.shape == (1, 2, cfg.d_frame)
    assert float(out.blendshapes.detach().min()) >= 0 and float(out.blendshapes.detach().max()) <= 1
    assert sum(p.numel() for p in m.parameters()) < 5000


def test_default_size_under_budget():
    m = VisemeModel(VisemeModelConfig())
    n = sum(p.numel() for p in m.parameters()) + sum(b.numel() for b in m.buffers())
    assert n * 4 < 5 * 2**20  # <= 5 MB of fp32 weights


def test_reduction_fit_and_reduced_path_agree():
    m = _tiny()
    cfg = m.cfg
    g = torch.Generator().manual_seed(2)
    kept = m.fit_reduction(torch.randn(300, cfg.steps * cfg.n_taps, cfg.n_state, generator=g))
    assert kept.shape == (cfg.n_taps,) and bool(((kept > 0) & (kept <= 1)).all())
    x = torch.randn(1, 5, cfg.steps * cfg.n_taps, cfg.n_state, generator=g)
    a = m(x).logits
    b = m(m.reduce(x), reduced=True).logits
    torch.testing.assert_close(a, b)


def test_streaming_in_chunks_equals_whole():
    m = _tiny()
    cfg = m.cfg
    x = torch.randn(1, 9, cfg.steps * cfg.n_taps, cfg.n_state, generator=torch.Generator().manual_seed(3))
    whole = m(x).logits
    state, parts = None, []
    for lo, hi in ((0, 1), (1, 4), (4, 9)):
        out = m(x[:, lo:hi], state)
        state = out.state
        parts.append(out.logits)
    torch.testing.assert_close(torch.cat(parts, 1), whole, atol=1e-5, rtol=1e-5)


def test_checkpoint_round_trip_carries_config():
    m = _tiny()
    m.fit_reduction(torch.randn(50, m.cfg.steps * m.cfg.n_taps, m.cfg.n_state))
    ckpt = checkpoint_dict(m, {"window": {"name": "full"}})
    assert ckpt["config"]["pca_dim"] == 6
    m2 = model_from_checkpoint(ckpt)
    x = torch.randn(1, 3, m.cfg.steps * m.cfg.n_taps, m.cfg.n_state)
    torch.testing.assert_close(m(x).logits, m2(x).logits)
