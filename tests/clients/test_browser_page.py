"""The browser page (clients/web, docs/page.md) in a real headless Chromium against `syncvid serve`,
a WAV file as its microphone. Skipped without Debian's chromium.

One server for the module, started with a token (so every request the page makes must carry it)
and an avatar library holding one photo. Screenshots and measured figures go to
$SYNCVID_TEST_ARTEFACTS, or a temporary folder the tests print.
"""

import asyncio
import json
import os
import re
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from realtime.bench.loopback import free_port, start_process, stop_process
from tests.system_packages import needs

pytestmark = needs("chromium")

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
TOKEN = "page-test-token-0123456789"
SILENCE_S = 2.0  # appended to the 4 s sentence: with its own quiet ends, 2.9 s of silence every 6 s
PROBE_S = 7.0  # the mouth is watched this long: at least one whole speech and one whole silence
PHONE = (375, 740)
STATE = "document.body.dataset.state"


# ---- fixtures -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def artefacts(tmp_path_factory) -> Path:
    root = os.environ.get("SYNCVID_TEST_ARTEFACTS")
    out = Path(root) / "browser_page" if root else tmp_path_factory.mktemp("browser_page")
    out.mkdir(parents=True, exist_ok=True)
    print(f"\nbrowser page artefacts (screenshots, figures.json, server.log): {out}")
    return out


@pytest.fixture(scope="module")
def speech_wav(tmp_path_factory) -> Path:
    """arctic_a0007 (4.0 s, 0.4 s and 0.5 s quiet at its ends) then 2 s of digital silence; Chromium
    plays the file in a loop as the microphone."""
    with wave.open(str(FIXTURES / "arctic_a0007.wav")) as w:
        rate, speech = w.getframerate(), w.readframes(w.getnframes())
    path = tmp_path_factory.mktemp("wav") / "speech_then_silence.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(speech + bytes(2 * int(SILENCE_S * rate)))
    return path


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, Path]:
    """Face photos made from scikit-image's astronaut (the default avatar's source): mirrored for
    the library, cropped for the upload; a photo without a face; a text file; an oversized file."""
    import skimage.data
    from PIL import Image

    d = tmp_path_factory.mktemp("photos")
    astronaut = Image.fromarray(skimage.data.astronaut())
    astronaut.transpose(Image.FLIP_LEFT_RIGHT).save(d / "mirror.jpg", quality=90)
    astronaut.crop((40, 0, 440, 400)).save(d / "cropped.png")
    Image.fromarray(skimage.data.coffee()).save(d / "coffee.jpg", quality=85)
    (d / "notes.jpg").write_text("not an image, whatever the name says\n")
    (d / "notes.txt").write_text("a text file\n")
    with open(d / "huge.jpg", "wb") as f:  # sparse: its size is all the page looks at
        f.truncate(11 * 1024 * 1024)
    return {p.name: p for p in d.iterdir()}


@pytest.fixture(scope="module")
def base_url(tmp_path_factory, photos, artefacts) -> str:
    library = tmp_path_factory.mktemp("avatars")
    (library / "mirror.jpg").write_bytes(photos["mirror.jpg"].read_bytes())
    port = free_port()
    env = {"SYNCVID_CACHE_DIR": str(tmp_path_factory.mktemp("cache")), "SYNCVID_TOKEN": TOKEN}
    server = start_process(["-m", "realtime.cli", "serve", "--port", str(port), "--avatars", str(library)], port,
                           "/healthz", timeout=90, env=env, log=artefacts / "server.log")
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        stop_process(server)


# ---- helpers --------------------------------------------------------------------------------------
def assert_no_console_problems(page, allowed: tuple[str, ...] = ()):
    """No console error, uncaught exception or error log entry, except network errors of the HTTP
    refusals a test provokes on purpose (Chromium logs every 4xx of a fetch or XHR and a refused
    WebSocket), named by a piece of their URL or text."""
    bad = [p for p in page.problems if not (p["kind"] == "log" and p.get("source") == "network"
                                             and any(a in f"{p['url']} {p['text']}" for a in allowed))]
    assert not bad, bad


async def go_live(page, avatar: str = "default", timeout: float = 20.0) -> None:
    await page.wait_for(f"{STATE} === 'live' && document.body.dataset.avatar === {json.dumps(avatar)}", timeout)


