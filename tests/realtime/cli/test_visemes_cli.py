import json

import torch

from realtime.cli import main
from tests.system_packages import needs


@needs("espeak-ng")
def test_train_visemes_end_to_end_tiny(tmp_path):
    cfg = tmp_path / "v.yaml"
    cfg.write_text(
        "seed: 3\n"
        "data: {minutes: 0.05, eval_minutes: 0.05, segment_seconds: 2.5, context_steps: [12]}\n"
        "model: {pca_dim: 8, d_step: 8, d_frame: 8}\n"
        "train: {steps: 3, batch: 2, seq_len: 8, warmup: 1}\n"
    )
    out = tmp_path / "out"
    rc = main(["train-visemes", "--out", str(out), "--config", str(cfg), "--lookahead", "low",
               "--cache-dir", str(tmp_path / "cache")])
    assert rc == 0
    ckpt = torch.load(out / "visemes_low.pt", weights_only=True)
    assert ckpt["window"] == {"name": "low", "past": 8, "future": 2}
    assert ckpt["training_config"]["seed"] == 3 and ckpt["config"]["pca_dim"] == 8
    report = json.loads((out / "train_report.json").read_text())
    assert 0.0 <= report["low"]["heldout"]["accuracy"] <= 1.0
    assert list((tmp_path / "cache").iterdir())  # features cached for the next run


def test_train_visemes_rejects_unknown_config_key(tmp_path, capsys):
    cfg = tmp_path / "v.yaml"
    cfg.write_text("train: {stepz: 3}\n")
    rc = main(["train-visemes", "--out", str(tmp_path / "o"), "--config", str(cfg)])
    assert rc == 2
    assert "stepz" in capsys.readouterr().err


def test_eval_visemes_speed(tmp_path):
    rc = main(["eval-visemes", "--speed", "--kind", "low", "--json", str(tmp_path / "s.json")])
    assert rc == 0
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["low"]["per_frame_median_ms"] > 0
