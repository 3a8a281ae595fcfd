"""Regressions for the review of the first release: each test pins one hole, now closed."""

from __future__ import annotations

import asyncio
import base64
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
import redis
from starlette.testclient import TestClient

from signout import SignOutMiddleware, SignOutWSGIMiddleware, StoreError
from signout.config import build_settings
from signout.errors import InvalidClaim
from signout.stores.redis.batch import Coalescer
from signout.tokens import Source

from .apps import starlette_app, wsgi_app
from .conftest import NOW, SECRET, Backend, TokenFactory, free_port, make_client


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.fixture(params=["asgi", "wsgi"])
def client(request: pytest.FixtureRequest, backend: Backend) -> Any:
    return make_client(request.param, backend, "https://app.test")


def test_a_deeply_nested_header_is_malformed_not_a_500(client: Any) -> None:
    token = f"{b64(b'[' * 5000)}.e30.x"
    for path, method in (("/me", "GET"), ("/auth/logout", "POST"), ("/auth/logout-all", "POST")):
        r = client().request(
            method, path, headers={"Authorization": f"Bearer {token}", "Cookie": f"refresh_token={token}"}
        )
        assert r.status_code < 500


@pytest.mark.parametrize("form", ["Bearer\t{t}", "Bearer   {t}", "Basic Zm9vOmJhcg==, Bearer {t}", "bearer {t}"])
def test_a_revoked_token_is_found_however_the_header_spells_bearer(
    client: Any, make_token: TokenFactory, form: str
) -> None:
    c = client()
    token = make_token()
    assert c.post("/auth/logout", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert c.get("/me", headers={"Authorization": form.format(t=token)}).status_code == 401


def test_two_bearer_credentials_in_one_header_are_refused(client: Any, make_token: TokenFactory) -> None:
    r = client().get("/me", headers={"Authorization": f"Bearer {make_token()}, Bearer {make_token(jti='x')}"})
    assert r.status_code == 401


def test_a_revoked_token_hidden_in_a_quoted_escaped_cookie_is_refused(client: Any, make_token: TokenFactory) -> None:
    c = client(access_cookie="access_token", on_invalid_token="pass")
    token = make_token()
    assert c.post("/auth/logout", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    hidden = '"' + token.replace(".", "\\056") + '"'
    assert c.get("/me", headers={"Cookie": f"access_token={hidden}"}).status_code == 401


@pytest.mark.parametrize("target", ["https://app.example/\x0b", "https://app.example/\x7f", "https://app.example/ x"])
def test_return_to_with_a_control_character_is_refused(client: Any, target: str) -> None:
    c = client(allowed_redirects=["https://app.example"])
    r = c.post("/auth/logout", params={"return_to": target}, follow_redirects=False)
    assert r.status_code == 400
    assert "location" not in r.headers


def test_exp_is_required_even_when_required_claims_is_given(make_token: TokenFactory) -> None:
    verifier = build_settings(key=SECRET, required_claims=["jti"], clock=lambda: NOW).verifier
    import jwt

    token = jwt.encode({"sub": "a", "jti": "j", "iat": int(NOW)}, SECRET, algorithm="HS256")
    with pytest.raises(InvalidClaim, match="exp"):
        verifier.verify(token, Source.HEADER, NOW)


def test_editing_nested_claims_does_not_edit_the_cache() -> None:
    import jwt

    verifier = build_settings(key=SECRET, clock=lambda: NOW).verifier
    claims = {"sub": "a", "jti": "j", "roles": ["user"], "org": {"teams": ["x"]}, "exp": int(NOW) + 60}
    token = jwt.encode(claims, SECRET, algorithm="HS256")
    given = verifier.verify(token, Source.HEADER, NOW).app_claims()  # what the app gets
    given["roles"].append("admin")
    given["org"]["teams"].append("y")
    again = verifier.verify(token, Source.HEADER, NOW)
    assert again.claims == claims and again.app_claims() == claims


def test_a_wsgi_header_beyond_latin1_is_not_a_crash(make_token: TokenFactory) -> None:
    app = SignOutWSGIMiddleware(wsgi_app(), key=SECRET)
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/me", "HTTP_X_NAME": "€", "wsgi.input": None}
    seen: list[str] = []
    body = app(environ, lambda status, headers, exc_info=None: seen.append(status))
    assert seen == ["200 OK"] and b"claims" in b"".join(body)


def test_a_websocket_scope_with_extensions_none_is_refused_not_crashed(make_token: TokenFactory) -> None:
    middleware = SignOutMiddleware(starlette_app(), key=SECRET)
    sent: list[Any] = []

    async def go() -> None:
        async def receive() -> Any:
            return {"type": "websocket.connect"}

        async def send(message: Any) -> None:
            sent.append(message)

        scope = {
            "type": "websocket",
            "path": "/ws",
            "headers": [(b"authorization", b"Bearer x.y.z")],
            "extensions": None,
        }
        await middleware(scope, receive, send)

    asyncio.run(go())
    assert sent == [{"type": "websocket.close", "code": 1008}]


def test_a_cancelled_caller_leaves_its_batch_alone() -> None:
    # One client going away (its request cancelled) must not fail the others' checks or logouts.
    sent: list[list[str]] = []

    async def send(items: Sequence[str]) -> list[str]:
        sent.append(list(items))
        await asyncio.sleep(0.01)
        return [item.upper() for item in items]

    async def go() -> tuple[bool, list[str]]:
        coalescer: Coalescer[str, str] = Coalescer(send)
        first = asyncio.ensure_future(coalescer(["a"]))
        second = asyncio.ensure_future(coalescer(["b", "c"]))
        await asyncio.sleep(0)  # both have joined one batch
        first.cancel()
        await asyncio.wait([first])
        return first.cancelled(), await second

    cancelled, replies = asyncio.run(go())
    assert cancelled
    assert replies == ["B", "C"]
    assert sent == [["a", "b", "c"]]  # one pipeline for the tick


def test_a_failed_batch_fails_every_caller_with_a_store_error() -> None:
    async def send(items: Sequence[str]) -> list[str]:
        raise RuntimeError("boom")

    async def go() -> list[BaseException | list[str]]:
        coalescer: Coalescer[str, str] = Coalescer(send)
        return list(await asyncio.gather(coalescer(["a"]), coalescer(["b"]), return_exceptions=True))

    outcomes = asyncio.run(go())
    assert all(isinstance(o, StoreError) and o.unsure for o in outcomes), outcomes


# ---- a network that swallows packets without closing the socket ----------------


class FreezableProxy:
    """TCP proxy to Redis on loopback; ``freeze()`` stops forwarding but keeps sockets open."""

    def __init__(self, target_port: int) -> None:
        self.port = free_port()
        self.target = target_port
        self.frozen = threading.Event()
        self.stopped = threading.Event()
        self.server = socket.create_server(("127.0.0.1", self.port))
        self.server.settimeout(0.1)
        self.sockets: list[socket.socket] = [self.server]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                downstream, _ = self.server.accept()
            except OSError:
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target))
            self.sockets += [downstream, upstream]
            for a, b in ((downstream, upstream), (upstream, downstream)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        src.settimeout(0.1)
        while not self.stopped.is_set():
            try:
                data = src.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            while self.frozen.is_set() and not self.stopped.is_set():
                time.sleep(0.05)  # swallow: hold the bytes, send nothing, close nothing
            try:
                dst.sendall(data)
            except OSError:
                return

    def freeze(self) -> None:
        self.frozen.set()

    def close(self) -> None:
        self.stopped.set()
        for s in self.sockets:
            s.close()


@pytest.fixture
def proxy(redis_url: str) -> Iterator[FreezableProxy]:
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    p = FreezableProxy(port)
    yield p
    p.close()


def test_a_mirror_on_a_silent_network_stops_answering_from_memory(
    proxy: FreezableProxy, make_token: TokenFactory
) -> None:
    from signout.stores.mirror import MirrorStore

    middleware = SignOutMiddleware(
        starlette_app(), key=SECRET, redis_url=f"redis://127.0.0.1:{proxy.port}/0", local_mirror=True
    )
    store = middleware.store
    assert isinstance(store, MirrorStore)
    try:
        assert store.wait_in_sync(5)
        proxy.freeze()
        start = time.monotonic()
        while store.in_sync:
            assert time.monotonic() - start < 4, "the mirror never noticed the silent network"
            time.sleep(0.02)
        r = TestClient(middleware, base_url="https://t").get("/me", headers={"Authorization": f"Bearer {make_token()}"})
        assert r.status_code == 503  # not an answer from a copy that may be stale
    finally:
        store.close()


def test_wsgi_with_a_client_without_timeouts_still_answers_within_store_timeout(
    proxy: FreezableProxy, make_token: TokenFactory
) -> None:
    given = redis.Redis(port=proxy.port)  # no socket_timeout: a WSGI worker could hang forever
    app = make_wsgi(given)
    proxy.freeze()
    start = time.monotonic()
    r = app.get("/me", headers={"Authorization": f"Bearer {make_token()}"})
    assert r.status_code == 503
    assert time.monotonic() - start < 1.5


def make_wsgi(client: redis.Redis) -> Any:
    import httpx

    from .conftest import PEP3333Transport

    wrapped = SignOutWSGIMiddleware(wsgi_app(), key=SECRET, redis=client, store_timeout=0.25)
    return httpx.Client(transport=PEP3333Transport(wrapped), base_url="https://t")  # type: ignore[arg-type]
