"""Keys from a JWKS URL (``jwks_url``) against a real OpenID Provider (``tests/oidc_provider.py``).

signout is pointed at the OP's ``jwks_uri``, ``issuer`` and resource (``audience``), and the OP
mints the tokens (RS256, ``typ: at+jwt``): client credentials and a user's login. What the
OP counts (``jwks_requests()``) is what signout fetched. The key set's clock (``KeySet.clock``,
monotonic seconds) is a ``Clock`` the test moves, so rate limits and refresh ages are crossed
without sleeping. One OP for the module; ``reset()`` before every test (it does not undo a
key rotation, so no test relies on which keys the OP holds when it starts).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import json
import logging
import time
import uuid
from collections.abc import Iterator, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import pytest
from starlette.testclient import TestClient

from signout import MemoryStore, SignOutMiddleware, SignOutWSGIMiddleware
from signout.keyset import KeySet

from .apps import starlette_app, wsgi_app
from .conftest import PEP3333Transport
from .framework_helpers import uvicorn_server, werkzeug_server
from .helpers import Clock, asgi_status
from .oidc_provider import (
    OIDCProvider,
    oidc_provider_fixture,  # noqa: F401  (the fixture "oidc_provider")
)

ADAPTERS = ("asgi", "wsgi")
UNKNOWN_KEY = "Token signing key is unknown"
REVOKED = "Token has been revoked"

Message = MutableMapping[str, Any]


@dataclass
class Guarded:
    """The test app behind one adapter with keys from the OP, its key set, and a client of it."""

    app: Any
    keyset: KeySet
    clock: Clock
    client: httpx.Client

    def get(self, raw: str | None) -> httpx.Response:
        return self.client.get("/me", headers={"Authorization": f"Bearer {raw}"} if raw is not None else {})

    def status(self, raw: str) -> int:
        return self.get(raw).status_code

    def logout(self, raw: str) -> httpx.Response:
        return self.client.post("/auth/logout", headers={"Authorization": f"Bearer {raw}"})

    def settle(self, fetches: int, timeout: float = 5.0) -> None:
        """Until the key set attempted ``fetches`` fetches and the last one ended (a fetch that
        ends, good or not, sets ``due`` ahead of the clock, which these tests do not move meanwhile)."""
        deadline = time.monotonic() + timeout
        while not (self.keyset.fetches >= fetches and self.keyset.due > self.clock()):
            assert time.monotonic() < deadline, f"{self.keyset.fetches} fetches, wanted {fetches}"
            time.sleep(0.005)


def middleware(op: OIDCProvider, adapter: str, redis_url: str | None = None) -> Any:
    """The test app behind ``adapter``, verifying the OP's tokens; Redis or a MemoryStore."""
    where: dict[str, Any] = {"redis_url": redis_url} if redis_url else {"store": MemoryStore(warn=False)}
    if adapter == "asgi":
        return SignOutMiddleware(starlette_app(), jwks_url=op.jwks_uri, issuer=op.issuer, audience=op.resource, **where)
    return SignOutWSGIMiddleware(wsgi_app(), jwks_url=op.jwks_uri, issuer=op.issuer, audience=op.resource, **where)


def guarded(op: OIDCProvider, adapter: str, redis_url: str | None = None) -> Guarded:
    app = middleware(op, adapter, redis_url)
    keyset = app.keyset
    assert isinstance(keyset, KeySet) and keyset.fetches == 0
    keyset.clock = clock = Clock()
    if adapter == "asgi":
        client: httpx.Client = TestClient(app, base_url="https://app.test")  # no "with": a fresh loop per request
    else:
        client = httpx.Client(transport=PEP3333Transport(app), base_url="https://app.test")  # type: ignore[arg-type]
    return Guarded(app, keyset, clock, client)


def kid_of(raw: str) -> str:
    return str(jwt.get_unverified_header(raw)["kid"])


def with_kid(raw: str, kid: str) -> str:
    """``raw`` with its header's ``kid`` replaced, payload and signature kept (no longer valid)."""
    header, rest = raw.split(".", 1)
    fields = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    fields["kid"] = kid
    encoded = base64.urlsafe_b64encode(json.dumps(fields, separators=(",", ":")).encode()).rstrip(b"=").decode()
    return f"{encoded}.{rest}"


@pytest.fixture
def op(oidc_provider: OIDCProvider) -> Iterator[OIDCProvider]:
    """The module's OP, its JWKS answering and its counters at zero; left answering."""
    oidc_provider.reset()
    yield oidc_provider
    oidc_provider.jwks_mode("ok")


