"""Drive the browser page with a real headless Chromium: a WAV file is the microphone, the page's
Start button is clicked over the DevTools protocol, and the received video is read back.

    python -m clients.browser_check http://127.0.0.1:8080/ speech.wav [--seconds 6]

Needs Debian's `chromium` (`apt-get install chromium`). Prints one JSON line per probe.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request

import websockets

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
    "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
]

VIDEO_STATS_JS = """(() => { const v = document.getElementById('video');
  const q = v.getVideoPlaybackQuality();
  return {width: v.videoWidth, height: v.videoHeight, decoded: q.totalVideoFrames,
          dropped: q.droppedVideoFrames, time: v.currentTime,
          log: document.getElementById('log').textContent}; })()"""


class DevTools:
    def __init__(self, ws):
        self.ws = ws
        self.next_id = 0

    async def evaluate(self, expression: str):
        self.next_id += 1
        await self.ws.send(json.dumps({"id": self.next_id, "method": "Runtime.evaluate", "params": {
            "expression": expression, "awaitPromise": True, "returnByValue": True}}))
        while True:
            msg = json.loads(await self.ws.recv())
            if msg.get("id") == self.next_id:
                return msg["result"]["result"].get("value")


def _page_ws_url(port: int, timeout: float = 15.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            tabs = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json"))
            return next(t for t in tabs if t["type"] == "page")["webSocketDebuggerUrl"]
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


async def check_page(url: str, wav: str, seconds: float = 6.0, probes: int = 2, debug_port: int = 9333) -> list[dict]:
    """Opens ``url``, clicks Start, and returns ``probes`` video-stats snapshots over ``seconds``."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise RuntimeError("chromium is not installed (apt-get install chromium)")
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:  # chromium children may still write
        proc = subprocess.Popen(
            [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--use-file-for-fake-audio-capture={wav}",
             f"--remote-debugging-port={debug_port}", url],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            async with websockets.connect(_page_ws_url(debug_port), max_size=None) as ws:
                tools = DevTools(ws)
                for _ in range(50):  # wait for the page script
                    if await tools.evaluate("!!document.getElementById('start') && document.readyState === 'complete'"):
                        break
                    await asyncio.sleep(0.1)
                await tools.evaluate("document.getElementById('start').click(); true")
                snapshots = []
                for _ in range(probes):
                    await asyncio.sleep(seconds / probes)
                    snapshots.append(await tools.evaluate(VIDEO_STATS_JS))
                return snapshots
        finally:
            proc.kill()
            proc.wait()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("url")
    p.add_argument("wav")
    p.add_argument("--seconds", type=float, default=6.0)
    args = p.parse_args()
    for snap in asyncio.run(check_page(args.url, args.wav, args.seconds, probes=3)):
        print(json.dumps(snap))


if __name__ == "__main__":
    main()
