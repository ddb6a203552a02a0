"""Who may connect: tokens, the Origin allow-list, TLS, the exposure rule, per-client and per-session
limits, and shutdown closing every session with 1001."""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import urllib.request

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from realtime.errors import ServerStartError
from realtime.server.access import AccessPolicy, check_exposure, load_tokens, origin_of
from realtime.server.app import RealtimeServer
from tests.fakes import make_config, make_engine, running_server

TOKEN = "t0ken-for-the-tests-0123456789"


def http(url: str, headers: dict | None = None, context=None) -> tuple[int, dict | str]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5, context=context) as r:
            body = r.read().decode()
            status = r.status
    except urllib.error.HTTPError as e:
        body, status = e.read().decode(), e.code
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body


@pytest.fixture
async def locked():
    """A server that needs TOKEN and accepts pages of https://app.example besides its own."""
    async with running_server(make_config(allowed_origins=["https://app.example"]),
                              access=AccessPolicy(frozenset({TOKEN}), ("https://app.example",))) as srv:
        yield srv


# ---- the rules, sans I/O --------------------------------------------------------------------------
def test_tokens_come_from_the_flag_the_environment_or_a_file(tmp_path):
    assert load_tokens(None, None, {}) == frozenset()
    assert load_tokens(TOKEN, None, {}) == {TOKEN}
    assert load_tokens(None, None, {"SYNCVID_TOKEN": TOKEN}) == {TOKEN}
    f = tmp_path / "tokens"
    f.write_text(f"# agents\n{TOKEN}\n\n  {TOKEN}-second \n")
    assert load_tokens(None, str(f), {}) == {TOKEN, TOKEN + "-second"}
    with pytest.raises(ServerStartError, match="shorter than 16 characters"):
        load_tokens("short", None, {})
    with pytest.raises(ServerStartError, match="cannot be read"):
        load_tokens(None, str(tmp_path / "nope"), {})
    f.write_text("# nothing\n")
    with pytest.raises(ServerStartError, match="holds no token"):
        load_tokens(None, str(f), {})


def test_beyond_localhost_needs_a_token_or_insecure():
    check_exposure("127.0.0.1", frozenset(), insecure=False)
    check_exposure("localhost", frozenset(), insecure=False)
    check_exposure("::1", frozenset(), insecure=False)
    with pytest.raises(ServerStartError, match="reachable from other machines, and no token is set"):
        check_exposure("0.0.0.0", frozenset(), insecure=False)
    check_exposure("0.0.0.0", frozenset({TOKEN}), insecure=False)
    check_exposure("0.0.0.0", frozenset(), insecure=True)


def test_origins_and_paths():
    assert origin_of("HTTPS://App.Example:443/x") == "https://app.example"
    assert origin_of("http://127.0.0.1:8080") == "http://127.0.0.1:8080"
    assert origin_of("null") is None and origin_of("file:///x") is None
    policy = AccessPolicy(frozenset({TOKEN}), ("https://app.example",))
    own = ("http://127.0.0.1:8080",)
    assert policy.check("/healthz", {}, {}, own) is None and policy.check("/metrics", {}, {}, own) is None
    assert policy.check("/", {}, {}, own) is None  # the page; what it calls needs the token
    assert policy.check("/avatars", {}, {}, own).status == 401
    assert policy.check("/ws", {"Authorization": "Bearer " + TOKEN}, {}, own) is None
    assert policy.check("/ws", {}, {"token": TOKEN}, own) is None
    assert policy.check("/ws", {"Authorization": "Basic " + TOKEN}, {}, own).status == 401
    assert policy.check("/ws", {}, {"token": TOKEN[:-1]}, own).status == 401
    evil = {"Origin": "https://evil.example", "Authorization": "Bearer " + TOKEN}
    assert policy.check("/ws", evil, {}, own).status == 403
    assert policy.check("/ws", {**evil, "Origin": "https://app.example"}, {}, own) is None
    assert policy.check("/ws", {**evil, "Origin": "http://127.0.0.1:8080"}, {}, own) is None
    assert AccessPolicy(allowed_origins=("*",)).check("/ws", evil, {}, own) is None


# ---- on a live server -------------------------------------------------------------------------------
async def _start_sdk(url: str, **kw):
    ws = await connect(url, **kw)
    await ws.send(json.dumps({"type": "start", "options": {"video": "none"}}))
    started = json.loads(await ws.recv())
    return ws, started


async def test_a_token_is_needed_for_ws_and_avatars_but_not_health(locked, caplog):
    caplog.set_level(logging.DEBUG)
    base = f"http://127.0.0.1:{locked.port}"
    ws_url = f"ws://127.0.0.1:{locked.port}/ws"
    for kw in ({}, {"additional_headers": {"Authorization": "Bearer wrong-token-0123456789"}}):
        with pytest.raises(InvalidStatus) as e:
            await connect(ws_url, **kw)
        assert e.value.response.status_code == 401  # refused before the upgrade
        assert json.loads(e.value.response.body)["error"]["code"] == "unauthorized"
    status, body = await asyncio.to_thread(http, base + "/avatars")
    assert status == 401 and "needs a token" in body["error"]["message"]
    status, body = await asyncio.to_thread(http, base + "/avatars", {"Authorization": "Bearer " + TOKEN})
    assert status == 200 and body["avatars"][0]["name"] == "default"
    assert (await asyncio.to_thread(http, base + "/healthz"))[0] == 200
    assert (await asyncio.to_thread(http, base + "/metrics"))[0] == 200
    for kw, url in (({"additional_headers": {"Authorization": "Bearer " + TOKEN}}, ws_url),
                    ({}, ws_url + "?token=" + TOKEN)):
        ws, started = await _start_sdk(url, **kw)
        assert started["event"] == "session_started"
        await ws.close()
    server_lines = [r.getMessage() for r in caplog.records if r.name.split(".")[0] in ("realtime", "aiohttp")]
    assert server_lines and not [line for line in server_lines if TOKEN in line]  # never logged by the server


