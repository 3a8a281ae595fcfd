"""The revocation endpoint (``signout.endpoint``; RFC 7009, and CentralAuth's text/plain form).

What it revokes and refuses, on every store; then client authentication, over the real Redis:
every way a client may encode its credentials (curl, requests, Authlib, RFC 6749, a form
body), every near miss refused, and Authlib's own clients under real servers.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any
from urllib.parse import quote_plus

import httpx
import pytest
from starlette.testclient import TestClient

from signout import AuditEvent, RedisStore, SignOutMiddleware, SignOutWSGIMiddleware

from .apps import starlette_app, wsgi_app
from .conftest import SECRET, Backend, TokenFactory, free_port
from .framework_helpers import uvicorn_server, werkzeug_server, wsgiref_server
from .helpers import CLIENT_SECRET, basic, bearer, earlier

Client = Callable[..., TestClient]
RealClient = Callable[..., httpx.Client]
Headers = list[tuple[str, str]]


@pytest.fixture
def revoking(client: Client) -> TestClient:
    return client(clients={"billing": CLIENT_SECRET})


def test_revoke_with_a_form_body(revoking: TestClient, make_token: TokenFactory) -> None:
    token, sibling = make_token(), make_token(jti="j-2")
    r = revoking.post("/auth/revoke", headers=basic(), data={"token": token, "token_type_hint": "whatever"})
    assert r.status_code == 200
    assert r.json() == {"revoked": True, "scope": "token"}
    assert revoking.get("/me", headers=bearer(token)).status_code == 401
    assert revoking.get("/me", headers=bearer(sibling)).status_code == 200  # same session, not revoked


def test_revoke_with_a_text_body_session_wide(revoking: TestClient, make_token: TokenFactory) -> None:
    token, sibling = make_token(), make_token(jti="j-2")
    r = revoking.post(
        "/auth/revoke?logoutSessionWide=true",
        headers={**basic(), "Content-Type": "text/plain"},
        content=token.encode(),
    )
    assert r.json() == {"revoked": True, "scope": "session"}
    assert revoking.get("/me", headers=bearer(sibling)).status_code == 401


def test_revoke_user_wide(revoking: TestClient, make_token: TokenFactory) -> None:
    other_session = make_token(sid="s-2", jti="j-2", iat=earlier())
    r = revoking.post("/auth/revoke", headers=basic(), data={"token": make_token(iat=earlier()), "revoke": "user"})
    assert r.json() == {"revoked": True, "scope": "user"}
    assert revoking.get("/me", headers=bearer(other_session)).status_code == 401


@pytest.mark.parametrize(
    "headers",
    [{}, basic(secret="wrong-secret-0123456789"), basic(client_id="nobody"), {"Authorization": "Basic !!!"}],
    ids=["missing", "bad secret", "unknown client", "garbage"],
)
def test_revoke_needs_client_authentication(
    revoking: TestClient, backend: Backend, make_token: TokenFactory, headers: dict[str, str]
) -> None:
    r = revoking.post("/auth/revoke", headers=headers, data={"token": make_token()})
    assert r.status_code == 401
    assert r.json()["error"] == "invalid_client"
    assert r.headers["www-authenticate"] == 'Basic realm="signout"'
    assert backend.count() == 0


@pytest.mark.parametrize("body", ["garbage", "a.b.c", ""], ids=["garbage", "three segments", "empty"])
def test_revoke_an_unknown_or_invalid_token_is_200_and_revokes_nothing(
    revoking: TestClient, backend: Backend, body: str
) -> None:
    r = revoking.post("/auth/revoke", headers={**basic(), "Content-Type": "text/plain"}, content=body.encode())
    assert r.status_code == 200
    assert r.json() == {"revoked": False}
    assert backend.count() == 0


def test_revoke_body_is_capped(revoking: TestClient) -> None:
    r = revoking.post("/auth/revoke", headers={**basic(), "Content-Type": "text/plain"}, content=b"x" * 100_000)
    assert r.status_code == 413


def test_revoke_bad_requests(revoking: TestClient, make_token: TokenFactory) -> None:
    assert revoking.get("/auth/revoke", headers=basic()).status_code == 405
    assert revoking.post("/auth/revoke", headers=basic(), data={"nothing": "here"}).status_code == 400
    bad_scope = revoking.post("/auth/revoke", headers=basic(), data={"token": make_token(), "revoke": "galaxy"})
    assert bad_scope.status_code == 400
    as_json = revoking.post("/auth/revoke", headers=basic(), json={"token": make_token()})
    assert as_json.status_code == 400


def test_revoke_refuses_a_token_of_another_client(
    revoking: TestClient, backend: Backend, make_token: TokenFactory
) -> None:
    r = revoking.post("/auth/revoke", headers=basic(), data={"token": make_token(azp="shop")})
    assert r.status_code == 400
    assert r.json()["error"] == "unauthorized_client"
    assert backend.count() == 0


def test_revoke_path_is_not_served_without_clients(client: Client, make_token: TokenFactory) -> None:
    r = client().post("/auth/revoke", headers=basic(), data={"token": make_token()})
    assert r.status_code == 404  # the app's own router answered


def test_revoke_when_the_store_is_down_is_503(make_token: TokenFactory) -> None:
    c = TestClient(
        SignOutMiddleware(
            starlette_app(),
            key=SECRET,
            redis_url=f"redis://127.0.0.1:{free_port()}/0",
            store_timeout=0.2,
            clients={"billing": CLIENT_SECRET},
        )
    )
    r = c.post("/auth/revoke", headers=basic(), data={"token": make_token()})
    assert r.status_code == 503
    assert r.headers["retry-after"] == "5"


# ---- client authentication (real Redis): how each client puts the credentials on the wire ----------


# What `openssl rand -base64 32` prints: "+", "/" and "=" (about half of them hold a "+").
OPENSSL = "q+3ZtV/0fXkP+aR8wYv/LmN2cJ5sEoHiU7gT1bKdWx4="
SECRETS = {
    "openssl": OPENSSL,
    "percent": "pct%41%2B%zz-0123456789",  # reads differently raw and form-decoded
    "colon": "colon:sec:ret-0123456789",  # Basic splits at the first ":" only
    "space": "with space+plus 0123456789",
    "latin-1": "sécret+/=%:ü-0123456789",  # requests and Authlib send it latin-1, curl UTF-8
    "beyond latin-1": "秘密+€/=%:-0123456789",  # requests and Authlib cannot send it in Basic
}
WRONG = "wrong-secret-0123456789"
INVALID_CLIENT = {"error": "invalid_client", "error_description": "Client authentication failed"}
BOTH = {
    "error": "invalid_request",
    "error_description": (
        "authenticate the client with HTTP Basic or with client_id and client_secret in the body, not both"
    ),
}
REPEATED = {"error": "invalid_request", "error_description": "client_id and client_secret may each appear only once"}
REVOKED = {"revoked": True, "scope": "token"}


def basic_raw(raw: bytes) -> Headers:
    return [("Authorization", "Basic " + base64.b64encode(raw).decode("ascii"))]


def curl(client_id: str, secret: str) -> Headers:
    """``curl -u id:secret``: base64 of the bytes as typed (UTF-8), nothing encoded."""
    return basic_raw(f"{client_id}:{secret}".encode())


def requests_auth(client_id: str, secret: str) -> Headers:
    """requests' ``auth=(id, secret)`` and Authlib's client_secret_basic: raw, latin-1."""
    return basic_raw(f"{client_id}:{secret}".encode("latin-1"))


def rfc6749(client_id: str, secret: str) -> Headers:
    """RFC 6749 section 2.3.1: each form-urlencoded (UTF-8), then base64."""
    return basic_raw(f"{quote_plus(client_id)}:{quote_plus(secret)}".encode("ascii"))


def posted(client_id: str, secret: str) -> dict[str, str]:
    return {"client_id": client_id, "client_secret": secret}


def _encodings(secret: str) -> list[str]:
    names = ["curl -u", "RFC 6749", "client_secret_post"]
    try:
        secret.encode("latin-1")
    except UnicodeEncodeError:
        return names
    return [*names, "requests"]


CASES = [(name, how) for name, secret in SECRETS.items() for how in _encodings(secret)]


def credentials(how: str, client_id: str, secret: str) -> tuple[Headers, dict[str, str]]:
    """(headers, extra form fields) of one way of sending the credentials."""
    if how == "client_secret_post":
        return [], posted(client_id, secret)
    encode = {"curl -u": curl, "requests": requests_auth, "RFC 6749": rfc6749}[how]
    return encode(client_id, secret), {}


def clients(secret: str = OPENSSL) -> dict[str, str]:
    return {"billing": secret, "shop": "shop-secret-0123456789"}


def revoke(c: httpx.Client, headers: Headers, fields: dict[str, str], token: str) -> httpx.Response:
    return c.post("/auth/revoke", headers=headers, data={"token": token, **fields})


def me(c: httpx.Client, token: str) -> int:
    return c.get("/me", headers={"Authorization": f"Bearer {token}"}).status_code


def assert_refused(r: httpx.Response, c: httpx.Client, redis_backend: Backend, token: str) -> None:
    assert (r.status_code, r.json()) == (401, INVALID_CLIENT)
    assert r.headers["www-authenticate"] == 'Basic realm="signout"'
    assert redis_backend.count() == 0
    assert me(c, token) == 200


def assert_bad(r: httpx.Response, body: dict[str, str], c: httpx.Client, redis_backend: Backend, token: str) -> None:
    assert (r.status_code, r.json()) == (400, body)
    assert redis_backend.count() == 0
    assert me(c, token) == 200


# ---- every secret, every encoding --------------------------------------------------------------------


@pytest.mark.parametrize(("name", "how"), CASES, ids=[f"{name}-{how}" for name, how in CASES])
def test_every_encoding_of_every_secret_authenticates(
    real_client: RealClient, make_token: TokenFactory, name: str, how: str
) -> None:
    secret = SECRETS[name]
    c = real_client(clients=clients(secret))
    token = make_token()
    headers, fields = credentials(how, "billing", secret)
    r = revoke(c, headers, fields, token)
    assert (r.status_code, r.json()) == (200, REVOKED)
    assert me(c, token) == 401


@pytest.mark.parametrize("how", ["curl -u", "requests", "RFC 6749", "client_secret_post"])
def test_a_client_id_with_special_characters(real_client: RealClient, make_token: TokenFactory, how: str) -> None:
    c = real_client(clients={"ops team+é%41": OPENSSL})
    token = make_token()
    headers, fields = credentials(how, "ops team+é%41", OPENSSL)
    assert revoke(c, headers, fields, token).json() == REVOKED
    assert me(c, token) == 401


def test_a_text_body_with_raw_basic(real_client: RealClient, make_token: TokenFactory) -> None:
    """CentralAuth's form: the bare token as text/plain, a `+` secret sent as curl sends it."""
    c = real_client(clients=clients())
    token, sibling = make_token(), make_token(jti="j-2")
    headers = [*curl("billing", OPENSSL), ("Content-Type", "text/plain")]
    r = c.post("/auth/revoke?logoutSessionWide=true", headers=headers, content=token.encode())
    assert (r.status_code, r.json()) == (200, {"revoked": True, "scope": "session"})
    assert me(c, sibling) == 401


