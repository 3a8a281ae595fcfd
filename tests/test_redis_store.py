"""Against the real redis-server the test session starts: failures, TTLs, sharing, hostile ids."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from typing import Any

import httpx
import pytest
import redis
from starlette.testclient import TestClient

from signout import SignOutMiddleware, SignOutWSGIMiddleware, layout

from .apps import starlette_app, wsgi_app
from .conftest import ISS, SECRET, PEP3333Transport, RedisServer, TokenFactory, free_port

KEY = re.compile(rb"^signout:\{[0-9a-f]{4}\}$")


def wrapped(url: str, **kwargs: Any) -> TestClient:
    return TestClient(SignOutMiddleware(starlette_app(), key=SECRET, redis_url=url, **kwargs), base_url="https://t")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_two_instances_on_one_redis_see_each_others_revocations(redis_url: str, make_token: TokenFactory) -> None:
    one, two = wrapped(redis_url), wrapped(redis_url)
    token = make_token()
    assert two.get("/me", headers=bearer(token)).status_code == 200
    assert one.post("/auth/logout", headers=bearer(token)).status_code == 200
    assert two.get("/me", headers=bearer(token)).status_code == 401


def commands(client: redis.Redis, *names: str) -> dict[str, int]:
    stats = client.info("commandstats")
    return {name: int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in names}


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_logouts_name_the_script_by_digest_and_send_it_whole_only_to_a_server_without_it(
    kind: str, redis_url: str, redis_client: redis.Redis, make_token: TokenFactory
) -> None:
    if kind == "asgi":
        c: Any = TestClient(SignOutMiddleware(starlette_app(), key=SECRET, redis_url=redis_url), base_url="https://t")
    else:
        app = SignOutWSGIMiddleware(wsgi_app(), key=SECRET, redis_url=redis_url)
        c = httpx.Client(transport=PEP3333Transport(app), base_url="https://t")  # type: ignore[arg-type]
    redis_client.script_flush()
    redis_client.config_resetstat()
    tokens = [make_token(sub=f"digest-{kind}-{i}", sid=f"s{i}", jti=f"j{i}") for i in range(3)]
    assert c.post("/auth/logout", headers={"Authorization": f"Bearer {tokens[0]}"}).status_code == 200
    # Unknown to a flushed server: refused (NOSCRIPT, not run), then sent whole, which caches it.
    assert commands(redis_client, "evalsha", "eval") == {"evalsha": 1, "eval": 1}
    for token in tokens[1:]:
        assert c.post("/auth/logout", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert commands(redis_client, "evalsha", "eval") == {"evalsha": 3, "eval": 1}
    for token in tokens:  # each written once, NOSCRIPT or not
        assert c.get("/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    stats = redis_client.info("commandstats")
    assert stats["cmdstat_evalsha"]["failed_calls"] == 1  # the one refusal, and no other


def test_every_key_has_a_ttl_covering_the_token(
    redis_url: str, redis_client: redis.Redis, make_token: TokenFactory
) -> None:
    now = int(time.time())
    c = wrapped(redis_url, max_token_lifetime=3600, leeway=30)
    assert c.post("/auth/logout", headers=bearer(make_token(exp=now + 600))).status_code == 200
    assert c.post("/auth/logout", headers=bearer(make_token(sub=None, sid=None, jti="lonely"))).status_code == 200
    keys = list(redis_client.scan_iter())
    assert len(keys) == 2
    for key in keys:
        assert KEY.match(key)
        ttl = redis_client.ttl(key)
        assert ttl > 0, key
    user_key = next(k for k in keys if redis_client.hexists(k, layout.session_field(ISS, "s-1")))
    # The session field must outlive every token of the login: max lifetime + leeway.
    assert redis_client.ttl(user_key) >= 3600 + 2 * 30 - 2
    lonely = next(k for k in keys if k != user_key)
    # A token-only bucket lives at least until the token could no longer be accepted.
    assert redis_client.ttl(lonely) >= 600 + 30 - 2


HOSTILE = ["*", "{", "}", "{bob}", "a\r\nDEL x", "nul\x00byte", "x" * 5000]


@pytest.mark.parametrize("value", HOSTILE, ids=[repr(v)[:12] for v in HOSTILE])
def test_hostile_ids_revoke_only_their_own_token(
    redis_url: str, redis_client: redis.Redis, make_token: TokenFactory, value: str
) -> None:
    c = wrapped(redis_url)
    # Three 5 KB ids would pass the 16 KB token cap; the long case puts two in.
    hostile = make_token(sub=value if len(value) < 100 else "h", sid=value, jti=value)
    bystanders = [make_token(sub="bob", sid="b", jti="b"), make_token(sub="*", sid="*x", jti="*x")]
    assert c.post("/auth/logout", headers=bearer(hostile)).status_code == 200
    denied = c.get("/me", headers=bearer(hostile))
    assert denied.status_code == 401
    assert denied.json()["message"] == "Token has been revoked"
    for other in bystanders if value != "*" else bystanders[:1]:
        assert c.get("/me", headers=bearer(other)).status_code == 200
    keys = list(redis_client.scan_iter())
    assert len(keys) == 1 and KEY.match(keys[0])
    assert redis_client.hlen(keys[0]) == 2


def test_unreachable_redis_fails_closed_then_recovers_by_itself(make_token: TokenFactory) -> None:
    port = free_port()
    c = wrapped(f"redis://127.0.0.1:{port}/0", store_timeout=0.2)
    token = make_token()
    r = c.get("/me", headers=bearer(token))
    assert r.status_code == 503
    assert r.headers["retry-after"] == "5"
    assert r.json()["error"] == "temporarily_unavailable"
    out = c.post("/auth/logout", headers=bearer(token))
    assert out.status_code == 503
    assert "not recorded" in out.json()["message"]
    assert out.headers["set-cookie"].startswith('refresh_token=""')
    assert c.get("/me").status_code == 200  # no token: nothing to check, nothing to fail
    server = RedisServer(port).start()
    try:
        assert c.get("/me", headers=bearer(token)).status_code == 200
        assert c.post("/auth/logout", headers=bearer(token)).status_code == 200
        assert c.get("/me", headers=bearer(token)).status_code == 401
    finally:
        server.stop()


def test_unreachable_redis_with_on_store_error_allow_fails_open(make_token: TokenFactory) -> None:
    c = wrapped(f"redis://127.0.0.1:{free_port()}/0", on_store_error="allow", store_timeout=0.2)
    assert c.get("/me", headers=bearer(make_token())).status_code == 200


def test_redis_slower_than_store_timeout_is_503_then_recovers(
    redis_url: str, redis_client: redis.Redis, make_token: TokenFactory
) -> None:
    middleware = SignOutMiddleware(starlette_app(), key=SECRET, redis_url=redis_url, store_timeout=0.1)
    token = make_token()
    with TestClient(middleware, base_url="https://t") as c:  # one loop: the pooled connection is reused
        assert c.get("/me", headers=bearer(token)).status_code == 200
        redis_client.client_pause(1500, all=True)
        started = time.monotonic()
        r = c.get("/me", headers=bearer(token))
        assert r.status_code == 503
        assert time.monotonic() - started < 1.0  # answered at store_timeout, not when the pause ends
        time.sleep(1.6)
        assert c.get("/me", headers=bearer(token)).status_code == 200
        assert c.post("/auth/logout", headers=bearer(token)).status_code == 200
        assert c.get("/me", headers=bearer(token)).status_code == 401


def test_a_client_passed_in_is_used_and_cloned_for_other_loops(redis_url: str, make_token: TokenFactory) -> None:
    import redis.asyncio as aredis

    client = aredis.Redis.from_url(redis_url)
    c = TestClient(SignOutMiddleware(starlette_app(), key=SECRET, redis=client), base_url="https://t")
    token = make_token()
    for _ in range(3):  # each request in a fresh loop
        assert c.get("/me", headers=bearer(token)).status_code == 200
    assert c.post("/auth/logout", headers=bearer(token)).status_code == 200
    assert c.get("/me", headers=bearer(token)).status_code == 401


def test_walkthrough_runs_against_redis(redis_url: str, root: Any) -> None:
    result = subprocess.run(
        [sys.executable, str(root / "examples" / "walkthrough.py")],
        env={"REDIS_URL": redis_url, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    steps = [line for line in result.stdout.splitlines() if re.match(r"^\d+\. ", line)]
    assert [line.split("->")[1].split()[:2] for line in steps] == [
        ["200", "ok"],
        ["200", "ok"],
        ["200", "ok"],
        ["401", "ok"],
        ["401", "ok"],
        ["200", "ok"],
        ["200", "ok"],
        ["200", "ok"],
        ["200", "ok"],
        ["401", "ok"],
        ["401", "ok"],
    ]
    assert "eyJ" not in result.stdout  # no token printed


def test_an_acl_that_refuses_evalsha_gets_the_script_whole(
    redis_server: RedisServer, redis_client: redis.Redis, make_token: TokenFactory
) -> None:
    redis_client.acl_setuser("no-evalsha", enabled=True, passwords=["+pw"], keys=["*"], channels=["*"],
                             commands=["+@all", "-evalsha"])  # fmt: skip
    try:
        url = f"redis://no-evalsha:pw@127.0.0.1:{redis_server.port}/0"
        c = TestClient(SignOutMiddleware(starlette_app(), key=SECRET, redis_url=url), base_url="https://t")
        redis_client.config_resetstat()
        tokens = [make_token(sub=f"acl-{i}", sid=f"acl-s{i}", jti=f"acl-j{i}") for i in range(3)]
        for token in tokens:
            assert c.post("/auth/logout", headers=bearer(token)).status_code == 200
            assert c.get("/me", headers=bearer(token)).status_code == 401
        stats = redis_client.info("commandstats")
        assert stats["cmdstat_evalsha"]["rejected_calls"] == 1  # asked once; the text from then on
        assert stats["cmdstat_eval"]["calls"] == 3
    finally:
        redis_client.acl_deluser("no-evalsha")
