"""The plain-HTTP side of the server (aiohttp handlers): the page and its files, `/healthz`,
`/metrics`, `/stats`, `GET /avatars` and `POST /avatars` (a photo uploaded as an avatar).

Access (tokens, origins) is decided before any handler runs (``access.py``, applied by the server's
middleware); these handlers only serve. Errors a client causes are JSON
``{"error": {"code", "message"}}`` with a 4xx status and one sentence saying what to do.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from realtime.errors import MediaInputError
from realtime.face.sources import prepared_from_file
from realtime.face.upload import UploadRejected, check_image_upload, safe_avatar_name
from realtime.server.access import is_loopback_host

if TYPE_CHECKING:
    from realtime.server.app import RealtimeServer

log = logging.getLogger(__name__)

# the page's files: URL path -> (file in the client folder, content type)
STATIC = {"/": ("index.html", "text/html; charset=utf-8"),
          "/app.js": ("app.js", "text/javascript; charset=utf-8"),
          "/library.js": ("library.js", "text/javascript; charset=utf-8"),
          "/style.css": ("style.css", "text/css; charset=utf-8")}
NO_STORE = {"Cache-Control": "no-store"}
# status of each upload refusal (the code travels in the JSON body)
UPLOAD_STATUS = {"too_large": 413, "too_many_pixels": 413, "name_taken": 409, "no_face": 422,
                 "library_full": 507, "uploads_disabled": 403}


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status,
                             headers={**NO_STORE, **(headers or {})})


def _json(body: dict, status: int = 200) -> web.Response:
    return web.json_response(body, status=status, headers=NO_STORE)


class HttpApi:
    """The HTTP handlers of one ``RealtimeServer``."""

    def __init__(self, server: "RealtimeServer") -> None:
        self.server = server
        self._upload_lock = asyncio.Lock()  # one upload prepared at a time (seconds of CPU each)

    def routes(self) -> list[web.RouteDef]:
        r = [web.get("/healthz", self.healthz), web.get("/metrics", self.metrics), web.get("/stats", self.stats),
             web.get("/avatars", self.avatars), web.post("/avatars", self.upload)]
        r += [web.get(path, self.static) for path in STATIC]
        return r

    # ---- status ---------------------------------------------------------------------------------
    async def healthz(self, request: web.Request) -> web.Response:
        srv = self.server
        # 503 while the inference process is down (its start failed; retried with a back-off)
        down = getattr(getattr(srv.engine, "backend", None), "down", None)
        body = {"status": "ok" if down is None else "degraded", "sessions": len(srv.sessions),
                "max_sessions": srv.config.max_sessions, "uptime_s": round(time.monotonic() - srv.started_at, 1),
                "inference": "ok" if down is None else f"down: {down}"}
        return _json(body, 200 if down is None else 503)

    async def metrics(self, request: web.Request) -> web.Response:
        srv = self.server
        srv.metrics.sessions.set(len(srv.sessions))
        srv.drain_gc_pauses()
        return web.Response(body=srv.metrics.render().encode(), headers={
            **NO_STORE, "Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    async def stats(self, request: web.Request) -> web.Response:
        """JSON summary for benchmarks (percentiles from raw samples)."""
        if not is_loopback_host(request.remote or ""):  # a benchmark's tool on this machine; it can reset the samples
            return web.Response(status=403, text="/stats is served to clients on this machine only\n", headers=NO_STORE)
        return _json(self.server.stats(reset=request.query.get("reset") == "1"))

    # ---- the page -------------------------------------------------------------------------------
    async def static(self, request: web.Request) -> web.StreamResponse:
        name, ctype = STATIC[request.path]
        f = self.server.client_dir / name
        if not f.is_file():
            raise web.HTTPNotFound(text="not found\n")
        return web.Response(body=f.read_bytes(), headers={**NO_STORE, "Content-Type": ctype})

    # ---- avatars --------------------------------------------------------------------------------
    def upload_limits(self) -> dict:
        lim = self.server.config.limits
        return {"enabled": self.server.upload_dir is not None, "max_bytes": lim.max_upload_bytes,
                "max_pixels": lim.max_upload_pixels}

    async def avatars(self, request: web.Request) -> web.Response:
        described = await asyncio.to_thread(self.server.engine.avatars.describe)  # a directory listing
        return _json({"avatars": described, "upload": self.upload_limits()})

    async def upload(self, request: web.Request) -> web.Response:
        """``POST /avatars?name=NAME`` with the image file as the body: checked, prepared (its face
        found), then saved in the library folder as ``NAME.png``; 201 with the new entry."""
        srv, lim = self.server, self.server.config.limits
        folder = srv.upload_dir
        try:
            if folder is None:
                raise UploadRejected("uploads_disabled", "this server does not take avatar uploads (allow_uploads "
                                     "is false): ask its operator to add the photo to its avatar folder")
            name = safe_avatar_name(request.query.get("name", ""))
            if request.content_length is not None and request.content_length > lim.max_upload_bytes:
                raise UploadRejected("too_large", f"the file is {request.content_length / 1e6:.1f} MB; the limit "
                                     f"is {lim.max_upload_bytes / 1e6:.1f} MB: send a smaller photo")
            data = await _read_body(request, lim.max_upload_bytes)
            # decoding and finding the face take seconds of CPU: off the loop, one upload at a time
            async with self._upload_lock:
                entry = await asyncio.to_thread(self._save, folder, name, data)
        except UploadRejected as e:
            return error_response(UPLOAD_STATUS.get(e.code, 400), e.code, str(e))
        log.info("avatar %r uploaded (%d bytes)", name, len(data))
        return _json({"avatar": entry}, 201)

    def _save(self, folder: Path, name: str, data: bytes) -> dict:
        """Blocking: checks the image, prepares it (the face found, cached by content), and only then
        puts it in the library under ``name``."""
        import numpy as np
        from PIL import Image

        srv, lim = self.server, self.server.config.limits
        library = srv.engine.avatars
        names = library.names()  # a directory listing
        if name in names:
            raise UploadRejected("name_taken", f"an avatar named {name!r} exists already: pick another name")
        if len(names) > lim.max_uploads:
            raise UploadRejected("library_full", f"the avatar library holds {lim.max_uploads} avatars, its limit: "
                                 "ask the server's operator to remove some")
        rgb = check_image_upload(data, max_bytes=lim.max_upload_bytes, max_pixels=lim.max_upload_pixels)
        folder.mkdir(parents=True, exist_ok=True)
        part = folder / f".{name}.upload.png"  # hidden: the library's listing skips it
        try:
            # saved re-encoded from the decoded pixels: no metadata or trailing bytes of the upload survive
            Image.fromarray(np.ascontiguousarray(rgb)).save(part, format="PNG")
            try:
                prepared_from_file(part, "image", resolution=library.resolution, cache_dir=library.cache_dir,
                                   progress=False)
            except MediaInputError as e:
                log.info("upload %r: %s", name, e)  # the reason names a server path: for the log only
                raise UploadRejected("no_face", "no face was found in the photo: upload a photo with one face, "
                                     "seen from the front, well lit") from None
            final = folder / f"{name}.png"
            if final.exists():
                raise UploadRejected("name_taken", f"an avatar named {name!r} exists already: pick another name")
            os.replace(part, final)
        finally:
            part.unlink(missing_ok=True)
        library.load(name)  # from the cache just filled: the first session with it starts at once
        return next(d for d in library.describe() if d["name"] == name)


async def _read_body(request: web.Request, limit: int) -> bytes:
    """The whole request body, refused as soon as it passes ``limit`` bytes (a client may send more
    than its Content-Length said, or none)."""
    chunks, total = [], 0
    async for chunk in request.content.iter_chunked(1 << 16):
        total += len(chunk)
        if total > limit:
            raise UploadRejected("too_large", f"the file is over the {limit / 1e6:.1f} MB limit: send a smaller photo")
        chunks.append(chunk)
    return b"".join(chunks)


def not_found_or_method(status: int, method: str, path: str, allow: str | None) -> web.Response:
    """The server's own 404 and 405 (text, with ``Allow`` on a 405)."""
    if status == 405:
        text = f"{method} is not served here; use {allow}\n"
        return web.Response(status=405, text=text, headers={**NO_STORE, "Allow": allow or "GET"})
    return web.Response(status=404, text="not found\n", headers=NO_STORE)