# ---- refusals: nothing revoked -----------------------------------------------------------------------


NEAR_MISSES: dict[str, tuple[Headers, dict[str, str]]] = {
    "wrong secret": (curl("billing", WRONG), {}),
    "'+' read as a space": (curl("billing", OPENSSL.replace("+", " ")), {}),
    "secret cut short": (curl("billing", OPENSSL[:-1]), {}),
    "secret one too long": (curl("billing", OPENSSL + "x"), {}),
    "another secret": (curl("billing", SECRETS["latin-1"]), {}),
    "another client's id": (curl("shop", OPENSSL), {}),
    "unknown id": (curl("nobody", OPENSSL), {}),
    "unknown id, RFC 6749": (rfc6749("nobody", OPENSSL), {}),
    "post, wrong secret": ([], posted("billing", WRONG)),
    "post, unknown id": ([], posted("nobody", OPENSSL)),
    "post without client_id": ([], {"client_secret": OPENSSL}),
    "client_id alone": ([], {"client_id": "billing"}),  # client authentication "none" is not offered
    "nothing": ([], {}),
    "unreadable basic": ([("Authorization", "Basic !!!")], {}),
    "basic without a colon": (basic_raw(b"billing-and-no-colon"), {}),
    "bearer, post wrong": ([("Authorization", "Bearer " + OPENSSL)], posted("billing", WRONG)),
    "two authorization headers": ([*curl("billing", OPENSSL), *curl("billing", OPENSSL)], {}),
}


