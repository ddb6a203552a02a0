"""Which project files run while a live WebRTC session turns speech into frames (steady state).

    .venv/bin/python scripts/packet_path.py [REPO_DIR]

Runs the real engine with the models in the server process (inference "thread", so one profiler
sees the whole path; the default process mode adds inference/process.py, shm_channel.py,
messages.py and child.py), one aiortc peer on loopback speaking real speech; records every file
of the project (realtime/, models/) whose functions are called during 2 s of speech, after a
warm-up. Prints the files, their line counts and call counts. Used for the "files an audio packet
crosses" figure in docs/BENCHMARKS.md; REPO_DIR lets it measure another checkout."""
import asyncio
import os
import sys
import threading

import numpy as np

ROOT = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)
os.chdir(ROOT)
seen = {}
tracing = False

def prof(frame, event, arg):
    if tracing and event == "call":
        f = frame.f_code.co_filename
        rel = f[len(ROOT) + 1:]
        if f.startswith(ROOT) and rel.startswith(("realtime/", "models/")):
            seen[f] = seen.get(f, 0) + 1

async def main():
    global tracing
    sys.setprofile(prof); threading.setprofile(prof)
    import aioice.ice
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]
    from scipy.signal import resample_poly
    from clients.webrtc_peer import WebRTCPeer
    from realtime.server.app import RealtimeServer
    from realtime.server.config import RealtimeConfig
    from realtime.server.engine import build_engine
    from realtime.audio.io import load_audio
    config = RealtimeConfig(port=0, inference="thread", inference_threads=1)
    engine = build_engine(config)
    speech = load_audio(os.path.join(ROOT, "tests/fixtures/arctic_a0007.wav"))
    async with RealtimeServer(config, engine) as server:
        peer = WebRTCPeer(f"ws://127.0.0.1:{server.port}/ws", keep_video=False)
        await peer.connect(); await peer.wait_connected()
        await asyncio.sleep(1.0)
        peer.play(resample_poly(speech, 3, 1).astype(np.float32))
        await asyncio.sleep(1.0)
        tracing = True
        await asyncio.sleep(2.0)
        tracing = False
        sys.setprofile(None); threading.setprofile(None)
        await peer.close()
    engine.close()

asyncio.run(main())
files = sorted(seen)
total = 0
for f in files:
    n = sum(1 for _ in open(f))
    total += n
    print(f"{os.path.relpath(f, ROOT):55s} {n:5d} lines  {seen[f]:7d} calls")
print(f"{len(files)} files, {total} lines")
