"""End to end through Starlette and a raw ASGI app, on every store (memory, fakeredis, real Redis)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, MutableMapping
from typing import Any

import pytest
from starlette.testclient import TestClient, WebSocketDenialResponse

from signout import SignOutMiddleware

from .apps import RawApp, starlette_app
from .conftest import SECRET, Backend, TokenFactory, make_client

DELETE_REFRESH = (
    'refresh_token=""; Path=/auth/refresh; Max-Age=0; '
    "Expires=Thu, 01 Jan 1970 00:00:00 GMT; HttpOnly; Secure; SameSite=Strict"
)
Client = Callable[..., TestClient]


@pytest.fixture(params=["asgi", "wsgi"])
def client(request: pytest.FixtureRequest, backend: Backend) -> Client:
    """Every case runs through both adapters: one core, two kinds of I/O."""
    return make_client(request.param, backend, "https://testserver")


@pytest.fixture
def asgi_client(backend: Backend) -> Client:
    return make_client("asgi", backend, "https://testserver")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_no_token_passes_through_untouched(client: Client) -> None:
    r = client().get("/me")
    assert r.status_code == 200
    assert r.json() == {"claims": None, "saw_authorization": False}


def test_valid_token_passes_with_verified_claims_in_scope(client: Client, make_token: TokenFactory) -> None:
    r = client().get("/me", headers=bearer(make_token(sub="alice")))
    assert r.status_code == 200
    assert r.json()["claims"]["sub"] == "alice"


def test_logout_answers_200_clears_the_refresh_cookie_and_revokes(
    client: Client, backend: Backend, make_token: TokenFactory
) -> None:
    c = client()
    token = make_token()
    r = c.post("/auth/logout", headers=bearer(token))
    assert r.status_code == 200
    assert r.json() == {"message": "Logged out successfully"}
    assert r.headers.get_list("set-cookie") == [DELETE_REFRESH]
    assert r.headers["cache-control"] == "no-store"
    assert backend.count() == 2  # the jti and the sid
    after = c.get("/me", headers=bearer(token))
    assert after.status_code == 401
    assert after.json() == {"error": "invalid_token", "message": "Token has been revoked"}
    assert (
        after.headers["www-authenticate"] == 'Bearer error="invalid_token", error_description="Token has been revoked"'
    )
    assert after.headers["cache-control"] == "no-store"


def test_logout_kills_the_refresh_token_of_the_same_session(client: Client, make_token: TokenFactory) -> None:
    c = client()
    access, refresh = make_token(jti="a-1", sid="s-9"), make_token(jti="r-1", sid="s-9")
    assert c.post("/auth/refresh", headers={"Cookie": f"refresh_token={refresh}"}).status_code == 200
    assert c.post("/auth/logout", headers=bearer(access)).status_code == 200
    r = c.post("/auth/refresh", headers={"Cookie": f"refresh_token={refresh}"})
    assert r.status_code == 401
    assert r.json()["message"] == "Token has been revoked"
    assert DELETE_REFRESH in r.headers.get_list("set-cookie")


def test_logout_leaves_other_sessions_and_users_alone(client: Client, make_token: TokenFactory) -> None:
    c = client()
    mine, my_other_login, someone_else = (
        make_token(),
        make_token(jti="j-2", sid="s-2"),
        make_token(sub="bob", jti="j-3"),
    )
    assert c.post("/auth/logout", headers=bearer(mine)).status_code == 200
    assert c.get("/me", headers=bearer(my_other_login)).status_code == 200
    assert c.get("/me", headers=bearer(someone_else)).status_code == 200


def test_logout_without_a_token_still_clears_cookies_and_revokes_nothing(client: Client, backend: Backend) -> None:
    r = client().post("/auth/logout")
    assert r.status_code == 200
    assert r.headers.get_list("set-cookie") == [DELETE_REFRESH]
    assert backend.count() == 0


def test_logout_never_revokes_on_the_word_of_an_unverified_token(
    client: Client, backend: Backend, make_token: TokenFactory
) -> None:
    forged = make_token(key="another-secret-that-is-32-bytes-long!!")
    r = client().post("/auth/logout", headers=bearer(forged))
    assert r.status_code == 200
    assert backend.count() == 0


def test_logout_revokes_every_presented_token_including_duplicate_cookies(
    client: Client, backend: Backend, make_token: TokenFactory
) -> None:
    c = client(access_cookie="access_token")
    header, cookie = make_token(jti="h", sid="s-h"), make_token(jti="c", sid="s-c")
    refresh_a, refresh_b = make_token(jti="ra", sid="s-ra"), make_token(jti="rb", sid="s-rb")
    cookies = f"access_token={cookie}; refresh_token={refresh_a}; refresh_token={refresh_b}"
    r = c.post("/auth/logout", headers={**bearer(header), "Cookie": cookies})
    assert r.status_code == 200
    assert backend.count() == 8
    deletions = r.headers.get_list("set-cookie")
    assert DELETE_REFRESH in deletions
    assert any(d.startswith('access_token=""; Path=/;') for d in deletions)
    for token in (header, cookie):
        assert c.get("/me", headers=bearer(token)).status_code == 401


def test_guard_checks_every_refresh_cookie_of_the_same_name(client: Client, make_token: TokenFactory) -> None:
    c = client()
    dead, alive = make_token(jti="dead", sid="s-dead"), make_token(jti="alive", sid="s-alive")
    assert c.post("/auth/logout", headers=bearer(dead)).status_code == 200
    r = c.post("/auth/refresh", headers={"Cookie": f"refresh_token={alive}; refresh_token={dead}"})
    assert r.status_code == 401
    assert c.post("/auth/refresh", headers={"Cookie": f"refresh_token={alive}"}).status_code == 200


def test_refresh_cookie_is_only_checked_under_its_path(client: Client, make_token: TokenFactory) -> None:
    c = client()
    dead = make_token()
    assert c.post("/auth/logout", headers=bearer(dead)).status_code == 200
    # A browser would not send it to /me; if something does, the guard does not judge it.
    assert c.get("/me", headers={"Cookie": f"refresh_token={dead}"}).status_code == 200
    assert c.post("/auth/refresh/", headers={"Cookie": f"refresh_token={dead}"}).status_code == 401


@pytest.mark.parametrize(
    ("target", "status"),
    [
        ("https://app.example/bye", 303),
        ("https://app.example/other/page?x=1", 303),
        ("https://exact.example/signed-out", 303),
        ("https://exact.example/elsewhere", 400),
        ("https://evil.example/", 400),
        ("//evil.example/", 400),
        ("/relative", 400),
        ("javascript:alert(1)", 400),
        ("https://app.example@evil.example/", 400),
        ("https://app.example\\@evil.example/", 400),
        ("http://app.example/", 400),
    ],
)
def test_return_to_redirects_only_to_allowed_targets(client: Client, target: str, status: int) -> None:
    c = client(allowed_redirects=["https://app.example", "https://exact.example/signed-out"])
    r = c.post("/auth/logout", params={"return_to": target}, follow_redirects=False)
    assert r.status_code == status
    assert DELETE_REFRESH in r.headers.get_list("set-cookie")
    if status == 303:
        assert r.headers["location"] == target
    else:
        assert "location" not in r.headers
        assert r.json()["error"] == "invalid_request"


def test_clear_site_data_header_on_logout(client: Client) -> None:
    r = client(clear_site_data=("cookies", "storage")).post("/auth/logout")
    assert r.headers["clear-site-data"] == '"cookies", "storage"'


def test_cookie_domain_goes_on_the_deletion_cookie(client: Client) -> None:
    r = client(cookie_domain="example.com").post("/auth/logout")
    assert r.headers["set-cookie"].startswith('refresh_token=""; Domain=example.com; Path=/auth/refresh;')


def test_logout_route_answers_405_to_other_methods_and_lets_options_through(client: Client) -> None:
    c = client()
    r = c.get("/auth/logout")
    assert r.status_code == 405
    assert r.headers["allow"] == "POST"
    assert r.json()["error"] == "method_not_allowed"
    assert c.options("/auth/logout").status_code == 200


def test_logout_path_none_disables_the_route(client: Client, make_token: TokenFactory) -> None:
    r = client(logout_path=None).post("/auth/logout", headers=bearer(make_token()))
    assert r.json() == {"ok": True}  # the app's own handler answered


def test_exclude_paths_are_never_checked(client: Client, make_token: TokenFactory) -> None:
    c = client(exclude_paths=["/health"])
    assert c.get("/health", headers=bearer("garbage")).status_code == 200
    assert c.get("/me", headers=bearer("garbage")).status_code == 401


def test_on_invalid_token_pass_hands_the_request_to_the_app(client: Client) -> None:
    r = client(on_invalid_token="pass").get("/me", headers=bearer("not.a.token"))
    assert r.status_code == 200
    assert r.json() == {"claims": None, "saw_authorization": True}


def test_invalid_token_is_rejected_with_a_bearer_challenge(client: Client, make_token: TokenFactory) -> None:
    r = client().get("/me", headers=bearer(make_token(exp=1_000_000_000, iat=999_999_000)))
    assert r.status_code == 401
    assert r.json() == {"error": "invalid_token", "message": "Token has expired"}
    assert r.headers["www-authenticate"] == 'Bearer error="invalid_token", error_description="Token has expired"'


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


def _non_utf8_token() -> str:
    import base64
    import hashlib
    import hmac

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header, payload = b64(b'{"alg":"HS256","typ":"JWT"}'), b64(b"\xff\xfe\xfd")
    signing_input = f"{header}.{payload}"
    return f"{signing_input}.{b64(hmac.new(SECRET.encode(), signing_input.encode(), hashlib.sha256).digest())}"


GARBAGE_AUTHORIZATION: list[bytes] = [
    b"",
    b"Bearer",
    b"Bearer ",
    b"Bearer a.b",
    b"Bearer ..",
    b"Bearer a..b",
    b"Bearer " + b"A" * 65536,
    b"Bearer " + b"a." * 20000,
    b"Bearer \xff\xfe.\x00.\r",
    b"Bearer " + _non_utf8_token().encode(),
    b"Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJhIn0.",
    b"\xff\xff\xff",
    b"Basic dXNlcjpwYXNz",
]
GARBAGE_COOKIES: list[bytes] = [
    b"refresh_token",
    b"refresh_token=",
    b"=;;;=",
    b"refresh_token=\xff\xfe",
    b'refresh_token="',
    b"refresh_token=a.b.c; refresh_token=; refresh_token=" + b"x" * 70000,
    b"access_token=\x00; refresh_token=\r\n",
]


@pytest.mark.parametrize("value", GARBAGE_AUTHORIZATION, ids=[repr(v)[:24] for v in GARBAGE_AUTHORIZATION])
@pytest.mark.parametrize(("method", "path"), [("GET", "/me"), ("POST", "/auth/logout"), ("POST", "/auth/refresh")])
def test_garbage_authorization_never_500_and_revokes_nothing(
    client: Client, backend: Backend, value: bytes, method: str, path: str
) -> None:
    c = client(access_cookie="access_token")
    r = c.request(method, path, headers=[(b"authorization", value)])
    assert r.status_code < 500
    if r.status_code >= 400:
        assert r.headers["content-type"] == "application/json"
        assert r.json()["error"] == "invalid_token"
    assert backend.count() == 0


@pytest.mark.parametrize("value", GARBAGE_COOKIES, ids=[repr(v)[:24] for v in GARBAGE_COOKIES])
@pytest.mark.parametrize(("method", "path"), [("GET", "/me"), ("POST", "/auth/logout"), ("POST", "/auth/refresh")])
def test_garbage_cookies_never_500_and_revoke_nothing(
    client: Client, backend: Backend, value: bytes, method: str, path: str
) -> None:
    c = client(access_cookie="access_token")
    r = c.request(method, path, headers=[(b"cookie", value)])
    assert r.status_code < 500
    if r.status_code >= 400:
        assert r.json()["error"] == "invalid_token"
    assert backend.count() == 0


def test_two_authorization_headers_are_refused(client: Client, make_token: TokenFactory) -> None:
    token = make_token()
    r = client().get("/me", headers=[("authorization", f"Bearer {token}"), ("authorization", f"Bearer {token}")])
    assert r.status_code == 401
    assert r.json()["message"] == "Authorization header is malformed"


def test_an_invalid_refresh_cookie_is_rejected_and_cleared(client: Client, make_token: TokenFactory) -> None:
    r = client(access_cookie="access_token").post(
        "/auth/refresh", headers={"Cookie": f"access_token={make_token()}; refresh_token=garbage"}
    )
    assert r.status_code == 401
    assert r.headers.get_list("set-cookie") == [DELETE_REFRESH]  # the valid access cookie stays


def test_a_revoked_access_cookie_is_cleared(client: Client, make_token: TokenFactory) -> None:
    c = client(access_cookie="access_token")
    token = make_token()
    assert c.post("/auth/logout", headers=bearer(token)).status_code == 200
    r = c.get("/me", headers={"Cookie": f"access_token={token}"})
    assert r.status_code == 401
    assert r.headers["set-cookie"].startswith('access_token=""; Path=/; Max-Age=0;')


def test_rs256_middleware_refuses_an_hs256_token_signed_with_its_public_key(backend: Backend) -> None:
    import base64
    import hashlib
    import hmac
    import json

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header, payload = json.dumps({"alg": "HS256"}), json.dumps({"sub": "x", "jti": "y", "exp": 2**31})
    body = f"{b64(header.encode())}.{b64(payload.encode())}"
    forged = f"{body}.{b64(hmac.new(public, body.encode(), hashlib.sha256).digest())}"
    middleware = SignOutMiddleware(starlette_app(), key=public, algorithms=["RS256"], store=backend.make())
    c = TestClient(middleware, base_url="https://t")
    r = c.get("/me", headers=bearer(forged))
    assert r.status_code == 401
    assert r.json()["message"] == "Token algorithm is not allowed"
    assert c.post("/auth/logout", headers=bearer(forged)).status_code == 200
    assert backend.count() == 0


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
    assert c.get("/me", headers=headers).status_code == 200  # first sight: verified the long way
    assert c.get("/me", headers=headers).status_code == 200  # cached: judged in one call
    assert starts == ["/me"]
    first, second = (s["signout.claims"] for s in raw.scopes[-2:])
    assert first == second and first["roles"] == ["admin"]
    assert first is not second and first["roles"] is not second["roles"]  # each request its own copy
    assert c.post("/auth/logout", headers=headers).status_code == 200
    assert c.get("/me", headers=headers).status_code == 401  # revoked: the long way, which refuses it
    assert starts == ["/me", "/auth/logout", "/me"]
