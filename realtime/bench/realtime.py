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
import platform
import tempfile
from pathlib import Path

import numpy as np

from realtime.bench.capacity import capacity_search
from realtime.bench.g2g_reference import content_delays
from realtime.bench.loopback import (BURST_S, CALIBRATE_S, FIXTURE, GAP_S, Probe, free_port, http_json, probe_server,
                                     speech_bursts, start_process, start_server, stop_process)
from realtime.bench.mouth_open import face_box
from realtime.cli import CLIError
from realtime.face.avatar import default_avatar

log = logging.getLogger(__name__)


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
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), model)
    except OSError:
        pass
    load = ", load average %.2f" % os.getloadavg()[0] if hasattr(os, "getloadavg") else ""
    return f"{model}, {os.cpu_count()} cores{load}"


def prepare_renderer(args, tmp_dir: str) -> None:
    """Checks the renderer flags; with ``--random-weights`` writes the random-init files into
    ``tmp_dir`` and points ``--unet/--unet-config/--vae`` at them."""
    if not getattr(args, "random_weights", None):
        if (args.unet or args.vae) and args.renderer is None:
            args.renderer = "diffusion"
        return
    if args.unet or args.vae or args.unet_config:
        raise CLIError("--random-weights writes its own UNet and VAE; leave out --unet, --unet-config and "
                       "--vae (or --random-weights to use your files)")
    if args.renderer == "embedded":
        raise CLIError("--random-weights is for the diffusion renderer; leave out --renderer embedded")
    from realtime.bench.random_weights import write_random_diffusion  # torch; `syncvid --help` imports this

    try:
        files = write_random_diffusion(args.random_weights, tmp_dir)
    except ValueError as e:
        raise CLIError(f"--random-weights: {e}") from None
    args.renderer, args.unet, args.unet_config, args.vae = "diffusion", files["unet"], files["unet_config"], files["vae"]


async def run_async(args) -> dict:
    box = face_box(default_avatar())
    n_bursts = int(args.duration / (BURST_S + GAP_S)) + 2
    bursts = speech_bursts(args.audio, n_bursts)
    results: dict = {"machine": machine_description(), "duration_s": args.duration, "modes": {},
                     "server": {"renderer": args.renderer or "config", "unet": args.unet,
                                "random_weights": args.random_weights, "config": args.server_config}}
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
    logging.getLogger("aioice").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="syncvid-bench-") as tmp:
        prepare_renderer(args, tmp)
        results = asyncio.run(run_async(args))
    print_table(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0
