"""What the leak benchmarks (`syncvid bench soak`, `syncvid bench hold`) sample of a server under
test, and how they judge growth.

A sample is read from /proc (resident memory of the server and of the rest of its process tree,
the server's open file descriptors and OS threads) and from the server's ``/stats`` (its asyncio
tasks, Python threads and open WebSockets: what a session leaves behind shows there first).
The targets (the reliability issue's): resident memory of server + inference up by at most
``RSS_GROWTH_LIMIT_MB``, no count up at all.
"""

from __future__ import annotations

import os

import numpy as np

from realtime.bench.loopback import http_json

RSS_GROWTH_LIMIT_MB = 50.0  # what a long run may add to server + inference (a leak adds without bound)
MEMORY = ("server_mb", "inference_mb", "rss_mb")  # resident MB: server, inference process, both
COUNTS = ("fds", "threads", "tasks", "py_threads", "websockets")
FIGURES = MEMORY + COUNTS


def process_tree(pid: int) -> list[int]:
    """``pid`` and every process below it (the inference process, multiprocessing's helpers)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):  # gone meanwhile
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def status_field(pid: int, name: str) -> int:
    """An integer field of /proc/PID/status (VmRSS in kB, Threads); 0 if the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(name + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def sample(server_pid: int) -> dict:
    """Resident memory (MB) of the server and of the rest of its process tree; its fds and threads."""
    others = [p for p in process_tree(server_pid) if p != server_pid]
    try:
        fds = len(os.listdir(f"/proc/{server_pid}/fd"))
    except OSError:
        fds = 0
    server_mb = round(status_field(server_pid, "VmRSS") / 1024, 1)
    inference_mb = round(sum(status_field(p, "VmRSS") for p in others) / 1024, 1)
    return {"server_mb": server_mb, "inference_mb": inference_mb, "rss_mb": round(server_mb + inference_mb, 1),
            "fds": fds, "threads": status_field(server_pid, "Threads")}


def server_sample(port: int, server_pid: int, stats: dict | None = None) -> dict:
    """``sample`` plus what only the server itself can count (``/stats``, or the ``stats`` given)."""
    stats = stats if stats is not None else http_json(port, "/stats")
    return {**sample(server_pid), "tasks": stats["asyncio_tasks"], "py_threads": stats["threads"],
            "websockets": stats["websockets_open"]}


def verdict(samples: list[dict], sessions_per_wave: int) -> dict:
    """Growth per 100 sessions over the second half of the run: the least-squares slope of each
    sampled figure against sessions done, from the middle sample on (the first half is warm-up:
    first allocations, caches and pools filling)."""
    if len(samples) < 4:
        raise ValueError("need at least 3 waves to tell growth from warm-up (raise --sessions)")
    half = samples[(len(samples) - 1) // 2:]
    x = np.arange(len(half), dtype=np.float64) * sessions_per_wave
    return {k: round(float(np.polyfit(x, [s[k] for s in half], 1)[0]) * 100.0, 2)
            for k in FIGURES if k in samples[0]}


def peak_growth(samples: list[dict]) -> dict:
    """How far each figure's highest value in the second half of the run is above its highest in
    the first half. Where a process's memory swings between levels (the allocator handing large
    blocks back and taking them again), the slope of the second half depends on where the swings
    fall; a leak also raises the peak, a swing does not."""
    mid = (len(samples) - 1) // 2
    return {k: round(max(s[k] for s in samples[mid:]) - max(s[k] for s in samples[:mid]), 1)
            for k in FIGURES if k in samples[0]}


def leak_verdict(growth: dict) -> dict:
    """The targets on a growth dict (``peak_growth``, or end minus start of a hold): resident memory
    of server + inference up by at most RSS_GROWTH_LIMIT_MB, every count not up at all."""
    checks = {"rss_mb": growth["rss_mb"] <= RSS_GROWTH_LIMIT_MB}
    checks.update({k: growth[k] <= 0 for k in COUNTS if k in growth})
    return {"ok": all(checks.values()), "checks": checks, "rss_limit_mb": RSS_GROWTH_LIMIT_MB}