# ---- 1. the OP's tokens pass, and a logout kills them ------------------------------------------------


@pytest.mark.parametrize("grant", ["client_credentials", "login"])
@pytest.mark.parametrize("store", ["memory", "redis"])
@pytest.mark.parametrize("adapter", ADAPTERS)
def test_a_token_from_the_op_passes_and_a_logout_kills_it(
    op: OIDCProvider, adapter: str, store: str, grant: str, request: pytest.FixtureRequest
) -> None:
    redis_url = request.getfixturevalue("redis_url") if store == "redis" else None
    g = guarded(op, adapter, redis_url)
    if grant == "login":
        login = op.login("alice")
        raw, sub = login.access_token, "alice"
    else:
        raw, sub = op.access_token(), op.client_id
    assert jwt.get_unverified_header(raw)["typ"] == "at+jwt"
    r = g.get(raw)
    assert r.status_code == 200, r.text
    claims = r.json()["claims"]
    assert (claims["iss"], claims["aud"], claims["sub"]) == (op.issuer, op.resource, sub)
    assert claims["client_id"] == op.client_id and claims["jti"]
    if grant == "login":
        assert login.sid is not None and claims["sid"] == login.sid
    assert g.status(raw) == 200
    assert op.jwks_requests() == 1  # fetched once, then cached
    out = g.logout(raw)
    assert out.status_code == 200, out.text
    r = g.get(raw)
    assert r.status_code == 401 and r.json()["message"] == REVOKED
    other = op.access_token()  # another token of the OP: untouched by that logout
    assert g.status(other) == 200
    assert op.jwks_requests() == 1


@pytest.mark.parametrize("server", ["uvicorn", "werkzeug"])
def test_through_a_real_server_over_redis(op: OIDCProvider, server: str, redis_url: str) -> None:
    """uvicorn runs the lifespan: the keys are fetched at startup, before the first request."""
    if server == "uvicorn":
        serving = uvicorn_server(middleware(op, "asgi", redis_url))
    else:
        serving = werkzeug_server(middleware(op, "wsgi", redis_url))
    with serving as address, httpx.Client(base_url=f"http://{address}") as client:
        login = op.login("bob")
        auth = {"Authorization": f"Bearer {login.access_token}"}
        r = client.get("/me", headers=auth)
        assert r.status_code == 200, r.text
        assert r.json()["claims"]["sub"] == "bob" and r.json()["claims"]["sid"] == login.sid
        assert client.post("/auth/logout", headers=auth).status_code == 200
        r = client.get("/me", headers=auth)
        assert r.status_code == 401 and r.json()["message"] == REVOKED
        assert client.get("/me", headers={"Authorization": f"Bearer {op.access_token()}"}).status_code == 200
    assert op.jwks_requests() == 1


# ---- 2. key rotation at the OP ---------------------------------------------------------------------------


@pytest.mark.parametrize("removal", ["kid miss", "refresh due"])
@pytest.mark.parametrize("adapter", ADAPTERS)
def test_a_rotation_at_the_op(op: OIDCProvider, adapter: str, removal: str) -> None:
    g = guarded(op, adapter)
    old = op.access_token()
    assert g.status(old) == 200
    assert op.jwks_requests() == 1

    # A new signing key, the old one still published: the new kid costs exactly one fetch.
    new_kid = op.rotate_keys(keep_old=True, sign_with_new=True)
    new = op.access_token()
    assert kid_of(new) == new_kid != kid_of(old)
    g.clock.advance(g.keyset.min_interval)  # a kid miss may fetch again
    r = g.get(new)
    assert r.status_code == 200, r.text
    assert op.jwks_requests() == 2
    assert g.status(old) == 200  # old tokens still pass
    assert g.status(op.access_token()) == 200
    assert g.status(new) == 200
    assert op.jwks_requests() == 2

    # The old keys dropped from the JWKS: their tokens stop passing after signout's next fetch.
    newest_kid = op.rotate_keys(keep_old=False)
    assert [key["kid"] for key in op.keys()["keys"]] == [newest_kid]
    newest = op.access_token()
    if removal == "kid miss":
        g.clock.advance(g.keyset.min_interval)
        assert g.status(newest) == 200  # its kid is unknown: one fetch, which drops the others
        assert op.jwks_requests() == 3
    else:
        g.clock.advance(g.keyset.refresh_every)
        assert g.status(old) == 200  # notices the age: a refresh in the background; still held
        g.settle(3)
        assert op.jwks_requests() == 3
    for gone in (old, new):
        r = g.get(gone)
        assert r.status_code == 401 and r.json()["message"] == UNKNOWN_KEY
    assert g.status(newest) == 200
    assert g.status(op.access_token()) == 200
    assert op.jwks_requests() == 3


