"""`syncvid bench realtime`: the server on loopback, measured as a client sees it.

The renderer is the server config's (embedded by default). ``--renderer diffusion --unet CKPT --vae
DIR`` measures the diffusion path (a GPU's work: engine latency, sessions per GPU);
``--random-weights stage2`` does the same with a random-init UNet of that config, whose timing is
the real one but whose pictures are not (glass-to-glass and A/V are then void). The bursts'
content delays are the embedded renderer's in every case.

Runs the real server (`syncvid serve`) and a zero-delay echo server (the transport floor) as
subprocesses and probes both from aiortc peers in this process:

- engine latency p50/p95 (server's own instrumentation: audio packet arrival -> departure of the
  frame showing it), per look-ahead mode;
- glass-to-glass: speech burst onset sent -> first received frame whose mouth opens (FaceMesh
  landmarks on the received frames, run after the session), engine and echo, and the difference;
- A/V offset at the receiver: first loud received audio frame vs first mouth-open video frame of the
  same burst; drift = last quarter minus first quarter of the session;
- capacity: the most concurrent sessions at 25 fps with < 1 % late frames (realtime.bench.capacity).
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
    p.add_argument("--peer-nice", default="0,19",
                   help="capacity search once per nice value of the load-generating peers (comma list; "
                        "19: the server gets the cores first, as with remote peers)")
    p.add_argument("--skip-echo", action="store_true", help="no transport-floor probe (e.g. for the long drift run)")
    p.add_argument("--audio", default=str(FIXTURE), help="speech WAV the probe speaks (bursts cut from it)")
    p.add_argument("--json", default=None, help="also write the results as JSON to this file")
    p.add_argument("--server-config", default=None, help="YAML config for the server under test")
    g = p.add_argument_group("renderer of the server under test (default: the server config's, embedded)")
    g.add_argument("--renderer", choices=["embedded", "diffusion"], default=None,
                   help="passed to syncvid serve (low-latency sessions always use the embedded renderer)")
    g.add_argument("--unet", metavar="CKPT", help="diffusion: LatentSync UNet checkpoint, passed to syncvid serve")
    g.add_argument("--unet-config", metavar="YAML", help="diffusion: the UNet's config, passed to syncvid serve")
    g.add_argument("--vae", metavar="DIR", help="diffusion: local diffusers VAE folder, passed to syncvid serve")
    g.add_argument("--random-weights", metavar="CONFIG", default=None,
                   help="diffusion with a random-init UNet of this LatentSync config (stage2, stage2_512, "
                        "stage2_efficient, second_stage) and an sd-vae-ft-mse-shaped VAE, written to a "
                        "temporary folder: the architecture's real timing (engine latency, sessions per GPU) "
                        "without the checkpoints. The lips do not follow the speech with random weights, so "
                        "the glass-to-glass and A/V figures are void")
    g.add_argument("--start-timeout", type=float, default=None,
                   help="seconds to wait for a server to come up (default 120; 600 with the diffusion renderer)")


# ---- helpers --------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_json(port: int, path: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return json.loads(r.read())


def start_process(args: list[str], port: int, health: str | None, timeout: float = 120.0) -> subprocess.Popen:
    """A server subprocess, returned once it answers. Its log goes to a temporary file (a pipe
    nobody reads would fill up and stall a long run); the file's tail is in the error if it fails."""
    import tempfile

    env = dict(os.environ, PYTHONUNBUFFERED="1")
    log_file = tempfile.TemporaryFile()
    proc = subprocess.Popen([sys.executable, *args], env=env, stdout=subprocess.DEVNULL, stderr=log_file)
    proc.log_file = log_file  # type: ignore[attr-defined]

    def tail() -> str:
        log_file.seek(0)
        return log_file.read().decode(errors="replace")[-2000:]

    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"{args} exited: {tail()}")
        try:
            if health:
                http_json(port, health)
            else:
                socket.create_connection(("127.0.0.1", port), 0.5).close()
            return proc
        except OSError:
            time.sleep(0.3)
    proc.kill()
    proc.wait()
    raise RuntimeError(f"{args} did not start within {timeout:.0f} s: {tail()}")


