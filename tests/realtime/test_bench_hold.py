"""`syncvid bench hold`: the start-vs-end verdict, telling the WebRTC sessions' A/V offsets apart,
and a short hold of one WebRTC and one SDK session against the real server."""

import argparse
import subprocess
import sys

import pytest

from realtime.bench.hold import AV_DRIFT_LIMIT_MS, hold, hold_verdict, webrtc_offsets
from realtime.bench.leaks import COUNTS, FIGURES


def _sample(rss_mb=1200.0, tasks=30, av=(0.0, -1.5, 0.0, 2.0)):
    return {"server_mb": 400.0, "inference_mb": rss_mb - 400.0, "rss_mb": rss_mb, "fds": 61, "threads": 22,
            "tasks": tasks, "py_threads": 13, "websockets": 4, "av_offset_ms": list(av)}


def test_webrtc_offsets_are_those_the_server_measured():
    # SDK sessions' entries stay exactly 0; a WebRTC session's may pass through 0 but not stay there
    samples = [_sample(av=(0.0, -1.5, 0.0, 0.0)), _sample(av=(0.0, 0.8, 0.0, 2.0))]
    assert webrtc_offsets(samples) == [1, 3]
    assert webrtc_offsets(samples + [_sample(av=(0.0, 0.0, 3.0))]) is None  # a session went: no matching


def test_hold_verdict_compares_the_first_interval_with_the_last():
    ok = hold_verdict([_sample(), _sample(rss_mb=1230.0), _sample(rss_mb=1249.0, av=(0.0, 30.0, 0.0, -37.0))], 2)
    assert ok["ok"] and ok["growth"]["rss_mb"] == pytest.approx(49.0)
    assert ok["second_half_growth"]["rss_mb"] == pytest.approx(19.0)  # from the middle sample
    assert [a["drift_ms"] for a in ok["av"]["sessions"]] == [31.5, -39.0]
    assert ok["start"]["tasks"] == 30 and set(ok["growth"]) == set(FIGURES)

    more_memory = hold_verdict([_sample(), _sample(rss_mb=1251.0)], 2)
    assert not more_memory["ok"] and not more_memory["checks"]["rss_mb"] and more_memory["checks"]["av"]
    one_more_task = hold_verdict([_sample(), _sample(tasks=31)], 2)
    assert not one_more_task["ok"] and not one_more_task["checks"]["tasks"]
    drift = hold_verdict([_sample(), _sample(av=(0.0, -1.5 - AV_DRIFT_LIMIT_MS - 0.1, 0.0, 2.0))], 2)
    assert not drift["ok"] and not drift["checks"]["av"] and drift["checks"]["rss_mb"]
    # a WebRTC session whose offset cannot be found is not passed silently
    assert not hold_verdict([_sample(), _sample()], 3)["checks"]["av"]


def test_av_drift_compares_medians_of_three_samples_at_each_end():
    # one sample at the end swinging by 50 ms moves no median; the offset settling 45 ms away does
    swing = [_sample(av=(0.0, x)) for x in (1.0, -2.0, 3.0, 0.0, 0.0, 0.0, 2.0, -50.0, 1.0)]
    a = hold_verdict(swing, 1)["av"]
    assert a["samples_per_end"] == 3 and a["sessions"] == [{"start_ms": 1.0, "end_ms": 1.0, "drift_ms": 0.0}]
    assert a["ok"]
    moved = [_sample(av=(0.0, x)) for x in (1.0, -2.0, 3.0, 0.0, 0.0, 0.0, 46.0, 47.0, 45.0)]
    assert hold_verdict(moved, 1)["av"]["sessions"][0]["drift_ms"] == 45.0
    assert not hold_verdict(moved, 1)["ok"]


def test_bench_flags_are_checked():
    r = subprocess.run([sys.executable, "-c", "import sys; from realtime.cli import main; "
                        "sys.exit(main(['bench', 'hold', '--minutes', '0.1', '--interval', '5']))"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "under two --interval" in r.stderr


@pytest.mark.slow
async def test_a_short_hold_of_a_webrtc_and_an_sdk_session():
    from realtime.bench.loopback import start_server, stop_process

    port, server = start_server(argparse.Namespace(max_sessions=2, server_config=None))
    try:
        r = await hold(port, server.pid, n_webrtc=1, n_sdk=1, seconds=12.0, interval=4.0, warmup=3.0)
    finally:
        stop_process(server)
    assert not r["errors"]
    assert [s["t_s"] for s in r["samples"]] == pytest.approx([4.0, 8.0, 12.0], abs=0.5)
    for s in r["samples"]:
        assert len(s["rx_fps"]["webrtc"]) == 1 and len(s["rx_fps"]["sdk"]) == 1
        assert min(s["rx_fps"]["webrtc"] + s["rx_fps"]["sdk"]) > 10  # 25 fps out; a busy CI machine lags
        assert s["sessions"] == 2 and s["websockets"] == 2 and s["frames_sent"] > 0
        assert s["engine_latency_ms"]["n"] > 0 and s["engine_latency_ms"]["p95"] > 0
        assert set(FIGURES) <= set(s) and len(s["av_offset_ms"]) == 2
    v = r["verdict"]
    (av,) = v["av"]["sessions"]  # the WebRTC session's offset, told from the SDK session's 0
    assert abs(av["start_ms"]) < 40  # the server keeps its A/V offset near 0
    # the verdict is the targets applied to first interval -> last
    assert v["checks"] == {"rss_mb": v["growth"]["rss_mb"] <= 50.0, **{k: v["growth"][k] <= 0 for k in COUNTS},
                           "av": abs(av["drift_ms"]) <= AV_DRIFT_LIMIT_MS}
    assert v["ok"] == all(v["checks"].values())
    assert v["end"]["websockets"] == v["start"]["websockets"] == 2
