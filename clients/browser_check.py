"""Drive the browser page with a real headless Chromium: a WAV file is the microphone, the page's
buttons are pressed over the DevTools protocol, and what the page shows is read back.

    python -m clients.browser_check http://127.0.0.1:8080/ speech.wav [--seconds 6]

Needs Debian's `chromium` (`apt-get install chromium`). Prints one JSON line per probe.

As a library (the page's tests use it): ``async with Chromium(wav) as browser: page = await
browser.open(url)``; a ``Page`` evaluates JavaScript, waits for conditions, clicks, sets file
inputs, emulates a phone's screen, takes screenshots and collects every console error.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import websockets

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--mute-audio",
    "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required", "--window-size=1280,860",
]
DEVTOOLS_TIMEOUT_S = 15.0  # Chromium's start and any one DevTools command

VIDEO_STATS_JS = """(() => { const v = document.getElementById('video');
  const q = v.getVideoPlaybackQuality();
  return {width: v.videoWidth, height: v.videoHeight, decoded: q.totalVideoFrames,
          dropped: q.droppedVideoFrames, time: v.currentTime, state: document.body.dataset.state,
          state_text: document.getElementById('state-text').textContent,
          log: document.getElementById('log').textContent}; })()"""

# Records, for every new video frame: its time, the level of the returned voice (dBFS; the server
# delays it to match the video, so a frame and the voice it shows arrive together) and the mouth
# region in grey, a third of the video's resolution. The mouth region is the middle half of the
# server's face box, 55-85 % of its height: lips and chin, not the eyes.
MOUTH_PROBE_JS = """(() => {
  const v = document.getElementById('video');
  const b = v.dataset.faceBox.split(' ').map(Number), s = b[2] - b[0];
  const r = {x: b[0] + .25 * s, y: b[1] + .55 * s, w: .5 * s, h: .3 * s};
  const c = document.createElement('canvas'); c.width = Math.round(r.w / 3); c.height = Math.round(r.h / 3);
  const g = c.getContext('2d', {willReadFrequently: true});
  const ctx = new AudioContext(), an = ctx.createAnalyser(); an.fftSize = 2048;
  ctx.createMediaStreamSource(new MediaStream(v.srcObject.getAudioTracks())).connect(an);
  const buf = new Float32Array(an.fftSize), probe = {frames: [], size: [c.width, c.height], stop: false};
  const onFrame = (now) => {
    if (probe.stop) { ctx.close(); return; }
    g.drawImage(v, r.x, r.y, r.w, r.h, 0, 0, c.width, c.height);
    const px = g.getImageData(0, 0, c.width, c.height).data, grey = new Array(px.length / 4);
    for (let i = 0; i < grey.length; i++) grey[i] = Math.round((px[4 * i] + px[4 * i + 1] + px[4 * i + 2]) / 3);
    an.getFloatTimeDomainData(buf);
    let e = 0; for (const x of buf) e += x * x;
    probe.frames.push([now / 1000, 10 * Math.log10(e / buf.length + 1e-12), grey]);
    v.requestVideoFrameCallback(onFrame);
  };
  v.requestVideoFrameCallback(onFrame);
  window.__mouthProbe = probe;
  return probe.size; })()"""


class DevToolsError(RuntimeError):
    """A DevTools command failed, or the page threw while evaluating an expression."""


class Page:
    """One DevTools session on one page: commands by id, events kept for ``problems``."""

    def __init__(self, ws) -> None:
        self.ws = ws
        self._next_id = 0
        self._waiting: dict[int, asyncio.Future] = {}
        self.problems: list[dict] = []  # console errors, uncaught exceptions, error log entries
        self.requests: list[dict] = []  # Network.requestWillBeSent's request objects (method, url)
        self._reader = asyncio.create_task(self._read(), name="devtools-reader")

    async def _read(self) -> None:
        async for raw in self.ws:
            msg = json.loads(raw)
            if "id" in msg:
                fut = self._waiting.pop(msg["id"], None)
                if fut is not None and not fut.done():
                    fut.set_result(msg)
            else:
                self._on_event(msg["method"], msg.get("params", {}))

    def _on_event(self, method: str, params: dict) -> None:
        if method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"])
            self.problems.append({"kind": "console", "text": text})
        elif method == "Runtime.exceptionThrown":
            d = params["exceptionDetails"]
            self.problems.append({"kind": "exception", "text": d.get("exception", {}).get("description", d["text"])})
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            e = params["entry"]
            self.problems.append({"kind": "log", "source": e["source"], "text": e["text"], "url": e.get("url", "")})
        elif method == "Network.requestWillBeSent":
            self.requests.append(params["request"])

    async def call(self, method: str, **params) -> dict:
        self._next_id += 1
        fut = asyncio.get_running_loop().create_future()
        self._waiting[self._next_id] = fut
        await self.ws.send(json.dumps({"id": self._next_id, "method": method, "params": params}))
        msg = await asyncio.wait_for(fut, DEVTOOLS_TIMEOUT_S)
        if "error" in msg:
            raise DevToolsError(f"{method}: {msg['error'].get('message')}")
        return msg["result"]

    async def evaluate(self, expression: str):
        """The expression's value (promises awaited), or DevToolsError with the page's exception."""
        res = await self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in res:
            d = res["exceptionDetails"]
            raise DevToolsError(d.get("exception", {}).get("description", d["text"]))
        return res["result"].get("value")

    async def wait_for(self, expression: str, timeout: float, every: float = 0.1):
        """Polls ``expression`` until it is truthy; returns its value, or TimeoutError naming it."""
        deadline = time.monotonic() + timeout
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"not true within {timeout:g} s: {expression}")
            await asyncio.sleep(every)

    async def goto(self, url: str) -> None:
        await self.call("Page.navigate", url=url)
        await self.wait_for("document.readyState === 'complete' && !!document.getElementById('start')", 10)

    async def click(self, element_id: str) -> None:
        await self.evaluate(f"document.getElementById({json.dumps(element_id)}).click()")

    async def centre_of(self, element_id: str) -> tuple[float, float]:
        r = await self.evaluate(f"(() => {{ const r = document.getElementById({json.dumps(element_id)})"
                                ".getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()")
        return r[0], r[1]

    async def mouse(self, kind: str, x: float, y: float) -> None:
        """A real mouse event ("mousePressed", "mouseReleased"; pointer events follow)."""
        await self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    async def set_files(self, element_id: str, paths: list[str]) -> None:
        """Chooses ``paths`` in a file input (as the file dialog would; its change event fires)."""
        res = await self.call("Runtime.evaluate", expression=f"document.getElementById({json.dumps(element_id)})")
        await self.call("DOM.setFileInputFiles", files=[str(p) for p in paths], objectId=res["result"]["objectId"])

    async def set_viewport(self, width: int, height: int, mobile: bool = False, scale: float = 1.0) -> None:
        await self.call("Emulation.setDeviceMetricsOverride", width=width, height=height,
                        deviceScaleFactor=scale, mobile=mobile)

    async def screenshot(self, path: str | Path, full_page: bool = False) -> Path:
        params = {"format": "png", "captureBeyondViewport": full_page}
        if full_page:
            w, h = await self.evaluate("[document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
            params["clip"] = {"x": 0, "y": 0, "width": w, "height": h, "scale": 1}
        data = (await self.call("Page.captureScreenshot", **params))["data"]
        Path(path).write_bytes(base64.b64decode(data))
        return Path(path)

    async def close(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, websockets.ConnectionClosed):
            await self._reader


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _page_ws_url(port: int, proc: subprocess.Popen, timeout: float = DEVTOOLS_TIMEOUT_S) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json", timeout=2) as r:
                tabs = json.load(r)
            return next(t for t in tabs if t["type"] == "page")["webSocketDebuggerUrl"]
        except (OSError, StopIteration, ValueError):
            if proc.poll() is not None:
                raise RuntimeError(f"chromium exited with code {proc.returncode} before its DevTools port opened")
            if time.monotonic() > deadline:
                raise TimeoutError(f"chromium's DevTools port {port} did not open within {timeout:g} s") from None
            time.sleep(0.1)


class Chromium:
    """A headless Chromium whose microphone plays ``wav`` (in a loop), with one page to drive."""

    def __init__(self, wav: str | Path, debug_port: int | None = None) -> None:
        self.wav, self.debug_port = str(wav), debug_port or free_port()
        self.proc: subprocess.Popen | None = None
        self.page: Page | None = None
        self._ws = None
        self._profile = tempfile.TemporaryDirectory(ignore_cleanup_errors=True)  # its children may still write

    async def __aenter__(self) -> Chromium:
        chromium = shutil.which("chromium") or shutil.which("chromium-browser")
        if chromium is None:
            raise RuntimeError("chromium is not installed (apt-get install chromium)")
        self.proc = subprocess.Popen(
            [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={self._profile.name}",
             f"--use-file-for-fake-audio-capture={self.wav}", f"--remote-debugging-port={self.debug_port}",
             "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            url = await asyncio.to_thread(_page_ws_url, self.debug_port, self.proc)
            self._ws = await websockets.connect(url, max_size=None)
            self.page = Page(self._ws)
            for domain in ("Runtime", "Log", "Page", "DOM", "Network"):
                await self.page.call(f"{domain}.enable")
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def open(self, url: str) -> Page:
        assert self.page is not None, "use `async with Chromium(wav) as browser`"
        await self.page.goto(url)
        return self.page

    async def __aexit__(self, *exc) -> None:
        if self.page is not None:
            await self.page.close()
        if self._ws is not None:
            await self._ws.close()
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
        self._profile.cleanup()


async def check_page(url: str, wav: str, seconds: float = 6.0, probes: int = 2,
                     debug_port: int | None = None) -> list[dict]:
    """Opens ``url``, clicks Start, and returns ``probes`` video-stats snapshots over ``seconds``."""
    async with Chromium(wav, debug_port) as browser:
        page = await browser.open(url)
        await page.click("start")
        snapshots = []
        for _ in range(probes):
            await asyncio.sleep(seconds / probes)
            snapshots.append(await page.evaluate(VIDEO_STATS_JS))
        return snapshots


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