def upload_posts(page) -> list[str]:
    return [r["url"] for r in page.requests if r["method"] == "POST" and "/avatars" in r["url"]]


def mouth_figures(frames: list) -> dict:
    """How far the mouth region is from its rest picture (the median of the silent frames) and how
    much it changed since the frame before (mean absolute difference, grey levels 0-255), while the
    returned voice speaks (above -40 dBFS) and in its silences (below -70 dBFS for 0.3 s either
    side: no speech on screen, nor just ended). Late frames repeat the one before, so on a loaded
    machine frame-to-frame change drops while the distance from rest does not."""
    t = np.array([f[0] for f in frames])
    level = np.array([f[1] for f in frames])
    grey = np.array([f[2] for f in frames], dtype=np.float32)  # (frames, pixels)
    speech = level > -40
    quiet = np.array([np.all(level[np.abs(t - ti) <= 0.3] < -70) for ti in t])
    out = {"frames": len(frames), "speech_frames": int(speech.sum()), "silent_frames": int(quiet.sum())}
    if not (speech.any() and quiet.any()):
        return out
    from_rest = np.abs(grey - np.median(grey[quiet], axis=0)).mean(axis=1)
    change = np.r_[np.nan, np.abs(np.diff(grey, axis=0)).mean(axis=1)]
    for name, x in (("from_rest", from_rest), ("change", change)):
        out[f"speech_{name}"] = round(float(np.nanmean(x[speech])), 3)
        out[f"silence_{name}"] = round(float(np.nanmean(x[quiet])), 3)
        out[f"{name}_ratio"] = round(out[f"speech_{name}"] / max(out[f"silence_{name}"], 1e-3), 2)
    return out