@pytest.mark.parametrize(("headers", "fields"), list(NEAR_MISSES.values()), ids=list(NEAR_MISSES))
def test_wrong_or_missing_credentials_are_401(
    real_client: RealClient, redis_backend: Backend, make_token: TokenFactory, headers: Headers, fields: dict[str, str]
) -> None:
    c = real_client(clients=clients())
    token = make_token()
    assert_refused(revoke(c, headers, fields, token), c, redis_backend, token)


def test_client_secret_post_fields_in_a_text_body_are_not_credentials(
    real_client: RealClient, redis_backend: Backend, make_token: TokenFactory
) -> None:
    c = real_client(clients=clients())
    token = make_token()
    body = f"client_id=billing&client_secret={quote_plus(OPENSSL)}&token={token}"
    r = c.post("/auth/revoke", headers={"Content-Type": "text/plain"}, content=body.encode())
    assert_refused(r, c, redis_backend, token)


@pytest.mark.parametrize(
    "headers",
    [
        curl("billing", OPENSSL),
        curl("billing", WRONG),
        rfc6749("shop", "shop-secret-0123456789"),
        basic_raw(b"garbage"),
    ],
    ids=["right basic", "wrong basic", "another client's basic", "unreadable basic"],
)
@pytest.mark.parametrize("secret", [OPENSSL, WRONG], ids=["right post", "wrong post"])
def test_basic_and_client_secret_post_at_once_is_400(
    real_client: RealClient, redis_backend: Backend, make_token: TokenFactory, headers: Headers, secret: str
) -> None:
    c = real_client(clients=clients())
    token = make_token()
    assert_bad(revoke(c, headers, posted("billing", secret), token), BOTH, c, redis_backend, token)


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        ([], "client_id=billing&client_id=billing&client_secret={s}&token={t}"),
        ([], "client_id=billing&client_secret={s}&client_secret={s}&token={t}"),
        ([], "client_id=billing&client_secret={s}&client_secret=wrong&token={t}"),
        (curl("billing", OPENSSL), "client_id=billing&client_id=shop&token={t}"),
    ],
    ids=["client_id twice", "client_secret twice", "two different secrets", "client_id twice beside basic"],
)
def test_repeated_credential_fields_are_400(
    real_client: RealClient, redis_backend: Backend, make_token: TokenFactory, headers: Headers, body: str
) -> None:
    c = real_client(clients=clients())
    token = make_token()
    content = body.format(s=quote_plus(OPENSSL), t=token).encode()
    headers = [*headers, ("Content-Type", "application/x-www-form-urlencoded")]
    r = c.post("/auth/revoke", headers=headers, content=content)
    assert_bad(r, REPEATED, c, redis_backend, token)


