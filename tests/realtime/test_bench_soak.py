"""`syncvid bench soak`: the growth verdict and the process sampling it rests on."""

import os
import subprocess
import sys

import pytest

from realtime.bench.soak import peak_growth, process_tree, sample, verdict


def _samples(server_mb, threads=None):
    threads = threads or [20] * len(server_mb)
    return [{"server_mb": m, "inference_mb": 500.0, "fds": 50, "threads": t} for m, t in zip(server_mb, threads)]


def test_verdict_ignores_warm_up_and_fits_the_second_half():
    # fast warm-up, then flat with noise: no growth
    flat = verdict(_samples([270, 350, 380, 400, 405, 399, 404, 401, 403]), 4)
    assert abs(flat["server_mb"]) < 10 and flat["fds"] == 0 and flat["inference_mb"] == 0
    # 0.5 MB per session after the warm-up: 50 MB per 100 sessions
    leak = verdict(_samples([270, 350, 380, 400, 402, 404, 406, 408, 410]), 4)
    assert leak["server_mb"] == pytest.approx(50.0)
    # two threads per session that never come back
    threads = verdict(_samples([300] * 7, [11, 19, 27, 35, 43, 51, 59]), 4)
    assert threads["threads"] == pytest.approx(200.0)


def test_peak_growth_tells_a_swinging_process_from_a_leaking_one():
    # swings between two levels, ending on the high one: a steep slope, the same peak
    swinging = _samples([300, 380, 420, 380, 420, 380, 380, 420, 420])
    assert verdict(swinging, 4)["server_mb"] >= 50 and peak_growth(swinging)["server_mb"] == 0
    leaking = _samples([300, 380, 420, 380, 425, 390, 430, 400, 440])
    assert peak_growth(leaking)["server_mb"] == 20 and peak_growth(leaking)["fds"] == 0


def test_verdict_needs_three_waves():
    with pytest.raises(ValueError, match="at least 3 waves"):
        verdict(_samples([1, 2, 3]), 4)


def test_sample_reads_a_process_tree():
    child = subprocess.Popen([sys.executable, "-c", "import time; x = bytearray(64 << 20); time.sleep(30)"])
    try:
        import time

        time.sleep(1.0)
        assert child.pid in process_tree(os.getpid())
        s = sample(os.getpid())
        assert s["inference_mb"] >= 64  # the child's 64 MB count as the rest of the tree
        assert s["server_mb"] > 10 and s["fds"] >= 3 and s["threads"] >= 1
    finally:
        child.kill()
        child.wait()


def test_bench_flags_are_checked():
    r = subprocess.run([sys.executable, "-c", "import sys; from realtime.cli import main; "
                        "sys.exit(main(['bench', 'soak', '--sessions', '5', '--concurrency', '4']))"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "under three waves" in r.stderr
