"""Checks `syncvid serve` makes before loading any model, so a mistake costs no wait and leaks nothing."""

from __future__ import annotations

import errno
import socket

from realtime.errors import ServerStartError


def check_bindable(host: str, port: int) -> None:
    """Raises ``ServerStartError`` naming ``--host``/``--port`` when the server could not listen there.

    Binds every address ``host`` resolves to the way the server will (SO_REUSEADDR), then lets go.
    Port 0 (any free port) always binds; the port's range is checked by the config
    (``RealtimeConfig``), which every caller loads first.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise ServerStartError(f"--host {host} is not an address of this machine ({e.strerror}): give an IP "
                               "address such as 127.0.0.1 or 0.0.0.0") from None
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                s.bind(address)
            except OSError as e:
                raise ServerStartError(bind_error_message(host, port, e)) from None


def bind_error_message(host: str, port: int, e: OSError) -> str:
    if e.errno == errno.EADDRINUSE:
        return (f"port {port} on {host} is already in use (another syncvid serve?): stop that program, or pick "
                "another port with --port N (--port 0 takes any free one)")
    if e.errno == errno.EACCES:
        return f"port {port} on {host} needs administrator rights: pick a port above 1023 with --port N"
    if e.errno == errno.EADDRNOTAVAIL:
        return f"--host {host} is not an address of this machine: give 127.0.0.1, 0.0.0.0 or one of its own IPs"
    return f"cannot listen on {host}:{port} ({e.strerror}): check --host and --port"
