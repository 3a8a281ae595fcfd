"""SPEC section 8 end to end: every accepted token is one a logout can kill.

Each rule through both adapters over a real Redis, with tokens shaped as their
issuers mint them: Keycloak, Cognito, Casdoor, flask-jwt-extended (minted by the
library itself), djangorestframework-simplejwt.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import jwt
import pytest
import redis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from signout import AuditEvent, ConfigError, RedisStore, Revoker, SignOutMiddleware

from .apps import starlette_app
from .conftest import SECRET, Backend, make_client

KC = "https://sso.example/realms/acme"  # a Keycloak realm
Client = Callable[..., Any]


class Clock:
    """Time for the middleware, moved by the test (tokens are minted against the real clock)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store_keys(redis_url: str) -> Iterator[Callable[[], list[bytes]]]:
    real = redis.Redis.from_url(redis_url)
    yield lambda: sorted(k for k in real.scan_iter(match=b"*") if not k.endswith(b":changes"))
    real.close()


@pytest.fixture(params=["asgi", "wsgi"])
def client(request: pytest.FixtureRequest, redis_url: str, store_keys: Callable[[], list[bytes]]) -> Client:
    """A client of the test app behind one adapter, over the session's real Redis."""
    backend = Backend("redis", lambda: RedisStore(redis_url), lambda: len(store_keys()), store_keys)
    return make_client(request.param, backend, "https://app.test")


def sign(claims: dict[str, Any], headers: dict[str, Any] | None = None) -> str:
    return jwt.encode(claims, SECRET, algorithm="HS256", headers=headers)


def base(**more: Any) -> dict[str, Any]:
    now = int(time.time()) - 2
    claims: dict[str, Any] = {"iat": now, "exp": now + 600, "jti": str(uuid.uuid4())}
    claims.update(more)
    return {k: v for k, v in claims.items() if v is not None}


def keycloak(typ: str, **more: Any) -> str:
    """Keycloak's access (Bearer), ID, Refresh and Offline tokens share a shape; typ tells them apart."""
    aud = {"Bearer": "account", "ID": "web-app"}.get(typ, KC)
    claims = base(iss=KC, sub="f1b2c3d4-user", typ=typ, azp="web-app", sid="kc-session-1", aud=aud)
    claims.update(more)
    return sign({k: v for k, v in claims.items() if v is not None}, {"kid": "hs-1"})


def simplejwt(kind: str, user_id: object = 42, **more: Any) -> str:
    return sign(base(token_type=kind, user_id=user_id, **more))


def casdoor(kind: str, **more: Any) -> str:
    return sign(base(iss="https://door.example", sub="org/alice", aud=["app-id"], tokenType=kind, **more))


def flask_jwt_extended(kind: str, identity: str = "alice") -> str:
    """A token minted by flask-jwt-extended itself (``type`` claim, ``fresh``, ``csrf`` off)."""
    from flask import Flask
    from flask_jwt_extended import JWTManager, create_access_token, create_refresh_token

    app = Flask(__name__)
    app.config["JWT_SECRET_KEY"] = SECRET
    JWTManager(app)
    with app.app_context():
        make = create_refresh_token if kind == "refresh" else create_access_token
        return str(make(identity=identity))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def refused(response: Any, message: str) -> bool:
    """signout's own 401 (so the app never saw the request), with this message."""
    return bool(response.status_code == 401 and response.json() == {"error": "invalid_token", "message": message})


# ---- 1. audience ---------------------------------------------------------------


def test_a_token_naming_an_audience_is_refused_when_no_audience_is_set(client: Client) -> None:
    r = client().get("/me", headers=bearer(keycloak("Bearer")))
    assert refused(r, "Token claim 'aud' names an audience, and no audience is configured")


