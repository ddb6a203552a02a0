"""Server metrics in the Prometheus text exposition format (version 0.0.4), no dependency.

One ``ServerMetrics`` object per server instance (never a module global) so tests can run
several servers in one process and assert exact counts.
"""

from __future__ import annotations

import bisect
import math
import threading

import numpy as np

# Latency buckets (seconds): frame time at 25 fps is 40 ms, budgets are 90 / 170 ms, the
# transport floor on loopback is ~80 ms (glass-to-glass reports include it).
LATENCY_BUCKETS = (0.02, 0.04, 0.06, 0.08, 0.1, 0.12, 0.14, 0.17, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 2.0)
RENDER_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32)
GC_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5)
SLACK_BUCKETS = (0.005, 0.01, 0.015, 0.02, 0.03, 0.04, 0.06, 0.08, 0.12, 0.2)


def _fmt(v: float) -> str:
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v)) if not float(v).is_integer() else str(int(v)) if abs(v) < 1e15 else repr(float(v))


class Counter:
    def __init__(self, name: str, help_: str) -> None:
        self.name, self.help, self.value = name, help_, 0.0
        self._lock = threading.Lock()

    def inc(self, n: float = 1.0) -> None:
        with self._lock:
            self.value += n

    def render(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter", f"{self.name} {_fmt(self.value)}"]


class Gauge:
    def __init__(self, name: str, help_: str) -> None:
        self.name, self.help, self.value = name, help_, 0.0

    def set(self, v: float) -> None:
        self.value = float(v)

    def inc(self, n: float = 1.0) -> None:
        self.value += n

    def dec(self, n: float = 1.0) -> None:
        self.value -= n

    def render(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} gauge", f"{self.name} {_fmt(self.value)}"]


class Histogram:
    """Cumulative-bucket histogram; also keeps a bounded window of raw samples for percentiles."""

    def __init__(self, name: str, help_: str, buckets: tuple[float, ...], window: int = 20000) -> None:
        self.name, self.help = name, help_
        self.buckets = tuple(sorted(buckets))
        self.counts = [0] * (len(self.buckets) + 1)
        self.sum = 0.0
        self.count = 0
        self._window = window
        self.samples: list[float] = []  # ring of the most recent samples (for bench percentiles)
        self._pos = 0
        self._lock = threading.Lock()  # the worker thread observes render times

    def observe(self, v: float) -> None:
        with self._lock:
            self.counts[bisect.bisect_left(self.buckets, v)] += 1
            self.sum += v
            self.count += 1
            if len(self.samples) < self._window:
                self.samples.append(v)
            else:
                self.samples[self._pos] = v
                self._pos = (self._pos + 1) % self._window

    def percentile(self, q: float) -> float:
        return self.percentiles(q)[0]

    def percentiles(self, *qs: float) -> list[float]:
        """Nearest-rank percentiles of the sample window, one sort for all of them (NaN when empty)."""
        with self._lock:
            data = np.array(self.samples, dtype=np.float64)
        if not len(data):
            return [float("nan")] * len(qs)
        data.sort()
        n = len(data) - 1
        return [float(data[min(n, max(0, int(round(q / 100.0 * n))))]) for q in qs]

    def reset_samples(self) -> None:
        with self._lock:
            self.samples, self._pos = [], 0

    def render(self) -> list[str]:
        with self._lock:
            counts, total, n = list(self.counts), self.sum, self.count
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        acc = 0
        for le, c in zip(self.buckets, counts):
            acc += c
            out.append(f'{self.name}_bucket{{le="{_fmt(le)}"}} {acc}')
        out.append(f'{self.name}_bucket{{le="+Inf"}} {n}')
        out += [f"{self.name}_sum {_fmt(total)}", f"{self.name}_count {n}"]
        return out


class ServerMetrics:
    def __init__(self) -> None:
        p = "syncvid_"
        self.sessions = Gauge(p + "sessions", "Sessions currently open")
        self.sessions_total = Counter(p + "sessions_total", "Sessions started")
        self.sessions_rejected = Counter(p + "sessions_rejected_total", "Sessions refused at the session cap")
        self.frames_sent = Counter(p + "frames_sent_total", "Video frames sent (all sessions)")
        self.frames_rendered = Counter(p + "frames_rendered_total", "Speech frames rendered by the renderer")
        self.frames_rest = Counter(p + "frames_rest_total", "Rest (silence) frames sent without renderer work")
        self.frames_late = Counter(p + "frames_late_total", "Speech frames not rendered by their deadline")
        self.frames_repeated = Counter(p + "frames_repeated_total", "Slots filled by repeating the last frame")
        self.frames_dropped = Counter(p + "frames_dropped_total", "Rendered or pending frames discarded (interrupt, late)")
        self.interrupts = Counter(p + "interrupts_total", "Interrupt commands handled")
        self.output_fps = Gauge(p + "output_fps", "Video frames per second sent, summed over sessions (last second)")
        self.av_offset = Gauge(p + "av_offset_seconds", "Scheduled audio pts minus video pts of the same content (last session sample)")
        self.audio_queue = Gauge(p + "audio_queue_seconds", "Input audio waiting for the encoder, summed over sessions")
        self.frame_queue = Gauge(p + "frame_queue_depth", "Rendered frames waiting for their slot, summed over sessions")
        self.worker_queue = Gauge(p + "worker_queue_depth", "Jobs waiting for the inference worker")
        self.degrade_level = Gauge(p + "degrade_level_max", "Highest degradation level among sessions (0 = full quality)")
        self.engine_latency = Histogram(
            p + "engine_latency_seconds",
            "Audio packet arrival at the server -> departure of the first video frame showing it",
            LATENCY_BUCKETS,
        )
        self.glass_latency = Histogram(
            p + "glass_to_glass_latency_seconds",
            "Client-reported speech onset -> first received frame with the mouth open",
            LATENCY_BUCKETS,
        )
        self.render_time = Histogram(p + "render_seconds_per_frame", "Renderer wall time per frame", RENDER_BUCKETS)
        self.encode_time = Histogram(p + "audio_encode_seconds", "Streaming audio encoder time per push", RENDER_BUCKETS)
        self.packet_lateness = Histogram(p + "packet_lateness_seconds", "Audio packet arrival after the time the session's timeline anchor expects it", SLACK_BUCKETS)
        self.push_wait = Histogram(p + "push_wait_seconds", "Newest packet's arrival -> its encoder push submitted", RENDER_BUCKETS)
        self.push_round_trip = Histogram(p + "push_round_trip_seconds", "Encoder push (with its frames) submitted -> answered on the event loop", SLACK_BUCKETS)
        self.frame_slack = Histogram(p + "frame_slack_seconds", "Speech frame ready -> its slot departs (how early it was ready)", SLACK_BUCKETS)
        self.gc_pause = Histogram(p + "gc_pause_seconds", "Garbage collections in the server process: time each one stopped the process", GC_BUCKETS)
        self.gc_sweeps = Counter(p + "gc_sweeps_total", "Garbage collections run shortly after sessions ended (their cycles given back)")

    def all(self) -> list:
        return [v for v in vars(self).values() if isinstance(v, (Counter, Gauge, Histogram))]

    def render(self) -> str:
        lines: list[str] = []
        for m in self.all():
            lines += m.render()
        return "\n".join(lines) + "\n"
