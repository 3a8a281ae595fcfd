"""The store contract (``signout.stores.base``), on every store: the claim that refresh rotation's first use
rests on is atomic, the first one wins, and it always comes with a TTL."""

from __future__ import annotations

import asyncio
import time

import redis

from signout import layout
from signout.layout import Write

from .conftest import Backend


def claim_write(first_ms: int, expires: int) -> Write:
    return Write("signout:{00ab}", ((layout.used_field("iss", "r-1"), layout.claim_value(first_ms, expires)),))


def test_the_first_claim_sets_its_value_and_later_ones_learn_it(backend: Backend) -> None:
    now = time.time()
    expires = int(now) + 600
    store = backend.make_sync()
    assert store.claim_sync(claim_write(1_000, expires), now) is None
    held = store.claim_sync(claim_write(2_000, expires), now)
    assert held is not None and layout.parse(held) == (1_000, expires)

    async def again() -> object:
        async_store = store if backend.name == "memory" else backend.make()  # one MemoryStore per make
        return await async_store.claim(claim_write(3_000, expires), now)

    held = asyncio.run(again())
    assert held is not None and layout.parse(held) == (1_000, expires)  # type: ignore[arg-type]


def test_a_claimed_bucket_expires_with_its_field(redis_url: str) -> None:
    from signout import RedisStore

    now = time.time()
    store = RedisStore(redis_url)
    store.claim_sync(claim_write(1_000, int(now) + 600), now)
    client = redis.Redis.from_url(redis_url)
    ttl = client.ttl("signout:{00ab}")
    client.close()
    assert 590 <= ttl <= 601