def test_a_token_for_the_configured_audience_passes_and_a_list_accepts_any_member(client: Client) -> None:
    token = keycloak("Bearer")
    assert client(audience="account").get("/me", headers=bearer(token)).json()["claims"]["aud"] == "account"
    assert client(audience=["billing", "account"]).get("/me", headers=bearer(token)).status_code == 200
    assert client(audience=["billing"]).get("/me", headers=bearer(token)).status_code == 401


# ---- 2. token kinds -------------------------------------------------------------

NOT_ACCESS = "Token is not an access token"
NOT_REFRESH = "Token is not a refresh token"
LOGOUT_EVENT: dict[str, dict[str, str]] = {"http://schemas.openid.net/event/backchannel-logout": {}}

NOT_FOR_BEARER: dict[str, Callable[[], str]] = {
    "flask-jwt-extended refresh": lambda: flask_jwt_extended("refresh"),
    "simplejwt refresh": lambda: simplejwt("refresh"),
    "Casdoor refresh-token": lambda: casdoor("refresh-token"),
    "Keycloak Refresh": lambda: keycloak("Refresh"),
    "Keycloak Offline": lambda: keycloak("Offline"),
    "Keycloak ID token": lambda: keycloak("ID"),
    "Cognito ID token": lambda: sign(base(sub="c", token_use="id", iss="https://cognito.example")),
    "logout token by its header": lambda: sign(base(iss=KC, sid="s"), {"typ": "logout+jwt"}),
    "logout token by its events claim": lambda: sign(base(iss=KC, sid="s", events=LOGOUT_EVENT)),
    "access claim beside a refresh claim": lambda: sign(base(sub="a", type="access", token_type="refresh")),
}
FOR_BEARER: dict[str, Callable[[], str]] = {
    "flask-jwt-extended access": lambda: flask_jwt_extended("access"),
    "simplejwt access": lambda: simplejwt("access"),
    "Casdoor access-token": lambda: casdoor("access-token"),
    "Keycloak Bearer": lambda: keycloak("Bearer"),
    "RFC 9068 at+jwt header": lambda: sign(base(sub="a"), {"typ": "at+jwt"}),
    "no kind at all": lambda: sign(base(sub="a")),
}
ANY_AUDIENCE = ["account", "web-app", KC, "app-id"]


def audience_of(token: str) -> dict[str, Any]:
    """The ``audience`` kwarg that lets a token's own aud through (none when it names none)."""
    named = jwt.decode(token, options={"verify_signature": False}).get("aud")
    return {"audience": ANY_AUDIENCE} if named else {}


@pytest.mark.parametrize("name", sorted(NOT_FOR_BEARER))
def test_a_token_of_another_kind_is_refused_as_a_bearer_token(client: Client, name: str) -> None:
    token = NOT_FOR_BEARER[name]()
    assert refused(client(**audience_of(token)).get("/me", headers=bearer(token)), NOT_ACCESS)


@pytest.mark.parametrize("name", sorted(FOR_BEARER))
def test_an_access_token_or_one_of_no_kind_passes_as_a_bearer_token(client: Client, name: str) -> None:
    token = FOR_BEARER[name]()
    r = client(**audience_of(token)).get("/me", headers=bearer(token))
    assert r.status_code == 200 and r.json()["claims"] is not None


def test_the_refresh_cookie_takes_refresh_tokens_and_refuses_access_tokens(client: Client) -> None:
    c = client()
    refresh, access = flask_jwt_extended("refresh"), flask_jwt_extended("access")
    ok = c.post("/auth/refresh", headers={"Cookie": f"refresh_token={refresh}"})
    assert ok.status_code == 200 and ok.json()["claims"]["type"] == "refresh"
    wrong = c.post("/auth/refresh", headers={"Cookie": f"refresh_token={access}"})
    assert refused(wrong, NOT_REFRESH)
    assert wrong.headers["set-cookie"].startswith('refresh_token=""; Path=/auth/refresh;')


