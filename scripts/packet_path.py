"""Which project files run while a live WebRTC session turns speech into frames (steady state).

    .venv/bin/python scripts/packet_path.py [--inference process|thread] [REPO_DIR]

Runs the real engine (models in the inference process by default, as `syncvid serve` does; with
``--inference thread`` in the server process), one aiortc peer on loopback speaking real speech,
and records every file of the project (realtime/, models/) whose functions are called during 2 s
of speech after a warm-up, in the server process and in the inference process. Prints the files,
their line counts and call counts (the strict count), then checks the hand-off path that
docs/architecture.md draws: every file it names must be among the traced ones. REPO_DIR lets it
measure another checkout."""
import argparse
import asyncio
import json
import os
import re
import sys
import tempfile
import threading
import time

ARGS = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
ARGS.add_argument("repo", nargs="?", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
ARGS.add_argument("--inference", choices=["process", "thread"], default="process")
ROOT_ENV = "PACKET_PATH_ROOT"  # set by main(); the inference process (spawned) reads it at import
ROOT = os.path.abspath(os.environ.get(ROOT_ENV, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")))
OUT_ENV = "PACKET_PATH_CHILD_OUT"
PROCESS_ONLY = [f"realtime/inference/{m}.py" for m in ("process", "messages", "shm_channel", "child")]
seen: dict[str, dict[int, int]] = {}  # file -> {second: calls}


def prof(frame, event, arg):
    if event == "call":
        f = frame.f_code.co_filename
        if f.startswith(ROOT) and f[len(ROOT) + 1:].startswith(("realtime/", "models/")):
            per = seen.setdefault(f, {})
            sec = int(time.time())
            per[sec] = per.get(sec, 0) + 1


def traced_child_main(*args):
    """The inference process's entry point, profiled; its calls per file and second written at exit."""
    sys.path.insert(0, ROOT)
    from realtime.inference.process import child_main
    sys.setprofile(prof)
    threading.setprofile(prof)
    try:
        child_main(*args)
    finally:
        sys.setprofile(None)
        with open(os.environ[OUT_ENV], "w") as f:
            json.dump(seen, f)


async def run(inference: str) -> tuple[float, float]:
    import aioice.ice
    import numpy as np
    from scipy.signal import resample_poly

    from clients.webrtc_peer import WebRTCPeer
    from realtime.audio.io import load_audio
    from realtime.inference import process
    from realtime.server.app import RealtimeServer
    from realtime.server.config import RealtimeConfig
    from realtime.server.engine import build_engine
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]
    process.child_main = traced_child_main  # looked up when the child starts
    sys.setprofile(prof)
    threading.setprofile(prof)
    config = RealtimeConfig(port=0, inference=inference, inference_threads=1)
    engine = build_engine(config)
    speech = load_audio(os.path.join(ROOT, "tests/fixtures/arctic_a0007.wav"))
    async with RealtimeServer(config, engine) as server:
        peer = WebRTCPeer(f"ws://127.0.0.1:{server.port}/ws", keep_video=False)
        await peer.connect()
        await peer.wait_connected()
        await asyncio.sleep(1.0)
        peer.play(resample_poly(speech, 3, 1).astype(np.float32))
        await asyncio.sleep(1.0)
        window = (time.time(), time.time() + 2.0)
        await asyncio.sleep(2.2)
        sys.setprofile(None)
        threading.setprofile(None)
        await peer.close()
    engine.close()
    return window


def in_window(per: dict, window: tuple[float, float]) -> int:
    return sum(n for sec, n in per.items() if window[0] - 1 < int(sec) < window[1])


def documented_path(root: str = ROOT) -> list[str]:
    """The files docs/architecture.md's path picture names, as project paths."""
    with open(os.path.join(root, "docs/architecture.md")) as f:
        text = f.read()
    picture = text[text.index("## The path"):]
    picture = picture[picture.index("```") + 3:]
    picture = picture[:picture.index("```")]
    names = []
    for name in re.findall(r"\b([a-z_]+/[a-z_/]*[a-z_]+\.py)\b", picture):
        path = name if name.startswith(("realtime/", "models/")) else "realtime/" + name
        if path not in names:
            names.append(path)
    return names


def main() -> None:
    global ROOT
    args = ARGS.parse_args()
    ROOT = os.environ[ROOT_ENV] = os.path.abspath(args.repo)
    sys.path.insert(0, ROOT)
    os.chdir(ROOT)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ[OUT_ENV] = os.path.join(tmp, "child.json")
        window = asyncio.run(run(args.inference))
        child = {}
        if args.inference == "process":
            with open(os.environ[OUT_ENV]) as f:
                child = json.load(f)
    calls: dict[str, list[int]] = {}
    for where, table in (("server", seen), ("child", child)):
        for f, per in table.items():
            n = in_window(per, window)
            if n:
                calls.setdefault(os.path.relpath(f, ROOT), [0, 0])[where == "child"] += n
    total = 0
    print(f"inference: {args.inference}; calls during 2 s of speech (server process / inference process)")
    for f in sorted(calls):
        with open(os.path.join(ROOT, f)) as src:
            lines = sum(1 for _ in src)
        total += lines
        print(f"{f:50s} {lines:5d} lines  {calls[f][0]:7d} / {calls[f][1]:7d} calls")
    print(f"strict count: {len(calls)} files, {total} lines")
    path = documented_path()
    if args.inference == "thread":  # the picture is of the default (process) mode; these drop out
        path = [f for f in path if f not in PROCESS_ONLY]
    missing = [f for f in path if f not in calls]
    print(f"hand-off path in docs/architecture.md ({args.inference} mode): {len(path)} files: {', '.join(path)}")
    print("all of them traced" if not missing else f"NOT traced (the picture is out of date): {', '.join(missing)}")


if __name__ == "__main__":
    main()
