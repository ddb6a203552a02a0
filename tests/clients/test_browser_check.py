"""The browser page in a real headless Chromium against `syncvid serve` (skipped without chromium)."""

from pathlib import Path

from realtime.bench.loopback import free_port, start_process, stop_process
from tests.system_packages import needs

pytestmark = needs("chromium")

WAV = Path(__file__).resolve().parents[1] / "fixtures" / "arctic_a0007.wav"


async def test_browser_page_receives_avatar_video(tmp_path):
    from clients.browser_check import check_page

    port = free_port()
    server = start_process(["-m", "realtime.cli", "serve", "--port", str(port)], port, "/healthz", timeout=90,
                           env={"SYNCVID_CACHE_DIR": str(tmp_path / "cache")})
    try:
        first, last = await check_page(f"http://127.0.0.1:{port}/", str(WAV), seconds=6.0, probes=2,
                                       debug_port=free_port())
        assert last["state"] == "live" and "Media connected" in last["log"], last
        assert (last["width"], last["height"]) == (512, 512)  # the default avatar
        fps = (last["decoded"] - first["decoded"]) / 3.0
        assert 18 <= fps <= 30, fps  # a constant ~25 fps stream reaches the browser
    finally:
        stop_process(server)
