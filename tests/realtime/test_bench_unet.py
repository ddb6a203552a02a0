"""`syncvid bench unet` on the tiny config only (seconds), checking the reported fields."""

import json

from realtime.cli import main


def test_bench_unet_tiny_reports_full_and_shallow_steps(tmp_path, capsys):
    out = tmp_path / "unet.json"
    rc = main(["bench", "unet", "--skip-full", "--repeats", "1", "--tiny-frames", "2", "--latent", "8",
               "--threads", "1", "--json", str(out)])
    assert rc == 0
    cases = json.loads(out.read_text())
    cpu = [c for c in cases if c["device"] == "cpu"]
    assert len(cpu) == 1 and cpu[0]["config"] == "tiny" and cpu[0]["frames"] == 2 and cpu[0]["threads"] == 1
    for mode in ("full", "shallow"):
        r = cpu[0][mode]
        assert r["step_ms"] > 0 and r["cpu_step_ms"] > 0
        assert abs(r["ms_per_frame"] - r["step_ms"] / 2) < 0.02
    assert '"config": "tiny"' in capsys.readouterr().out