async def test_a_page_of_another_origin_is_refused_before_the_upgrade(locked):
    ws_url = f"ws://127.0.0.1:{locked.port}/ws?token={TOKEN}"
    with pytest.raises(InvalidStatus) as e:
        await connect(ws_url, origin="https://evil.example")
    assert e.value.response.status_code == 403
    for origin in ("https://app.example", f"http://127.0.0.1:{locked.port}"):
        ws, started = await _start_sdk(ws_url, origin=origin)
        assert started["event"] == "session_started"
        await ws.close()


async def test_connections_per_client_address_are_capped(server):
    cap = server.config.limits.max_connections_per_client
    url = f"ws://127.0.0.1:{server.port}/ws"
    held = [await connect(url) for _ in range(cap)]
    try:
        with pytest.raises(InvalidStatus) as e:
            await connect(url)
        assert e.value.response.status_code == 429
    finally:
        for ws in held:
            await ws.close()
    for _ in range(50):
        if not server._per_client:
            break
        await asyncio.sleep(0.02)
    assert not server._per_client
    await (await connect(url)).close()  # and the address may connect again


async def test_a_session_ends_at_the_time_limit():
    config = make_config()
    config.limits.max_session_s = 0.6
    async with running_server(config) as srv:
        ws, started = await _start_sdk(f"ws://127.0.0.1:{srv.port}/ws")
        ended = None
        async for message in ws:
            if isinstance(message, str) and json.loads(message).get("event") == "session_ended":
                ended = json.loads(message)
        assert ended["reason"] == "time limit (0.01 min)" and ws.close_code == 1000
        for _ in range(50):
            if not srv.sessions:
                break
            await asyncio.sleep(0.02)
        assert not srv.sessions


async def test_shutdown_closes_every_session_with_1001():
    engine = make_engine()
    srv = RealtimeServer(make_config(), engine)
    await srv.start()
    url = f"ws://127.0.0.1:{srv.port}/ws"
    a, _ = await _start_sdk(url)
    b, _ = await _start_sdk(url)
    t0 = asyncio.get_running_loop().time()
    await srv.close()
    assert asyncio.get_running_loop().time() - t0 < 5.0
    for ws in (a, b):
        with pytest.raises(ConnectionClosed):
            while True:
                await ws.recv()
        assert ws.close_code == 1001
    assert not srv.sessions and not [t for t in asyncio.all_tasks() if t.get_name().startswith("s")
                                     and t.get_name()[1:2].isdigit()]
    engine.close()


async def test_tls_serves_https_and_wss(tmp_path):
    cert, key = _self_signed(tmp_path)
    async with running_server(make_config(tls_cert=str(cert), tls_key=str(key))) as srv:
        assert srv.url.startswith("https://")
        client = ssl.create_default_context(cafile=str(cert))
        status, body = await asyncio.to_thread(http, f"https://localhost:{srv.port}/healthz", None, client)
        assert status == 200 and body["status"] == "ok"
        ws, started = await _start_sdk(f"wss://localhost:{srv.port}/ws", ssl=client)
        assert started["event"] == "session_started"
        await ws.close()
        with pytest.raises(Exception):  # plain http to a TLS port gets no answer
            await asyncio.to_thread(http, f"http://127.0.0.1:{srv.port}/healthz")


def test_a_wrong_certificate_fails_at_start_naming_it(tmp_path):
    from realtime.server.access import tls_context

    bad = tmp_path / "cert.pem"
    bad.write_text("not a certificate")
    with pytest.raises(ServerStartError, match="cannot be used"):
        tls_context(str(bad), str(bad))
    with pytest.raises(ServerStartError, match="does not exist"):
        tls_context(str(tmp_path / "none.pem"), str(bad))


def _self_signed(folder):
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.mark.parametrize("argv, expected", [
    (["--host", "0.0.0.0"], "--host 0.0.0.0 makes the server reachable from other machines, and no token is set"),
    (["--token", "short"], "a token is shorter than 16 characters"),
    (["--tls-cert", "cert.pem"], "TLS needs both a certificate and its key"),
])
def test_serve_refuses_to_start_with_one_line(argv, expected, capsys, monkeypatch):
    from realtime.cli import main

    monkeypatch.delenv("SYNCVID_TOKEN", raising=False)
    assert main(["serve", "--port", "0", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("syncvid serve: error: ") and expected in err[0], err


async def test_the_python_client_says_a_token_is_needed(locked):
    from syncvid_client import AvatarClient, ConnectError

    url = f"ws://127.0.0.1:{locked.port}/ws"
    with pytest.raises(ConnectError, match=r"needs a token.*pass token=\.\.\. to AvatarClient"):
        async with AvatarClient(url, video="none"):
            pass
    async with AvatarClient(url, video="none", token=TOKEN) as client:
        assert client.started.session
