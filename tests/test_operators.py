"""SPEC section 9 for whoever runs the app: configuration errors, diagnosable store failures
(address and cause, the lifespan startup check, "not" versus "may not have been" recorded),
the CSRF scheme check behind real servers and proxies, and the revoker reached from a request."""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio as aredis
from flask import Flask, jsonify
from flask import request as flask_request
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient
from werkzeug.middleware.proxy_fix import ProxyFix

from signout import (
    REVOKER_KEY,
    ConfigError,
    Revoker,
    SignOutMiddleware,
    SignOutWSGIMiddleware,
)

from .apps import starlette_app, wsgi_app
from .conftest import SECRET, PEP3333Transport, RedisServer, TokenFactory, free_port
from .framework_helpers import hypercorn_server, uvicorn_server, werkzeug_server

ADAPTERS = ("asgi", "wsgi")
PASSWORD = "s3cret-pa55"


def middleware(adapter: str, **kwargs: Any) -> Any:
    kwargs.setdefault("key", SECRET)
    if adapter == "asgi":
        return SignOutMiddleware(starlette_app(), **kwargs)
    return SignOutWSGIMiddleware(wsgi_app(), **kwargs)


def http_client(adapter: str, app: Any, base_url: str = "https://app.test") -> Any:
    if adapter == "asgi":
        return TestClient(app, base_url=base_url)
    return httpx.Client(transport=PEP3333Transport(app), base_url=base_url)  # type: ignore[arg-type]


@contextmanager
def one_loop(adapter: str, app: Any) -> Iterator[Any]:
    """A client whose requests share one event loop (ASGI), so the store's connections last."""
    if adapter == "asgi":
        with TestClient(app, base_url="https://app.test") as client:
            yield client
    else:
        yield http_client(adapter, app)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def signout_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "signout"]


# ---- configuration ------------------------------------------------------------------


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_no_key_is_a_config_error_naming_key(adapter: str) -> None:
    with pytest.raises(ConfigError) as caught:
        if adapter == "asgi":
            SignOutMiddleware(starlette_app())  # type: ignore[call-arg]
        else:
            SignOutWSGIMiddleware(wsgi_app())  # type: ignore[call-arg]
    assert caught.value.kwarg == "key"
    assert "is required" in str(caught.value)


@pytest.mark.parametrize("adapter", ADAPTERS)
@pytest.mark.parametrize(
    ("typo", "meant"),
    [("redis_ulr", "redis_url"), ("Redis_URL", "redis_url"), ("audiance", "audience"), ("logout_pat", "logout_path")],
)
def test_an_unknown_kwarg_suggests_the_closest(adapter: str, typo: str, meant: str) -> None:
    with pytest.raises(ConfigError) as caught:
        middleware(adapter, **{typo: "x"})
    assert caught.value.kwarg == typo
    assert str(caught.value) == f"{typo}: is not a signout option; did you mean {meant!r}?"


def test_an_unknown_kwarg_far_from_all_says_where_the_list_is() -> None:
    with pytest.raises(ConfigError, match="banana: is not a signout option; the README's Options section lists"):
        middleware("asgi", banana=1)


def test_the_revoker_suggests_too() -> None:
    with pytest.raises(ConfigError) as caught:
        Revoker(key_prefx="app")
    assert caught.value.kwarg == "key_prefx"
    assert "did you mean 'key_prefix'?" in str(caught.value)


# ---- store failures: where, why, and what they mean -------------------------------------


@pytest.fixture
def dead_url() -> str:
    """A Redis URL, with a password, where nothing listens."""
    return f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0"


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_a_failed_check_names_the_address_and_cause_never_the_password(
    adapter: str, dead_url: str, make_token: TokenFactory, caplog: pytest.LogCaptureFixture
) -> None:
    port = dead_url.rsplit(":", 1)[1].split("/")[0]
    caplog.set_level(logging.WARNING, "signout")
    client = http_client(adapter, middleware(adapter, redis_url=dead_url))
    for _ in range(3):
        assert client.get("/me", headers=bearer(make_token())).status_code == 503
    lines = signout_lines(caplog)
    assert len(lines) == 1, lines  # one report, then quiet for 10 s
    line = lines[0]
    assert f"127.0.0.1:{port}" in line
    assert "ConnectionRefusedError" in line or "Connection refused" in line
    assert "more failed" not in line  # the first report counts nothing
    assert "requests with a token get 503 until it answers" in line
    assert PASSWORD not in caplog.text


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_a_refused_logout_says_not_recorded_with_the_address(
    adapter: str, dead_url: str, make_token: TokenFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "signout")
    client = http_client(adapter, middleware(adapter, redis_url=dead_url))
    r = client.post("/auth/logout", headers=bearer(make_token()))
    assert r.status_code == 503
    assert "the revocation was not recorded" in r.json()["message"]
    assert "set-cookie" in r.headers  # the browser's side of the logout still happens
    (line,) = [x for x in signout_lines(caplog) if "revocation" in x]
    assert line.startswith("signout: revocation NOT recorded: redis write failed: ConnectionError: Error 111")
    assert "[store redis://127.0.0.1:" in line
    assert PASSWORD not in caplog.text


