"""What only the ASGI adapter (``signout.asgi``) does: websockets, raw ASGI apps, the lifespan (the
store checked at startup under real servers, closed at shutdown), and the usual request judged in one
call (the quick path)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, MutableMapping
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient, WebSocketDenialResponse

from signout import SignOutMiddleware, StoreError

from .apps import RawApp, starlette_app
from .conftest import PASSWORD, SECRET, Backend, TokenFactory, make_client
from .framework_helpers import hypercorn_server, uvicorn_server
from .helpers import bearer, signout_lines

Client = Callable[..., TestClient]


@pytest.fixture
def asgi_client(backend: Backend) -> Client:
    return make_client("asgi", backend, "https://testserver")


# ---- websockets --------------------------------------------------------------------------------------


def test_websocket_with_a_valid_token_is_accepted(asgi_client: Client, make_token: TokenFactory) -> None:
    with asgi_client().websocket_connect("/ws", headers=bearer(make_token(sub="carol"))) as ws:
        assert ws.receive_json()["claims"]["sub"] == "carol"


def test_websocket_with_a_revoked_token_is_refused_before_accept(asgi_client: Client, make_token: TokenFactory) -> None:
    c = asgi_client()
    token = make_token()
    assert c.post("/auth/logout", headers=bearer(token)).status_code == 200
    with pytest.raises(WebSocketDenialResponse) as denied, c.websocket_connect("/ws", headers=bearer(token)):
        pass
    assert denied.value.status_code == 401
    assert denied.value.json()["message"] == "Token has been revoked"


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


# ---- raw ASGI apps, the lifespan, the quick path -----------------------------------------------------


def test_raw_asgi_app_and_lifespan_pass_through(backend: Backend, make_token: TokenFactory) -> None:
    raw = RawApp()
    middleware = SignOutMiddleware(raw, key=SECRET, store=backend.make())

    async def lifespan() -> list[MutableMapping[str, Any]]:
        sent: list[MutableMapping[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "lifespan.startup"}

        async def send(message: MutableMapping[str, Any]) -> None:
            sent.append(message)

        await middleware({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)
        return sent

    assert asyncio.run(lifespan()) == [{"type": "lifespan.startup.complete"}]
    c = TestClient(middleware)
    token = make_token()
    assert c.get("/anything", headers=bearer(token)).text == "raw ok"
    assert raw.scopes[-1]["signout.claims"]["jti"] == "j-1"
    assert c.post("/auth/logout", headers=bearer(token)).status_code == 200
    assert c.get("/anything", headers=bearer(token)).status_code == 401


def test_lifespan_shutdown_closes_the_store(redis_url: str, make_token: TokenFactory) -> None:
    from signout import RedisStore

    store = RedisStore(redis_url)
    middleware = SignOutMiddleware(starlette_app(), key=SECRET, store=store)
    with TestClient(middleware) as c:  # runs lifespan startup and shutdown
        assert c.get("/me", headers=bearer(make_token())).status_code == 200
        assert len(store._per_loop) == 1
    assert len(store._per_loop) == 0


def test_the_usual_request_is_judged_in_one_call_with_the_same_claims(
    make_token: TokenFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = RawApp()
    middleware = SignOutMiddleware(raw, key=SECRET)  # the embedded store answers from memory
    starts: list[str] = []
    real_start = middleware.engine.start

    def start(request: Any) -> Any:
        starts.append(request.path)
        return real_start(request)

    monkeypatch.setattr(middleware.engine, "start", start)
    c = TestClient(middleware, base_url="https://t")
    token = make_token(roles=["admin"])
    headers = {"Authorization": f"Bearer {token}"}
    assert c.get("/me", headers=headers).status_code == 200  # first sight: verified in that one call
    assert c.get("/me", headers=headers).status_code == 200  # cached: judged in one call
    assert starts == []
    first, second = (s["signout.claims"] for s in raw.scopes[-2:])
    assert first == second and first["roles"] == ["admin"]
    assert first is not second and first["roles"] is not second["roles"]  # each request its own copy
    assert c.post("/auth/logout", headers=headers).status_code == 200
    assert c.get("/me", headers=headers).status_code == 401  # revoked: the long way, which refuses it
    assert starts == ["/auth/logout", "/me"]


@pytest.mark.parametrize("store", ["memory", "redis"])
@pytest.mark.parametrize("on_invalid_token", ["reject", "pass"])
def test_a_bad_token_on_the_usual_path_is_verified_once_and_answered_as_start_answers_it(
    store: str, on_invalid_token: str, redis_url: str, make_token: TokenFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``usual`` verifies a token it has not seen; what is wrong with one is answered from that
    one verification (an invalid signature costs one check, not two), as ``start`` answers it."""
    kw: dict[str, Any] = {"key": SECRET, "on_invalid_token": on_invalid_token}
    if store == "redis":
        kw["redis_url"] = redis_url
    fast, slow = SignOutMiddleware(RawApp(), **kw), SignOutMiddleware(RawApp(), **kw)
    slow._quick = slow._usual = None  # every request the long way: start
    checks: list[str] = []
    real_verify = fast.settings.verifier.verify

    def verify(raw: str, *args: Any) -> Any:
        checks.append(raw)
        return real_verify(raw, *args)

    monkeypatch.setattr(fast.settings.verifier, "verify", verify)
    bad = [
        make_token(key="another-secret-of-32-bytes-or-more!"),  # a signature that does not verify
        make_token(exp=1),  # expired
        make_token(token_use="refresh"),  # not an access token
        "not.a.jwt",
    ]
    for token in bad:
        answers = []
        for app in (fast, slow):
            response = TestClient(app, base_url="https://t").get("/me", headers=bearer(token))
            answers.append((response.status_code, response.text, response.headers.get("www-authenticate")))
        assert answers[0] == answers[1], token
        assert answers[0][0] == (401 if on_invalid_token == "reject" else 200)
    assert len(checks) == len(bad)  # each bad token verified once


