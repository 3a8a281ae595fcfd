"""One store round trip per request, proven by what the real Redis counted (INFO)."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest
import redis
import redis.asyncio as aredis

from signout import RedisStore, SignOutMiddleware

from .apps import RawApp
from .conftest import SECRET, TokenFactory


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


def test_each_sequential_request_costs_exactly_one_hmget(redis_url: str, make_token: TokenFactory) -> None:
    tokens = [make_token(sub=f"user-{i}", jti=f"j-{i}") for i in range(20)]
    statuses, counted = run(redis_url, tokens, concurrent=False)
    assert statuses == [200] * 20
    counted.pop("cmdstat_info", None)
    reads = counted.pop("reads")
    assert counted == {"cmdstat_hmget": 20}  # no EXISTS, no GET, nothing else
    assert reads == 20 + 1  # one read per request, plus the INFO that measured it


@pytest.mark.parametrize("via", ["url", "client"])
def test_concurrent_checks_in_one_tick_share_one_pipeline(redis_url: str, make_token: TokenFactory, via: str) -> None:
    tokens = [make_token(sub=f"user-{i}", jti=f"j-{i}") for i in range(32)]
    statuses, counted = run(redis_url, tokens, concurrent=True, via=via)
    assert statuses == [200] * 32
    assert counted["cmdstat_hmget"] == 32
    # One pipeline: 2 reads here (it and the INFO); a loaded machine may split the write. Without coalescing: >= 16.
    assert counted["reads"] <= 8


def test_without_coalescing_each_concurrent_check_is_its_own_round_trip(
    redis_url: str, make_token: TokenFactory
) -> None:
    tokens = [make_token(sub=f"user-{i}", jti=f"j-{i}") for i in range(32)]
    # Through redis-py, where each uncoalesced check takes a connection of its own. (The RESP
    # reader pipelines on one connection, where Redis may read several writes at once: its
    # uncoalesced writes are counted in test_resp.)
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