def test_a_client_id_field_beside_basic_must_name_the_same_client(
    real_client: RealClient, redis_backend: Backend, make_token: TokenFactory
) -> None:
    c = real_client(clients=clients())
    token = make_token()
    other = {"error": "invalid_request", "error_description": "client_id names another client than the credentials"}
    assert_bad(revoke(c, curl("billing", OPENSSL), {"client_id": "shop"}, token), other, c, redis_backend, token)
    assert revoke(c, curl("billing", OPENSSL), {"client_id": "billing"}, token).json() == REVOKED
    assert me(c, token) == 401


def test_a_body_too_large_to_read(real_client: RealClient, redis_backend: Backend, make_token: TokenFactory) -> None:
    """Credentials in an unread body are lost: the header alone decides, else 413 says why."""
    c = real_client(clients=clients())
    big = {"token": make_token(), "padding": "x" * 30_000}
    assert c.post("/auth/revoke", headers=curl("billing", OPENSSL), data=big).status_code == 413
    refused = c.post("/auth/revoke", headers=curl("billing", WRONG), data=big)
    assert (refused.status_code, refused.json()) == (401, INVALID_CLIENT)
    assert c.post("/auth/revoke", data={**big, **posted("billing", OPENSSL)}).status_code == 413
    assert redis_backend.count() == 0


