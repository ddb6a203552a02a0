"""Who may use the server, sans I/O: bearer tokens, the browser Origin allow-list, and the
"no token beyond localhost" start-up rule. The HTTP layer (app.py) asks ``AccessPolicy.check`` once
per request, before any WebSocket upgrade, and turns a refusal into its status code.

Tokens are compared in constant time (``hmac.compare_digest``) against every configured token, and
never appear in a log line or an error message.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from realtime.errors import ServerStartError

TOKEN_ENV = "SYNCVID_TOKEN"  # the token, when it is not given on the command line
# paths that reveal nothing private and stay open (load balancers and scrapers carry no token)
OPEN_PATHS = frozenset({"/healthz", "/metrics"})
# the page itself and its files: static, the same for everyone; what they call needs the token
PAGE_PATHS = frozenset({"/", "/app.js", "/library.js", "/style.css", "/favicon.ico"})
MIN_TOKEN_CHARS = 16  # a guessable token is no access control


@dataclass(frozen=True)
class Denied:
    status: int  # 401 (no or wrong token) or 403 (a browser page of another origin)
    code: str  # "unauthorized" | "forbidden_origin"
    message: str


def load_tokens(token: str | None, token_file: str | None, environ: dict[str, str] | None = None) -> frozenset[str]:
    """The accepted tokens: ``--token``, else ``$SYNCVID_TOKEN``, plus every non-empty, non-comment
    line of ``--token-file``. Raises ``ServerStartError`` for an unreadable file or a short token."""
    env = os.environ if environ is None else environ
    tokens: set[str] = set()
    given = token if token is not None else env.get(TOKEN_ENV)
    if given:
        tokens.add(given.strip())
    if token_file:
        p = Path(token_file).expanduser()
        try:
            lines = p.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise ServerStartError(f"--token-file {p} cannot be read ({e.__class__.__name__}): give a text file "
                                   "with one token per line") from None
        tokens.update(line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#"))
        if not tokens:
            raise ServerStartError(f"--token-file {p} holds no token: put one token per line")
    short = [t for t in tokens if len(t) < MIN_TOKEN_CHARS]
    if short:
        raise ServerStartError(f"a token is shorter than {MIN_TOKEN_CHARS} characters: use a long random one, "
                               "e.g. `python -c 'import secrets; print(secrets.token_urlsafe(24))'`")
    return frozenset(tokens)


def is_loopback_host(host: str) -> bool:
    """Whether binding ``host`` keeps the server on this machine (names other than localhost count
    as reachable from outside)."""
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, tokens: frozenset[str], insecure: bool) -> None:
    """The start-up rule: a server reachable from other machines needs a token unless the operator
    says ``--insecure``."""
    if not tokens and not insecure and not is_loopback_host(host):
        raise ServerStartError(f"--host {host} makes the server reachable from other machines, and no token is "
                               "set: pass --token TOKEN (or set SYNCVID_TOKEN, or --token-file FILE), or "
                               "--insecure to serve anyone who can reach it")


def origin_of(url: str) -> str | None:
    """``scheme://host[:port]`` of an Origin header or URL, lower-cased, default ports dropped."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    default = {"http": 80, "https": 443}[parts.scheme]
    return f"{parts.scheme}://{host}" + (f":{port}" if port and port != default else "")


class AccessPolicy:
    """``check(path, headers, query, own_origin)``: None (allowed) or ``Denied``.

    ``tokens``: empty means no token is needed. ``allowed_origins``: origins (``https://app.example``)
    whose pages may open ``/ws``, besides the server's own; ``"*"`` allows any. A request without
    an Origin header (an SDK, an agent, curl) is judged by its token alone.
    """

    def __init__(self, tokens: frozenset[str] = frozenset(), allowed_origins: list[str] | tuple[str, ...] = ()) -> None:
        self.tokens = tuple(t.encode() for t in tokens)
        self.any_origin = "*" in allowed_origins
        self.origins = frozenset(o for o in (origin_of(x) for x in allowed_origins if x != "*") if o)

    @property
    def needs_token(self) -> bool:
        return bool(self.tokens)

    def token_ok(self, presented: str | None) -> bool:
        if not self.tokens:
            return True
        if not presented:
            return False
        given = presented.encode("utf-8", errors="replace")
        ok = False
        for t in self.tokens:  # every token compared, so the time says nothing about which matched
            ok |= hmac.compare_digest(given, t)
        return ok

    def origin_ok(self, origin: str | None, own_origins: tuple[str, ...]) -> bool:
        if origin is None or self.any_origin:
            return True
        o = origin_of(origin)
        return o is not None and (o in self.origins or o in {origin_of(x) for x in own_origins})

    def check(self, path: str, headers: Mapping[str, str], query: Mapping[str, str],
              own_origins: tuple[str, ...]) -> Denied | None:
        """``headers``: case-insensitive (as a request's are)."""
        if path in OPEN_PATHS or path in PAGE_PATHS:
            return None
        origin = headers.get("Origin")
        if path == "/ws" and not self.origin_ok(origin, own_origins):
            return Denied(403, "forbidden_origin", "this server does not accept WebSocket connections from pages "
                          "of that origin: add it to allowed_origins in the server's config")
        if not self.token_ok(bearer(headers) or query.get("token")):
            return Denied(401, "unauthorized", "this server needs a token: send 'Authorization: Bearer TOKEN' "
                          "or add ?token=TOKEN to the URL")
        return None


def bearer(headers: Mapping[str, str]) -> str | None:
    value = headers.get("Authorization")
    if not value:
        return None
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    """A server TLS context from PEM files; ``ServerStartError`` naming the file that is wrong."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(cert, key)
    except FileNotFoundError as e:
        raise ServerStartError(f"--tls-cert/--tls-key: {e.filename} does not exist; pass PEM files") from None
    except (ssl.SSLError, OSError) as e:
        raise ServerStartError(f"--tls-cert {cert} / --tls-key {key} cannot be used ({e}): pass a PEM certificate "
                               "chain and its unencrypted PEM private key") from None
    return ctx