def test_a_client_given_is_named_by_its_address_too(make_token: TokenFactory, caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    caplog.set_level(logging.WARNING, "signout")
    app = SignOutMiddleware(starlette_app(), key=SECRET, redis=aredis.Redis(port=port, password=PASSWORD))
    with TestClient(app) as client:
        assert client.get("/me", headers=bearer(make_token())).status_code == 503
    failures = [x for x in signout_lines(caplog) if "failed" in x]
    assert failures and all(f"[store redis://localhost:{port}/0]" in x for x in failures), failures
    assert PASSWORD not in caplog.text


def test_later_reports_count_the_failures_between(make_token: TokenFactory, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "signout")
    app = middleware("wsgi", redis_url=f"redis://127.0.0.1:{free_port()}/0", on_store_error="allow")
    app._outage._every = 0.2  # the 10 s of production, shortened for the test
    client = http_client("wsgi", app)
    for _ in range(4):
        assert client.get("/me", headers=bearer(make_token())).status_code == 200
    time.sleep(0.25)
    assert client.get("/me", headers=bearer(make_token())).status_code == 200
    first, second = signout_lines(caplog)
    assert first.endswith("requests are let through unchecked (on_store_error='allow')")
    assert "; 3 more failed since the last report; requests are let through" in second


@pytest.fixture
def pausable() -> Iterator[RedisServer]:
    """A redis-server of this test's own, to stop (SIGSTOP) and resume."""
    server = RedisServer().start()
    assert server.process is not None
    try:
        yield server
    finally:
        os.kill(server.process.pid, signal.SIGCONT)
        server.stop()


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_a_logout_during_a_pause_may_not_have_been_recorded_and_then_is(
    adapter: str, pausable: RedisServer, make_token: TokenFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """The issue's case: Redis paused, the write queued in its socket, the answer "not recorded",
    and the token revoked a moment later. The answer must say "may not have been"."""
    assert pausable.process is not None
    caplog.set_level(logging.WARNING, "signout")
    app = middleware(adapter, redis_url=pausable.url, store_timeout=0.3)
    token = make_token(jti="paused")
    with one_loop(adapter, app) as client:
        # Connections made first: the pause must meet the write itself, not a connection's handshake.
        assert client.post("/auth/logout", headers=bearer(make_token(jti="warm", sid="warm"))).status_code == 200
        assert client.get("/me", headers=bearer(token)).status_code == 200
        os.kill(pausable.process.pid, signal.SIGSTOP)
        try:
            r = client.post("/auth/logout", headers=bearer(token))
        finally:
            os.kill(pausable.process.pid, signal.SIGCONT)
        assert r.status_code == 503
        assert "it may not have been recorded" in r.json()["message"]
        assert r.headers["retry-after"] == "5"
        deadline = time.monotonic() + 5
        while client.get("/me", headers=bearer(token)).status_code != 401:
            assert time.monotonic() < deadline, "Redis never applied the write it had queued"
            time.sleep(0.05)
    (line,) = [x for x in signout_lines(caplog) if "recorded" in x]
    assert line.startswith("signout: revocation may NOT have been recorded (the store may still apply it): ")
    assert f"127.0.0.1:{pausable.port}" in line


# ---- the store check on ASGI lifespan startup ---------------------------------------


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


# ---- CSRF: the scheme of Origin against the app's ------------------------------------


@pytest.fixture(params=ADAPTERS)
def adapter(request: pytest.FixtureRequest) -> str:
    return str(request.param)


SCHEMES = [
    # (the app's URL, Sec-Fetch-Site, Origin, status)
    ("https://app.test", "cross-site", "http://app.test", 403),  # the case
    ("https://app.test", None, "http://app.test", 403),  # a browser without Fetch Metadata
    ("https://app.test", "same-site", "http://app.test", 403),
    ("http://app.test", None, "https://app.test", 403),  # a TLS proxy the server was not told of
    ("https://app.test", None, "https://app.test", 200),
    ("https://app.test", None, "https://app.test:443", 200),
    ("http://app.test:8080", None, "http://app.test:8080", 200),
    ("https://app.test", "same-origin", "https://app.test", 200),
]


@pytest.mark.parametrize(("base", "site", "origin", "status"), SCHEMES)
def test_a_cookie_logout_from_the_other_scheme_is_refused(
    adapter: str,
    redis_url: str,
    redis_client: redis.Redis,
    make_token: TokenFactory,
    base: str,
    site: str | None,
    origin: str,
    status: int,
) -> None:
    events: list[Any] = []
    app = middleware(adapter, redis_url=redis_url, access_cookie="access_token", on_event=events.append)
    headers = {"Cookie": f"access_token={make_token()}", "Origin": origin}
    if site is not None:
        headers["Sec-Fetch-Site"] = site
    r = http_client(adapter, app, base).post("/auth/logout-all", headers=headers)
    assert r.status_code == status, r.text
    if status == 403:
        assert r.json()["error"] == "cross_site_request"
        assert redis_client.dbsize() == 0
        (event,) = [e for e in events if e.event == "csrf_refused"]
        mine, theirs = base.partition(":")[0], origin.partition(":")[0]
        assert event.reason == f"logout_all: Origin on {theirs}, but the app runs on {mine} (as its server reports it)"
    else:
        assert redis_client.dbsize() == 1


def test_an_origin_trusted_by_name_may_use_the_other_scheme(
    adapter: str, redis_url: str, make_token: TokenFactory
) -> None:
    app = middleware(adapter, redis_url=redis_url, access_cookie="access_token", trusted_origins=["http://app.test"])
    r = http_client(adapter, app).post(
        "/auth/logout", headers={"Cookie": f"access_token={make_token()}", "Origin": "http://app.test"}
    )
    assert r.status_code == 200


def proxied(address: str, proto: str | None, make_token: TokenFactory) -> httpx.Response:
    """A browser's cookie logout from https://app.test, through a TLS-terminating proxy that
    forwards plain HTTP to ``address`` (and, when given, says ``X-Forwarded-Proto``)."""
    headers = {
        "Host": "app.test",
        "Origin": "https://app.test",
        "Sec-Fetch-Site": "same-site",  # how a browser marks a form on another page of the site
        "Cookie": f"access_token={make_token()}",
    }
    if proto is not None:
        headers["X-Forwarded-Proto"] = proto
    return httpx.post(f"http://{address}/auth/logout", headers=headers)


def test_behind_a_tls_proxy_uvicorn_with_proxy_headers(redis_url: str, make_token: TokenFactory) -> None:
    app = SignOutMiddleware(starlette_app(), key=SECRET, redis_url=redis_url, access_cookie="access_token")
    # uvicorn's default: --proxy-headers, trusting X-Forwarded-Proto from 127.0.0.1.
    with uvicorn_server(app, forwarded_allow_ips="127.0.0.1") as address:
        assert proxied(address, "https", make_token).status_code == 200
        assert proxied(address, None, make_token).status_code == 403
    with uvicorn_server(app, proxy_headers=False) as address:
        assert proxied(address, "https", make_token).status_code == 403


def test_behind_a_tls_proxy_werkzeug_proxyfix(redis_url: str, make_token: TokenFactory) -> None:
    def guarded() -> Any:
        return SignOutWSGIMiddleware(wsgi_app(), key=SECRET, redis_url=redis_url, access_cookie="access_token")

    # ProxyFix outside signout: it sets wsgi.url_scheme before signout reads it.
    with werkzeug_server(ProxyFix(guarded(), x_proto=1)) as address:
        assert proxied(address, "https", make_token).status_code == 200
    with werkzeug_server(guarded()) as address:
        assert proxied(address, "https", make_token).status_code == 403


# ---- the revoker, reached from a request when add_middleware hides the instance ---------


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
