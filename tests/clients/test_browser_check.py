"""The browser page in a real headless Chromium against `syncvid serve` (skipped without chromium)."""

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.system_packages import needs

pytestmark = needs("chromium")

WAV = Path(__file__).resolve().parents[1] / "fixtures" / "arctic_a0007.wav"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_browser_page_receives_avatar_video(tmp_path):
    from clients.browser_check import check_page

    port = _free_port()
    env_cache = {"SYNCVID_CACHE_DIR": str(tmp_path / "cache")}
    import os
    server = subprocess.Popen([sys.executable, "-m", "realtime.cli", "serve", "--port", str(port)],
                              env={**os.environ, **env_cache}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except OSError:
                assert server.poll() is None, "server exited"
                assert time.monotonic() < deadline, "server did not come up"
                time.sleep(0.3)
        first, last = await check_page(f"http://127.0.0.1:{port}/", str(WAV), seconds=6.0, probes=2,
                                       debug_port=_free_port())
        assert last["state"] == "live" and "Media connected" in last["log"], last
        assert (last["width"], last["height"]) == (512, 512)  # the default avatar
        fps = (last["decoded"] - first["decoded"]) / 3.0
        assert 18 <= fps <= 30, fps  # a constant ~25 fps stream reaches the browser
    finally:
        server.kill()
        server.wait()
