"""The Redis store (``signout.stores.redis``: store, script, clients, batch) against the real redis-server the
session starts: one round trip per request (proven by what Redis counted, INFO), calls of one tick
coalesced, failures and timeouts, TTLs, sharing, hostile ids, the merge script and what it announces."""

from __future__ import annotations

import asyncio
import gc
import logging
import re
import time
from collections.abc import Sequence
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio as aredis
from starlette.testclient import TestClient

from signout import RedisStore, SignOutMiddleware, SignOutWSGIMiddleware, StoreError, layout
from signout.stores.mirror.follower import read_change
from signout.stores.redis import MERGE_SCRIPT
from signout.stores.redis.batch import Coalescer

from .apps import RawApp, starlette_app, wsgi_app
from .conftest import ISS, PASSWORD, SECRET, FreezableProxy, PEP3333Transport, RedisServer, TokenFactory, free_port
from .helpers import bearer, signout_lines

KEY = re.compile(rb"^signout:\{[0-9a-f]{4}\}$")


def wrapped(url: str, **kwargs: Any) -> TestClient:
    return TestClient(SignOutMiddleware(starlette_app(), key=SECRET, redis_url=url, **kwargs), base_url="https://t")


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
    # A logout writes two buckets (its user's: the jti; its session's: the sid) in one pipeline.
    assert commands(redis_client, "evalsha", "eval") == {"evalsha": 2, "eval": 2}
    for token in tokens[1:]:
        assert c.post("/auth/logout", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert commands(redis_client, "evalsha", "eval") == {"evalsha": 6, "eval": 2}
    for token in tokens:  # each written once, NOSCRIPT or not
        assert c.get("/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    stats = redis_client.info("commandstats")
    assert stats["cmdstat_evalsha"]["failed_calls"] == 2  # the first pipeline's refusals, and no other


def test_every_key_has_a_ttl_covering_the_token(
    redis_url: str, redis_client: redis.Redis, make_token: TokenFactory
) -> None:
    now = int(time.time())
    c = wrapped(redis_url, max_token_lifetime=3600, leeway=30)
    assert c.post("/auth/logout", headers=bearer(make_token(exp=now + 600))).status_code == 200
    assert c.post("/auth/logout", headers=bearer(make_token(sub=None, sid=None, jti="lonely"))).status_code == 200
    keys = list(redis_client.scan_iter())
    assert len(keys) == 3  # the user's bucket (its jti), the session's (its sid), the lonely token's
    for key in keys:
        assert KEY.match(key)
        ttl = redis_client.ttl(key)
        assert ttl > 0, key
    session_key = next(k for k in keys if redis_client.hexists(k, layout.session_field(ISS, "s-1")))
    assert session_key.decode() == layout.session_key("signout", ISS, "s-1")
    # The session field must outlive every token of the login: max lifetime + leeway.
    assert redis_client.ttl(session_key) >= 3600 + 2 * 30 - 2
    # A token's bucket (its user's, or its own) lives at least until the token could no longer be accepted.
    for key in keys:
        assert redis_client.ttl(key) >= 600 + 30 - 2


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
    # Its jti in its user's bucket, its sid in its session's.
    assert len(keys) == 2 and all(KEY.match(k) for k in keys)
    assert [redis_client.hlen(k) for k in keys] == [1, 1]


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
        # Asked once (the first logout's pipeline: its two buckets); the text from then on.
        assert stats["cmdstat_evalsha"]["rejected_calls"] == 2
        assert stats["cmdstat_eval"]["calls"] == 6
    finally:
        redis_client.acl_deluser("no-evalsha")


# ---- one round trip per request, proven by what Redis counted (INFO) ---------------------------------


def counters(client: redis.Redis) -> dict[str, int]:
    """Calls per command and read events, from one INFO (so it adds one read itself)."""
    stats: dict[str, Any] = client.info("all")
    out = {name: int(value["calls"]) for name, value in stats.items() if name.startswith("cmdstat_")}
    out["reads"] = int(stats["total_reads_processed"])
    return out


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) != before.get(k, 0)}


async def guarded(middleware: SignOutMiddleware, tokens: list[str], concurrent: bool) -> list[int]:
    async def one(token: str) -> int:
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b""}

        async def send(message: Any) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "GET", "path": "/me", "query_string": b"",
                 "headers": [(b"authorization", f"Bearer {token}".encode())]}  # fmt: skip
        await middleware(scope, receive, send)
        return int(sent[0]["status"])

    if concurrent:
        return list(await asyncio.gather(*(one(t) for t in tokens)))
    return [await one(t) for t in tokens]