# ---- 3. a flood of made-up kids ----------------------------------------------------------------------------


@pytest.mark.parametrize("when", ["before the first fetch", "after a good fetch"])
def test_a_flood_of_made_up_kids_costs_the_op_a_handful_of_fetches(op: OIDCProvider, when: str) -> None:
    g = guarded(op, "asgi")
    real = op.access_token()
    flood = [with_kid(real, uuid.uuid4().hex) for _ in range(1000)]

    async def main() -> tuple[collections.Counter[int], int]:
        if when == "after a good fetch":
            assert await asgi_status(g.app, real) == 200
            g.clock.advance(g.keyset.min_interval)  # a kid miss may fetch again
        before = op.jwks_requests()
        op.jwks_mode("delay", delay=0.2)  # the flood keeps arriving while a fetch is under way
        statuses = collections.Counter(await asyncio.gather(*(asgi_status(g.app, t) for t in flood)))
        fetched = op.jwks_requests() - before
        op.jwks_mode("ok")
        assert await asgi_status(g.app, real) == 200  # the real token is untouched by the flood
        assert await asgi_status(g.app, op.access_token()) == 200
        return statuses, fetched

    statuses, fetched = asyncio.run(main())
    assert statuses == {401: 1000}
    assert 1 <= fetched <= 3, fetched
    assert op.jwks_requests() == fetched + (1 if when == "after a good fetch" else 0)


def test_a_flood_of_made_up_kids_through_wsgi_threads(op: OIDCProvider) -> None:
    g = guarded(op, "wsgi")
    real = op.access_token()
    assert g.status(real) == 200
    g.clock.advance(g.keyset.min_interval)
    op.jwks_mode("delay", delay=0.2)
    flood = [with_kid(real, uuid.uuid4().hex) for _ in range(1000)]
    with ThreadPoolExecutor(32) as pool:
        statuses = collections.Counter(pool.map(g.status, flood))
    assert statuses == {401: 1000}
    assert 2 <= op.jwks_requests() <= 4  # the first fetch, then a handful for the flood
    assert g.status(real) == 200


# ---- 4. a JWKS outage ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_an_outage_after_a_good_fetch_keeps_the_keys(
    op: OIDCProvider, adapter: str, caplog: pytest.LogCaptureFixture
) -> None:
    g = guarded(op, adapter)
    g.keyset.timeout = 0.5  # a hung fetch gives up this soon
    assert g.status(op.access_token()) == 200
    fetches = 1
    with caplog.at_level(logging.WARNING, logger="signout"):
        for mode, wait in (("fail", g.keyset.refresh_every), ("hang", g.keyset.min_interval)):
            op.jwks_mode(mode)
            g.clock.advance(wait)  # a refresh is due: the next request starts it in the background
            fresh = [op.access_token() for _ in range(3)]  # minted first: only signout is timed
            started = time.monotonic()
            for raw in fresh:  # fresh tokens, never cached: the kept keys verify them
                r = g.get(raw)
                assert r.status_code == 200, (mode, r.text)
            assert time.monotonic() - started < 2.0  # never waiting on the hung fetch
            fetches += 1
            g.settle(fetches)
            assert op.jwks_requests() == fetches
            assert g.keyset.ready
            r = g.get(op.access_token())
            assert r.status_code == 200, (mode, r.text)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(op.jwks_uri in w and "503" in w and "keeping the keys" in w for w in warnings), warnings
    assert any(op.jwks_uri in w and "keeping the keys" in w and "503" not in w for w in warnings), warnings


@pytest.mark.parametrize("mode", ["fail", "hang"])
@pytest.mark.parametrize("adapter", ADAPTERS)
def test_an_outage_before_the_first_fetch_is_a_503_then_a_200(op: OIDCProvider, adapter: str, mode: str) -> None:
    op.jwks_mode(mode)
    g = guarded(op, adapter)
    g.keyset.timeout = 0.5
    raw = op.access_token()
    r = g.get(raw)
    assert r.status_code == 503, r.text
    assert r.headers["retry-after"] == "5"
    assert r.json()["error"] == "temporarily_unavailable"
    assert g.get(None).status_code == 200  # no token: nothing to verify
    assert op.jwks_requests() == 1
    op.jwks_mode("ok")
    g.clock.advance(g.keyset.unready_interval)
    r = g.get(raw)
    assert r.status_code == 200, r.text
    assert r.json()["claims"]["sub"] == op.client_id
    assert op.jwks_requests() == 2