def stop_process(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log_file = getattr(proc, "log_file", None)
    if log_file is not None:
        log_file.close()


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
    """Per-stream recorder and detector: the face region of every received frame, loudness per
    received audio frame; after the session, mouth opening per frame from FaceMesh landmarks
    (``realtime.bench.mouth_open``).

    A burst's mouth onset is the first frame after the speech onset whose opening exceeds the median
    opening over the 250 ms before the onset by ``JUMP`` (inner-lip gap over mouth width; the
    renderer opens it to ~0.2-0.5 on vowels, landmark noise at rest is ~0.01).
    """

    JUMP = 0.08

    def __init__(self, box) -> None:
        self.box = box
        self.video: list[tuple[float, np.ndarray]] = []
        self.audio: list[tuple[float, float]] = []

    def on_video(self, t: float, img: np.ndarray) -> None:
        self.video.append((t, np.array(img[self.box])))  # Y plane of the face region, copied

    def on_audio(self, t: float, x: np.ndarray) -> None:
        self.audio.append((t, float(np.sqrt(np.mean((x / 32768.0) ** 2)))))

    def analyse(self, onsets: list[float], calib_until: float, delays: list[float] | None = None) -> dict:
        """Per burst: raw glass-to-glass (onset sent -> first mouth-open frame received), the same
        minus the burst's content delay (``realtime.bench.g2g_reference``; 0 for the echo), and the
        A/V offset at the receiver: mouth-open frame minus content delay minus first loud audio."""
        from realtime.bench.mouth_open import opening_series

        vt = np.array([t for t, _ in self.video])
        vv = opening_series([m for _, m in self.video])
        self.video = []  # the crops are large; the series is all that is needed from here on
        ok = ~np.isnan(vv)
        at = np.array([t for t, _ in self.audio])
        av_ = np.array([v for _, v in self.audio])
        rest = vv[ok & (vt < calib_until)]
        per_burst = []  # one record per onset (seconds; None where there was no reading)
        for k, on in enumerate(onsets):
            d = delays[k] if delays is not None else 0.0
            before = vv[ok & (vt > on - 0.25) & (vt <= on)]
            base = float(np.median(before)) if len(before) else float(np.median(rest)) if len(rest) else 0.0
            win = ok & (vt > on) & (vt < on + BURST_S + GAP_S)
            hit = np.nonzero(win & (np.nan_to_num(vv) > base + self.JUMP))[0]
            awin = (at > on) & (at < on + BURST_S + GAP_S)
            ahit = np.nonzero(awin & (av_ > 0.01))[0]
            v = vt[hit[0]] if len(hit) else None  # first mouth-open frame received
            a = at[ahit[0]] if len(ahit) else None  # first loud audio received
            net = None if np.isnan(d) else d  # ambiguous content delay: no net figures
            per_burst.append({
                "burst": k, "content_delay": net,
                "g2g": None if v is None else v - on,
                "g2g_net": None if v is None or net is None else v - on - net,
                "av_raw": None if v is None or a is None else v - a,
                "av": None if v is None or a is None or net is None else v - net - a})  # > 0: video after audio

        def column(key: str) -> list[float]:
            return [b[key] for b in per_burst if b[key] is not None]

        return {"threshold": self.JUMP, "g2g": column("g2g"), "g2g_net": column("g2g_net"), "av": column("av"),
                "av_raw": column("av_raw"), "onsets": len(onsets), "per_burst": per_burst,
                "face_found": round(float(ok.mean()), 4) if len(ok) else 0.0,
                "rest_opening": {"median": round(float(np.median(rest)), 4) if len(rest) else None,
                                 "p95": round(float(np.percentile(rest, 95)), 4) if len(rest) else None},
                "speech_opening_p90": round(float(np.nanpercentile(vv[vt >= calib_until], 90)), 4)
                if np.any(ok & (vt >= calib_until)) else None}


async def probe_server(url: str, box, seconds: float, bursts: list[np.ndarray], options: dict,
                       delays: list[float] | None = None, analyse: bool = True) -> dict:
    """One probe session; ``delays[k]`` is burst k's content delay (None: 0, the echo)."""
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
    if not analyse:  # a warm-up session: nothing to measure
        return {}
    out = probe.analyse(onsets, calib_until, [delays[k % len(delays)] for k in range(len(onsets))]
                        if delays is not None else None)
    out["rx_fps"] = (len(steady) - 1) / max(1e-6, steady[-1] - steady[0]) if len(steady) > 1 else 0.0
    return out


def ms(x: float | None) -> float | None:
    return None if x is None or np.isnan(x) else round(float(x) * 1000, 1)


def pct(xs, q) -> float | None:
    return round(float(np.percentile(xs, q)) * 1000, 1) if len(xs) else None


def summarize(res: dict) -> dict:
    av = res["av"]
    q = max(1, len(av) // 4)
    return {
        "g2g_ms": {"p50": pct(res["g2g"], 50), "p95": pct(res["g2g"], 95), "n": len(res["g2g"]),
                   "onsets": res["onsets"]},
        "g2g_net_ms": {"p50": pct(res.get("g2g_net", []), 50), "p95": pct(res.get("g2g_net", []), 95),
                       "n": len(res.get("g2g_net", []))},
        "av_offset_ms": {"median": pct(av, 50), "p95_abs": pct(np.abs(av), 95) if av else None,
                         "drift": round((np.median(av[-q:]) - np.median(av[:q])) * 1000, 1) if len(av) >= 4 else None},
        "rx_fps": round(res["rx_fps"], 2),
        "detector": {k: res[k] for k in ("threshold", "face_found", "rest_opening", "speech_opening_p90") if k in res},
        "per_burst_ms": [{k: (v if k == "burst" else ms(v)) for k, v in b.items()} for b in res.get("per_burst", [])],
    }


def machine_description() -> str:
    """CPU model, cores and the load average when the run started (other jobs skew every figure)."""
    import platform

    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), model)
    except OSError:
        pass
    load = ", load average %.2f" % os.getloadavg()[0] if hasattr(os, "getloadavg") else ""
    return f"{model}, {os.cpu_count()} cores{load}"