# ---- tests ----------------------------------------------------------------------------------------
async def test_page_goes_live_lip_syncs_interrupts_and_stops(base_url, speech_wav, artefacts):
    from clients.browser_check import MOUTH_PROBE_JS, Chromium

    async with Chromium(speech_wav) as browser:
        page = await browser.open(f"{base_url}?token={TOKEN}")
        assert await page.evaluate(STATE) == "idle"
        t0 = time.monotonic()
        await page.click("start")
        await go_live(page, timeout=8)
        # the figures panel: received frames per second, measured by the page itself
        fps = await page.wait_for("(() => { const f = parseFloat(document.getElementById('fps').textContent);"
                                  " return f >= 20 ? f : 0; })()", 8 - (time.monotonic() - t0))
        fps_after_s = time.monotonic() - t0
        box = await page.evaluate("document.getElementById('video').dataset.faceBox")
        assert box, "the server's session_started carried no face_box"
        x0, y0, x1, y1 = map(int, box.split())
        assert 0 <= x0 < x1 <= 512 and 0 <= y0 < y1 <= 512
        zoom = await page.evaluate("document.getElementById('frame').style.transform")
        assert zoom.startswith("scale(") and float(zoom[6:zoom.index(")")]) > 1.5, zoom  # the face, not the frame

        await page.evaluate(MOUTH_PROBE_JS)
        await page.screenshot(artefacts / "live.png")
        await asyncio.sleep(PROBE_S)
        frames = await page.evaluate("window.__mouthProbe.stop = true, window.__mouthProbe.frames")
        mouth = mouth_figures(frames)
        print(json.dumps(mouth))
        figures = await page.evaluate("[...document.querySelectorAll('#figures dd')].map((d) => d.textContent)")
        assert mouth["speech_frames"] >= 25 and mouth["silent_frames"] >= 25, mouth
        # the mouth moves while the voice speaks, away from its rest picture, and rests in the silences
        # (idle motion keeps a silent mouth a few grey levels from its median picture)
        assert mouth["change_ratio"] > 2 and mouth["from_rest_ratio"] > 2.5, mouth
        # engine latency (none in silence), late frames and quality: from the server's `stats` events
        assert re.fullmatch(r"\d+ ms|no speech", figures[1]) and figures[2].isdigit() and figures[3] != "–", figures

        await page.click("full-frame")
        await page.wait_for("document.getElementById('frame').style.transform === 'none'", 2)
        await page.screenshot(artefacts / "live_full_frame.png")
        await page.click("full-frame")

        # hold to interrupt: the mic is muted while held, the server confirms, the badge shows
        x, y = await page.centre_of("interrupt")
        await page.mouse("mousePressed", x, y)
        await page.wait_for("!page.mic.getAudioTracks()[0].enabled && !document.getElementById('badge').hidden", 3)
        await page.wait_for("document.getElementById('mic-level').value < 0.05", 2)
        await page.screenshot(artefacts / "interrupt_held.png")
        await page.mouse("mouseReleased", x, y)
        await page.wait_for("page.mic.getAudioTracks()[0].enabled === true", 2)
        assert "Interrupted" in await page.evaluate("document.getElementById('log').textContent")

        await page.click("mute")
        assert await page.evaluate("document.getElementById('video').muted") is True
        await page.evaluate("(() => { const v = document.getElementById('volume'); v.value = 0.3;"
                            " v.dispatchEvent(new Event('input')); })()")
        assert await page.evaluate("document.getElementById('video').volume") == pytest.approx(0.3)

        # Stop: the last frame stays, dimmed, under the reason in words (no black box)
        await page.click("stop")
        await page.wait_for(f"{STATE} === 'ended'", 3)
        ended = await page.evaluate("""(() => { const c = document.getElementById('still');
          const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
          let sum = 0; for (let i = 0; i < px.length; i += 4) sum += px[i] + px[i + 1] + px[i + 2];
          return {shown: getComputedStyle(c).display !== 'none', mean: sum / (3 * px.length / 4),
                  state: document.getElementById('state-text').textContent,
                  cover: document.getElementById('cover-text').textContent}; })()""")
        assert ended["shown"] and ended["mean"] > 40, ended  # the astronaut, not black
        assert ended["state"] == "Ended: you stopped the session." and "Start" in ended["cover"], ended
        await page.evaluate("document.getElementById('log-box').open = true")
        await page.screenshot(artefacts / "ended.png")
        log_overflow = await page.evaluate("(() => { const l = document.getElementById('log');"
                                           " return l.scrollWidth - l.clientWidth; })()")
        assert log_overflow <= 0, "the event log scrolls sideways"
        assert_no_console_problems(page)

    result = {"received_fps": float(fps), "fps_20_after_s": round(fps_after_s, 2), "figures_panel": figures,
              "face_box": [x0, y0, x1, y1], "zoom": zoom, "mouth": mouth}
    (artefacts / "figures.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result))


async def test_avatar_switch_and_photo_upload(base_url, speech_wav, photos, artefacts):
    from clients.browser_check import Chromium

    async with Chromium(speech_wav) as browser:
        page = await browser.open(f"{base_url}?token={TOKEN}")
        await page.wait_for("document.getElementById('avatar').options.length > 1", 5)
        names = await page.evaluate("[...document.getElementById('avatar').options].map((o) => o.value)")
        assert names == ["default", "mirror"], names
        limit = await page.evaluate("page.upload.max_bytes")
        await page.click("start")
        await go_live(page)
        default_box = list(map(int, (await page.evaluate("document.getElementById('video').dataset.faceBox")).split()))

        # switching restarts the session with the chosen avatar (the mirrored photo: its face box too)
        await page.evaluate("(() => { const s = document.getElementById('avatar'); s.value = 'mirror';"
                            " s.dispatchEvent(new Event('change')); })()")
        await go_live(page, "mirror", timeout=30)  # the photo is prepared on its first use
        box = list(map(int, (await page.evaluate("document.getElementById('video').dataset.faceBox")).split()))
        assert abs((512 - default_box[2]) - box[0]) <= 4 and abs(default_box[1] - box[1]) <= 4, (default_box, box)
        await page.screenshot(artefacts / "switched_to_mirror.png")

        await page.evaluate("document.getElementById('upload-box').open = true")
        msg = "document.getElementById('upload-msg')"

        async def choose(name: str, avatar_name: str | None = None) -> None:
            await page.set_files("photo", [photos[name]])
            if avatar_name:
                await page.evaluate(f"document.getElementById('photo-name').value = {json.dumps(avatar_name)}")
            await page.evaluate(f"{msg}.textContent = ''")
            await page.click("upload")

        # refused by the page itself, nothing sent: not an image type, too large
        await choose("notes.txt")
        txt = await page.wait_for(f"{msg}.className === 'error' && {msg}.textContent", 3)
        assert "notes.txt is not a JPEG, PNG or WebP image" in txt, txt
        await choose("huge.jpg")
        txt = await page.wait_for(f"{msg}.className === 'error' && {msg}.textContent", 3)
        assert "huge.jpg is 11.5 MB" in txt and f"up to {limit / 1e6:.1f} MB" in txt, txt
        assert upload_posts(page) == []

        # refused by the server, its reason shown: a text file named .jpg, a photo without a face
        await choose("notes.jpg", "notes")
        txt = await page.wait_for(f"{msg}.className === 'error' && {msg}.textContent", 10)
        assert txt.startswith("Not added:") and "image" in txt, txt
        await choose("coffee.jpg", "coffee")
        txt = await page.wait_for(f"{msg}.className === 'error' && {msg}.textContent", 30)
        assert txt.startswith("Not added:") and "face" in txt, txt
        await page.screenshot(artefacts / "upload_no_face.png", full_page=True)

        # a face photo: 201, joins the picker, and the live session switches to it
        await choose("cropped.png", "astro_up")
        txt = await page.wait_for(f"{msg}.className === 'ok' && {msg}.textContent", 30)
        assert txt == "Added avatar astro_up.", txt
        names = await page.evaluate("[...document.getElementById('avatar').options].map((o) => o.value)")
        assert names == ["default", "astro_up", "mirror"], names  # the server's order: default, then by name
        await go_live(page, "astro_up", timeout=20)
        await page.wait_for("!document.getElementById('still').classList.contains('has-frame')", 5)  # its first frame
        await page.screenshot(artefacts / "uploaded_avatar_live.png", full_page=True)
        posts = upload_posts(page)
        assert len(posts) == 3 and all(f"token={TOKEN}" in u for u in posts), posts
        assert_no_console_problems(page, allowed=("/avatars?name=notes", "/avatars?name=coffee"))


async def test_page_on_a_phone_screen_and_without_its_token(base_url, speech_wav, artefacts):
    from clients.browser_check import Chromium

    async with Chromium(speech_wav) as browser:
        page = browser.page
        await page.set_viewport(*PHONE, mobile=True)
        await page.goto(base_url)  # no token: the page says how to open it
        hint = await page.wait_for("(() => { const t = document.getElementById('state-text').textContent;"
                                   " return t.includes('token') && t; })()", 5)
        assert f"{base_url}?token=YOUR_TOKEN" in hint, hint
        await page.click("start")  # the /ws upgrade is refused too: the page says why, not "1006"
        ended = await page.wait_for(f"{STATE} === 'ended' && document.getElementById('state-text').textContent", 10)
        assert ended == "Ended: this server needs a token.", ended
        assert_no_console_problems(page, allowed=("/avatars", "/ws' failed"))  # the 401s themselves

        await page.goto(f"{base_url}?token={TOKEN}")
        await page.click("start")
        await go_live(page, timeout=8)
        await page.evaluate("document.getElementById('upload-box').open = true;"
                            " document.getElementById('log-box').open = true")
        layout = await page.evaluate("""(() => {
          const w = window.innerWidth, out = [];
          for (const el of document.querySelectorAll('#stage, button, select, input, meter, #figures, #log')) {
            const r = el.getBoundingClientRect();
            if (r.left < -0.5 || r.right > w + 0.5) out.push(el.id || el.tagName);
          }
          return {width: w, scroll: document.documentElement.scrollWidth, outside: out,
                  stage: document.getElementById('stage').getBoundingClientRect().width}; })()""")
        assert layout["width"] == PHONE[0] and layout["scroll"] <= PHONE[0], layout
        assert layout["outside"] == [] and layout["stage"] >= PHONE[0] - 40, layout
        await page.wait_for("parseFloat(document.getElementById('fps').textContent) > 0", 5)  # and the zoom settled
        await page.screenshot(artefacts / "phone.png", full_page=True)
        assert_no_console_problems(page, allowed=("/avatars", "/ws' failed"))
