"""`syncvid serve`: the real-time lip-sync server (WebRTC over /ws, browser page at /)."""

from __future__ import annotations

import logging

from realtime.errors import ServerStartError
from realtime.face.library import check_library_dir
from realtime.server.access import TOKEN_ENV, AccessPolicy, check_exposure, load_tokens, tls_context
from realtime.server.startup import bind_error_message, check_bindable

log = logging.getLogger(__name__)


def register(sub) -> None:
    p = sub.add_parser("serve", help="run the real-time server (browser page, /ws, /healthz, /metrics)")
    p.add_argument("--config", default=None, help="YAML config (default: configs/realtime.yaml)")
    p.add_argument("--host", default=None, help="interface to bind (default from config: 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default from config: 8080; 0 = any free)")
    p.add_argument("--avatar", metavar="PATH", default=None,
                   help="a face photo or video (prepared on first use and cached), or a folder from "
                   "`syncvid prepare-avatar` (default: the shipped astronaut photo)")
    p.add_argument("--avatars", metavar="DIR", default=None,
                   help="a folder of avatars each session may choose by name (photos, videos, folders from "
                   "`syncvid prepare-avatar`); --avatar's is always offered as 'default'")
    p.add_argument("--low-latency", action="store_true", help="40 ms look-ahead mode for every session")
    p.add_argument("--max-sessions", type=int, default=None, help="session cap")
    p.add_argument("--renderer", choices=("embedded", "diffusion"), default=None,
                   help="renderer (default from config: embedded); diffusion needs --unet and --vae")
    p.add_argument("--unet", metavar="CKPT", default=None,
                   help="LatentSync UNet checkpoint (latentsync_unet.pt); implies --renderer diffusion")
    p.add_argument("--unet-config", metavar="YAML", default=None,
                   help="LatentSync UNet YAML for --unet (default configs/unet/stage2.yaml)")
    p.add_argument("--vae", metavar="DIR", default=None, help="local diffusers VAE folder for the diffusion renderer")
    a = p.add_argument_group("access (docs/security.md)")
    a.add_argument("--token", default=None, help=f"clients must present this token (Authorization: Bearer TOKEN, "
                   f"or ?token=TOKEN); default: ${TOKEN_ENV}")
    a.add_argument("--token-file", metavar="FILE", default=None, help="a file of accepted tokens, one per line")
    a.add_argument("--tls-cert", metavar="PEM", default=None, help="serve https:// and wss:// with this certificate")
    a.add_argument("--tls-key", metavar="PEM", default=None, help="the certificate's private key")
    a.add_argument("--insecure", action="store_true",
                   help="allow --host beyond localhost without a token (anyone who can reach it may use it)")
    p.set_defaults(func=run)


def run(args) -> int:
    import asyncio

    from realtime.server.config import load_realtime_config

    changes = {k: v for k, v in (("host", args.host), ("port", args.port), ("avatar_dir", args.avatar),
                                  ("avatars_dir", args.avatars), ("max_sessions", args.max_sessions),
                                  ("renderer", args.renderer), ("tls_cert", args.tls_cert),
                                  ("tls_key", args.tls_key)) if v is not None}
    if args.low_latency:
        changes["lookahead"] = "low"
    diffusion = {k: v for k, v in (("unet", args.unet), ("unet_config", args.unet_config), ("vae", args.vae))
                 if v is not None}
    if diffusion:
        changes["diffusion"] = diffusion
    if args.unet:
        changes.setdefault("renderer", "diffusion")
    config = load_realtime_config(args.config, changes)
    tokens = load_tokens(args.token, args.token_file)
    check_exposure(config.host, tokens, args.insecure)
    if config.tls_cert:
        tls_context(config.tls_cert, config.tls_key)  # a wrong certificate or key fails before the models load
    check_bindable(config.host, config.port)  # before any model loads: a busy port fails at once
    if config.avatars_dir is not None:
        check_library_dir(config.avatars_dir)  # the same: a mistyped --avatars folder
    if not getattr(args, "verbose", False):
        # one line per HTTP request (every /metrics scrape) is noise; so is aioice's one per ICE
        # candidate pair state change (about eight per WebRTC session)
        for name in ("aiohttp.access", "aioice"):
            logging.getLogger(name).setLevel(logging.WARNING)
    return asyncio.run(_serve(config, AccessPolicy(tokens, tuple(config.allowed_origins))))


async def _serve(config, access) -> int:
    import asyncio
    import signal

    import torch

    from realtime.server.app import RealtimeServer
    from realtime.server.engine import build_engine
    from realtime.heap import freeze_startup_heap

    torch.set_num_threads(1)  # one inference thread; the other core encodes video and runs the loop
    # Signals from here on stop the server cleanly (one during the model load, once it is done).
    stop = asyncio.Event()
    received: list[str] = []
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda s=sig: (received.append(s.name), stop.set()))
    engine = build_engine(config)
    try:
        server = RealtimeServer(config, engine, access=access)
        frozen = freeze_startup_heap()  # models, codecs, aiortc: never walked by the collector again
        log.debug("start-up heap of %d objects frozen", frozen)
        try:
            await server.start()
        except OSError as e:  # taken between the check and now
            raise ServerStartError(bind_error_message(config.host, config.port, e)) from None
        log.info("ready: serving on %s (open it in a browser%s; WebSocket %sws, metrics %smetrics)",
                 server.url, ", adding ?token=TOKEN" if access.needs_token else "",
                 server.url.replace("http", "ws", 1), server.url)
        try:
            await stop.wait()
            log.info("%s received: closing %d session(s) and stopping", received[0], len(server.sessions))
        finally:
            await server.close()
    finally:
        engine.close()  # the inference process and its shared memory, whatever failed above
    log.info("stopped")
    return 0
