"""A scripted stand-in for the avatar-SDK side of ``/ws``, on a loopback port 0, for the client tests."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from syncvid_client import wire
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers


@dataclass
class Record:
    """What the fake server saw from the client."""

    headers: Headers = field(default_factory=Headers)  # case-insensitive
    start: dict[str, Any] | None = None
    texts: list[dict[str, Any]] = field(default_factory=list)  # JSON messages after start
    audio: list[bytes] = field(default_factory=list)  # binary messages, one entry each


Script = Callable[[ServerConnection, Record], Awaitable[None]]


@asynccontextmanager
async def fake_server(script: Script) -> AsyncIterator[tuple[str, Record]]:
    """``async with fake_server(script) as (url, record)``: every connection reads the first
    message into ``record.start`` and then runs ``script(ws, record)``."""
    record = Record()

    async def handler(ws: ServerConnection) -> None:
        record.headers = ws.request.headers
        record.start = json.loads(await ws.recv())
        await script(ws, record)

    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        yield f"ws://127.0.0.1:{port}/ws", record


def event(name: str, **fields: Any) -> str:
    return json.dumps({"type": "event", "event": name, **fields})


def error(code: str, message: str) -> str:
    return json.dumps({"type": "error", "code": code, "message": message})


def session_started(sample_rate: int = 16000, video: str = "jpeg", audio_out: bool = True, width: int = 8,
                    height: int = 6, fps: int = 25, **extra: Any) -> str:
    return event("session_started", session="s1", fps=fps, width=width, height=height, sample_rate=sample_rate,
                 avatar="default", video=video, audio_out=audio_out, latency_budget_ms=170, lookahead="full",
                 max_buffer_s=120.0, **extra)


def frame_event(index: int, fps: int = 25, buffered_ms: float = 0.0, speaking: bool = False) -> str:
    return event("frame", index=index, pts=index / fps, speaking=speaking, buffered_ms=buffered_ms,
                 visemes={"sil": 1.0 - index / 10, "aa": index / 10}, blendshapes={"jawOpen": index / 10})


def jpeg_part(index: int, rgb: tuple[int, int, int], width: int = 8, height: int = 6, fps: int = 25) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), rgb).save(buf, format="JPEG", quality=95)
    return wire.pack(wire.Header(wire.Kind.JPEG, index, index / fps, width, height), buf.getvalue())


def raw_part(index: int, image: np.ndarray, fps: int = 25) -> bytes:
    h, w, _ = image.shape
    return wire.pack(wire.Header(wire.Kind.RAW, index, index / fps, w, h), image.astype(np.uint8).tobytes())


def audio_part(index: int, samples: np.ndarray, rate: int = 16000, fps: int = 25) -> bytes:
    return wire.pack(wire.Header(wire.Kind.AUDIO, index, index / fps, sample_rate=rate),
                     samples.astype("<i2").tobytes())


async def record_until(ws: ServerConnection, record: Record, stop_type: str) -> None:
    """Collect the client's messages into ``record`` until a JSON message of type ``stop_type``."""
    async for message in ws:
        if isinstance(message, bytes):
            record.audio.append(message)
            continue
        msg = json.loads(message)
        record.texts.append(msg)
        if msg.get("type") == stop_type:
            return