def test_with_check_token_type_off_kinds_are_not_looked_at(client: Client) -> None:
    r = client(check_token_type=False).get("/me", headers=bearer(flask_jwt_extended("refresh")))
    assert r.status_code == 200 and r.json()["claims"]["type"] == "refresh"


def test_a_logout_never_acts_on_an_id_token(client: Client, store_keys: Callable[[], list[bytes]]) -> None:
    c = client(audience=ANY_AUDIENCE)
    r = c.post("/auth/logout", headers=bearer(keycloak("ID")))
    assert r.status_code == 200 and store_keys() == []
    # The login it names is alive: its access token still works.
    assert c.get("/me", headers=bearer(keycloak("Bearer"))).status_code == 200


def test_a_logout_revokes_a_refresh_token_presented_as_bearer(client: Client) -> None:
    c = client()
    refresh = flask_jwt_extended("refresh")
    assert c.post("/auth/logout", headers=bearer(refresh)).status_code == 200
    assert refused(c.post("/auth/refresh", headers={"Cookie": f"refresh_token={refresh}"}), "Token has been revoked")


def test_the_revocation_endpoint_refuses_id_tokens_as_unsupported(
    client: Client, store_keys: Callable[[], list[bytes]]
) -> None:
    c = client(audience=ANY_AUDIENCE, clients={"web-app": "web-app-secret-0123456789"})
    r = c.post("/auth/revoke", data={"token": keycloak("ID")}, auth=("web-app", "web-app-secret-0123456789"))
    assert r.status_code == 400 and r.json()["error"] == "unsupported_token_type"
    assert store_keys() == []


# ---- 3. user_claim --------------------------------------------------------------


def test_logout_all_of_a_simplejwt_user_names_them_by_user_id(client: Client) -> None:
    c = client(user_claim="user_id")
    laptop, phone, other = simplejwt("access"), simplejwt("refresh"), simplejwt("access", user_id=43)
    r = c.post("/auth/logout-all", headers=bearer(laptop))
    assert r.status_code == 200 and r.json() == {"message": "Successfully logged out from SSO session"}
    assert refused(c.get("/me", headers=bearer(laptop)), "Token has been revoked")
    assert refused(c.post("/auth/refresh", headers={"Cookie": f"refresh_token={phone}"}), "Token has been revoked")
    assert c.get("/me", headers=bearer(other)).status_code == 200


def test_without_user_claim_logout_all_says_which_claim_is_missing(
    client: Client, store_keys: Callable[[], list[bytes]]
) -> None:
    r = client().post("/auth/logout-all", headers=bearer(simplejwt("access")))
    assert r.status_code == 400
    assert r.json()["message"] == "Token has no 'sub' claim naming its user; cannot log out everywhere"
    assert store_keys() == []


def test_revoke_user_at_the_endpoint_reaches_an_integer_user_id(client: Client) -> None:
    secret = "billing-secret-0123456789"
    c = client(user_claim="user_id", clients={"billing": secret})
    victim, sibling = simplejwt("access"), simplejwt("refresh")
    r = c.post("/auth/revoke", data={"token": victim, "revoke": "user"}, auth=("billing", secret))
    assert r.status_code == 200 and r.json() == {"revoked": True, "scope": "user"}
    assert refused(c.post("/auth/refresh", headers={"Cookie": f"refresh_token={sibling}"}), "Token has been revoked")


def test_revoke_user_without_the_user_claim_is_a_400_not_a_quiet_no(
    client: Client, store_keys: Callable[[], list[bytes]]
) -> None:
    secret = "billing-secret-0123456789"
    c = client(clients={"billing": secret})
    r = c.post("/auth/revoke", data={"token": simplejwt("access"), "revoke": "user"}, auth=("billing", secret))
    assert r.status_code == 400 and "'sub'" in r.json()["error_description"]
    r = c.post("/auth/revoke", data={"token": simplejwt("access"), "revoke": "session"}, auth=("billing", secret))
    assert r.status_code == 400 and "'sid'" in r.json()["error_description"]
    assert store_keys() == []


