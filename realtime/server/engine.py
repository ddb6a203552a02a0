"""Builds the engine every session shares (``session.shared.Engine``) from the server's config:
the avatar and the avatar library, the renderers and streaming encoders, in this process or in the
inference process."""

from __future__ import annotations

import logging
from pathlib import Path

from realtime.config import cache_root
from realtime.face.avatar import Avatar, default_avatar
from realtime.face.library import AvatarLibrary
from realtime.face.sources import load_avatar_source
from realtime.inference.factory import (check_diffusion_files, make_renderer, make_stream_encoder, renderer_kind,
                                        whisper_path)
from realtime.inference.process import EncoderProxy, ProcessBackend, RendererProxy
from realtime.inference.worker import InferenceWorker
from realtime.server.config import RealtimeConfig
from realtime.session.shared import Engine

log = logging.getLogger(__name__)

# Worker threads when the models run in a child process: they only wait on pipes, and the more jobs
# reach the child at once, the more encoder pushes it batches into one call.
PROCESS_THREADS = 8


def library_dir(config: RealtimeConfig) -> Path | None:
    """The avatar library's folder: ``avatars_dir``; without one, the uploads folder (created) when
    uploads are allowed; else none (the default avatar alone)."""
    if config.avatars_dir is not None:
        return Path(config.avatars_dir)
    if not config.allow_uploads:
        return None
    folder = Path(config.uploads_dir).expanduser() if config.uploads_dir else cache_root() / "uploads"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def build_engine(config: RealtimeConfig, avatar: Avatar | None = None) -> Engine:
    """The real engine: embedded (or diffusion) renderer, streaming Whisper encoder, avatar
    (``avatar`` overrides ``config.avatar_dir``; neither: the default avatar), and the library of
    ``config.avatars_dir`` around it."""
    if config.renderer == "diffusion":
        check_diffusion_files(config.diffusion)

    if avatar is None:  # a prepared folder, or a photo or video prepared now (and cached)
        avatar = load_avatar_source(config.avatar_dir) if config.avatar_dir else default_avatar()
    avatars = AvatarLibrary(library_dir(config), avatar, config.limits.max_avatars_loaded)
    if config.inference == "process":
        return _process_engine(config, avatar, avatars)

    def renderer_factory(lookahead: str):
        return make_renderer(config.renderer, lookahead, config.diffusion)

    shared: dict = {}

    def encoder_factory(lookahead: str, fps: int):
        from realtime.audio.streaming import StreamingWeights  # torch: loaded only where the models run
        from realtime.audio.whisper_loader import load_whisper  # the same

        path = whisper_path(config.renderer, lookahead, config.diffusion)
        if path not in shared:  # fused weights + padding keys/values: once for all sessions
            shared[path] = StreamingWeights(load_whisper(path))
        return make_stream_encoder(shared[path], lookahead, fps)

    engine = Engine(avatar=avatar, renderer_factory=renderer_factory, encoder_factory=encoder_factory,
                    worker=InferenceWorker(threads=config.inference_threads), avatars=avatars)
    engine.warm_up(("full", "low"), config.fps)
    return engine


def _process_engine(config: RealtimeConfig, avatar: Avatar, avatars: AvatarLibrary) -> Engine:
    """Models in a child process (realtime/inference/process.py); this process keeps the avatars for
    timing and fallbacks (and prepares the library's photos and videos, which the child then loads
    by folder), and ``PROCESS_THREADS`` worker threads that forward jobs to the child."""
    backend = ProcessBackend(str(avatar.directory), config.renderer, config.fps, connections=PROCESS_THREADS + 1,
                             nice=config.inference_nice, diffusion=config.diffusion,
                             max_avatars=config.limits.max_avatars_loaded)
    engine = Engine(avatar=avatar,
                    renderer_factory=lambda la: RendererProxy(backend, la, renderer_kind(config.renderer, la)),
                    encoder_factory=lambda la, fps: EncoderProxy(backend, la, fps),
                    worker=InferenceWorker(threads=PROCESS_THREADS), backend=backend, avatars=avatars)
    engine.warm_up(("full", "low"), config.fps)
    return engine
