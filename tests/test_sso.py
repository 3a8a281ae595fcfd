"""Single sign-out, CSRF refusal, the revocation endpoint and audit records, end to end."""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Callable

import pytest
from starlette.testclient import TestClient

from signout import AuditEvent, SignOutMiddleware

from .apps import starlette_app
from .conftest import ISS, SECRET, Backend, TokenFactory, make_client

Client = Callable[..., TestClient]
CLIENT_SECRET = "billing-secret-0123456789"


@pytest.fixture(params=["asgi", "wsgi"])
def client(request: pytest.FixtureRequest, backend: Backend) -> Client:
    """Every case runs through both adapters: one core, two kinds of I/O."""
    return make_client(request.param, backend, "https://app.test")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def earlier(seconds: int = 5) -> int:
    return int(time.time()) - seconds


# ---- single sign-out --------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_logout_all_kills_every_session_of_the_user(
    client: Client, backend: Backend, make_token: TokenFactory, method: str
) -> None:
    c = client()
    laptop = make_token(sid="laptop", jti="l1", iat=earlier())
    phone = make_token(sid="phone", jti="p1", iat=earlier())
    phone_refresh = make_token(sid="phone", jti="p2", iat=earlier())
    bob = make_token(sub="bob", sid="b", jti="b1", iat=earlier())
    r = c.request(method, "/auth/logout-all", headers=bearer(laptop))
    assert r.status_code == 200
    assert r.json() == {"message": "Successfully logged out from SSO session"}
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["set-cookie"].startswith('refresh_token=""; Path=/auth/refresh;')
    for token in (laptop, phone):
        assert c.get("/me", headers=bearer(token)).status_code == 401
    assert c.post("/auth/refresh", headers={"Cookie": f"refresh_token={phone_refresh}"}).status_code == 401
    assert c.get("/me", headers=bearer(bob)).status_code == 200


def test_a_token_issued_after_the_cutoff_works(client: Client, make_token: TokenFactory) -> None:
    c = client()
    for _ in range(5):  # until one logout falls within one second: that second is the cutoff
        second = int(time.time())
        assert c.post("/auth/logout-all", headers=bearer(make_token(iat=earlier()))).status_code == 200
        if int(time.time()) == second:
            break
    else:
        pytest.fail("no logout-all within one clock second")
    later = make_token(sid="new", jti="n1", iat=second + 2)
    assert c.get("/me", headers=bearer(later)).status_code == 200
    same_second = make_token(sid="new2", jti="n2", iat=second)
    assert c.get("/me", headers=bearer(same_second)).status_code == 401  # iat equal to the cutoff second


def test_a_token_without_iat_dies_by_any_user_wide_logout(client: Client, make_token: TokenFactory) -> None:
    c = client()
    assert c.post("/auth/logout-all", headers=bearer(make_token(iat=earlier()))).status_code == 200
    assert c.get("/me", headers=bearer(make_token(sid="x", jti="x", iat=None))).status_code == 401


def test_same_sub_under_another_issuer_is_untouched(client: Client, make_token: TokenFactory) -> None:
    c = client()
    assert c.post("/auth/logout-all", headers=bearer(make_token(iat=earlier()))).status_code == 200
    other = make_token(iss="https://other.test", sid="o", jti="o", iat=earlier())
    assert c.get("/me", headers=bearer(other)).status_code == 200


@pytest.mark.parametrize("case", ["no token", "bad signature", "expired", "revoked", "garbage"])
def test_logout_all_needs_a_valid_unrevoked_token(
    client: Client, backend: Backend, make_token: TokenFactory, case: str
) -> None:
    c = client()
    headers: dict[str, str] = {}
    if case == "bad signature":
        headers = bearer(make_token(key="another-secret-that-is-32-bytes-long!!"))
    elif case == "expired":
        headers = bearer(make_token(exp=earlier(600), iat=earlier(1200)))
    elif case == "revoked":
        token = make_token()
        assert c.post("/auth/logout", headers=bearer(token)).status_code == 200
        headers = bearer(token)
    elif case == "garbage":
        headers = {"Authorization": "Bearer \x01"}
    before = backend.count()
    r = c.post("/auth/logout-all", headers=headers)
    assert r.status_code == 401
    assert r.json() == {"message": "Unauthenticated."}
    assert backend.count() == before