def server_command(args, port: int, low_latency: bool = False) -> list[str]:
    """The interpreter arguments of `syncvid serve` for the server under test."""
    cmd = ["-c", "import sys; from realtime.cli import main; sys.exit(main())", "serve", "--port", str(port),
           "--max-sessions", str(args.max_sessions + 1)]
    if low_latency:
        cmd.append("--low-latency")
    if getattr(args, "server_config", None):
        cmd += ["--config", args.server_config]
    for flag in ("renderer", "unet", "unet_config", "vae"):
        value = getattr(args, flag, None)
        if value:
            cmd += ["--" + flag.replace("_", "-"), str(value)]
    return cmd


def prepare_renderer(args, tmp_dir: str) -> None:
    """Checks the renderer flags; with ``--random-weights`` writes the random-init files into
    ``tmp_dir`` and points ``--unet/--unet-config/--vae`` at them."""
    if not getattr(args, "random_weights", None):
        if (args.unet or args.vae) and args.renderer is None:
            args.renderer = "diffusion"
        return
    from realtime.cli import CLIError

    if args.unet or args.vae or args.unet_config:
        raise CLIError("--random-weights writes its own UNet and VAE; leave out --unet, --unet-config and "
                       "--vae (or --random-weights to use your files)")
    if args.renderer == "embedded":
        raise CLIError("--random-weights is for the diffusion renderer; leave out --renderer embedded")
    from realtime.bench.random_weights import write_random_diffusion

    try:
        files = write_random_diffusion(args.random_weights, tmp_dir)
    except ValueError as e:
        raise CLIError(f"--random-weights: {e}") from None
    args.renderer, args.unet, args.unet_config, args.vae = "diffusion", files["unet"], files["unet_config"], files["vae"]