def test_a_revoker_and_the_middleware_meet_on_the_decimal_string(client: Client, redis_url: str) -> None:
    c = client(user_claim="user_id")
    token = simplejwt("access")
    Revoker(redis_url=redis_url).revoke_user_sync(sub="42")
    assert refused(c.get("/me", headers=bearer(token)), "Token has been revoked")


@pytest.mark.parametrize("value", [4.2, True, ["42"], ""])
def test_a_user_claim_of_another_type_is_an_invalid_token(client: Client, value: object) -> None:
    r = client(user_claim="user_id").get("/me", headers=bearer(simplejwt("access", user_id=value)))
    assert r.status_code == 401 and "user_id" in r.json()["message"]


def test_an_integer_sub_stays_invalid(client: Client) -> None:
    r = client().get("/me", headers=bearer(sign(base(sub=42))))
    assert refused(r, "Token claim 'sub' must be a non-empty string")


# ---- 4. require_revocable ---------------------------------------------------------


def test_a_token_no_logout_could_end_is_refused(client: Client) -> None:
    r = client().get("/me", headers=bearer(sign(base(sub="alice", jti=None))))
    assert refused(r, "Token carries neither jti nor sid, so no logout could revoke it")


def test_with_require_revocable_off_its_logout_says_nothing_was_revoked(
    client: Client, store_keys: Callable[[], list[bytes]], caplog: pytest.LogCaptureFixture
) -> None:
    c = client(require_revocable=False)
    token = sign(base(sub="alice", jti=None))
    assert c.get("/me", headers=bearer(token)).status_code == 200
    with caplog.at_level(logging.WARNING, logger="signout"):
        r = c.post("/auth/logout", headers=bearer(token))
    assert r.status_code == 200 and r.json()["revoked"] is False
    assert r.headers["set-cookie"].startswith('refresh_token=""; Path=/auth/refresh;')
    assert any("neither jti nor sid" in m for m in caplog.messages)
    assert store_keys() == []
    assert c.get("/me", headers=bearer(token)).status_code == 200  # as the answer said


# ---- 5. refresh tokens in bodies --------------------------------------------------

REFRESH = "/api/token/refresh/"


def test_a_logout_revokes_the_refresh_token_in_its_body_and_the_refresh_path_refuses_it(client: Client) -> None:
    c = client(user_claim="user_id", refresh_paths=[REFRESH])
    access, refresh = simplejwt("access"), simplejwt("refresh")
    body = json.dumps({"refresh": refresh})
    ok = c.post(REFRESH, content=body, headers={"Content-Type": "application/json"})
    assert ok.status_code == 200 and ok.json()["body"] == body and ok.json()["claims"]["token_type"] == "refresh"
    r = c.post("/auth/logout", json={"refresh": refresh}, headers=bearer(access))
    assert r.status_code == 200 and r.json() == {"message": "Logged out successfully"}
    assert refused(
        c.post(REFRESH, content=body, headers={"Content-Type": "application/json"}), "Token has been revoked"
    )
    assert refused(c.get("/me", headers=bearer(access)), "Token has been revoked")


def test_a_form_body_is_read_as_a_json_one(client: Client) -> None:
    c = client(refresh_paths=[REFRESH])
    refresh = simplejwt("refresh")
    assert c.post("/auth/logout", data={"refresh_token": refresh}).status_code == 200
    assert refused(c.post(REFRESH, data={"refresh_token": refresh}), "Token has been revoked")


def test_an_access_token_in_a_refresh_body_is_refused(client: Client) -> None:
    r = client(refresh_paths=[REFRESH]).post(REFRESH, json={"refresh": simplejwt("access")})
    assert refused(r, NOT_REFRESH)


