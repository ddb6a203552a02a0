"""`syncvid bench realtime`: the server on loopback with the embedded renderer, measured as a client sees it.

Runs the real server (`syncvid serve`) and a zero-delay echo server (the transport floor) as
subprocesses and probes both from aiortc peers in this process:

- engine latency p50/p95 (server's own instrumentation: audio packet arrival -> departure of the
  frame showing it), per look-ahead mode;
- glass-to-glass: speech burst onset sent -> first received frame whose mouth opens (a mouth-region
  darkness detector calibrated on the rest frames of the same stream), engine and echo, and the
  difference;
- A/V offset at the receiver: first loud received audio frame vs first mouth-open video frame of the
  same burst; drift = last quarter minus first quarter of the session;
- capacity: the most concurrent sessions at 25 fps with < 1 % late frames.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

BURST_S, GAP_S = 0.8, 0.9  # speech burst then silence: one onset per 1.7 s
CALIBRATE_S = 2.5  # silence at the start: rest-frame statistics for the detector
FIXTURE = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "arctic_a0007.wav"


def add_arguments(p) -> None:
    p.add_argument("--duration", type=float, default=45.0,
                   help="seconds of probing per mode and server (600 = the 10-minute drift check)")
    p.add_argument("--modes", default="full,low", help="look-ahead modes to measure: full,low")
    p.add_argument("--max-sessions", type=int, default=6, help="capacity search upper bound")
    p.add_argument("--capacity-seconds", type=float, default=15.0, help="measured seconds per session count")
    p.add_argument("--skip-capacity", action="store_true")
    p.add_argument("--skip-echo", action="store_true", help="no transport-floor probe (e.g. for the long drift run)")
    p.add_argument("--audio", default=str(FIXTURE), help="speech WAV the probe speaks (bursts cut from it)")
    p.add_argument("--json", default=None, help="also write the results as JSON to this file")
    p.add_argument("--server-config", default=None, help="YAML config for the server under test")


# ---- helpers --------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_json(port: int, path: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return json.loads(r.read())


def start_process(args: list[str], port: int, health: str | None) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 120:
        if proc.poll() is not None:
            raise RuntimeError(f"{args} exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            if health:
                http_json(port, health)
            else:
                socket.create_connection(("127.0.0.1", port), 0.5).close()
            return proc
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"{args} did not start")


def stop_process(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def speech_bursts(path: str, n: int) -> list[np.ndarray]:
    """``n`` bursts of BURST_S seconds at 48 kHz int16, each starting at a voiced point of the WAV."""
    from scipy.signal import resample_poly

    from realtime.audio.io import load_audio

    x = load_audio(path)  # 16 kHz float32 mono
    frames = x[: len(x) // 320 * 320].reshape(-1, 320)
    rms = np.sqrt((frames.astype(np.float64) ** 2).mean(1))
    loud = rms > max(0.02, 0.15 * rms.max())
    starts = [i for i in range(1, len(loud)) if loud[i] and not loud[i - 1]] or [int(np.argmax(loud))]
    starts = [s for s in starts if (s * 320 + BURST_S * 16000) <= len(x)] or [0]
    out = []
    for k in range(n):
        s = starts[k % len(starts)] * 320
        seg = x[s : s + int(BURST_S * 16000)]
        fade = np.minimum(1, np.arange(len(seg))[::-1] / 320)  # no click at the end
        y = resample_poly(seg * fade, 3, 1)
        out.append((np.clip(y / max(1e-6, np.abs(y).max()) * 0.6, -1, 1) * 32767).astype(np.int16))
    return out


class Probe:
    """Per-stream detector: mouth-region luma per received frame, loudness per audio frame.

    Signal: mean absolute difference of the mouth region against the median rest frame of the
    calibration period. Idle head sway moves that baseline slowly, so an onset counts when the
    signal rises ``JUMP`` gray levels above its median over the 250 ms before the speech onset.
    """

    JUMP = 4.0  # gray levels; frame-to-frame noise at rest is ~0.5 (H.264 + idle motion)

    def __init__(self, box) -> None:
        self.box = box
        self.video: list[tuple[float, np.ndarray]] = []
        self.audio: list[tuple[float, float]] = []

    def on_video(self, t: float, img: np.ndarray) -> None:
        m = img[self.box].astype(np.float32)  # luma (H, W) from the peer's fast path
        self.video.append((t, (m.mean(-1) if m.ndim == 3 else m)[::2, ::2]))

    def on_audio(self, t: float, x: np.ndarray) -> None:
        self.audio.append((t, float(np.sqrt(np.mean((x / 32768.0) ** 2)))))

    def analyse(self, onsets: list[float], calib_until: float) -> dict:
        rest = [m for t, m in self.video if t < calib_until]
        ref = np.median(np.stack(rest), 0) if rest else self.video[0][1]
        vt = np.array([t for t, _ in self.video])
        vv = np.array([float(np.abs(m - ref).mean()) for _, m in self.video])
        at = np.array([t for t, _ in self.audio])
        av_ = np.array([v for _, v in self.audio])
        g2g, offsets = [], []
        for on in onsets:
            before = vv[(vt > on - 0.25) & (vt <= on)]
            base = float(np.median(before)) if len(before) else float(np.median(vv[vt < calib_until]))
            win = (vt > on) & (vt < on + BURST_S + GAP_S)
            hit = np.nonzero(win & (vv > base + self.JUMP))[0]
            if len(hit):
                g2g.append(vt[hit[0]] - on)
            awin = (at > on) & (at < on + BURST_S + GAP_S)
            ahit = np.nonzero(awin & (av_ > 0.01))[0]
            if len(hit) and len(ahit):
                offsets.append(vt[hit[0]] - at[ahit[0]])  # > 0: video after audio
        return {"threshold": self.JUMP, "g2g": g2g, "av": offsets, "onsets": len(onsets)}


async def probe_server(url: str, box, seconds: float, bursts: list[np.ndarray], options: dict) -> dict:
    from clients.webrtc_peer import WebRTCPeer

    probe = Probe(box)
    peer = WebRTCPeer(url, options=options, on_video=probe.on_video, on_audio=probe.on_audio, keep_video=False,
                      video_format="luma")
    await peer.connect()
    await peer.wait_connected()
    t_start = time.monotonic()
    await asyncio.sleep(CALIBRATE_S)
    calib_until = time.monotonic()
    onsets = []
    k = 0
    while time.monotonic() - t_start < seconds:
        onsets.append(peer.play(bursts[k % len(bursts)]))
        k += 1
        await asyncio.sleep(BURST_S + GAP_S)
    await asyncio.sleep(1.0)
    steady = [t for t in peer.video_times if t >= t_start + 1.0]  # after the first second
    await peer.close()
    out = probe.analyse(onsets, calib_until)
    out["rx_fps"] = (len(steady) - 1) / max(1e-6, steady[-1] - steady[0]) if len(steady) > 1 else 0.0
    return out


def pct(xs, q) -> float | None:
    return round(float(np.percentile(xs, q)) * 1000, 1) if len(xs) else None


def summarize(res: dict) -> dict:
    av = res["av"]
    q = max(1, len(av) // 4)
    return {
        "g2g_ms": {"p50": pct(res["g2g"], 50), "p95": pct(res["g2g"], 95), "n": len(res["g2g"]),
                   "onsets": res["onsets"]},
        "av_offset_ms": {"median": pct(av, 50), "p95_abs": pct(np.abs(av), 95) if av else None,
                         "drift": round((np.median(av[-q:]) - np.median(av[:q])) * 1000, 1) if len(av) >= 4 else None},
        "rx_fps": round(res["rx_fps"], 2),
    }


async def capacity(port: int, box, n: int, seconds: float, bursts, options: dict) -> dict:
    from clients.webrtc_peer import WebRTCPeer

    peers = [WebRTCPeer(f"ws://127.0.0.1:{port}/ws", options=options, keep_video=False) for _ in range(n)]
    for p in peers:
        await p.connect()
    for p in peers:
        await p.wait_connected()

    async def talk(p, seed):
        k = seed
        while True:
            p.play(bursts[k % len(bursts)])
            k += 1
            await asyncio.sleep(BURST_S + GAP_S * (0.5 + (k % 3) * 0.25))

    talkers = [asyncio.create_task(talk(p, i)) for i, p in enumerate(peers)]
    await asyncio.sleep(3.0)  # warm-up
    before = http_json(port, "/stats?reset=1")
    n0 = [len(p.video_times) for p in peers]
    t0 = time.monotonic()
    await asyncio.sleep(seconds)
    after = http_json(port, "/stats")
    dt = time.monotonic() - t0
    rx = [(len(p.video_times) - a) / dt for p, a in zip(peers, n0)]
    for t in talkers:
        t.cancel()
    for p in peers:
        await p.close()
    d = {k: after["frames"][k] - before["frames"][k] for k in after["frames"]}
    late = d["late"] / max(1, d["sent"])
    return {"sessions": n, "late_frac": round(late, 4), "sent_fps_per_session": round(d["sent"] / dt / n, 2),
            "rx_fps_min": round(min(rx), 2), "render_ms_per_frame_p50": after["render_ms_per_frame"]["p50"],
            "engine_latency_ms": after["engine_latency_ms"], "skipped_slots": after["skipped_slots"],
            "ok": late < 0.01 and min(rx) >= 24.0}


async def run_async(args) -> dict:
    from realtime.bench.echo_server import mouth_box
    from realtime.face.avatar import default_avatar

    box = mouth_box(default_avatar())
    n_bursts = int(args.duration / (BURST_S + GAP_S)) + 2
    bursts = speech_bursts(args.audio, n_bursts)
    results: dict = {"machine": "AMD EPYC, 2 cores, no GPU (other jobs running concurrently)",
                     "duration_s": args.duration, "modes": {}}
    echo_port = free_port()
    # not started at all with --skip-echo: an idle WebRTC server is CPU the capacity probe needs
    echo = (None if args.skip_echo else
            start_process(["-m", "realtime.bench.echo_server", "--port", str(echo_port)], echo_port, None))
    try:
        for mode in [m for m in args.modes.split(",") if m]:
            port = free_port()
            cmd = ["-c", "import sys; from realtime.cli import main; sys.exit(main())", "serve", "--port", str(port), "--max-sessions", str(args.max_sessions + 1)]
            if mode == "low":
                cmd.append("--low-latency")
            if args.server_config:
                cmd += ["--config", args.server_config]
            server = start_process(cmd, port, "/healthz")
            try:
                # a throwaway session warms the models up (first inference is slow)
                await probe_server(f"ws://127.0.0.1:{port}/ws", box, CALIBRATE_S + 3, bursts, {})
                http_json(port, "/stats?reset=1")
                eng = await probe_server(f"ws://127.0.0.1:{port}/ws", box, args.duration, bursts, {})
                stats = http_json(port, "/stats")
                if args.skip_echo:
                    floor = {"g2g": [], "av": [], "onsets": 0, "rx_fps": 0.0}
                else:
                    floor = await probe_server(f"ws://127.0.0.1:{echo_port}/ws", box, args.duration, bursts, {})
                e, f = summarize(eng), summarize(floor)
                over = {q: (round(e["g2g_ms"][q] - f["g2g_ms"][q], 1) if e["g2g_ms"][q] is not None
                            and f["g2g_ms"][q] is not None else None) for q in ("p50", "p95")}
                em, fm = e["av_offset_ms"]["median"], f["av_offset_ms"]["median"]
                results["modes"][mode] = {"engine_latency_ms": stats["engine_latency_ms"], "engine": e, "echo": f,
                                          # aiortc's receiver has no lip sync (its audio jitter buffer
                                          # holds ~80 ms more than video): the echo's offset is that
                                          "av_offset_vs_echo_ms": (round(em - fm, 1) if em is not None
                                                                   and fm is not None else None),
                                          "g2g_over_floor_ms": over, "server_frames": stats["frames"],
                                          "render_ms_per_frame": stats["render_ms_per_frame"],
                                          "encode_ms_per_push": stats["encode_ms_per_push"]}
                if not args.skip_capacity and mode == "full":
                    caps = []
                    for n in range(1, args.max_sessions + 1):
                        c = await capacity(port, box, n, args.capacity_seconds, bursts, {})
                        log.info("capacity %s", c)
                        caps.append(c)
                        if not c["ok"]:
                            break
                    results["capacity"] = caps
                    results["max_sessions"] = max([c["sessions"] for c in caps if c["ok"]], default=0)
            finally:
                stop_process(server)
    finally:
        if echo is not None:
            stop_process(echo)
    return results


def print_table(r: dict) -> None:
    print(f"syncvid bench realtime — {r['machine']}, {r['duration_s']:.0f} s per probe")
    print(f"{'mode':<6}{'engine p50/p95 ms':>20}{'g2g p50/p95 ms':>18}{'echo floor p50/p95':>21}"
          f"{'over floor p50/p95':>21}{'A/V med/p95|.| ms':>20}{'echo A/V':>9}{'A/V-echo':>9}{'drift ms':>9}{'rx fps':>8}")
    for mode, m in r["modes"].items():
        el, e, f, o = m["engine_latency_ms"], m["engine"], m["echo"], m["g2g_over_floor_ms"]
        print(f"{mode:<6}{str(el['p50']) + ' / ' + str(el['p95']):>20}"
              f"{str(e['g2g_ms']['p50']) + ' / ' + str(e['g2g_ms']['p95']):>18}"
              f"{str(f['g2g_ms']['p50']) + ' / ' + str(f['g2g_ms']['p95']):>21}"
              f"{str(o['p50']) + ' / ' + str(o['p95']):>21}"
              f"{str(e['av_offset_ms']['median']) + ' / ' + str(e['av_offset_ms']['p95_abs']):>20}"
              f"{str(f['av_offset_ms']['median']):>9}{str(m['av_offset_vs_echo_ms']):>9}"
              f"{str(e['av_offset_ms']['drift']):>9}{e['rx_fps']:>8}")
    for c in r.get("capacity", []):
        print(f"capacity: {c['sessions']} sessions: late {c['late_frac'] * 100:.2f} %, "
              f"sent {c['sent_fps_per_session']} fps/session, min rx {c['rx_fps_min']} fps, "
              f"render {c['render_ms_per_frame_p50']} ms/frame, engine p95 {c['engine_latency_ms']['p95']} ms "
              f"-> {'ok' if c['ok'] else 'FAIL'}")
    if "max_sessions" in r:
        print(f"max sessions at 25 fps with < 1 % late frames: {r['max_sessions']}")


def run(args) -> int:
    logging.getLogger("aioice").setLevel(logging.WARNING)
    results = asyncio.run(run_async(args))
    print_table(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0
