"""The OIDC Back-Channel Logout 1.0 receiver (``signout.backchannel``, ``backchannel_logout_path``).

Two halves. First, the real OpenID Provider (``tests/oidc_provider.py``) signs and POSTs its own
logout tokens to the receiver under a real server (uvicorn for ASGI, werkzeug for WSGI) over the
real Redis. Then hostile logout tokens, minted here with PyJWT and an RSA key the test controls
(a static public key, ``algorithms=["RS256"]``), through both adapters in process and on both
stores: each is a 400 (or 405 / 413) and revokes nothing. Last, what the receiver answers when it
cannot act: the store or the OP's keys unavailable (503, the OP retries), and how long what it
remembers (the replay record) lives.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import jwt
import pytest
import redis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from signout import MemoryStore, SignOutMiddleware, SignOutWSGIMiddleware, StoreError
from signout.backchannel import InvalidLogoutToken, check
from signout.errors import ConfigError
from signout.layout import Write, bucket_key, logout_field, session_key

from .apps import starlette_app, wsgi_app
from .conftest import free_port
from .framework_helpers import uvicorn_server, werkzeug_server
from .helpers import ADAPTERS, Clock, bearer, http_client, middleware
from .oidc_provider import (
    OIDCProvider,
    oidc_provider_fixture,  # noqa: F401  (the fixture "oidc_provider")
)
from .test_keyset import JWKSServer, rsa_key

PATH = "/auth/backchannel-logout"
ISSUER = "https://op.example"
CLIENT_ID = "app-client"
EVENT = "http://schemas.openid.net/event/backchannel-logout"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}

KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PUBLIC_PEM = KEY.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


# ---- tokens minted with a key the test controls ---------------------------------------------------


def access_token(sub: str, sid: str, key: Any = KEY, kid: str | None = None) -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": CLIENT_ID, "sub": sub, "sid": sid, "jti": uuid.uuid4().hex}
    headers = {"typ": "at+jwt"} if kid is None else {"typ": "at+jwt", "kid": kid}
    return jwt.encode({**claims, "iat": now, "exp": now + 600}, key, algorithm="RS256", headers=headers)


def logout_claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "aud": CLIENT_ID,
        "iat": now,
        "exp": now + 120,
        "jti": uuid.uuid4().hex,
        "sub": "alice",
        "sid": "sid-alice",
        "events": {EVENT: {}},
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def logout_token(key: Any = KEY, headers: dict[str, Any] | None = None, **overrides: Any) -> str:
    return jwt.encode(logout_claims(**overrides), key, algorithm="RS256", headers=headers or {"typ": "logout+jwt"})


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(alg: str, claims: dict[str, Any], secret: bytes = b"") -> str:
    """A token with header ``alg``, HMAC-signed with ``secret`` (alg none: no signature)."""
    head = _b64(json.dumps({"alg": alg, "typ": "logout+jwt"}).encode())
    body = _b64(json.dumps(claims).encode())
    signing_input = f"{head}.{body}".encode()
    signature = b"" if alg == "none" else hmac.new(secret, signing_input, hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(signature)}"


# ---- the app behind either adapter, with static keys ----------------------------------------------


def receiver_app(adapter: str, **kwargs: Any) -> Any:
    """The app behind ``adapter`` with the receiver at ``PATH``: the OP's static public key,
    its issuer and the client id as the audience, unless ``kwargs`` say otherwise."""
    options: dict[str, Any] = {
        "key": PUBLIC_PEM,
        "algorithms": ["RS256"],
        "issuer": ISSUER,
        "audience": CLIENT_ID,
        "backchannel_logout_path": PATH,
        **kwargs,
    }
    return middleware(adapter, **options)


def guarded(adapter: str, store: str, request: pytest.FixtureRequest, **kwargs: Any) -> httpx.Client:
    where: dict[str, Any] = (
        {"redis_url": request.getfixturevalue("redis_url")} if store == "redis" else {"store": MemoryStore(warn=False)}
    )
    app = receiver_app(
        adapter,
        **{**where, **kwargs},
    )
    client: httpx.Client = http_client(adapter, app)
    return client


def post(client: httpx.Client, token: str) -> httpx.Response:
    return client.post(PATH, content=f"logout_token={token}", headers=FORM)


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=ADAPTERS)
def app(request: pytest.FixtureRequest, store: str) -> httpx.Client:
    return guarded(request.param, store, request)


# ---- 1. the real OP: its logout tokens end the session ---------------------------------------------


@pytest.fixture
def op(oidc_provider: OIDCProvider) -> Iterator[OIDCProvider]:
    oidc_provider.reset()
    yield oidc_provider
    oidc_provider.configure(backchannel_logout_uri=oidc_provider.recorder.url)
    oidc_provider.jwks_mode("ok")


def op_middleware(op: OIDCProvider, adapter: str, redis_url: str, **more: Any) -> Any:
    # The OP's access tokens name its resource, its logout tokens the client id: both are ours.
    options: dict[str, Any] = {
        "jwks_url": op.jwks_uri,
        "issuer": op.issuer,
        "audience": [op.resource, op.client_id],
        "backchannel_logout_path": PATH,
        "redis_url": redis_url,
        **more,
    }
    if adapter == "asgi":
        return SignOutMiddleware(starlette_app(), **options)
    return SignOutWSGIMiddleware(wsgi_app(), **options)


def serving(op: OIDCProvider, adapter: str, redis_url: str, **more: Any) -> Any:
    app = op_middleware(op, adapter, redis_url, **more)
    return uvicorn_server(app) if adapter == "asgi" else werkzeug_server(app)


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_the_ops_backchannel_logout_ends_that_session(op: OIDCProvider, adapter: str, redis_url: str) -> None:
    with serving(op, adapter, redis_url) as address, httpx.Client(base_url=f"http://{address}") as client:
        alice, bob = op.login("alice"), op.login("bob")
        assert alice.sid is not None
        assert client.get("/me", headers=bearer(alice.access_token)).status_code == 200
        assert client.get("/me", headers=bearer(bob.access_token)).status_code == 200
        op.configure(backchannel_logout_uri=f"http://{address}{PATH}")

        delivery = op.backchannel_logout("alice", alice.sid)

        assert (delivery.ok, delivery.status) == (True, 200), delivery
        r = client.get("/me", headers=bearer(alice.access_token))
        assert r.status_code == 401 and r.json()["message"] == "Token has been revoked"
        assert client.get("/me", headers=bearer(bob.access_token)).status_code == 200


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_backchannel_audience_keeps_the_clients_id_tokens_out_of_the_guard(
    op: OIDCProvider, adapter: str, redis_url: str
) -> None:
    """``audience`` for the API's access tokens, ``backchannel_audience`` for the logout tokens:
    an ID token (its aud is the client id, and it names no kind) no longer passes the guard."""
    shared = op_middleware(op, adapter, redis_url)  # audience=[resource, client id]: the ID token gets in
    alice = op.login("alice")
    assert alice.sid is not None
    assert http_client(adapter, shared).get("/me", headers=bearer(alice.id_token)).status_code == 200
    split = {"audience": op.resource, "backchannel_audience": op.client_id}
    with serving(op, adapter, redis_url, **split) as address, httpx.Client(base_url=f"http://{address}") as client:
        refused = client.get("/me", headers=bearer(alice.id_token))
        assert refused.status_code == 401 and refused.json()["message"] == "Token claim 'aud' is invalid"
        assert client.get("/me", headers=bearer(alice.access_token)).status_code == 200
        op.configure(backchannel_logout_uri=f"http://{address}{PATH}")
        delivery = op.backchannel_logout("alice", alice.sid)  # aud: the client id
        assert (delivery.ok, delivery.status) == (True, 200), delivery
        assert client.get("/me", headers=bearer(alice.access_token)).status_code == 401


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_a_replayed_logout_token_of_the_op_gets_400(op: OIDCProvider, adapter: str, redis_url: str) -> None:
    """The OP delivers to its recorder; the captured token is posted twice: 200, then 400."""
    with serving(op, adapter, redis_url) as address, httpx.Client(base_url=f"http://{address}") as client:
        carol = op.login("carol")
        assert op.backchannel_logout("carol", carol.sid).ok  # to the recorder
        raw = op.recorder.wait(1)[0].logout_token
        assert jwt.get_unverified_header(raw)["typ"] == "logout+jwt"
        first = post(client, raw)
        assert first.status_code == 200, first.text
        assert first.headers["cache-control"] == "no-store"
        assert client.get("/me", headers=bearer(carol.access_token)).status_code == 401
        again = post(client, raw)
        assert again.status_code == 400
        assert again.json() == {
            "error": "invalid_request",
            "error_description": "this logout token was received before (its jti is replayed)",
        }


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_an_unknown_kid_costs_one_jwks_fetch_then_400(op: OIDCProvider, adapter: str, redis_url: str) -> None:
    with serving(op, adapter, redis_url) as address, httpx.Client(base_url=f"http://{address}") as client:
        dave = op.login("dave")
        assert client.get("/me", headers=bearer(dave.access_token)).status_code == 200
        fetched = op.jwks_requests()
        forged = logout_token(
            OTHER_KEY, {"typ": "logout+jwt", "kid": "not-in-the-set"}, iss=op.issuer, aud=op.client_id, sub="dave"
        )
        r = post(client, forged)
        assert r.status_code == 400 and r.json()["error"] == "invalid_request"
        assert op.jwks_requests() - fetched <= 1  # at most the one refetch (the rate limit may skip it)
        assert client.get("/me", headers=bearer(dave.access_token)).status_code == 200


# ---- 2. a valid logout token, with a key the test controls ------------------------------------------


def test_sid_and_sub_end_that_session_only(app: httpx.Client) -> None:
    alice, alice_elsewhere = access_token("alice", "sid-alice"), access_token("alice", "sid-other")
    r = post(app, logout_token(sub="alice", sid="sid-alice"))
    assert (r.status_code, r.json(), r.headers["cache-control"]) == (200, {"message": "Logged out"}, "no-store")
    assert app.get("/me", headers=bearer(alice)).status_code == 401
    assert app.get("/me", headers=bearer(alice_elsewhere)).status_code == 200
    # The session was already logged out: 200 again (another logout token, another jti).
    assert post(app, logout_token(sub="alice", sid="sid-alice")).status_code == 200


def test_sub_alone_ends_every_session_of_the_user(app: httpx.Client) -> None:
    tokens = [access_token("alice", "s1"), access_token("alice", "s2")]
    bob = access_token("bob", "s3")
    assert post(app, logout_token(sid=None)).status_code == 200
    assert [app.get("/me", headers=bearer(t)).status_code for t in tokens] == [401, 401]
    assert app.get("/me", headers=bearer(bob)).status_code == 200


def test_sid_without_sub_ends_every_token_of_the_session_with_or_without_sub(
    app: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    """SPEC section 10: with ``sid``, every token that carries that (iss, sid) is revoked, whether or not it
    also carries ``sub`` (the session's revocation lives in the session's own bucket)."""
    now = int(time.time())
    subless = jwt.encode(
        {"iss": ISSUER, "aud": CLIENT_ID, "sid": "sid-x", "jti": "a1", "iat": now, "exp": now + 600}, KEY, "RS256"
    )
    with_sub, alice_elsewhere = access_token("alice", "sid-x"), access_token("alice", "sid-other")
    bob = access_token("bob", "sid-bob")
    assert app.get("/me", headers=bearer(with_sub)).status_code == 200  # read (and cached) before the logout
    with caplog.at_level(logging.WARNING, logger="signout"):
        r = post(app, logout_token(sub=None, sid="sid-x"))
    assert (r.status_code, r.json()) == (200, {"message": "Logged out"})
    assert not [rec for rec in caplog.records if rec.levelno >= logging.WARNING]
    assert app.get("/me", headers=bearer(subless)).status_code == 401
    assert app.get("/me", headers=bearer(with_sub)).status_code == 401
    assert app.get("/me", headers=bearer(alice_elsewhere)).status_code == 200
    assert app.get("/me", headers=bearer(bob)).status_code == 200


# ---- 3. hostile logout tokens: 400, nothing revoked -------------------------------------------------


def _past() -> dict[str, Any]:
    now = int(time.time())
    return {"iat": now - 600, "exp": now - 300}


HOSTILE: dict[str, Callable[[], str]] = {
    "alg none": lambda: unsigned("none", logout_claims()),
    "HS256 with the RSA public key": lambda: unsigned("HS256", logout_claims(), PUBLIC_PEM),
    "wrong iss": lambda: logout_token(iss="https://evil.example"),
    "wrong aud": lambda: logout_token(aud="another-client"),
    "no events": lambda: logout_token(events=None),
    "events member not an object": lambda: logout_token(events={EVENT: "yes"}),
    "events not an object": lambda: logout_token(events=[EVENT]),
    "nonce present": lambda: logout_token(nonce="n-0S6_WzA2Mj"),
    "typ at+jwt": lambda: logout_token(headers={"typ": "at+jwt"}),
    "no jti": lambda: logout_token(jti=None),
    "no iat": lambda: logout_token(iat=None),
    "neither sub nor sid": lambda: logout_token(sub=None, sid=None),
    "expired": lambda: logout_token(**_past()),
    "exp in 10 years": lambda: logout_token(exp=int(time.time()) + 10 * 365 * 86400),
    "unknown key": lambda: logout_token(OTHER_KEY, {"typ": "logout+jwt", "kid": "nope"}),
    "not a JWT": lambda: "not-a-jwt",
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_logout_token_gets_400_and_revokes_nothing(app: httpx.Client, case: str) -> None:
    alice = access_token("alice", "sid-alice")
    r = post(app, HOSTILE[case]())
    assert r.status_code == 400, (case, r.text)
    assert r.json()["error"] == "invalid_request" and r.json()["error_description"]
    assert app.get("/me", headers=bearer(alice)).status_code == 200


def test_a_replayed_jti_gets_400(app: httpx.Client) -> None:
    raw = logout_token(sub="bob", sid="sid-bob")
    assert post(app, raw).status_code == 200
    alice = access_token("alice", "sid-alice")
    r = post(app, raw)
    assert r.status_code == 400 and "replayed" in r.json()["error_description"]
    assert app.get("/me", headers=bearer(alice)).status_code == 200


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        ("", FORM),  # no logout_token
        ("logout_token=a&logout_token=b", FORM),  # two
        ("logout_token=x", {"Content-Type": "application/json"}),  # not a form
    ],
    ids=["missing", "twice", "not a form"],
)
def test_a_body_without_exactly_one_logout_token_gets_400(
    app: httpx.Client, body: str, headers: dict[str, str]
) -> None:
    r = app.post(PATH, content=body, headers=headers)
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"


def test_a_body_past_max_body_bytes_gets_413(app: httpx.Client) -> None:
    r = app.post(PATH, content="logout_token=" + "a" * 1_000_000, headers=FORM)
    assert r.status_code == 413 and r.json()["error"] == "invalid_request"


def test_get_gets_405(app: httpx.Client) -> None:
    r = app.get(PATH)
    assert r.status_code == 405 and r.headers["allow"] == "POST"


# ---- 4. the store or the OP's keys unavailable: 503, the OP may retry ------------------------------


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_a_store_down_gets_503_with_retry_after(adapter: str, dead_url: str) -> None:
    app = receiver_app(
        adapter,
        redis_url=dead_url,
    )
    r = post(http_client(adapter, app), logout_token())
    assert r.status_code == 503 and r.headers["retry-after"] == "5"
    assert r.json()["error"] == "temporarily_unavailable"


class _ClaimsFail(MemoryStore):
    """Writes work, claims fail: once ``failing`` is False, claims work again."""

    failing = True

    def claim_sync(self, write: Write, now: float) -> Any:
        if self.failing:
            raise StoreError("claims are down")
        return super().claim_sync(write, now)

    async def claim(self, write: Write, now: float) -> Any:
        return self.claim_sync(write, now)


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_a_failed_jti_claim_gets_503_and_the_ops_retry_then_succeeds(adapter: str) -> None:
    store = _ClaimsFail(warn=False)
    client = http_client(
        adapter,
        receiver_app(
            adapter,
            store=store,
        ),
    )
    raw = logout_token()
    r = post(client, raw)
    assert r.status_code == 503 and "retry-after" in r.headers
    store.failing = False
    assert post(client, raw).status_code == 200  # the retry: same values written again, then claimed
    assert post(client, raw).status_code == 400  # and now a replay


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_before_the_ops_keys_are_fetched_a_logout_token_gets_503_and_the_ops_retry_works(
    adapter: str, redis_url: str, redis_client: redis.Redis
) -> None:
    """SPEC section 10: before the first good fetch of ``jwks_url``, fail closed with a 503 and
    ``Retry-After`` (a 400 would tell the OP never to retry), writing nothing, so the OP's retry
    of the same logout token, once the keys are up, is no replay and ends the session."""
    port = free_port()  # nothing listens there yet: the OP's JWKS server is down
    events: list[Any] = []
    app = middleware(
        adapter,
        key=None,
        jwks_url=f"http://127.0.0.1:{port}/jwks",
        algorithms=["RS256"],
        issuer=ISSUER,
        audience=CLIENT_ID,
        backchannel_logout_path=PATH,
        redis_url=redis_url,
        on_event=events.append,
    )
    app.keyset.clock = clock = Clock()  # the retry interval is crossed without sleeping
    client = http_client(adapter, app)
    raw = logout_token(rsa_key("a"), {"typ": "logout+jwt", "kid": "a"}, sub="alice", sid="sid-alice")

    r = post(client, raw)

    assert (r.status_code, r.headers["retry-after"], r.headers["content-type"]) == (503, "5", "application/json")
    assert r.json() == {
        "error": "temporarily_unavailable",
        "error_description": "The logout was not recorded; try again",
    }
    assert [(e.event, e.outcome) for e in events] == [("backchannel_logout", "keys_unavailable")]
    assert redis_client.dbsize() == 0  # nothing revoked, and no replay record that would refuse the retry

    jwks = JWKSServer(port=port)  # the OP's keys come up, with kid "a"
    try:
        clock.advance(app.keyset.unready_interval)
        alice = access_token("alice", "sid-alice", rsa_key("a"), "a")
        alice_elsewhere = access_token("alice", "sid-other", rsa_key("a"), "a")
        r = post(client, raw)  # the OP's retry: the same logout token
        assert (r.status_code, r.json()) == (200, {"message": "Logged out"}), r.text
        assert client.get("/me", headers=bearer(alice)).status_code == 401
        assert client.get("/me", headers=bearer(alice_elsewhere)).status_code == 200
        assert post(client, raw).status_code == 400  # and now it is a replay
    finally:
        jwks.stop()


# ---- 5. how long the replay record lives: no longer than max_token_lifetime -----------------------

LIFETIME = 3600  # max_token_lifetime of the app below
LEEWAY = 30  # the default leeway


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_an_exp_past_max_token_lifetime_gets_400_and_the_replay_record_lives_no_longer(
    adapter: str, redis_client: redis.Redis, request: pytest.FixtureRequest
) -> None:
    """A logout token's jti is remembered until its exp: an exp 10 years away would keep that record
    (a Redis key's TTL) 10 years. The bound is the guard's for any token: now + max_token_lifetime
    (+ leeway, a clock running ahead)."""
    client = guarded(adapter, "redis", request, max_token_lifetime=LIFETIME)
    alice = access_token("alice", "sid-alice")
    refused = "the logout token's exp is further away than max_token_lifetime (3600 s)"
    for ahead in (LIFETIME + LEEWAY + 5, 10 * 365 * 86400):
        r = post(client, logout_token(exp=int(time.time()) + ahead, sid="sid-alice"))
        assert (r.status_code, r.json()) == (400, {"error": "invalid_request", "error_description": refused})
    assert redis_client.dbsize() == 0  # nothing revoked, nothing recorded
    assert client.get("/me", headers=bearer(alice)).status_code == 200

    jti = "just-under-the-bound"
    record = bucket_key("signout", ISSUER, None, None, jti)
    assert record is not None and record != session_key("signout", ISSUER, "sid-alice")  # its own TTL
    r = post(client, logout_token(exp=int(time.time()) + LIFETIME + LEEWAY - 5, jti=jti, sid="sid-alice"))
    assert r.status_code == 200, r.text
    assert client.get("/me", headers=bearer(alice)).status_code == 401
    assert redis_client.hexists(record, logout_field(ISSUER, jti))
    # Kept until exp + leeway, exp at most now + max_token_lifetime + leeway; the script adds 1 s.
    assert 0 < redis_client.ttl(record) <= LIFETIME + 2 * LEEWAY + 1


# ---- 6. configuration and the pure checks ----------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"issuer": None},
        {"audience": None},
        {"key": "s" * 32, "algorithms": ["HS256"]},
        {"backchannel_logout_path": "no-slash"},
        {"backchannel_logout_path": "/auth/logout"},
        {"user_claim": "user_id"},
    ],
    ids=["no issuer", "no audience", "HMAC", "bad path", "clashes", "user_claim"],
)
def test_config_errors_name_backchannel_logout_path(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as raised:
        receiver_app("asgi", **kwargs)
    assert raised.value.kwarg == "backchannel_logout_path"


@pytest.mark.parametrize(
    ("kwargs", "accepted"),
    [
        ({"audience": None, "backchannel_audience": CLIENT_ID}, True),  # the receiver's audience alone
        ({"audience": "api", "backchannel_audience": [CLIENT_ID, "other"]}, True),
        ({"backchannel_logout_path": None, "backchannel_audience": CLIENT_ID}, False),  # nothing to use it for
        ({"backchannel_audience": ""}, False),
        ({"backchannel_audience": []}, False),  # would refuse every logout token
        ({"backchannel_audience": [CLIENT_ID, 7]}, False),
        ({"backchannel_audience": (a for a in [CLIENT_ID])}, True),  # read once, not emptied by the checks
    ],
    ids=["alone", "beside", "no receiver", "empty", "empty list", "not strings", "generator"],
)
def test_backchannel_audience_config(kwargs: dict[str, Any], accepted: bool) -> None:
    if accepted:
        app = receiver_app("asgi", **kwargs)
        assert isinstance(app, SignOutMiddleware)
        r = post(http_client("asgi", app), logout_token())  # the client id is the logout token's aud
        assert r.status_code == 200, r.text
        return
    with pytest.raises(ConfigError) as raised:
        receiver_app("asgi", **kwargs)
    assert raised.value.kwarg == "backchannel_audience"


def test_check_bounds_exp_by_max_token_lifetime_and_leeway() -> None:
    now = 1_800_000_000
    assert check(logout_claims(iat=now, exp=now + 3600 + 30), {}, now, 30, 3600).exp == now + 3630
    with pytest.raises(InvalidLogoutToken, match="exp is further away than max_token_lifetime"):
        check(logout_claims(iat=now, exp=now + 3600 + 31), {}, now, 30, 3600)


@pytest.mark.parametrize("typ", [None, "logout+jwt", "JWT", "application/logout+jwt"])
def test_the_typs_a_logout_token_may_carry(typ: str | None) -> None:
    now = time.time()
    header = {} if typ is None else {"typ": typ}
    assert check(logout_claims(), header, now, 30, 3600).jti


@pytest.mark.parametrize("typ", ["at+jwt", "id+jwt", "", 7])
def test_any_other_explicit_typ_is_refused(typ: object) -> None:
    with pytest.raises(InvalidLogoutToken):
        check(logout_claims(), {"typ": typ}, time.time(), 30, 3600)


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_each_delivery_is_an_audit_event_without_the_token(adapter: str, caplog: pytest.LogCaptureFixture) -> None:
    events: list[Any] = []
    client = http_client(
        adapter,
        receiver_app(
            adapter,
            store=MemoryStore(warn=False),
            on_event=events.append,
        ),
    )
    raw = logout_token(sub="alice", sid="sid-alice", jti="j-1")
    with caplog.at_level(logging.INFO):
        assert post(client, raw).status_code == 200
        assert post(client, raw).status_code == 400
        assert post(client, logout_token(nonce="n")).status_code == 400
    assert [(e.event, e.outcome, e.reason) for e in events] == [
        ("backchannel_logout", "revoked", None),
        ("backchannel_logout", "invalid_request", "replayed jti"),
        ("backchannel_logout", "invalid_request", "a logout token may not carry a nonce"),
    ]
    assert (events[0].sub, events[0].sid, events[0].jti, events[0].scope) == ("alice", "sid-alice", "j-1", "session")
    assert raw.split(".")[1] not in caplog.text