def test_every_value_of_a_repeated_form_field_is_checked(client: Client) -> None:
    c = client(refresh_paths=[REFRESH])
    dead, live = simplejwt("refresh"), simplejwt("refresh")
    c.post("/auth/logout", json={"refresh": dead})
    # An app reading the last value (Django's QueryDict) would take the dead one.
    r = c.post(
        REFRESH, content=f"refresh={live}&refresh={dead}", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert refused(r, "Token has been revoked")


def test_a_multipart_body_on_a_refresh_path_is_refused_not_let_through(client: Client) -> None:
    r = client(refresh_paths=[REFRESH]).post(REFRESH, files={"refresh": ("r", simplejwt("refresh").encode())})
    assert r.status_code == 415 and r.json()["error"] == "invalid_request"


# ---- 6. refresh rotation and reuse ------------------------------------------------


def test_a_rotated_out_refresh_token_reused_past_the_grace_kills_its_login(client: Client) -> None:
    clock = Clock()
    events: list[AuditEvent] = []
    c = client(refresh_rotation=True, refresh_reuse_grace=10, clock=clock, on_event=events.append)
    old = keycloak("Refresh", aud=None)
    login_access = keycloak("Bearer", aud=None)  # same sid: the same login
    cookie = {"Cookie": f"refresh_token={old}"}
    assert c.post("/auth/refresh", headers=cookie).status_code == 200  # the rotation
    clock.now += 5
    assert c.post("/auth/refresh", headers=cookie).status_code == 200  # a second tab, within the grace
    clock.now += 6
    r = c.post("/auth/refresh", headers=cookie)
    assert refused(r, "Refresh token was already used; its login has been revoked")
    assert r.headers["set-cookie"].startswith('refresh_token=""; Path=/auth/refresh;')
    assert refused(c.get("/me", headers=bearer(login_access)), "Token has been revoked")
    assert [(e.event, e.outcome, e.sid) for e in events if e.event == "refresh_reuse"] == [
        ("refresh_reuse", "revoked", "kc-session-1")
    ]


def test_reuse_of_a_token_without_sid_revokes_its_user(client: Client) -> None:
    clock = Clock()
    c = client(user_claim="user_id", refresh_paths=[REFRESH], refresh_rotation=True, refresh_reuse_grace=0, clock=clock)
    old, rotated_into = simplejwt("refresh"), simplejwt("refresh")
    assert c.post(REFRESH, json={"refresh": old}).status_code == 200
    assert refused(c.post(REFRESH, json={"refresh": old}), "Refresh token was already used; its login has been revoked")
    assert refused(c.post(REFRESH, json={"refresh": rotated_into}), "Token has been revoked")


def test_a_refresh_the_app_refused_is_not_a_use(client: Client) -> None:
    c = client(refresh_paths=[REFRESH], refresh_rotation=True, refresh_reuse_grace=0)
    token = simplejwt("refresh")
    assert c.post(REFRESH + "?status=400", json={"refresh": token}).status_code == 400
    assert c.post(REFRESH, json={"refresh": token}).status_code == 200
    assert c.post(REFRESH, json={"refresh": token}).status_code == 401


def test_rotation_refuses_a_refresh_token_without_jti(client: Client) -> None:
    r = client(refresh_rotation=True).post(
        "/auth/refresh", headers={"Cookie": f"refresh_token={keycloak('Refresh', jti=None, aud=None)}"}
    )
    assert r.status_code == 401 and "jti" in r.json()["message"]


def test_two_instances_racing_one_refresh_token_let_one_through(redis_url: str) -> None:
    """The use is claimed atomically in Redis: of two instances that both let the token
    reach their app at once, the second to record it sees the first's use, and refuses."""
    import asyncio

    import httpx

    async def race() -> list[httpx.Response]:
        arrived = asyncio.Event()
        waiting = 0

        async def slow_refresh(scope: Any, receive: Any, send: Any) -> None:
            nonlocal waiting
            waiting += 1
            if waiting == 2:
                arrived.set()
            await asyncio.wait_for(arrived.wait(), 5)  # both requests passed both guards
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"new tokens"})

        options: dict[str, Any] = {"key": SECRET, "redis_url": redis_url, "refresh_rotation": True}
        instances = [SignOutMiddleware(slow_refresh, refresh_reuse_grace=0, **options) for _ in range(2)]
        cookie = {"Cookie": f"refresh_token={token}"}
        clients = [
            httpx.AsyncClient(transport=httpx.ASGITransport(app=m), base_url="https://app.test") for m in instances
        ]
        try:
            return list(await asyncio.gather(*(c.post("/auth/refresh", headers=cookie) for c in clients)))
        finally:
            for c in clients:
                await c.aclose()

    token = keycloak("Refresh", aud=None)
    answers = asyncio.run(race())
    assert sorted(a.status_code for a in answers) == [200, 401]
    assert [a.text for a in answers if a.status_code == 200] == ["new tokens"]
    # The loser revoked the login, so the winner's new tokens (same sid) die with it.
    check = make_client("wsgi", Backend("redis", lambda: RedisStore(redis_url), lambda: 0, list), "https://app.test")
    assert refused(check().get("/me", headers=bearer(keycloak("Bearer", aud=None))), "Token has been revoked")


