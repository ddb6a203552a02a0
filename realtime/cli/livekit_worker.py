"""`syncvid livekit-worker`: serve a syncvid server's avatars to a LiveKit deployment as an agent
worker (explicit dispatch as ``syncvid-avatar``; load = sessions in use / capacity). See
docs/scaling.md."""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


def register(sub) -> None:
    p = sub.add_parser("livekit-worker", help="serve avatars to a LiveKit deployment (agent worker; see docs/scaling.md)")
    p.add_argument("--syncvid-url", default="ws://127.0.0.1:8080/ws",
                   help="the `syncvid serve` whose sessions this worker hands out (default ws://127.0.0.1:8080/ws)")
    p.add_argument("--syncvid-token", default=None,
                   help="bearer token for that server, if it asks for one (default $SYNCVID_TOKEN)")
    p.add_argument("--capacity", type=int, default=None,
                   help="sessions this worker offers (default: the server's max_sessions from /healthz)")
    p.add_argument("--agent-name", default="syncvid-avatar", help="name agents dispatch (default syncvid-avatar)")
    p.add_argument("--load-threshold", type=float, default=1.0,
                   help="take no jobs at this load (sessions / capacity; default 1.0: while one is free)")
    p.add_argument("--livekit-url", default=None, help="LiveKit server (default $LIVEKIT_URL)")
    p.add_argument("--api-key", default=None, help="default $LIVEKIT_API_KEY")
    p.add_argument("--api-secret", default=None, help="default $LIVEKIT_API_SECRET")
    p.add_argument("--video", choices=("raw", "jpeg"), default="raw",
                   help="frames from the syncvid server: raw (same host or LAN) or jpeg (default raw)")
    p.add_argument("--idle-processes", type=int, default=1, help="job processes kept warm (default 1)")
    p.add_argument("--executor", choices=("process", "thread"), default="process",
                   help="run each job in its own process (default) or in a thread of this one")
    p.add_argument("--http-port", type=int, default=8081,
                   help="the worker's health endpoint (LiveKit's; 0 = any free port; default 8081)")
    p.set_defaults(func=run)


def run(args) -> int:
    from realtime.cli import CLIError

    try:
        from syncvid_client.livekit_worker import (
            AvatarJob,
            SyncVidLoad,
            build_server,
            healthz_url,
            run_worker,
        )
    except ImportError as exc:
        raise CLIError(f"the LiveKit worker needs livekit-agents ({exc.name} missing): "
                       "pip install -e 'clients/python[livekit]'") from None

    missing = [name for name, flag, env in (("--livekit-url", args.livekit_url, "LIVEKIT_URL"),
                                            ("--api-key", args.api_key, "LIVEKIT_API_KEY"),
                                            ("--api-secret", args.api_secret, "LIVEKIT_API_SECRET"))
               if not (flag or os.environ.get(env))]
    if missing:
        raise CLIError(f"no LiveKit credentials: give {', '.join(missing)} or set LIVEKIT_URL, LIVEKIT_API_KEY "
                       "and LIVEKIT_API_SECRET")
    if args.capacity is not None and args.capacity < 1:
        raise CLIError(f"--capacity must be at least 1; got {args.capacity}")
    if not 0 < args.load_threshold <= 1:
        raise CLIError(f"--load-threshold must be in (0, 1]; got {args.load_threshold}")
    if args.idle_processes < 0:
        raise CLIError(f"--idle-processes must be >= 0; got {args.idle_processes}")
    try:
        load = SyncVidLoad(healthz_url(args.syncvid_url), args.capacity)
    except ValueError as exc:
        raise CLIError(f"--syncvid-url: {exc}") from None
    try:
        health = load.health()
        log.info("syncvid server %s: %s of %s sessions in use", args.syncvid_url, health.get("sessions"),
                 args.capacity or health.get("max_sessions"))
    except (OSError, ValueError) as exc:  # not fatal: in a deployment the server may start after us
        log.warning("syncvid server %s not reachable yet (%s): the worker reports full until it is", load.url, exc)
    job = AvatarJob(syncvid_url=args.syncvid_url, syncvid_token=args.syncvid_token or os.environ.get("SYNCVID_TOKEN"),
                    video=args.video)
    server = build_server(job, load, agent_name=args.agent_name, load_threshold=args.load_threshold,
                          livekit_url=args.livekit_url, api_key=args.api_key, api_secret=args.api_secret,
                          idle_processes=args.idle_processes, executor=args.executor, http_port=args.http_port)
    return run_worker(server)
