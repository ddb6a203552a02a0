"""The loopback benchmarks' shared parts (`syncvid bench realtime`, its capacity search, `syncvid
bench soak`): server subprocesses, speech bursts cut from a WAV, and the probe session that records
what a client receives and reads the mouth opening from it."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

from realtime.audio.io import SAMPLE_RATE, load_audio
from realtime.bench.mouth_open import opening_series

BURST_S, GAP_S = 0.8, 0.9  # speech burst then silence: one onset per 1.7 s
CALIBRATE_S = 2.5  # silence at the start: rest-frame statistics for the detector
FIXTURE = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "arctic_a0007.wav"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_json(port: int, path: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return json.loads(r.read())


def start_process(args: list[str], port: int, health: str | None, timeout: float = 120.0,
                  env: dict[str, str] | None = None, log: Path | None = None) -> subprocess.Popen:
    """A server subprocess, returned once it answers. Its log goes to ``log`` or a temporary file (a
    pipe nobody reads would fill up and stall a long run); the file's tail is in the error if it
    fails. ``env``: variables set for it on top of this process's."""
    env = dict(os.environ, **(env or {}), PYTHONUNBUFFERED="1")
    log_file = open(log, "w+b") if log is not None else tempfile.TemporaryFile()  # noqa: SIM115 (stop_process closes it)
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
    from scipy.signal import resample_poly  # scipy.signal is slow to import; `syncvid --help` imports this module

    x = load_audio(path)  # 16 kHz float32 mono
    frames = x[: len(x) // 320 * 320].reshape(-1, 320)
    rms = np.sqrt((frames.astype(np.float64) ** 2).mean(1))
    loud = rms > max(0.02, 0.15 * rms.max())
    starts = [i for i in range(1, len(loud)) if loud[i] and not loud[i - 1]] or [int(np.argmax(loud))]
    starts = [s for s in starts if (s * 320 + BURST_S * SAMPLE_RATE) <= len(x)] or [0]
    out = []
    for k in range(n):
        s = starts[k % len(starts)] * 320
        seg = x[s : s + int(BURST_S * SAMPLE_RATE)]
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
    from clients.webrtc_peer import WebRTCPeer  # aiortc is heavy; `syncvid --help` imports this module

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


def start_server(args, low_latency: bool = False) -> tuple[int, subprocess.Popen]:
    """`syncvid serve` on a free port with room for the capacity search; (port, process) once healthy."""
    port = free_port()
    timeout = getattr(args, "start_timeout", None) or (600.0 if getattr(args, "renderer", None) == "diffusion"
                                                       else 120.0)
    return port, start_process(server_command(args, port, low_latency), port, "/healthz", timeout)