def test_two_wsgi_instances_racing_one_refresh_token_let_one_through(redis_url: str) -> None:
    import threading

    from signout import SignOutWSGIMiddleware

    barrier = threading.Barrier(2, timeout=5)

    def slow_refresh(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        barrier.wait()  # both requests passed both guards
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"new tokens"]

    token = keycloak("Refresh", aud=None)
    instances = [
        SignOutWSGIMiddleware(
            slow_refresh, key=SECRET, redis_url=redis_url, refresh_rotation=True, refresh_reuse_grace=0
        )
        for _ in range(2)
    ]
    statuses: list[str] = []
    bodies: list[bytes] = []

    def call(app: Any) -> None:
        environ = {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": "/auth/refresh",
            "HTTP_COOKIE": f"refresh_token={token}",
            "wsgi.input": None,
        }
        bodies.append(b"".join(app(environ, lambda status, headers, exc_info=None: statuses.append(status))))

    threads = [threading.Thread(target=call, args=(app,)) for app in instances]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(s.split()[0] for s in statuses) == ["200", "401"]
    assert b"new tokens" in bodies and sum(b"already used" in b for b in bodies) == 1


# ---- 7. max_token_bytes -----------------------------------------------------------


def test_a_20_kb_casdoor_token_passes_once_max_token_bytes_allows_it(client: Client) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    user = {"owner": "org", "name": "alice", "properties": {f"field{i}": "x" * 40 for i in range(280)}}
    token = jwt.encode(
        base(iss="https://door.example", sub="org/alice", tokenType="access-token", **user), private, "RS256"
    )
    assert len(token) > 16384
    kwargs: dict[str, Any] = {"key": public, "algorithms": ["RS256"]}
    assert refused(client(**kwargs).get("/me", headers=bearer(token)), "Token is malformed")
    r = client(max_token_bytes=32768, **kwargs).get("/me", headers=bearer(token))
    assert r.status_code == 200 and r.json()["claims"]["name"] == "alice"


# ---- configuration --------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwarg", "value"),
    [
        ("check_token_type", "yes"),
        ("user_claim", ""),
        ("user_claim", 7),
        ("require_revocable", 1),
        ("refresh_paths", "/api/token/refresh/"),
        ("refresh_paths", ["relative"]),
        ("refresh_paths", ["/auth/logout"]),
        ("refresh_body_fields", "refresh"),
        ("refresh_body_fields", [""]),
        ("refresh_rotation", "on"),
        ("refresh_reuse_grace", -1),
        ("refresh_reuse_grace", 3600),
        ("max_token_bytes", 100),
        ("max_token_bytes", 16384.5),
    ],
)
def test_bad_configuration_names_the_kwarg(kwarg: str, value: object) -> None:
    with pytest.raises(ConfigError) as caught:
        options: Any = {kwarg: value}
        SignOutMiddleware(starlette_app(), key=SECRET, **options)
    assert caught.value.kwarg == kwarg