def test_audit_events(real_client: RealClient, make_token: TokenFactory) -> None:
    events: list[AuditEvent] = []
    c = real_client(clients=clients(), on_event=events.append)
    token = make_token()
    revoke(c, curl("billing", WRONG), {}, token)
    revoke(c, [], posted("nobody", OPENSSL), token)
    revoke(c, curl("billing", OPENSSL), posted("billing", OPENSSL), token)
    revoke(c, [], posted("billing", OPENSSL), token)
    seen = [(e.event, e.outcome, e.client_id, e.reason) for e in events]
    assert seen == [
        ("revocation", "invalid_client", None, None),
        ("revocation", "invalid_client", None, None),
        ("revocation", "invalid_request", None, BOTH["error_description"]),
        ("revocation", "revoked", "billing", None),
    ]


# ---- Authlib's own clients against real servers ------------------------------------------------------


METHODS = ["client_secret_basic", "client_secret_post"]


AUTHLIB_SECRETS = {"openssl": OPENSSL, "latin-1": SECRETS["latin-1"]}


def _asgi_app(redis_url: str, secret: str) -> Any:
    return SignOutMiddleware(starlette_app(), key=SECRET, store=RedisStore(redis_url), clients=clients(secret))


def _wsgi_app(redis_url: str, secret: str) -> Any:
    return SignOutWSGIMiddleware(wsgi_app(), key=SECRET, store=RedisStore(redis_url), clients=clients(secret))


SERVERS: dict[str, tuple[Callable[[Any], AbstractContextManager[str]], Callable[[str, str], Any]]] = {
    "uvicorn": (uvicorn_server, _asgi_app),
    "werkzeug": (werkzeug_server, _wsgi_app),
    "wsgiref": (wsgiref_server, _wsgi_app),
}


def _authlib_revoke(library: str, url: str, secret: str, method: str, token: str) -> tuple[int, Any]:
    """(status, JSON body) of ``revoke_token`` by Authlib's requests or httpx client."""
    kwargs = {"token_endpoint_auth_method": method, "revocation_endpoint_auth_method": method}
    if library == "requests":
        session_module = pytest.importorskip("authlib.integrations.requests_client")
        with session_module.OAuth2Session("billing", secret, **kwargs) as session:
            r = session.revoke_token(url, token=token, token_type_hint="access_token")
            return int(r.status_code), r.json()
    httpx_module = pytest.importorskip("authlib.integrations.httpx_client")

    async def run() -> tuple[int, Any]:
        async with httpx_module.AsyncOAuth2Client("billing", secret, **kwargs) as oauth:
            r = await oauth.revoke_token(url, token=token, token_type_hint="access_token")
            return int(r.status_code), r.json()

    return asyncio.run(run())


@pytest.mark.parametrize("server", list(SERVERS))
@pytest.mark.parametrize("library", ["requests", "httpx"])
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("secret", list(AUTHLIB_SECRETS))
def test_authlib_revokes_under_a_real_server(
    redis_url: str, make_token: TokenFactory, server: str, library: str, method: str, secret: str
) -> None:
    serve, build = SERVERS[server]
    token, other = make_token(), make_token(jti="j-2")
    with serve(build(redis_url, AUTHLIB_SECRETS[secret])) as address, httpx.Client(base_url=f"http://{address}") as c:
        url = f"http://{address}/auth/revoke"
        assert _authlib_revoke(library, url, WRONG, method, token) == (401, INVALID_CLIENT)
        assert me(c, token) == 200
        assert _authlib_revoke(library, url, AUTHLIB_SECRETS[secret], method, token) == (200, REVOKED)
        assert me(c, token) == 401
        assert me(c, other) == 200  # that token only