def run(
    redis_url: str, tokens: list[str], *, concurrent: bool, coalesce: bool = True, via: str = "url"
) -> tuple[list[int], dict[str, int]]:
    """``via="url"``: reads through signout's own RESP reader; ``"client"``: through redis-py (a factory)."""
    admin = redis.Redis.from_url(redis_url)
    if via == "url":
        store = RedisStore(redis_url, coalesce=coalesce)
    else:
        store = RedisStore(lambda: aredis.Redis.from_url(redis_url), coalesce=coalesce)
    middleware = SignOutMiddleware(RawApp(), key=SECRET, store=store)

    async def main() -> tuple[list[int], dict[str, int]]:
        await guarded(middleware, tokens[:1], concurrent=False)  # connect first
        gc.collect()  # earlier tests' unclosed sockets: their EOFs, read by Redis, must not land in the count
        before = counters(admin)
        statuses = await guarded(middleware, tokens, concurrent)
        return statuses, delta(before, counters(admin))

    try:
        return asyncio.run(main())
    finally:
        admin.close()


def test_each_sequential_request_costs_exactly_one_round_trip(redis_url: str, make_token: TokenFactory) -> None:
    tokens = [make_token(sub=f"user-{i}", jti=f"j-{i}") for i in range(20)]
    statuses, counted = run(redis_url, tokens, concurrent=False)
    assert statuses == [200] * 20
    counted.pop("cmdstat_info", None)
    reads = counted.pop("reads")
    # Two HMGETs per request (its user's bucket, its session's), pipelined in one write; no EXISTS,
    # no GET, nothing else.
    assert counted == {"cmdstat_hmget": 40}
    assert reads == 20 + 1  # one read per request, plus the INFO that measured it


@pytest.mark.parametrize("via", ["url", "client"])
def test_concurrent_checks_in_one_tick_share_one_pipeline(redis_url: str, make_token: TokenFactory, via: str) -> None:
    tokens = [make_token(sub=f"user-{i}", jti=f"j-{i}") for i in range(32)]
    statuses, counted = run(redis_url, tokens, concurrent=True, via=via)
    assert statuses == [200] * 32
    assert counted["cmdstat_hmget"] == 64  # two lookups per token (its user's bucket, its session's)
    # One pipeline: 2 reads here (it and the INFO); a loaded machine may split the write. Without coalescing: >= 16.
    assert counted["reads"] <= 8


def test_without_coalescing_each_concurrent_check_is_its_own_round_trip(
    redis_url: str, make_token: TokenFactory
) -> None:
    tokens = [make_token(sub=f"user-{i}", jti=f"j-{i}") for i in range(32)]
    # Through redis-py, where each uncoalesced check takes a connection of its own. (The RESP
    # reader pipelines on one connection, where Redis may read several writes at once: its
    # uncoalesced writes are counted in test_wire.)
    statuses, counted = run(redis_url, tokens, concurrent=True, coalesce=False, via="client")
    assert statuses == [200] * 32
    assert counted["reads"] >= 16


def test_a_revoked_token_in_a_coalesced_batch_is_still_refused(redis_url: str, make_token: TokenFactory) -> None:
    from signout import Revoker

    tokens = [make_token(sub=f"user-{i}", jti=f"j-{i}") for i in range(8)]
    Revoker(redis_url=redis_url, key=SECRET).revoke_sync(tokens[5])
    statuses, _ = run(redis_url, tokens, concurrent=True)
    assert statuses == [200] * 5 + [401] + [200] * 2


@pytest.mark.parametrize("coalesce", [True, False])
def test_store_outage_during_a_batch_fails_every_request_closed(make_token: TokenFactory, coalesce: bool) -> None:
    from .conftest import free_port

    url = f"redis://127.0.0.1:{free_port()}/0"
    middleware = SignOutMiddleware(RawApp(), key=SECRET, store=RedisStore(url, coalesce=coalesce), store_timeout=0.3)
    tokens = [make_token(sub=f"user-{i}", jti=f"j-{i}") for i in range(8)]
    assert asyncio.run(guarded(middleware, tokens, concurrent=True)) == [503] * 8


# ---- calls of one tick share a batch -----------------------------------------------------------------