def test_logout_all_answers_405_to_other_methods(client: Client) -> None:
    r = client().delete("/auth/logout-all")
    assert r.status_code == 405
    assert r.headers["allow"] == "GET, POST"


def test_logout_all_with_a_token_without_sub_is_400(client: Client, backend: Backend, make_token: TokenFactory) -> None:
    r = client().post("/auth/logout-all", headers=bearer(make_token(sub=None)))
    assert r.status_code == 400
    assert backend.count() == 0


def test_two_apps_on_one_redis_single_sign_out(redis_url: str, make_token: TokenFactory) -> None:
    shop = TestClient(SignOutMiddleware(starlette_app(), key=SECRET, redis_url=redis_url), base_url="https://shop.test")
    blog = TestClient(SignOutMiddleware(starlette_app(), key=SECRET, redis_url=redis_url), base_url="https://blog.test")
    at_shop = make_token(sid="shop", jti="s1", iat=earlier())
    at_blog = make_token(sid="blog", jti="b1", iat=earlier())
    carol = make_token(sub="carol", sid="c", jti="c1", iat=earlier())
    assert blog.get("/me", headers=bearer(at_blog)).status_code == 200
    assert shop.get("/auth/logout-all", headers=bearer(at_shop)).status_code == 200
    for app in (shop, blog):
        assert app.get("/me", headers=bearer(at_blog)).status_code == 401
        assert app.get("/me", headers=bearer(at_shop)).status_code == 401
        assert app.get("/me", headers=bearer(carol)).status_code == 200
    fresh = make_token(sid="again", jti="a1", iat=int(time.time()) + 2)
    assert blog.get("/me", headers=bearer(fresh)).status_code == 200


# ---- CSRF ------------------------------------------------------------------------

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


# ---- the revocation endpoint (RFC 7009 / CentralAuth) ----------------------------


def basic(client_id: str = "billing", secret: str = CLIENT_SECRET) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


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
    from .conftest import free_port

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


# ---- audit -----------------------------------------------------------------------


def test_audit_records_every_kind_of_event_and_never_a_token(
    client: Client, make_token: TokenFactory, caplog: pytest.LogCaptureFixture
) -> None:
    events: list[AuditEvent] = []
    c = client(on_event=events.append, access_cookie="access_token", clients={"billing": CLIENT_SECRET})
    tokens = [make_token(jti=f"j{i}", sid=f"s{i}", iat=earlier()) for i in range(4)]
    with caplog.at_level(logging.INFO, logger="signout.audit"):
        c.post("/auth/logout", headers=bearer(tokens[0]))
        c.get("/me", headers=bearer(tokens[0]))
        c.get("/me", headers=bearer("x.y.z"))
        c.post("/auth/logout-all", headers={"Cookie": f"access_token={tokens[1]}", "Sec-Fetch-Site": "cross-site"})
        c.post("/auth/revoke", headers=basic(), data={"token": tokens[2]})
        c.post("/auth/revoke", headers=basic(secret="nope-nope-nope-nope"), data={"token": tokens[2]})
        c.post("/auth/logout-all", headers=bearer(tokens[3]))
    seen = [(e.event, e.outcome) for e in events]
    assert seen == [
        ("logout", "revoked"),
        ("rejected", "revoked"),
        ("rejected", "invalid_token"),
        ("csrf_refused", "refused"),
        ("revocation", "revoked"),
        ("revocation", "invalid_client"),
        ("logout_all", "revoked"),
    ]
    first = events[0]
    assert (first.iss, first.sub, first.sid, first.jti, first.path) == (ISS, "alice", "s0", "j0", "/auth/logout")
    assert first.client is not None
    assert events[4].client_id == "billing" and events[4].scope == "token"
    records = [json.loads(r.getMessage()) for r in caplog.records if r.name == "signout.audit"]
    assert [(r["event"], r["outcome"]) for r in records] == seen
    text = caplog.text + repr(events)
    for token in tokens:
        assert token not in text
        assert token.split(".")[2] not in text


def test_a_failing_audit_callback_never_breaks_a_logout(client: Client, make_token: TokenFactory) -> None:
    def explode(event: AuditEvent) -> None:
        raise RuntimeError("sink down")

    assert client(on_event=explode).post("/auth/logout", headers=bearer(make_token())).status_code == 200
