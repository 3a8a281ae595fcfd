"""Keys from a JWKS URL (``jwks_url``, SPEC section 10): ``signout.keyset`` directly, then end to end.

Every test serves its JWK Set over real HTTP from a ``JWKSServer`` on 127.0.0.1 that it
controls (its keys, status, delay, size) and that counts the fetches it answers. The
key set's clock (monotonic seconds, ``KeySet.clock``) is a ``Clock`` the test moves, so
rate limits and refresh ages are crossed without sleeping.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from starlette.testclient import TestClient

from signout import MemoryStore, Revoker, SignOutMiddleware, SignOutWSGIMiddleware
from signout.config import build_settings
from signout.errors import ConfigError, KeysUnavailable
from signout.keyset import KeySet, download, parse_jwks
from signout.tokens import Source

from .apps import starlette_app, wsgi_app
from .conftest import ISS, PEP3333Transport
from .helpers import Clock, asgi_status

ADAPTERS = ("asgi", "wsgi")


# ---- keys, tokens and the JWKS server ------------------------------------------------------------


@functools.cache
def rsa_key(name: str) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@functools.cache
def ec_key(name: str) -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def jwk(name: str, **more: Any) -> dict[str, Any]:
    """The public JWK of RSA key ``name``, its ``kid`` the name, for RS256 unless ``more`` says otherwise."""
    data: dict[str, Any] = RSAAlgorithm.to_jwk(rsa_key(name).public_key(), as_dict=True)
    data.update({"kid": name, "use": "sig", "alg": "RS256"})
    data.update(more)
    return {k: v for k, v in data.items() if v is not None}


def token(name: str, *, alg: str = "RS256", kid: str | None = "", **claims: Any) -> str:
    """A token signed by RSA key ``name``; its ``kid`` is the name unless given."""
    now = int(time.time())
    body = {"iss": ISS, "sub": "alice", "sid": "s-1", "jti": uuid.uuid4().hex, "iat": now, "exp": now + 600}
    body.update(claims)
    headers = {"kid": name if kid == "" else kid} if kid is not None else None
    return jwt.encode(body, rsa_key(name), algorithm=alg, headers=headers)


def forged(header: dict[str, Any], signature: bytes = b"", *, hmac_key: bytes | None = None) -> str:
    """A token with this header and ordinary claims, signed with HMAC over ``hmac_key`` or not at all."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")

    now = int(time.time())
    claims = {"iss": ISS, "sub": "mallory", "jti": "j-x", "iat": now, "exp": now + 600}
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    if hmac_key is not None:
        signature = hmac.new(hmac_key, signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def public_pem(name: str) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return (
        rsa_key(name)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


class JWKSServer:
    """A JWK Set over HTTP on 127.0.0.1: ``keys`` (or ``body``), ``status``, ``delay``; ``requests`` counts GETs."""

    def __init__(self, port: int = 0) -> None:
        self.keys: list[dict[str, Any]] = [jwk("a")]
        self.status = 200
        self.delay = 0.0
        self.body: bytes | None = None  # instead of {"keys": keys}, sent without Content-Length
        self.requests = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self.port = port
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/.well-known/jwks.json"

    def start(self) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with owner._lock:
                    owner.requests += 1
                if owner.delay:
                    time.sleep(owner.delay)
                body = owner.body if owner.body is not None else json.dumps({"keys": owner.keys}).encode()
                try:
                    self.send_response(owner.status)
                    self.send_header("Content-Type", "application/json")
                    if owner.body is None:
                        self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:  # the client gave up (a timeout, a size cap)
                    pass

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


@pytest.fixture
def server() -> Iterator[JWKSServer]:
    s = JWKSServer()
    yield s
    s.stop()


@pytest.fixture
def down_url() -> Iterator[str]:
    """The URL of a JWKS server that is not running (yet): nothing listens on its port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    yield f"http://127.0.0.1:{port}/jwks"


def keyset(url: str, clock: Clock | None = None, algorithms: tuple[str, ...] = ("RS256",)) -> KeySet:
    return KeySet(url, algorithms, clock=clock or Clock())


def settle(ks: KeySet, fetches: int, timeout: float = 5.0) -> None:
    """Wait until the key set has attempted ``fetches`` fetches, and the last has ended."""
    deadline = time.monotonic() + timeout
    while (ks.fetches < fetches or ks._flight is not None) and time.monotonic() < deadline:
        time.sleep(0.005)
    assert ks.fetches >= fetches and ks._flight is None, f"{ks.fetches} fetches, wanted {fetches}"


# ---- parse_jwks and download: what a JWK Set may hold -------------------------------------------


def test_encryption_keys_and_keys_for_other_algorithms_are_left_out() -> None:
    ec_jwk = ECAlgorithm.to_jwk(ec_key("e").public_key(), as_dict=True) | {"kid": "ec"}  # no alg: ES256 inferred
    document = {
        "keys": [
            jwk("sig"),
            jwk("enc", use="enc"),
            jwk("ps", alg="PS256"),
            jwk("noalg", alg=None),  # RSA without alg: RS256, as PyJWT infers it
            jwk("ops", key_ops=["encrypt"]),
            ec_jwk,
            {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},  # a symmetric key is never published, never used
            "not an object",
            {"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"},
        ]
    }
    keys, _, skipped = parse_jwks(json.dumps(document).encode(), ("RS256",))
    assert [k.kid for k in keys] == ["sig", "noalg"]
    assert all(k.algorithms == frozenset({"RS256"}) for k in keys)
    assert len(skipped) == 7
    assert any("'enc'" in why and "use" in why for why in skipped)
    assert any("'PS256'" in why for why in skipped)
    assert any("'ES256'" in why for why in skipped)
    assert any("'HS256'" in why for why in skipped)


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"<html>not json</html>", "is not JSON"),
        (b"[1, 2]", "is not a JWK Set"),
        (b'{"kid": "a"}', "is not a JWK Set"),
        (b'{"keys": {"a": 1}}', "is not a JWK Set"),
        (b"[" * 100_000, "is not JSON"),
    ],
)
def test_a_document_that_is_not_a_jwk_set_is_refused(body: bytes, why: str) -> None:
    from signout.keyset import JWKSRefused

    with pytest.raises(JWKSRefused, match=why):
        parse_jwks(body, ("RS256",))


def test_download_refuses_what_is_too_large_slow_or_not_200(server: JWKSServer) -> None:
    from signout.keyset import JWKSRefused

    assert json.loads(download(server.url))["keys"][0]["kid"] == "a"
    server.body = b'{"keys": [], "pad": "' + b"x" * (2 << 20) + b'"}'  # 2 MB, no Content-Length
    with pytest.raises(JWKSRefused, match="more than the 1048576 bytes"):
        download(server.url)
    server.body = None
    server.status = 500
    with pytest.raises(JWKSRefused, match="500"):
        download(server.url)
    server.status, server.delay = 200, 1.0
    started = time.monotonic()
    with pytest.raises(JWKSRefused, match=r"timed out|longer than"):
        download(server.url, timeout=0.2)
    assert time.monotonic() - started < 0.9


def test_a_redirect_is_not_followed(server: JWKSServer) -> None:
    from signout.keyset import JWKSRefused

    server.status = 302  # no Location needed: it must fail before following anything
    with pytest.raises(JWKSRefused, match="302"):
        download(server.url)


# ---- KeySet: the cache, the rate limit, the single flight ----------------------------------------


def test_a_good_fetch_makes_the_set_ready_and_a_refresh_that_changes_nothing_keeps_the_version(
    server: JWKSServer,
) -> None:
    clock = Clock()
    ks = keyset(server.url, clock)
    assert not ks.ready and ks.keys == () and ks.may_fetch()
    ks.refresh_sync()
    assert ks.ready and [k.kid for k in ks.keys] == ["a"] and ks.version == 1
    assert not ks.may_fetch()  # within min_interval of the last fetch
    ks.refresh_sync()
    assert server.requests == 1  # the rate limit held it
    clock.advance(ks.min_interval)
    ks.refresh_sync()
    assert server.requests == 2 and ks.version == 1  # the same keys: the verifier's caches survive
    server.keys = [jwk("a"), jwk("b")]
    clock.advance(ks.min_interval)
    ks.refresh_sync()
    assert ks.version == 2 and [k.kid for k in ks.keys] == ["a", "b"]


def test_a_failed_fetch_keeps_the_last_good_set_until_max_stale(
    server: JWKSServer, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    ks = keyset(server.url, clock)
    ks.refresh_sync()
    server.status = 503
    clock.advance(ks.refresh_every)
    with caplog.at_level(logging.WARNING, logger="signout"):
        ks.refresh_sync()
    assert ks.ready and [k.kid for k in ks.keys] == ["a"] and ks.version == 1
    warning = next(r for r in caplog.records if r.levelno == logging.WARNING)
    assert server.url in warning.getMessage() and "503" in warning.getMessage()
    assert "keeping the keys" in warning.getMessage()
    assert ks.due == clock() + ks.min_interval  # retried in the background, not on every request
    clock.advance(ks.max_stale)
    ks.refresh_soon()  # past max_stale: dropped at once, before the fetch ends
    assert not ks.ready and ks.keys == () and ks.version == 2
    settle(ks, 3)
    assert isinstance(ks.unavailable(), KeysUnavailable)


def test_threads_that_need_the_set_at_once_share_one_fetch(server: JWKSServer) -> None:
    ks = keyset(server.url)
    server.delay = 0.3
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda _: ks.refresh_sync(), range(16)))
    assert server.requests == 1 and ks.ready


def test_event_loops_that_need_the_set_at_once_share_one_fetch(server: JWKSServer) -> None:
    ks = keyset(server.url)
    server.delay = 0.2

    async def many() -> None:
        await asyncio.gather(*(ks.refresh() for _ in range(200)))

    with ThreadPoolExecutor(4) as pool:  # four event loops, one fetch
        list(pool.map(lambda _: asyncio.run(many()), range(4)))
    assert server.requests == 1 and ks.ready


def test_an_unready_set_retries_sooner_than_a_ready_one(down_url: str) -> None:
    clock = Clock()
    ks = keyset(down_url, clock)
    ks.refresh_sync()
    assert not ks.ready and not ks.may_fetch()
    clock.advance(ks.unready_interval)
    assert ks.may_fetch()
    assert "no fetch has succeeded yet" in str(ks.unavailable())
    assert down_url in str(ks.unavailable())


def test_credentials_in_the_url_never_reach_a_log_line(down_url: str, caplog: pytest.LogCaptureFixture) -> None:
    url = down_url.replace("http://", "http://user:hunter2@")
    ks = keyset(url)
    with caplog.at_level(logging.DEBUG, logger="signout"):
        ks.refresh_sync()
    assert caplog.records and all("hunter2" not in r.getMessage() for r in caplog.records)


# ---- the verifier: a version change drops what the old keys verified ------------------------------


def test_a_cached_token_dies_with_the_key_that_verified_it(server: JWKSServer) -> None:
    settings = build_settings(jwks_url=server.url)
    verifier, ks = settings.verifier, settings.keyset
    assert ks is not None
    ks.clock = clock = Clock()
    ks.refresh_sync()
    raw = token("a")
    assert verifier.verify(raw, Source.HEADER, time.time()).sub == "alice"
    assert verifier.cached(raw, time.time()) is not None
    server.keys = [jwk("b")]
    clock.advance(ks.refresh_every)
    ks.refresh_sync()
    assert verifier.cached(raw, time.time()) is None
    from signout.errors import UnknownKey

    with pytest.raises(UnknownKey):
        verifier.verify(raw, Source.HEADER, time.time())


# ---- config -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_no_key_and_no_jwks_url_is_a_config_error_naming_key(adapter: str) -> None:
    cls: Any = SignOutMiddleware if adapter == "asgi" else SignOutWSGIMiddleware
    with pytest.raises(ConfigError) as caught:
        cls(starlette_app() if adapter == "asgi" else wsgi_app())
    assert caught.value.kwarg == "key" and "jwks_url" in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        "http://op.example/jwks",  # plain http off loopback: keys could be swapped on the way
        "ftp://127.0.0.1/jwks",
        "file:///etc/jwks.json",
        "https://",
        "op.example/jwks",
        "https://op.example:port/jwks",
        "https://op.example/jwks\r\nX: y",
        42,
    ],
)
def test_a_bad_jwks_url_is_a_config_error(url: Any) -> None:
    with pytest.raises(ConfigError) as caught:
        build_settings(jwks_url=url)
    assert caught.value.kwarg == "jwks_url"


@pytest.mark.parametrize("url", ["https://op.example/jwks", "http://127.0.0.1:8080/jwks", "http://localhost/j"])
def test_https_or_loopback_jwks_urls_are_accepted_and_nothing_is_fetched_at_construction(url: str) -> None:
    settings = build_settings(jwks_url=url)
    assert settings.keyset is not None and settings.keyset.fetches == 0
    assert settings.keyset.algorithms == ("RS256",)  # OIDC Core's default, when algorithms is not given


@pytest.mark.parametrize("algorithms", [["HS256"], ["HS256", "HS512"]])
def test_jwks_url_with_hmac_algorithms_is_a_config_error(algorithms: list[str]) -> None:
    with pytest.raises(ConfigError) as caught:
        build_settings(jwks_url="https://op.example/jwks", algorithms=algorithms)
    assert caught.value.kwarg == "algorithms" and "jwks_url" in str(caught.value)


# ---- end to end: both adapters, memory and Redis ---------------------------------------------------


def guarded(adapter: str, url: str, store: str = "memory", redis_url: str | None = None, **kwargs: Any) -> Any:
    """The test app behind ``adapter`` with keys from ``url``; its key set on a ``Clock``."""
    where: dict[str, Any] = {"redis_url": redis_url} if store == "redis" else {"store": MemoryStore(warn=False)}
    kwargs.setdefault("algorithms", ["RS256"])
    if adapter == "asgi":
        app: Any = SignOutMiddleware(starlette_app(), jwks_url=url, **where, **kwargs)
    else:
        app = SignOutWSGIMiddleware(wsgi_app(), jwks_url=url, **where, **kwargs)
    app.keyset.clock = Clock()
    return app


def client(adapter: str, app: Any) -> Any:
    if adapter == "asgi":
        return TestClient(app, base_url="https://app.test")  # no "with": a fresh loop per request
    return httpx.Client(transport=PEP3333Transport(app), base_url="https://app.test")  # type: ignore[arg-type]


def get(c: Any, raw: str | None) -> Any:
    return c.get("/me", headers={"Authorization": f"Bearer {raw}"} if raw is not None else {})


@pytest.mark.parametrize("store", ["memory", "redis"])
@pytest.mark.parametrize("adapter", ADAPTERS)
def test_a_token_signed_by_a_published_key_passes_and_a_logout_kills_it(
    adapter: str, store: str, server: JWKSServer, request: pytest.FixtureRequest
) -> None:
    redis_url = request.getfixturevalue("redis_url") if store == "redis" else None
    app = guarded(adapter, server.url, store, redis_url)
    c = client(adapter, app)
    raw = token("a")
    r = get(c, raw)
    assert r.status_code == 200 and r.json()["claims"]["sub"] == "alice"
    assert get(c, raw).status_code == 200
    assert server.requests == 1  # fetched once, then cached
    assert c.post("/auth/logout", headers={"Authorization": f"Bearer {raw}"}).status_code == 200
    r = get(c, raw)
    assert r.status_code == 401 and r.json()["message"] == "Token has been revoked"


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_before_the_first_good_fetch_a_token_gets_503_then_passes_once_the_keys_are_up(
    adapter: str, down_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = guarded(adapter, down_url)
    c = client(adapter, app)
    with caplog.at_level(logging.WARNING, logger="signout"):
        r = get(c, token("a"))
    assert r.status_code == 503 and r.headers["retry-after"] == "5"
    assert r.json() == {
        "error": "temporarily_unavailable",
        "message": "The token signing keys are unavailable; try again shortly",
    }
    assert any(down_url in rec.getMessage() for rec in caplog.records if rec.levelno == logging.WARNING)
    assert get(c, None).status_code == 200  # no token: nothing to verify, nothing to refuse
    server = JWKSServer(port=int(down_url.rsplit(":", 1)[1].split("/")[0]))  # the OP comes up
    try:
        app.keyset.clock.advance(app.keyset.unready_interval)
        r = get(c, token("a"))
        assert r.status_code == 200, r.text
    finally:
        server.stop()


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_a_token_with_a_new_kid_fetches_the_set_once_and_passes(adapter: str, server: JWKSServer) -> None:
    app = guarded(adapter, server.url)
    c = client(adapter, app)
    assert get(c, token("a")).status_code == 200
    server.keys = [jwk("a"), jwk("b")]  # the OP rotates
    app.keyset.clock.advance(app.keyset.min_interval)
    assert get(c, token("b")).status_code == 200
    assert get(c, token("b")).status_code == 200
    assert server.requests == 2


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_a_removed_key_stops_verifying_after_the_background_refresh(adapter: str, server: JWKSServer) -> None:
    app = guarded(adapter, server.url)
    c = client(adapter, app)
    raw = token("a")
    assert get(c, raw).status_code == 200  # now in the verified-claims cache
    server.keys = [jwk("b")]
    server.delay = 0.3  # the refresh is still under way when the request is answered
    app.keyset.clock.advance(app.keyset.refresh_every)
    # The request that notices the set is old starts a refresh in the background and goes on.
    assert get(c, raw).status_code == 200
    settle(app.keyset, 2)
    r = get(c, raw)
    assert r.status_code == 401 and r.json()["message"] == "Token signing key is unknown"
    assert get(c, token("b")).status_code == 200
    assert server.requests == 2


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_an_unknown_kid_after_a_fetch_is_an_invalid_token(adapter: str, server: JWKSServer) -> None:
    app = guarded(adapter, server.url)
    c = client(adapter, app)
    assert get(c, token("a")).status_code == 200
    app.keyset.clock.advance(app.keyset.min_interval)
    r = get(c, token("stranger"))
    assert r.status_code == 401 and 'error="invalid_token"' in r.headers["www-authenticate"]
    assert server.requests == 2  # one fetch for the unknown kid ...
    assert get(c, token("stranger")).status_code == 401
    assert server.requests == 2  # ... and none again within min_interval


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_keys_for_encryption_or_other_algorithms_never_verify(adapter: str, server: JWKSServer) -> None:
    server.keys = [jwk("a"), jwk("enc", use="enc"), jwk("ps", alg="PS256")]
    app = guarded(adapter, server.url)
    c = client(adapter, app)
    assert get(c, token("a")).status_code == 200
    assert get(c, token("enc")).status_code == 401
    assert get(c, token("ps")).status_code == 401
    assert server.requests == 1


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_alg_confusion_and_alg_none_are_refused(adapter: str, server: JWKSServer) -> None:
    app = guarded(adapter, server.url)
    c = client(adapter, app)
    assert get(c, token("a")).status_code == 200
    confused = forged({"alg": "HS256", "kid": "a"}, hmac_key=public_pem("a"))
    r = get(c, confused)
    assert r.status_code == 401 and r.json()["message"] == "Token algorithm is not allowed"
    for header in ({"alg": "none", "kid": "a"}, {"alg": "None"}, {"alg": "RS256", "kid": "a"}):
        assert get(c, forged(header)).status_code == 401
    assert server.requests == 1


@pytest.mark.parametrize(
    "failure", ["status 500", "hangs", "2 MB", "not JSON", "JSON without keys", "no usable key", "connection refused"]
)
@pytest.mark.parametrize("adapter", ADAPTERS)
def test_an_outage_after_a_good_fetch_keeps_the_last_good_set(
    adapter: str, failure: str, server: JWKSServer, caplog: pytest.LogCaptureFixture
) -> None:
    app = guarded(adapter, server.url)
    app.keyset.timeout = 0.3
    c = client(adapter, app)
    assert get(c, token("a")).status_code == 200
    if failure == "status 500":
        server.status = 500
    elif failure == "hangs":
        server.delay = 2.0
    elif failure == "2 MB":
        server.body = b'{"keys": [], "pad": "' + b"x" * (2 << 20) + b'"}'
    elif failure == "not JSON":
        server.body = b"<html>Bad gateway</html>"
    elif failure == "JSON without keys":
        server.body = b'{"error": "maintenance"}'
    elif failure == "no usable key":
        server.keys = [jwk("a", use="enc")]
    else:
        server.stop()
    app.keyset.clock.advance(app.keyset.refresh_every)
    with caplog.at_level(logging.WARNING, logger="signout"):
        assert get(c, token("a")).status_code == 200  # notices the age: a refresh starts
        settle(app.keyset, 2)
        for _ in range(3):  # fresh tokens, never cached: the kept keys verify them
            assert get(c, token("a")).status_code == 200
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(server.url in w and "keeping the keys" in w for w in warnings), warnings
    assert app.keyset.ready and app.keyset.version == 1


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_keys_older_than_max_stale_are_dropped_and_tokens_get_503(adapter: str, server: JWKSServer) -> None:
    app = guarded(adapter, server.url)
    c = client(adapter, app)
    raw = token("a")
    assert get(c, raw).status_code == 200
    server.status = 500
    app.keyset.clock.advance(app.keyset.max_stale)
    r = get(c, raw)  # even the cached token: its key is no longer vouched for
    assert r.status_code == 503 and "retry-after" in r.headers


def test_a_flood_of_made_up_kids_costs_one_fetch_and_every_one_gets_401(server: JWKSServer) -> None:
    asyncio.run(flood_of_made_up_kids(server))


async def flood_of_made_up_kids(server: JWKSServer) -> None:
    app = guarded("asgi", server.url)
    assert await asgi_status(app, token("a")) == 200
    app.keyset.clock.advance(app.keyset.min_interval)  # a kid miss may fetch again
    server.delay = 0.2  # the flood arrives while that fetch is under way
    before = server.requests
    raw = token("a")
    flood = [f"{raw.split('.')[0]}x.{raw.split('.', 1)[1]}"]  # a malformed one too
    flood += [token("a", kid=uuid.uuid4().hex) for _ in range(999)]
    statuses = await asyncio.gather(*(asgi_status(app, t) for t in flood))
    assert statuses == [401] * 1000
    assert server.requests - before == 1


def test_a_slow_fetch_never_blocks_the_event_loop(server: JWKSServer) -> None:
    asyncio.run(slow_fetch_beside_a_cached_token(server))


async def slow_fetch_beside_a_cached_token(server: JWKSServer) -> None:
    app = guarded("asgi", server.url)
    cached = token("a")
    assert await asgi_status(app, cached) == 200
    server.keys = [jwk("a"), jwk("b")]
    server.delay = 1.0
    app.keyset.clock.advance(app.keyset.min_interval)
    started = time.monotonic()

    async def timed(raw: str) -> tuple[int, float]:
        status = await asgi_status(app, raw)
        return status, time.monotonic() - started

    async def later(raw: str) -> tuple[int, float]:
        await asyncio.sleep(0.05)  # once the slow fetch is under way
        return await timed(raw)

    (slow, slow_took), (fast, fast_took) = await asyncio.gather(timed(token("b")), later(cached))
    assert slow == 200 and slow_took >= 1.0
    assert fast == 200 and fast_took < 0.5


def test_wsgi_threads_with_an_unknown_kid_share_one_fetch(server: JWKSServer) -> None:
    app = guarded("wsgi", server.url)
    c = client("wsgi", app)
    assert get(c, token("a")).status_code == 200
    server.keys = [jwk("a"), jwk("b")]
    server.delay = 0.3
    app.keyset.clock.advance(app.keyset.min_interval)
    tokens = [token("b") for _ in range(16)]
    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(lambda raw: get(client("wsgi", app), raw).status_code, tokens))
    assert statuses == [200] * 16
    assert server.requests == 2


def test_the_keys_are_fetched_on_lifespan_startup(server: JWKSServer) -> None:
    app = guarded("asgi", server.url)
    with TestClient(app, base_url="https://app.test") as c:
        assert server.requests == 1 and app.keyset.ready
        assert get(c, token("a")).status_code == 200
    assert server.requests == 1


def test_a_failed_fetch_at_startup_is_logged_and_startup_goes_on(
    down_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = guarded("asgi", down_url)
    with caplog.at_level(logging.WARNING, logger="signout"), TestClient(app, base_url="https://app.test") as c:
        assert get(c, None).status_code == 200
    assert any(down_url in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_static_keys_beside_jwks_url_both_verify(adapter: str, server: JWKSServer) -> None:
    app = guarded(adapter, server.url, key=public_pem("static"))
    c = client(adapter, app)
    assert get(c, token("static", kid=None)).status_code == 200
    assert get(c, token("a")).status_code == 200


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_a_fetch_that_ends_while_a_token_is_checked_is_used(adapter: str, server: JWKSServer) -> None:
    # The race a full CI run once hit: the background fetch installs the keys after the
    # token was tried against the old ones, and the rate limit then forbids a fetch of its own.
    app = guarded(adapter, server.url, key=public_pem("static"))
    keyset = app.keyset
    may_fetch = keyset.may_fetch

    def fetch_ends_now() -> bool:
        keyset.refresh_sync()
        return bool(may_fetch())

    keyset.may_fetch = fetch_ends_now
    assert get(client(adapter, app), token("a")).status_code == 200
    assert server.requests == 1


# ---- logout routes, the revocation endpoint and the Revoker, with keys not at hand ---------------


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_a_logout_while_the_keys_are_unavailable_clears_cookies_and_says_nothing_was_revoked(
    adapter: str, down_url: str
) -> None:
    c = client(adapter, guarded(adapter, down_url))
    r = c.post("/auth/logout", headers={"Authorization": f"Bearer {token('a')}"})
    assert r.status_code == 503 and "was not recorded" in r.json()["message"]
    assert "refresh_token=" in r.headers["set-cookie"]
    r = c.post("/auth/logout-all", headers={"Authorization": f"Bearer {token('a')}"})
    assert r.status_code == 503 and "signing keys" in r.json()["message"]
    assert c.post("/auth/logout").status_code == 200  # no token: nothing to verify


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_a_logout_fetches_the_key_of_a_new_kid(adapter: str, server: JWKSServer) -> None:
    app = guarded(adapter, server.url)
    c = client(adapter, app)
    assert get(c, token("a")).status_code == 200
    server.keys = [jwk("a"), jwk("b")]
    app.keyset.clock.advance(app.keyset.min_interval)
    raw = token("b")
    r = c.post("/auth/logout-all", headers={"Authorization": f"Bearer {raw}"})
    assert r.status_code == 200, r.text
    assert get(c, raw).status_code == 401


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_the_revocation_endpoint_fetches_the_keys_or_answers_503(adapter: str, down_url: str) -> None:
    secret = "billing-secret-0123456789"
    app = guarded(adapter, down_url, clients={"billing": secret})
    c = client(adapter, app)
    r = c.post("/auth/revoke", data={"token": token("a")}, auth=("billing", secret))
    assert r.status_code == 503 and "retry-after" in r.headers


def test_the_revoker_fetches_the_keys_for_a_token_string(server: JWKSServer) -> None:
    store = MemoryStore(warn=False)
    revoker = Revoker(store=store, jwks_url=server.url)
    raw = token("a")
    assert revoker.is_revoked_sync(raw) is False
    revoker.revoke_sync(raw)
    assert revoker.is_revoked_sync(raw) is True
    assert server.requests == 1


def test_the_async_revoker_fetches_the_keys_off_the_loop(server: JWKSServer) -> None:
    revoker = Revoker(store=MemoryStore(warn=False), jwks_url=server.url)
    raw = token("a")

    async def use() -> bool:
        await revoker.revoke(raw)
        return await revoker.is_revoked(raw)

    assert asyncio.run(use()) is True
    assert server.requests == 1


def test_the_revoker_says_when_the_keys_are_unavailable(down_url: str) -> None:
    revoker = Revoker(store=MemoryStore(warn=False), jwks_url=down_url)
    with pytest.raises(KeysUnavailable, match="no fetch has succeeded yet"):
        revoker.revoke_sync(token("a"))
    revoker.revoke_sync({"iss": ISS, "sub": "alice", "jti": "j-1", "exp": time.time() + 60})  # claims need no key