def test_a_cancelled_caller_leaves_its_batch_alone() -> None:
    # One client going away (its request cancelled) must not fail the others' checks or logouts.
    sent: list[list[str]] = []

    async def send(items: Sequence[str]) -> list[str]:
        sent.append(list(items))
        await asyncio.sleep(0.01)
        return [item.upper() for item in items]

    async def go() -> tuple[bool, list[str]]:
        coalescer: Coalescer[str, str] = Coalescer(send)
        first = asyncio.ensure_future(coalescer(["a"]))
        second = asyncio.ensure_future(coalescer(["b", "c"]))
        await asyncio.sleep(0)  # both have joined one batch
        first.cancel()
        await asyncio.wait([first])
        return first.cancelled(), await second

    cancelled, replies = asyncio.run(go())
    assert cancelled
    assert replies == ["B", "C"]
    assert sent == [["a", "b", "c"]]  # one pipeline for the tick


def test_a_failed_batch_fails_every_caller_with_a_store_error() -> None:
    async def send(items: Sequence[str]) -> list[str]:
        raise RuntimeError("boom")

    async def go() -> list[BaseException | list[str]]:
        coalescer: Coalescer[str, str] = Coalescer(send)
        return list(await asyncio.gather(coalescer(["a"]), coalescer(["b"]), return_exceptions=True))

    outcomes = asyncio.run(go())
    assert all(isinstance(o, StoreError) and o.unsure for o in outcomes), outcomes


# ---- where a store is, and how long a call may take --------------------------------------------------


def test_a_client_given_is_named_by_its_address_too(make_token: TokenFactory, caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    caplog.set_level(logging.WARNING, "signout")
    app = SignOutMiddleware(starlette_app(), key=SECRET, redis=aredis.Redis(port=port, password=PASSWORD))
    with TestClient(app) as client:
        assert client.get("/me", headers=bearer(make_token())).status_code == 503
    failures = [x for x in signout_lines(caplog) if "failed" in x]
    assert failures and all(f"[store redis://localhost:{port}/0]" in x for x in failures), failures
    assert PASSWORD not in caplog.text


def test_wsgi_with_a_client_without_timeouts_still_answers_within_store_timeout(
    proxy: FreezableProxy, make_token: TokenFactory
) -> None:
    given = redis.Redis(port=proxy.port)  # no socket_timeout: a WSGI worker could hang forever
    app = make_wsgi(given)
    proxy.freeze()
    start = time.monotonic()
    r = app.get("/me", headers={"Authorization": f"Bearer {make_token()}"})
    assert r.status_code == 503
    assert time.monotonic() - start < 1.5


def make_wsgi(client: redis.Redis) -> Any:
    import httpx

    from .conftest import PEP3333Transport

    wrapped = SignOutWSGIMiddleware(wsgi_app(), key=SECRET, redis=client, store_timeout=0.25)
    return httpx.Client(transport=PEP3333Transport(wrapped), base_url="https://t")  # type: ignore[arg-type]


# ---- the merge script announces what it wrote --------------------------------------------------------


def test_the_merge_script_announces_every_field_it_wrote_as_merged(redis_client: redis.Redis) -> None:
    pubsub = redis_client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
    pubsub.subscribe("t:changes")
    assert pubsub.get_message(timeout=1) is None  # the subscribe confirmation, ignored
    now = int(time.time())
    key = "t:{0001}"

    def merge(*fields: tuple[bytes, bytes]) -> tuple[str, object]:
        args = [x for field in fields for x in field]
        redis_client.eval(MERGE_SCRIPT, 1, key, now, "t:changes", *args)
        message = pubsub.get_message(timeout=1)
        assert message is not None
        return read_change(message["data"])

    cut, later = f"{now - 10}:{now + 900}".encode(), str(now + 900).encode()
    assert merge((b"u\x00:", cut), (b"j,\n", later), (b"sgone", str(now).encode())) == (
        key,
        ((b"u\x00:", cut), (b"j,\n", later)),  # in order; the expired field was pruned, not announced
    )
    # Lower values merge into the higher ones Redis holds: the message carries what it holds.
    assert merge((b"u\x00:", f"{now - 20}:{now + 60}".encode()), (b"j,\n", str(now + 5).encode())) == (
        key,
        ((b"u\x00:", cut), (b"j,\n", later)),
    )
    assert merge((b"u\x00:", f"{now}:{now + 60}".encode())) == (key, ((b"u\x00:", f"{now}:{now + 900}".encode()),))
    assert merge((b"j-twice", b"5"), (b"j-twice", later)) == (key, ((b"j-twice", later),))
    pubsub.close()