def start_server(args, low_latency: bool = False) -> tuple[int, subprocess.Popen]:
    """`syncvid serve` on a free port with room for the capacity search; (port, process) once healthy."""
    port = free_port()
    timeout = getattr(args, "start_timeout", None) or (600.0 if getattr(args, "renderer", None) == "diffusion"
                                                       else 120.0)
    return port, start_process(server_command(args, port, low_latency), port, "/healthz", timeout)


async def run_async(args) -> dict:
    from realtime.bench.mouth_open import face_box
    from realtime.face.avatar import default_avatar

    box = face_box(default_avatar())
    n_bursts = int(args.duration / (BURST_S + GAP_S)) + 2
    bursts = speech_bursts(args.audio, n_bursts)
    results: dict = {"machine": machine_description(), "duration_s": args.duration, "modes": {},
                     "server": {"renderer": args.renderer or "config", "unet": args.unet,
                                "random_weights": args.random_weights, "config": args.server_config}}
    from realtime.bench.g2g_reference import content_delays

    modes = [m for m in args.modes.split(",") if m]
    log.info("content delay of each burst (offline render, same detector)...")
    delays = {m: content_delays(bursts, m, box, Probe.JUMP) for m in modes}
    echo_port = free_port()
    # not started at all with --skip-echo: an idle WebRTC server is CPU the capacity probe needs
    echo = (None if args.skip_echo else
            start_process(["-m", "realtime.bench.echo_server", "--port", str(echo_port)], echo_port, None))
    try:
        for mode in modes:
            port, server = start_server(args, low_latency=mode == "low")
            try:
                # a throwaway session warms the models up (first inference is slow)
                await probe_server(f"ws://127.0.0.1:{port}/ws", box, CALIBRATE_S + 3, bursts, {}, analyse=False)
                http_json(port, "/stats?reset=1")
                eng = await probe_server(f"ws://127.0.0.1:{port}/ws", box, args.duration, bursts, {},
                                         delays=delays[mode])
                stats = http_json(port, "/stats")
                if args.skip_echo:
                    floor = {"g2g": [], "g2g_net": [], "av": [], "onsets": 0, "rx_fps": 0.0}
                else:
                    # content delay 0 (it reacts to loudness); NaN where the engine's burst was left
                    # out, so both net figures cover the same bursts
                    floor = await probe_server(f"ws://127.0.0.1:{echo_port}/ws", box, args.duration, bursts, {},
                                               delays=[0.0 * d for d in delays[mode]])
                e, f = summarize(eng), summarize(floor)
                over = {q: (round(e["g2g_ms"][q] - f["g2g_ms"][q], 1) if e["g2g_ms"][q] is not None
                            and f["g2g_ms"][q] is not None else None) for q in ("p50", "p95")}
                over_net = {q: (round(e["g2g_net_ms"][q] - f["g2g_net_ms"][q], 1) if e["g2g_net_ms"][q] is not None
                                and f["g2g_net_ms"][q] is not None else None) for q in ("p50", "p95")}
                em, fm = e["av_offset_ms"]["median"], f["av_offset_ms"]["median"]
                results["modes"][mode] = {"engine_latency_ms": stats["engine_latency_ms"], "engine": e, "echo": f,
                                          # aiortc's receiver has no lip sync (its audio jitter buffer
                                          # holds ~80 ms more than video): the echo's offset is that
                                          "av_offset_vs_echo_ms": (round(em - fm, 1) if em is not None
                                                                   and fm is not None else None),
                                          "g2g_over_floor_ms": over, "g2g_net_over_floor_ms": over_net,
                                          "content_delay_ms": [round(x * 1000, 1) for x in delays[mode]],
                                          "server_frames": stats["frames"],
                                          "render_ms_per_frame": stats["render_ms_per_frame"],
                                          "encode_ms_per_push": stats["encode_ms_per_push"]}
            finally:
                stop_process(server)
    finally:
        if echo is not None:
            stop_process(echo)
    if not args.skip_capacity:
        from realtime.bench.capacity import capacity_search

        await capacity_search(args, box, bursts, results)
    return results