@pytest.mark.parametrize("on_store_error", ["reject", "allow"])
def test_the_usual_request_over_redis_is_known_in_one_call_and_read_once(
    redis_url: str, make_token: TokenFactory, monkeypatch: pytest.MonkeyPatch, on_store_error: str
) -> None:
    raw = RawApp()
    middleware = SignOutMiddleware(raw, key=SECRET, redis_url=redis_url, on_store_error=on_store_error)
    assert middleware.engine.usual_ready and not middleware.engine.quick_ready
    starts: list[str] = []
    reads: list[int] = []
    failing = [False]
    real_start, real_fetch = middleware.engine.start, middleware.store.fetch

    def start(request: Any) -> Any:
        starts.append(request.path)
        return real_start(request)

    async def fetch(lookups: Any, now: float) -> Any:
        reads.append(len(lookups))
        if failing[0]:
            raise StoreError("read timed out after 0.1 s", where="redis://test", unsure=True)
        return await real_fetch(lookups, now)

    monkeypatch.setattr(middleware.engine, "start", start)
    monkeypatch.setattr(middleware.store, "fetch", fetch)
    c = TestClient(middleware, base_url="https://t")
    token = make_token(roles=["admin"])
    headers = {"Authorization": f"Bearer {token}"}
    assert c.get("/me", headers=headers).status_code == 200  # first sight: verified in that one call
    assert c.get("/me", headers=headers).status_code == 200  # cached: known in one call, read once
    assert starts == [] and reads == [2, 2]  # the user's bucket and the session's
    first, second = (s["signout.claims"] for s in raw.scopes[-2:])
    assert first == second and first["roles"] == ["admin"] and first is not second
    failing[0] = True  # the store fails: start answers with the failure already met, no second read
    r = c.get("/me", headers=headers)
    assert starts == ["/me"] and reads == [2, 2, 2]
    if on_store_error == "reject":
        assert r.status_code == 503 and r.json()["error"] == "temporarily_unavailable"
    else:
        assert r.status_code == 200 and raw.scopes[-1]["signout.claims"]["jti"] == "j-1"
    failing[0] = False
    assert c.post("/auth/logout", headers=headers).status_code == 200
    del reads[:], starts[:]
    r = c.get("/me", headers=headers)  # revoked: start refuses it with the rows already read
    assert r.status_code == 401 and r.json()["error"] == "invalid_token"
    assert starts == ["/me"] and reads == [2]
    later = make_token(sid="s-2", jti="j-2")
    assert c.get("/me", headers=bearer(later)).status_code == 200  # another session of the user
    assert c.get("/me", headers=bearer(later)).status_code == 200


# ---- the store check on lifespan startup, under real servers -----------------------------------------


SERVERS: dict[str, Callable[[Any], Any]] = {"uvicorn": uvicorn_server, "hypercorn": hypercorn_server}


@pytest.mark.parametrize("server", SERVERS)
def test_startup_warns_when_the_store_cannot_answer_and_starts_anyway(
    server: str, dead_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "signout")
    app = SignOutMiddleware(starlette_app(), key=SECRET, redis_url=dead_url)
    with SERVERS[server](app) as address:
        # Logged at startup, before any request.
        warnings = [r for r in caplog.records if r.name == "signout" and r.levelno == logging.WARNING]
        assert len(warnings) == 1, warnings
        text = warnings[0].getMessage()
        assert text.startswith("signout: the revocation store did not answer at startup: redis connect failed: ")
        assert "ConnectionRefusedError" in text
        assert dead_url.replace(f":{PASSWORD}@", "") in text.replace("[store ", "")
        assert "startup goes on" in text
        assert httpx.get(f"http://{address}/health").status_code == 200
    assert PASSWORD not in caplog.text


@pytest.mark.parametrize("server", SERVERS)
def test_startup_says_the_store_answered(server: str, redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "signout")
    app = SignOutMiddleware(starlette_app(), key=SECRET, redis_url=redis_url)
    with SERVERS[server](app) as address:
        lines = signout_lines(caplog)
        assert any(x.startswith(f"signout: the revocation store {redis_url} answered in ") for x in lines), lines
        assert httpx.get(f"http://{address}/health").status_code == 200
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and r.name == "signout"]