def test_a_refresh_path_under_an_excluded_prefix_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="exclude_paths") as caught:
        SignOutMiddleware(starlette_app(), key=SECRET, exclude_paths=["/api"], refresh_paths=["/api/token/refresh/"])
    assert caught.value.kwarg == "refresh_paths"


def test_refresh_paths_with_no_fields_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as caught:
        SignOutMiddleware(starlette_app(), key=SECRET, refresh_paths=[REFRESH], refresh_body_fields=[])
    assert caught.value.kwarg == "refresh_body_fields"


# ---- review fixes -------------------------------------------------------------------


def test_a_logout_whose_body_is_too_large_still_revokes_the_bearer_token_and_says_what_it_did_not(
    client: Client,
) -> None:
    c = client()
    access = keycloak("Bearer", aud=None)
    r = c.post("/auth/logout", headers=bearer(access), json={"refresh": "x", "pad": "y" * 30000})
    assert r.status_code == 413 and "a refresh token in it was not revoked" in r.json()["message"]
    assert r.headers["set-cookie"].startswith('refresh_token=""; Path=/auth/refresh;')
    assert refused(c.get("/me", headers=bearer(access)), "Token has been revoked")


def test_a_get_under_a_broad_refresh_cookie_path_is_not_a_use(client: Client) -> None:
    """A refresh cookie on Path=/ rides along with GET /me too; only a refresh (a POST) uses the token."""
    clock = Clock()
    c = client(refresh_cookie_path="/", refresh_rotation=True, refresh_reuse_grace=0, clock=clock)
    cookie = {"Cookie": f"refresh_token={keycloak('Refresh', aud=None)}"}
    assert c.get("/me", headers=cookie).status_code == 200
    assert c.get("/me", headers=cookie).status_code == 200
    assert c.post("/auth/refresh", headers=cookie).status_code == 200
    clock.now += 1
    assert refused(
        c.post("/auth/refresh", headers=cookie), "Refresh token was already used; its login has been revoked"
    )


def wsgi_rotating(app: Any, redis_url: str) -> Any:
    from signout import SignOutWSGIMiddleware

    return SignOutWSGIMiddleware(app, key=SECRET, redis_url=redis_url, refresh_rotation=True, refresh_reuse_grace=0)


def refresh_environ() -> dict[str, Any]:
    cookie = f"refresh_token={keycloak('Refresh', aud=None)}"
    return {"REQUEST_METHOD": "POST", "PATH_INFO": "/auth/refresh", "HTTP_COOKIE": cookie, "wsgi.input": None}


def test_wsgi_the_apps_iterable_is_closed_once_even_when_never_iterated(redis_url: str) -> None:
    closed: list[bool] = []

    class Body:
        def __iter__(self) -> Iterator[bytes]:
            yield b"new tokens"

        def close(self) -> None:
            closed.append(True)

    def app(environ: dict[str, Any], start_response: Any) -> Body:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Body()

    result: Any = wsgi_rotating(app, redis_url)(refresh_environ(), lambda *a: None)
    result.close()  # a server whose client went away closes without iterating
    result.close()
    assert closed == [True]


def test_wsgi_a_second_start_response_with_exc_info_records_no_second_use(redis_url: str) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            raise RuntimeError("the app failed after starting")
        except RuntimeError:
            import sys

            start_response("200 OK", [("Content-Type", "text/plain")], sys.exc_info())  # PEP 3333 allows it
        return [b"new tokens"]

    statuses: list[str] = []
    body = b"".join(wsgi_rotating(app, redis_url)(refresh_environ(), lambda s, h, e=None: statuses.append(s)))
    assert statuses == ["200 OK", "200 OK"] and body == b"new tokens"
