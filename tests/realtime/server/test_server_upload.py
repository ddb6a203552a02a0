"""`POST /avatars?name=NAME`: a photo uploaded through the server becomes an avatar sessions can
choose; everything else gets a clear JSON refusal and leaves nothing behind."""

from __future__ import annotations

import asyncio
import io
import json
import urllib.request

import numpy as np
import pytest
from websockets.asyncio.client import connect

from realtime.face.library import AvatarLibrary
from tests.fakes import make_config, make_engine, running_server


def post(port: int, name: str, body: bytes, content_type: str = "image/png") -> tuple[int, dict]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/avatars?name={name}", data=body, method="POST",
                                 headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def fetch(port: int, path: str) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return r.read()


def png(rgb: np.ndarray) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(rgb).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture
async def upload_server(tmp_path):
    engine = make_engine()
    library = tmp_path / "library"
    library.mkdir()
    engine.avatars = AvatarLibrary(library, engine.avatar, cache_dir=tmp_path / "cache")
    config = make_config()
    config.limits.max_upload_bytes = 2_000_000
    async with running_server(config, engine) as srv:
        yield srv, library


async def test_an_uploaded_photo_becomes_an_avatar_a_session_can_use(upload_server):
    skimage_data = pytest.importorskip("skimage.data")
    srv, library = upload_server
    face = png(skimage_data.astronaut())
    status, body = await asyncio.to_thread(post, srv.port, "anna", face)
    assert status == 201 and body == {"avatar": {"name": "anna", "kind": "photo", "loaded": True}}
    assert sorted(p.name for p in library.iterdir()) == ["anna.png"]  # no temporary file left
    listing = json.loads(await asyncio.to_thread(fetch, srv.port, "/avatars"))
    assert [a["name"] for a in listing["avatars"]] == ["default", "anna"]
    assert listing["upload"] == {"enabled": True, "max_bytes": 2_000_000, "max_pixels": 40_000_000}
    async with connect(f"ws://127.0.0.1:{srv.port}/ws") as ws:
        await ws.send(json.dumps({"type": "start", "options": {"avatar": "anna", "video": "raw"}}))
        started = json.loads(await ws.recv())
        assert started["event"] == "session_started" and started["avatar"] == "anna"
    status, body = await asyncio.to_thread(post, srv.port, "anna", face)  # the name is taken now
    assert status == 409 and body["error"]["code"] == "name_taken"


@pytest.mark.parametrize("name, body, status, code", [
    ("blank", None, 422, "no_face"),  # a grey picture: decoded fine, no face in it
    ("text", b"hello, this is not an image", 400, "not_an_image"),
    ("big", b"\x89PNG" + b"\0" * 2_000_001, 413, "too_large"),
    ("../escape", None, 400, "bad_name"),
    ("default", None, 400, "bad_name"),
])
async def test_refusals_are_clear_and_leave_nothing_behind(upload_server, name, body, status, code):
    srv, library = upload_server
    if body is None:
        body = png(np.full((240, 320, 3), 128, np.uint8))
    got_status, got = await asyncio.to_thread(post, srv.port, name, body)
    assert (got_status, got["error"]["code"]) == (status, code), got
    assert got["error"]["message"] and "\n" not in got["error"]["message"]
    assert list(library.iterdir()) == []
    assert json.loads(await asyncio.to_thread(fetch, srv.port, "/healthz"))["status"] == "ok"  # serves on


async def test_uploads_can_be_switched_off():
    async with running_server(make_config(allow_uploads=False)) as srv:
        status, body = await asyncio.to_thread(post, srv.port, "anna", b"x")
        assert status == 403 and body["error"]["code"] == "uploads_disabled"
