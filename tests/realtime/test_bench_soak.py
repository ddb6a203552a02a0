"""`syncvid bench soak`: the growth verdict and the process sampling it rests on, the mix of session
kinds and endings, and a short soak of mixed sessions against the real server."""

import argparse
import os
import subprocess
import sys

import pytest

from realtime.bench.leaks import COUNTS, FIGURES, leak_verdict, peak_growth, process_tree, sample, verdict
from realtime.bench.soak import SDK_ENDINGS, STALL_LIMIT_S, WEBRTC_ENDINGS, churn, plan


def _samples(server_mb, threads=None):
    threads = threads or [20] * len(server_mb)
    return [{"server_mb": m, "inference_mb": 500.0, "rss_mb": m + 500.0, "fds": 50, "threads": t, "tasks": 4,
             "py_threads": 11, "websockets": 0} for m, t in zip(server_mb, threads)]


def test_verdict_ignores_warm_up_and_fits_the_second_half():
    # fast warm-up, then flat with noise: no growth
    flat = verdict(_samples([270, 350, 380, 400, 405, 399, 404, 401, 403]), 4)
    assert abs(flat["server_mb"]) < 10 and flat["fds"] == 0 and flat["inference_mb"] == 0 and flat["tasks"] == 0
    # 0.5 MB per session after the warm-up: 50 MB per 100 sessions
    leak = verdict(_samples([270, 350, 380, 400, 402, 404, 406, 408, 410]), 4)
    assert leak["server_mb"] == pytest.approx(50.0) and leak["rss_mb"] == pytest.approx(50.0)
    # two threads per session that never come back
    threads = verdict(_samples([300] * 7, [11, 19, 27, 35, 43, 51, 59]), 4)
    assert threads["threads"] == pytest.approx(200.0)


def test_peak_growth_tells_a_swinging_process_from_a_leaking_one():
    # swings between two levels, ending on the high one: a steep slope, the same peak
    swinging = _samples([300, 380, 420, 380, 420, 380, 380, 420, 420])
    assert verdict(swinging, 4)["server_mb"] >= 50 and peak_growth(swinging)["server_mb"] == 0
    leaking = _samples([300, 380, 420, 380, 425, 390, 430, 400, 440])
    assert peak_growth(leaking)["server_mb"] == 20 and peak_growth(leaking)["fds"] == 0


def test_leak_verdict_allows_50_mb_and_no_count_up():
    flat = dict.fromkeys(FIGURES, 0)
    assert leak_verdict({**flat, "rss_mb": 50.0})["ok"]
    assert not leak_verdict({**flat, "rss_mb": 50.1})["ok"]
    for k in COUNTS:
        v = leak_verdict({**flat, k: 1})
        assert not v["ok"] and not v["checks"][k] and sum(not ok for ok in v["checks"].values()) == 1
    assert leak_verdict({**flat, "fds": -3, "rss_mb": -20})["ok"]  # giving back is no leak


def test_verdict_needs_three_waves():
    with pytest.raises(ValueError, match="at least 3 waves"):
        verdict(_samples([1, 2, 3]), 4)


def test_plan_spreads_the_sdk_share_and_takes_each_kinds_endings_in_turn():
    p = plan(16, 0, 0.5)
    assert [k for k, _ in p] == ["webrtc", "sdk"] * 8
    assert [e for k, e in p if k == "sdk"] == list(SDK_ENDINGS) * 2
    assert [e for k, e in p if k == "webrtc"] == list(WEBRTC_ENDINGS) * 2
    assert plan(4, 12, 0.5) == p[12:16]  # a wave continues where the last one stopped
    assert sum(k == "sdk" for k, _ in plan(100, 0, 0.3)) == 30
    assert {k for k, _ in plan(10, 0, 0.0)} == {"webrtc"} and {k for k, _ in plan(10, 0, 1.0)} == {"sdk"}


def test_sample_reads_a_process_tree():
    child = subprocess.Popen([sys.executable, "-c", "import time; x = bytearray(64 << 20); time.sleep(30)"])
    try:
        import time

        time.sleep(1.0)
        assert child.pid in process_tree(os.getpid())
        s = sample(os.getpid())
        assert s["inference_mb"] >= 64  # the child's 64 MB count as the rest of the tree
        assert s["server_mb"] > 10 and s["fds"] >= 3 and s["threads"] >= 1
        assert s["rss_mb"] == pytest.approx(s["server_mb"] + s["inference_mb"], abs=0.11)
    finally:
        child.kill()
        child.wait()


def test_bench_flags_are_checked():
    def soak(*flags):
        return subprocess.run([sys.executable, "-c", "import sys; from realtime.cli import main; "
                               f"sys.exit(main(['bench', 'soak', *{list(flags)!r}]))"], capture_output=True, text=True)

    r = soak("--sessions", "5", "--concurrency", "4")
    assert r.returncode == 2 and "under three waves" in r.stderr
    r = soak("--sdk-share", "1.5")
    assert r.returncode == 2 and "--sdk-share must be a fraction from 0 to 1" in r.stderr


@pytest.mark.slow
async def test_a_short_mixed_soak_gives_back_what_its_sessions_took():
    """Eight sessions, two at a time, against the real server: every ending of both kinds once."""
    from realtime.bench.loopback import start_server, stop_process

    port, server = start_server(argparse.Namespace(max_sessions=2, server_config=None))
    try:
        args = argparse.Namespace(sessions=8, concurrency=2, session_seconds=1.0, sdk_share=0.5)
        r = await churn(port, server.pid, args)
    finally:
        stop_process(server)
    assert r["sdk_sessions"] == 4 and len(r["waves"]) == 4
    assert sorted(r["teardown_s_max_by_ending"]) == sorted(
        [f"sdk:{e}" for e in SDK_ENDINGS] + [f"webrtc:{e}" for e in WEBRTC_ENDINGS])
    assert r["sessions_at_end"] == 0 and r["frames_min"] > 0
    for s in (r["start"], r["end"], *r["waves"]):
        assert set(FIGURES) <= set(s) and s["rss_mb"] > 0 and s["fds"] > 0
    # what the sessions took in the server's event loop comes back once they are gone
    assert r["end"]["websockets"] == r["start"]["websockets"] == 0
    assert r["end"]["tasks"] == r["start"]["tasks"]
    # the verdict is the targets applied to the peaks (8 sessions are mostly warm-up: no judgement of its own)
    g, v = r["peak_growth"], r["verdict"]
    assert v["checks"] == {"rss_mb": g["rss_mb"] <= 50.0, **{k: g[k] <= 0 for k in COUNTS}}
    assert v["ok"] == all(v["checks"].values())
    assert r["stall_cut_s_max"] is not None and r["stall_cut_s_max"] <= STALL_LIMIT_S, (
        "the server did not cut the SDK client that stopped reading (slow_consumer): " + "; ".join(r["errors"]))
    assert not r["errors"]
