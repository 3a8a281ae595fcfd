"""The guard's one Redis read (``HMGET``): redis-py vs signout's lean RESP2 reader (``stores.wire``).

On a private redis-server, 64 hashes of 3 fields (a user's bucket); every call
asks for 3 fields of one of them (jti, sid and the user-wide cutoff). Variants:

* ``redis-py``       ``redis.asyncio.Redis.execute_command("HMGET", ...)`` (hiredis when installed);
                     32-concurrent: ``asyncio.gather`` of 32 such calls (the pool opens 32 connections).
* ``redis-py-pipe``  32-concurrent only: one ``pipeline(transaction=False)`` of 32 ``HMGET``.
* ``resp``           ``AsyncReader.hmget``: one pipelined connection; 32-concurrent: ``asyncio.gather``
                     of 32 calls (sent in a couple of writes, see ``stores.wire``).
* ``redis-py-sync``  ``redis.Redis.execute_command("HMGET", ...)``, sequential.
* ``resp-sync``      ``SyncReader.hmget``, sequential.

Rounds are interleaved (every variant in turn, starting one later each round) so
drift hits all alike; us/call is the median over rounds of each batch's mean
(for 32-concurrent: wall time of the batch / calls). The ratio is the median of
the per-round ratios to ``resp`` (``resp-sync`` for the sync rows).

    python benchmarks/bench_reader.py [--quick] [--rounds N] [--calls N]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
from collections.abc import Awaitable, Callable

import redis
import redis.asyncio as aredis
from _common import WIDTH, StealMeter, median, redis_server, redis_url, rotations, versions
from redis.utils import HIREDIS_AVAILABLE

from signout.stores.wire.blocking import SyncReader
from signout.stores.wire.pipelined import AsyncReader
from signout.stores.wire.resp import Address

BUCKETS = 64
FIELDS = (b"jti-0123456789abcdef", b"sid-0123456789abcdef", b"u")
KEYS = [f"signout:{{{i:04x}}}" for i in range(BUCKETS)]

AsyncBatch = Callable[[int], Awaitable[None]]
SyncBatch = Callable[[int], None]


def fill(port: int) -> None:
    with redis.Redis(port=port) as client:
        pipe = client.pipeline(transaction=False)
        for key in KEYS:
            pipe.hset(key, mapping={FIELDS[0]: b"1900000000", FIELDS[2]: b"1700000000:1700000000"})
        pipe.execute()


def async_variants(client: aredis.Redis, reader: AsyncReader) -> dict[str, dict[str, AsyncBatch]]:
    """``{shape: {variant: batch}}``; a batch makes ``n`` calls."""

    async def seq_redispy(n: int) -> None:
        for i in range(n):
            await client.execute_command("HMGET", KEYS[i % BUCKETS], *FIELDS)  # type: ignore[no-untyped-call]

    async def seq_resp(n: int) -> None:
        for i in range(n):
            await reader.hmget(KEYS[i % BUCKETS], FIELDS)

    async def conc_redispy(n: int) -> None:
        for start in range(0, n, WIDTH):
            calls = [client.execute_command("HMGET", KEYS[i % BUCKETS], *FIELDS) for i in range(start, start + WIDTH)]  # type: ignore[no-untyped-call]
            await asyncio.gather(*calls)

    async def conc_pipe(n: int) -> None:
        for start in range(0, n, WIDTH):
            pipe = client.pipeline(transaction=False)
            for i in range(start, start + WIDTH):
                pipe.execute_command("HMGET", KEYS[i % BUCKETS], *FIELDS)
            await pipe.execute()

    async def conc_resp(n: int) -> None:
        for start in range(0, n, WIDTH):
            await asyncio.gather(*[reader.hmget(KEYS[i % BUCKETS], FIELDS) for i in range(start, start + WIDTH)])

    return {
        "sequential": {"redis-py": seq_redispy, "resp": seq_resp},
        f"{WIDTH}-concurrent": {"redis-py": conc_redispy, "redis-py-pipe": conc_pipe, "resp": conc_resp},
    }


def sync_variants(client: redis.Redis, reader: SyncReader) -> dict[str, SyncBatch]:
    def redispy(n: int) -> None:
        for i in range(n):
            client.execute_command("HMGET", KEYS[i % BUCKETS], *FIELDS)  # type: ignore[no-untyped-call]

    def resp(n: int) -> None:
        for i in range(n):
            reader.hmget(KEYS[i % BUCKETS], FIELDS)

    return {"redis-py-sync": redispy, "resp-sync": resp}


def timed_sync(batch: SyncBatch, n: int) -> float:
    gc.collect()
    start = time.perf_counter_ns()
    batch(n)
    return (time.perf_counter_ns() - start) / n / 1000


async def timed_async(batch: AsyncBatch, n: int) -> float:
    gc.collect()
    start = time.perf_counter_ns()
    await batch(n)
    return (time.perf_counter_ns() - start) / n / 1000


def report(shape: str, rounds: list[dict[str, float]], baseline: str) -> None:
    print(f"\n== {shape}: us/call (median of {len(rounds)} interleaved rounds), ratio to {baseline}")
    for name in rounds[0]:
        us = median([r[name] for r in rounds])
        ratio = median([r[name] / r[baseline] for r in rounds])
        spread = f"{min(r[name] for r in rounds):.1f}-{max(r[name] for r in rounds):.1f}"
        print(f"  {name:<15} {us:8.1f} us   {ratio:5.2f}x   (range {spread})")


async def bench_async(port: int, rounds: int, calls: int) -> None:
    url = redis_url(port)
    client = aredis.Redis.from_url(url)
    reader = AsyncReader(Address.from_url(url), timeout=1)
    shapes = async_variants(client, reader)
    for variants in shapes.values():  # warm up: connect, fill the pool
        for batch in variants.values():
            await batch(WIDTH * 4)
    for shape, variants in shapes.items():
        results: list[dict[str, float]] = []
        names = list(variants)
        for i, name in enumerate(rotations(names, rounds)):
            if i % len(names) == 0:
                results.append({})
            results[-1][name] = await timed_async(variants[name], calls)
        report(shape, results, "resp")
    await reader.aclose()
    await client.aclose()


def bench_sync(port: int, rounds: int, calls: int) -> None:
    url = redis_url(port)
    client = redis.Redis.from_url(url)
    reader = SyncReader(Address.from_url(url), timeout=1)
    variants = sync_variants(client, reader)
    for batch in variants.values():
        batch(WIDTH * 4)
    results: list[dict[str, float]] = []
    names = list(variants)
    for i, name in enumerate(rotations(names, rounds)):
        if i % len(names) == 0:
            results.append({})
        results[-1][name] = timed_sync(variants[name], calls)
    report("sync, sequential", results, "resp-sync")
    reader.close()
    client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 15; --quick 5)")
    parser.add_argument("--calls", type=int, help="calls per batch (default 2048; --quick 512)")
    parser.add_argument("--quick", action="store_true", help="a few seconds in all")
    args = parser.parse_args()
    rounds = args.rounds or (5 if args.quick else 15)
    calls = args.calls or (512 if args.quick else 2048)
    calls -= calls % WIDTH
    print(versions())
    print(f"redis-py parser: {'hiredis' if HIREDIS_AVAILABLE else 'pure Python'}; {calls} calls per batch")
    steal = StealMeter()
    started = time.perf_counter()
    with redis_server() as port:
        assert port is not None
        fill(port)
        asyncio.run(bench_async(port, rounds, calls))
        bench_sync(port, rounds, calls)
    print(f"\n({time.perf_counter() - started:.0f} s in all; {steal.report()})")


if __name__ == "__main__":
    main()
