"""The programmatic revoker (``signout.revoker``): async and sync, on the middleware's store (also as app code
reaches it, from the request) and standalone."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import jwt
import pytest
from flask import Flask, jsonify
from flask import request as flask_request
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from signout import (
    REVOKER_KEY,
    ConfigError,
    InvalidClaim,
    MemoryStore,
    Revoker,
    SignOutMiddleware,
    SignOutWSGIMiddleware,
    TokenError,
)

from .apps import starlette_app
from .conftest import ISS, SECRET, Backend, TokenFactory, claims
from .helpers import ADAPTERS, bearer


def bearer_of(claims_: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {jwt.encode(claims_, SECRET, algorithm='HS256')}"}


def setup(backend: Backend) -> tuple[SignOutMiddleware, TestClient]:
    middleware = SignOutMiddleware(starlette_app(), key=SECRET, store=backend.make())
    return middleware, TestClient(middleware, base_url="https://t")


def test_revoke_one_token_leaves_its_session(backend: Backend) -> None:
    middleware, c = setup(backend)
    token, sibling = claims(jti="a"), claims(jti="b")
    asyncio.run(middleware.revoker.revoke(token))
    assert c.get("/me", headers=bearer_of(token)).status_code == 401
    assert c.get("/me", headers=bearer_of(sibling)).status_code == 200
    assert asyncio.run(middleware.revoker.is_revoked(token)) is True
    assert asyncio.run(middleware.revoker.is_revoked(sibling)) is False


def test_revoke_with_session_kills_the_login(backend: Backend) -> None:
    middleware, c = setup(backend)
    asyncio.run(middleware.revoker.revoke(claims(jti="a"), session=True))
    assert c.get("/me", headers=bearer_of(claims(jti="b"))).status_code == 401


def test_revoke_session_and_user(backend: Backend) -> None:
    middleware, c = setup(backend)
    old = int(time.time()) - 10
    asyncio.run(middleware.revoker.revoke_session(iss=ISS, sid="s-1", sub="alice"))
    assert c.get("/me", headers=bearer_of(claims(sid="s-1"))).status_code == 401
    assert c.get("/me", headers=bearer_of(claims(sid="s-2", iat=old))).status_code == 200
    asyncio.run(middleware.revoker.revoke_user(iss=ISS, sub="alice"))
    assert c.get("/me", headers=bearer_of(claims(sid="s-2", iat=old))).status_code == 401
    assert c.get("/me", headers=bearer_of(claims(sub="bob", sid="s-9", iat=old))).status_code == 200


def test_revoke_session_needs_no_sub(backend: Backend) -> None:
    """A session is (iss, sid): revoked without ``sub``, it ends its tokens with or without one."""
    middleware, c = setup(backend)
    asyncio.run(middleware.revoker.revoke_session(iss=ISS, sid="s-1"))
    assert c.get("/me", headers=bearer_of(claims(sid="s-1"))).status_code == 401
    assert c.get("/me", headers=bearer_of(claims(sub=None, sid="s-1", jti="n"))).status_code == 401
    assert c.get("/me", headers=bearer_of(claims(sid="s-2"))).status_code == 200
    assert asyncio.run(middleware.revoker.is_revoked(claims(sid="s-1"))) is True
    assert asyncio.run(middleware.revoker.is_revoked(claims(sid="s-2"))) is False


def test_revoke_user_at_a_past_moment(backend: Backend) -> None:
    middleware, c = setup(backend)
    now = int(time.time())
    asyncio.run(middleware.revoker.revoke_user(iss=ISS, sub="alice", at=now - 100))
    assert c.get("/me", headers=bearer_of(claims(iat=now - 200, jti="x"))).status_code == 401
    assert c.get("/me", headers=bearer_of(claims(iat=now - 50, jti="y"))).status_code == 200
    with pytest.raises(ValueError, match="future"):
        asyncio.run(middleware.revoker.revoke_user(iss=ISS, sub="alice", at=now + 100))


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_sync_twins_write_what_the_guard_reads(kind: str, request: pytest.FixtureRequest) -> None:
    store: Any = MemoryStore()
    if kind == "redis":
        from signout import RedisStore

        store = RedisStore(request.getfixturevalue("redis_url"))
    middleware = SignOutMiddleware(starlette_app(), key=SECRET, store=store)
    c = TestClient(middleware, base_url="https://t")
    revoker = middleware.revoker
    revoker.revoke_sync(claims(jti="a"))
    revoker.revoke_session_sync(iss=ISS, sid="s-9", sub="alice")
    revoker.revoke_user_sync(iss=ISS, sub="carol")
    assert revoker.is_revoked_sync(claims(jti="a")) is True
    assert revoker.is_revoked_sync(claims(jti="b")) is False
    assert c.get("/me", headers=bearer_of(claims(jti="a"))).status_code == 401
    assert c.get("/me", headers=bearer_of(claims(jti="c", sid="s-9"))).status_code == 401
    assert c.get("/me", headers=bearer_of(claims(sub="carol", iat=int(time.time()) - 5))).status_code == 401
    assert c.get("/me", headers=bearer_of(claims(jti="b"))).status_code == 200


def test_standalone_revoker_on_the_same_redis(redis_url: str) -> None:
    c = TestClient(SignOutMiddleware(starlette_app(), key=SECRET, redis_url=redis_url), base_url="https://t")
    on_call = Revoker(redis_url=redis_url)
    on_call.revoke_user_sync(iss=ISS, sub="alice")
    assert c.get("/me", headers=bearer_of(claims(iat=int(time.time()) - 5))).status_code == 401
    with pytest.raises(ConfigError) as raised:
        on_call.revoke_sync(jwt.encode(claims(), SECRET, algorithm="HS256"))
    assert raised.value.kwarg == "key"


def test_standalone_revoker_with_a_key_verifies_token_strings(redis_url: str) -> None:
    revoker = Revoker(redis_url=redis_url, key=SECRET)
    token = jwt.encode(claims(jti="z"), SECRET, algorithm="HS256")
    revoker.revoke_sync(token)
    assert revoker.is_revoked_sync(token) is True
    with pytest.raises(TokenError):
        revoker.revoke_sync(jwt.encode(claims(), "k" * 40, algorithm="HS256"))


def test_a_token_the_revoker_hands_out_is_not_the_guards() -> None:
    # middleware.revoker shares the guard's verifier and its cache: app code that
    # edits what it gets must not edit what the guard hands the next request.
    middleware = SignOutMiddleware(starlette_app(), key=SECRET, store=MemoryStore(warn=False))
    raw = jwt.encode(claims(roles=["user"]), SECRET, algorithm="HS256")
    mine = middleware.revoker.token(raw)
    assert mine.verified is None
    mine.claims["roles"].append("admin")
    cached = middleware.settings.verifier.verify(raw, mine.source, time.time())
    assert cached.app_claims()["roles"] == ["user"]


def test_a_token_with_nothing_to_identify_it_is_refused() -> None:
    revoker = Revoker(store=MemoryStore())
    with pytest.raises(InvalidClaim):
        revoker.revoke_sync(claims(jti=None, sid=None))
    with pytest.raises(InvalidClaim):
        revoker.revoke_sync(claims(jti=7))


# ---- the revoker, reached from a request when add_middleware hides the instance ----------------------


def starlette_with_password_change() -> Starlette:
    async def password_changed(request: Request) -> JSONResponse:
        claims = request.scope["signout.claims"]
        await request.scope[REVOKER_KEY].revoke_user(iss=claims["iss"], sub=claims["sub"])
        return JSONResponse({"ok": True})

    async def me(request: Request) -> JSONResponse:
        return JSONResponse({"sub": request.scope["signout.claims"]["sub"]})

    app = Starlette(routes=[Route("/password", password_changed, methods=["POST"]), Route("/me", me)])
    return app


def flask_with_password_change() -> Flask:
    app = Flask("password")

    @app.post("/password")
    def password_changed() -> Any:
        claims = flask_request.environ["signout.claims"]
        flask_request.environ[REVOKER_KEY].revoke_user_sync(iss=claims["iss"], sub=claims["sub"])
        return jsonify(ok=True)

    @app.get("/me")
    def me() -> Any:
        return jsonify(sub=flask_request.environ["signout.claims"]["sub"])

    return app


@pytest.mark.parametrize("store", ["memory", "redis"])
@pytest.mark.parametrize("adapter", ADAPTERS)
def test_the_revoker_from_the_request_is_the_middlewares_own(
    adapter: str, store: str, request: pytest.FixtureRequest, make_token: TokenFactory
) -> None:
    # With the embedded store a Revoker built apart would write to a memory of its own: a silent
    # no-op. The one in the request is the middleware's, on the middleware's store.
    options: dict[str, Any] = {"key": SECRET}
    if store == "redis":
        options["redis_url"] = request.getfixturevalue("redis_url")
    if adapter == "asgi":
        app = starlette_with_password_change()
        app.add_middleware(SignOutMiddleware, **options)
        client: Any = TestClient(app, base_url="https://app.test")
    else:
        flask = flask_with_password_change()
        flask.wsgi_app = SignOutWSGIMiddleware(flask.wsgi_app, **options)  # type: ignore[method-assign]
        client = flask.test_client()
    old = make_token(iat=int(time.time()) - 5)
    other = make_token(sub="bob", iat=int(time.time()) - 5)
    assert client.get("/me", headers=bearer(old)).status_code == 200
    assert client.post("/password", headers=bearer(old)).status_code == 200
    assert client.get("/me", headers=bearer(old)).status_code == 401
    assert client.get("/me", headers=bearer(other)).status_code == 200