def print_table(r: dict) -> None:
    def pair(d: dict) -> str:
        return f"{d['p50']} / {d['p95']}"

    print(f"syncvid bench realtime — {r['machine']}, {r['duration_s']:.0f} s per probe")
    server = r.get("server", {})
    if server.get("renderer") == "diffusion":
        what = f"random-init {server['random_weights']}" if server.get("random_weights") else server.get("unet")
        print(f"renderer: diffusion ({what}; low-latency sessions use the embedded renderer)")
        if server.get("random_weights"):
            print("random weights: the lips do not follow the speech; glass-to-glass and A/V figures are void")
    print(f"{'mode':<6}{'engine p50/p95':>18}{'g2g raw':>18}{'g2g - content':>18}{'echo floor':>18}"
          f"{'over floor raw':>18}{'over floor net':>18}{'A/V med/p95|.|':>18}{'echo A/V':>9}{'A/V-echo':>9}"
          f"{'drift':>7}{'rx fps':>7}")
    for mode, m in r["modes"].items():
        e, f = m["engine"], m["echo"]
        print(f"{mode:<6}{pair(m['engine_latency_ms']):>18}{pair(e['g2g_ms']):>18}{pair(e['g2g_net_ms']):>18}"
              f"{pair(f['g2g_ms']):>18}{pair(m['g2g_over_floor_ms']):>18}{pair(m['g2g_net_over_floor_ms']):>18}"
              f"{str(e['av_offset_ms']['median']) + ' / ' + str(e['av_offset_ms']['p95_abs']):>18}"
              f"{str(f['av_offset_ms']['median']):>9}{str(m['av_offset_vs_echo_ms']):>9}"
              f"{str(e['av_offset_ms']['drift']):>7}{e['rx_fps']:>7}")
    print("(ms; g2g - content: minus each burst's content delay, see realtime.bench.g2g_reference; "
          "A/V: video after audio > 0, content delay removed)")
    for mode, m in r["modes"].items():
        f, rt = m["server_frames"], m["render_ms_per_frame"]
        print(f"{mode}: server sent {f['sent']} frames, late {f['late']} ({100 * f['late'] / max(1, f['sent']):.2f} %), "
              f"repeated {f['repeated']}, rendered {f['rendered']}; render {rt['p50']} / {rt['p95']} ms per frame "
              "p50 / p95")
    for nice, caps in r.get("capacity", {}).items():
        for c in caps:
            print(f"capacity (peers at nice {nice}): {c['sessions']} sessions: late {c['late_frac'] * 100:.2f} %, "
                  f"thinned {c['thinned_frac'] * 100:.2f} %, sent {c['sent_fps_per_session']} fps/session, "
                  f"min rx {c['rx_fps_min']} fps, render {c['render_ms_per_frame_p50']} ms/frame, "
                  f"engine p95 {c['engine_latency_ms']['p95']} ms -> {'ok' if c['ok'] else 'FAIL'}")
        print(f"max sessions at 25 fps with < 1 % late and < 1 % thinned frames (peers at nice {nice}): "
              f"{r['max_sessions'][nice]}")


def run(args) -> int:
    import tempfile

    logging.getLogger("aioice").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="syncvid-bench-") as tmp:
        prepare_renderer(args, tmp)
        results = asyncio.run(run_async(args))
    print_table(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0
