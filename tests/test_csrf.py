"""Cross-site refusal for cookie-authenticated logout routes (``signout.csrf``): Fetch Metadata and
Origin, on every store; then the scheme of Origin against the app's, behind real servers and TLS
proxies."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
import redis
from starlette.testclient import TestClient
from werkzeug.middleware.proxy_fix import ProxyFix

from signout import SignOutMiddleware, SignOutWSGIMiddleware

from .apps import starlette_app, wsgi_app
from .conftest import SECRET, Backend, TokenFactory
from .framework_helpers import uvicorn_server, werkzeug_server
from .helpers import ADAPTERS, bearer, earlier, http_client, middleware

Client = Callable[..., TestClient]


CSRF = [
    ("cross-site form post", "POST", {"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.test"}, 403),
    ("cross-site top-level GET", "GET", {"Sec-Fetch-Site": "cross-site"}, 403),
    ("same-site sibling", "POST", {"Sec-Fetch-Site": "same-site", "Origin": "https://blog.app.test"}, 403),
    ("trusted sibling", "POST", {"Sec-Fetch-Site": "same-site", "Origin": "https://admin.app.test"}, 200),
    ("same-origin", "POST", {"Sec-Fetch-Site": "same-origin", "Origin": "https://app.test"}, 200),
    ("typed URL", "GET", {"Sec-Fetch-Site": "none"}, 200),
    ("old browser, foreign Origin", "POST", {"Origin": "https://evil.test"}, 403),
    ("old browser, own Origin", "POST", {"Origin": "https://app.test"}, 200),
    ("null Origin", "POST", {"Origin": "null"}, 403),
    ("missing Origin, POST", "POST", {}, 200),
    ("missing Origin, GET", "GET", {}, 403),
]


@pytest.mark.parametrize(("name", "method", "headers", "status"), CSRF, ids=[c[0] for c in CSRF])
def test_cookie_authenticated_logout_all_refuses_cross_site(
    client: Client,
    backend: Backend,
    make_token: TokenFactory,
    name: str,
    method: str,
    headers: dict[str, str],
    status: int,
) -> None:
    c = client(access_cookie="access_token", trusted_origins=["https://admin.app.test"])
    cookie = {"Cookie": f"access_token={make_token(iat=earlier())}"}
    r = c.request(method, "/auth/logout-all", headers={**headers, **cookie})
    assert r.status_code == status
    if status == 403:
        assert r.json()["error"] == "cross_site_request"
        assert backend.count() == 0
        assert "set-cookie" not in r.headers


def test_cookie_authenticated_local_logout_refuses_cross_site(
    client: Client, backend: Backend, make_token: TokenFactory
) -> None:
    c = client(access_cookie="access_token")
    cookie = f"access_token={make_token()}"
    r = c.post(
        "/auth/logout", headers={"Cookie": cookie, "Sec-Fetch-Site": "cross-site", "Origin": "https://evil.test"}
    )
    assert r.status_code == 403
    assert backend.count() == 0


def test_header_authenticated_logout_is_not_csrf_checked(client: Client, make_token: TokenFactory) -> None:
    r = client().post(
        "/auth/logout-all",
        headers={**bearer(make_token(iat=earlier())), "Sec-Fetch-Site": "cross-site", "Origin": "https://evil.test"},
    )
    assert r.status_code == 200


# ---- the scheme of Origin against the app's ----------------------------------------------------------


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
        assert redis_client.dbsize() == 2  # the user's bucket (cutoff, jti) and the session's (sid)


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
