"""The revocation store: logouts per second, Redis bytes per revoked token, the local mirror's lag and size.

Four parts, each on its own private redis-server:

* ``logouts``  ``POST /auth/logout`` through ``SignOutMiddleware(..., redis_url=...)``, in process,
               a fresh HS256 token per logout (made before timing): sequential, and 32 at a time
               (``asyncio.gather``). Each logout runs signout's merge script (jti + sid) in Redis.
               Interleaved rounds, medians; afterwards a sample of the logged-out tokens must get 401.
* ``memory``   1,000,000 (``--entries``) revoked tokens written in signout's key layout, for three
               distributions; bytes per revoked token = the growth of ``INFO memory`` used_memory
               divided by the tokens:
               - ``local``     1 revoked token per user, as a local logout writes it: a ``j`` (jti) and
                               an ``s`` (sid) field in the bucket of the user's shard;
               - ``10/user``   10 revoked tokens per user (10 logins, each logged out): 20 fields per user;
               - ``jti-only``  1 per user, ``revoker.revoke(claims)`` (``session=False``): the ``j`` field only.
               Buckets are shared (65,536 per prefix, see ``signout.layout``), so users share keys.
               jti, sid and sub are UUID strings (36 characters); 15-minute access tokens issued
               over the last 10 minutes (none expires during the load).
               ``--via bulk`` (default): the buckets, fields and values come from signout's own
               ``rules.token_writes``, written as one ``HSET`` + ``EXPIRE NX`` + ``EXPIRE GT`` per write (the TTL the
               merge script sets); before the timed load, 300 users per distribution are written
               both that way and through ``RedisStore.write_sync`` (the merge script, one write per
               logout) and compared field by field. ``--via script``: everything through
               ``RedisStore.write_sync`` (slower; the same result).
* ``lag``      two middlewares with ``local_mirror=True`` on one Redis (one process, as two app
               instances would be); each trial logs a fresh token out through A and times until
               B's guard answers 401, from A's 200. 200 trials (``--trials``) per row, for each
               follower (``loop``: the task on the serving loop an ASGI app gets; ``thread``: the
               thread a WSGI app gets) and each load of B's event loop: idle (B polled every
               0.1 ms), saturated (B polled back to back, so a thread waits for the GIL as it
               would in a busy server) and saturated with 32 polls in flight (longer loop turns,
               which a task on the loop waits for). Also counted per row: the buckets the
               followers read back with ``HGETALL`` (0: every change message carried its fields).

* ``size``     10,000, 100,000 and 1,000,000 (``--sizes``) live revocations (``local``), and a
               mirror of them in a process of its own: Redis bytes per revocation, the mirror's
               bytes per revocation (its process's resident set), its first copy's time (thread),
               the time from a dropped subscription to a fresh copy, and the same first copy by
               the task on an event loop with the longest the loop went without a turn meanwhile.

    python benchmarks/bench_store.py [--quick] [--entries N] [--via bulk|script] [--parts logouts,memory,lag,size]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import logging
import os
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import redis
from _common import (
    ISSUER,
    WIDTH,
    ASGIApp,
    Keys,
    Scope,
    StealMeter,
    bare_app,
    call,
    http_scope,
    keys_for,
    make_claims,
    make_token,
    median,
    percentile,
    redis_server,
    redis_url,
    rotations,
    run_concurrent,
    run_sequential,
    signout_kwargs,
    stop_mirror_threads,
    verdict,
    versions,
)

import signout
from signout import layout, rules
from signout.layout import Write
from signout.stores.mirror import MirrorStore
from signout.stores.redis import RedisStore
from signout.tokens import Source, Token

BYTES_TARGET = 100.0
LAG_TARGET_MS = 5.0
#: The middleware's defaults: key_prefix, leeway, max_token_lifetime (30 days).
POLICY = rules.Policy("signout", 30, 30 * 86400)
BURST = 1000
Runner = Callable[[ASGIApp, Sequence[Scope]], Awaitable[float]]


# ---- (a) logouts per second -----------------------------------------------------------------


async def logouts(port: int, args: argparse.Namespace) -> None:
    keys = keys_for("HS256")
    middleware = signout.SignOutMiddleware(bare_app, redis_url=redis_url(port), **signout_kwargs(keys))
    # A burst: 1,000 logouts in flight at once in one event loop (one tick's writes, one pipeline).
    widths = {"sequential": 1, f"{WIDTH}-concurrent": WIDTH, f"{BURST:,}-concurrent": BURST}
    runners: dict[str, Runner] = {
        name: run_sequential if width == 1 else functools.partial(run_concurrent, width=width)
        for name, width in widths.items()
    }

    def logout_scopes(n: int) -> list[Any]:
        return [http_scope(make_token(keys), method="POST", path="/auth/logout") for _ in range(n)]

    sizes = {}
    for name, run in runners.items():  # warm-up, which sizes the batches
        width = widths[name]
        per_request = await run(middleware, logout_scopes(max(4 * WIDTH, width)))
        size = int(args.logout_seconds / (args.rounds * len(runners)) * 1e6 / per_request) // width * width
        sizes[name] = min(max(2 * width, size), 100_000)
    batches = {name: [logout_scopes(sizes[name]) for _ in range(args.rounds)] for name in runners}
    samples: dict[str, list[float]] = {name: [] for name in runners}
    for name in rotations(list(runners), args.rounds):
        samples[name].append(await runners[name](middleware, batches[name][len(samples[name])]))
    refused = 0
    for scope in random.sample([s for b in batches["sequential"] for s in b], 50):
        token_scope = {**scope, "method": "GET", "path": "/me", "raw_path": b"/me"}
        refused += (await call(middleware, token_scope))[0] == 401
    if refused != 50:
        raise RuntimeError(f"only {refused} of 50 logged-out tokens were refused")
    assert isinstance(middleware.store, RedisStore)
    await middleware.store.aclose()
    print(f"\n== Logouts per second: POST /auth/logout through SignOutMiddleware + Redis, {args.rounds} rounds")
    print(f"  {'mode':<15} {'logouts/s':>10} {'us/logout':>10} {'min..max logouts/s':>20} {'n/batch':>8}")
    for name, us in samples.items():
        spread = f"{1e6 / max(us):,.0f}..{1e6 / min(us):,.0f}"
        print(f"  {name:<15} {1e6 / median(us):10,.0f} {median(us):10.1f} {spread:>20} {sizes[name]:>8}")
    print("  (checked: 50 of the logged-out tokens, sampled, are refused with 401)")


# ---- (b) bytes per revoked token --------------------------------------------------------------


@dataclass(frozen=True)
class Distribution:
    name: str
    per_user: int
    session: bool  # the logout revokes the sid too (a local logout does; revoker.revoke() does not)
    what: str


DISTRIBUTIONS = (
    Distribution("local", 1, True, "1/user, jti + sid"),
    Distribution("10/user", 10, True, "10/user, jti + sid"),
    Distribution("jti-only", 1, False, "1/user, jti only"),
)


def users(dist: Distribution, count: int, now: float) -> Iterator[list[Token]]:
    """``count`` users' revoked tokens, a list per user."""
    rand = random.Random(7)
    for _ in range(count):
        sub = str(uuid.uuid4())
        tokens = []
        for _ in range(dist.per_user):
            iat = now - rand.randrange(600)  # exp at least 5 minutes away: nothing expires mid-run
            tokens.append(Token(Source.HEADER, {}, ISSUER, sub, str(uuid.uuid4()), str(uuid.uuid4()), iat, iat + 900))
        yield tokens


def per_logout(dist: Distribution, tokens: Sequence[Token], now: float) -> list[Write]:
    """What signout writes: one merge per logout (token)."""
    return [w for t in tokens for w in rules.token_writes(POLICY, (t,), now, session=dist.session)]


def bulk(pipe: Any, dist: Distribution, tokens: Sequence[Token], now: float) -> None:
    """The end state of those merges at once: the same fields and values, the TTL the script sets."""
    for w in rules.token_writes(POLICY, tokens, now, session=dist.session):
        latest = max(parsed[1] for _, v in w.fields if (parsed := layout.parse(v)) is not None)
        pipe.hset(w.key, mapping=dict(w.fields))
        # A bucket is shared: its TTL is the latest of all its fields, as the script sets it.
        pipe.expire(w.key, latest - int(now) + 1, nx=True)
        pipe.expire(w.key, latest - int(now) + 1, gt=True)


def check_bulk(port: int, dist: Distribution, now: float) -> None:
    """The bulk path must leave exactly what signout's merge script leaves (db 1: script, db 2: bulk)."""
    sample = list(users(dist, 300, now))
    store = RedisStore(redis_url(port, 1))
    for tokens in sample:
        store.write_sync(per_logout(dist, tokens, now), now)
    with redis.Redis(port=port, db=2) as client:
        pipe = client.pipeline(transaction=False)
        for tokens in sample:
            bulk(pipe, dist, tokens, now)
        pipe.execute()
        script = store.sync_client()
        keys = sorted(script.keys("*"))
        # Every bucket a write names: its user's, and (a session revoked) its session's.
        named = {w.key.encode() for tokens in sample for w in per_logout(dist, tokens, now)}
        if keys != sorted(client.keys("*")) or set(keys) != named:
            raise RuntimeError(f"{dist.name}: the bulk writer made other keys than the merge script")
        for key in keys:
            if script.hgetall(key) != client.hgetall(key) or abs(script.ttl(key) - client.ttl(key)) > 2:
                raise RuntimeError(f"{dist.name}: bucket {key!r} differs between bulk and the merge script")
        script.close()
        client.flushall()


def used_memory(port: int) -> int:
    time.sleep(0.3)  # let serverCron finish any incremental rehash and shrink the writer's buffers
    with redis.Redis(port=port) as client:
        return int(client.info("memory")["used_memory"])


def fill(port: int, dist: Distribution, entries: int, via: str, now: float) -> float:
    """Write ``entries`` revoked tokens; return the seconds it took."""
    started = time.perf_counter()
    chunk = max(1, 2000 // dist.per_user)
    batch: list[list[Token]] = []
    if via == "script":
        store = RedisStore(redis_url(port), timeout=30)
        for tokens in users(dist, entries // dist.per_user, now):
            batch.append(tokens)
            if len(batch) == chunk:
                store.write_sync([w for t in batch for w in per_logout(dist, t, now)], now)
                batch.clear()
        if batch:
            store.write_sync([w for t in batch for w in per_logout(dist, t, now)], now)
        store.sync_client().close()
    else:
        with redis.Redis(port=port) as client:
            pipe = client.pipeline(transaction=False)
            for tokens in users(dist, entries // dist.per_user, now):
                bulk(pipe, dist, tokens, now)
                if len(pipe) >= 2 * chunk:
                    pipe.execute()
            pipe.execute()
    return time.perf_counter() - started


def memory(port: int, args: argparse.Namespace) -> None:
    now = time.time()
    rows = []
    for dist in [d for d in DISTRIBUTIONS if d.name in args.distributions]:
        if args.via == "bulk":
            check_bulk(port, dist, now)
        with redis.Redis(port=port) as client:
            client.flushall()
        before = used_memory(port)
        seconds = fill(port, dist, args.entries, args.via, now)
        after = used_memory(port)
        tokens = args.entries // dist.per_user * dist.per_user
        with redis.Redis(port=port) as client:
            keys = int(client.dbsize())
            sampled = [client.randomkey() for _ in range(200)]
            usage = median([float(client.memory_usage(k, samples=0) or 0) for k in sampled])
            encoding = client.object("encoding", sampled[0]).decode()
            fields = int(client.hlen(sampled[0]))
            client.flushall()
        rows.append((dist, tokens, keys, fields, after - before, usage, encoding, seconds))
    via = "HSET + EXPIRE of signout's own writes" if args.via == "bulk" else "signout's merge script, pipelined"
    checked = "; checked equal to the merge script's result" if args.via == "bulk" else ""
    print(f"\n== Redis bytes per revoked token at {args.entries:,} tokens per distribution ({via}{checked})")
    head = ("distribution", "bytes/token", "target", "", "keys", "fields/key", "used_memory +", "MEMORY USAGE/key")
    print("  {:<28} {:>11} {:>7} {:<4} {:>9} {:>10} {:>14} {:>16}  encoding  load s".format(*head))
    for dist, tokens, keys, fields, grown, usage, encoding, seconds in rows:
        per = grown / tokens
        result = verdict(per, BYTES_TARGET, at_most=True)
        print(
            f"  {dist.name + ': ' + dist.what:<28} {per:11.1f} {'<= 100':>7} {result:<4} {keys:>9,} {fields:>10}"
            f" {grown / 2**20:10.1f} MiB {usage:16.0f}  {encoding:<8}  {seconds:6.1f}"
        )


# ---- (c) the local mirror's lag ----------------------------------------------------------------

#: How each follower is started before timing: a task on the serving loop (what an ASGI app
#: gets), or the thread (what WSGI gets; ``wait_in_sync`` from sync code starts it).
FOLLOWERS = ("asyncio", "socket")


@dataclass(frozen=True)
class LoopLoad:
    """How B's event loop is kept busy while B is asked, again and again, until it answers 401."""

    name: str
    width: int  # pollers of B in flight
    idle: bool  # each poller blocks 0.1 ms between checks (the loop is idle); else back to back

    async def pause(self) -> None:
        await asyncio.sleep(0)  # one loop turn: the loop's other tasks (and I/O) run
        if self.idle:
            # Blocks the loop on purpose: the GIL is free 0.1 ms at a time, a finer
            # resolution than the loop's own epoll timeout (1 ms) gives.
            time.sleep(0.0001)  # noqa: ASYNC251


LOADS = (
    LoopLoad("idle (B polled every 0.1 ms)", 1, True),
    LoopLoad("saturated (B polled back to back)", 1, False),
    LoopLoad(f"saturated, {WIDTH} polls in flight", WIDTH, False),
)


def mirror_of(middleware: signout.SignOutMiddleware) -> MirrorStore:
    store = middleware.store
    assert isinstance(store, MirrorStore)
    return store


async def poll(b: ASGIApp, check: Scope, load: LoopLoad, since: float, timeout: float) -> float:
    """ms from ``since`` until B answers 401; ``timeout`` (in ms) if it never does."""
    while (await call(b, check))[0] != 401:
        if time.perf_counter() - since > timeout:
            return timeout * 1000
        await load.pause()
    return (time.perf_counter() - since) * 1000


async def trial(a: ASGIApp, b: ASGIApp, token: str, load: LoopLoad, timeout: float) -> tuple[float, float]:
    """(lag, A's logout) in ms: from A's 200 to B's first 401; the lag is ``timeout`` if B never refused."""
    check, logout = http_scope(token), http_scope(token, method="POST", path="/auth/logout")
    if (await call(b, check))[0] != 200:  # also puts the token in B's verified-claims cache
        raise RuntimeError("B refused a valid token")
    t0 = time.perf_counter()
    if (await call(a, logout))[0] != 200:
        raise RuntimeError("the logout through A failed")
    t1 = time.perf_counter()
    if (await call(a, check))[0] != 401:
        raise RuntimeError("A's own revocation was not applied at once")
    lags = await asyncio.gather(*(poll(b, check, load, t1, timeout) for _ in range(load.width)))
    return min(lags), (t1 - t0) * 1000


async def mirrored_pair(port: int, keys: Keys, follower: str) -> list[signout.SignOutMiddleware]:
    """A and B, in sync, each followed by ``follower``."""
    pair = [
        signout.SignOutMiddleware(bare_app, redis_url=redis_url(port), local_mirror=True, **signout_kwargs(keys))
        for _ in range(2)
    ]
    for middleware in pair:
        store = mirror_of(middleware)
        synced = await store.await_in_sync(10) if follower == "asyncio" else store.wait_in_sync(10)
        if not synced or store.following != follower:
            raise RuntimeError(f"a mirror did not get in sync within 10 s, followed by {follower}")
    return pair


@dataclass
class LagRow:
    follower: str
    load: LoopLoad
    lags: list[float]
    writes: list[float]
    read_backs: int = 0  # buckets the followers read back with HGETALL during the trials
    placement: str = ""  # where redis-server ran: see PLACEMENTS


def read_backs(port: int) -> int:
    """``HGETALL``s sent by clients so far: INFO also counts the one each merge script run makes itself
    (an ``EVALSHA`` refused with NOSCRIPT ran none: it counts as a failed call)."""
    with redis.Redis(port=port) as client:
        stats = client.info("commandstats")

    def count(name: str, kind: str = "calls") -> int:
        return int(stats.get(f"cmdstat_{name}", {}).get(kind, 0))

    scripts = sum(count(name) - count(name, "failed_calls") for name in ("eval", "evalsha"))
    return count("hgetall") - scripts


async def lag_rows(port: int, follower: str, args: argparse.Namespace, timeout: float, budget: float) -> list[LagRow]:
    keys = keys_for("HS256")
    a, b = await mirrored_pair(port, keys, follower)
    rows = []
    try:
        for load in LOADS:
            row = LagRow(follower, load, [], [])
            deadline = time.perf_counter() + budget
            before = read_backs(port)
            while len(row.lags) < args.trials and time.perf_counter() < deadline:
                took, wrote = await trial(a, b, make_token(keys, make_claims()), load, timeout)
                row.lags.append(took)
                row.writes.append(wrote)
                await asyncio.sleep(0.002)
            row.read_backs = read_backs(port) - before
            rows.append(row)
    finally:
        for middleware in (a, b):
            await mirror_of(middleware).aclose()
    return rows


#: Where redis-server runs. ``own core``: pinned to the last CPU, this process to the others, as
#: Redis on a host of its own. ``shared``: wherever the scheduler puts them. On a small machine a
#: follower woken by a message lands on Redis's CPU and preempts it before it has written the same
#: message to the next subscriber (B): a scheduler time slice (2-5 ms on 2 cores) that no code
#: of ours can remove. Both rows are measured; the target is judged on ``own core``.
PLACEMENTS = ("own core", "shared")


@contextlib.contextmanager
def placed(port: int, placement: str) -> Iterator[bool]:
    """Pin redis-server and this process apart for ``own core``; yields whether the placement holds."""
    cpus = sorted(os.sched_getaffinity(0))
    if placement == "shared":
        yield True
        return
    if len(cpus) < 2:
        yield False
        return
    with redis.Redis(port=port) as client:
        server_pid = int(client.info("server")["process_id"])
    tasks = [int(t) for t in os.listdir("/proc/self/task")]
    try:
        os.sched_setaffinity(server_pid, {cpus[-1]})
        for task in tasks:  # every thread that exists now; threads started later inherit
            os.sched_setaffinity(task, set(cpus[:-1]))
        yield True
    finally:
        for task in [int(t) for t in os.listdir("/proc/self/task")]:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(task, set(cpus))
        with contextlib.suppress(OSError):
            os.sched_setaffinity(server_pid, set(cpus))


async def lag(port: int, args: argparse.Namespace) -> None:
    timeout, budget = 2.0, 30.0  # per trial, per row
    rows: list[LagRow] = []
    for placement in PLACEMENTS:
        with placed(port, placement) as holds:
            if not holds:
                print(f"note: one CPU only: no '{placement}' rows")
                continue
            for follower in FOLLOWERS:
                for row in await lag_rows(port, follower, args, timeout, budget):
                    row.placement = placement
                    rows.append(row)
    print("\n== Local mirror lag: a logout through A until B's guard answers 401 (A, B: local_mirror=True,")
    print("   one process, one Redis); timed from A's 200. Follower: loop = a task on the serving loop")
    print("   (ASGI), thread = the thread (WSGI; wait_in_sync). Redis: own core = redis-server pinned to")
    print("   one CPU and this process to the others (as Redis on its own host; the target's row);")
    print("   shared = both wherever the scheduler puts them (see PLACEMENTS)")
    print("   read-backs: buckets the two followers read back with HGETALL during the row (0 when every")
    print("   change message carried its fields)")
    head = ("Redis", "follower", "B's event loop", "trials", "p50 ms", "p99 ms", "max ms", "target", "")
    print("  {:<8} {:<8} {:<36} {:>6} {:>7} {:>8} {:>8} {:>9} {:<4}".format(*head), end="")
    print(" {:>17} {:>10}".format("A's logout p50 ms", "read-backs"))
    for row in rows:
        p99 = percentile(row.lags, 99)
        late = sum(x >= timeout * 1000 for x in row.lags)
        note = f"  ({late} never refused within {timeout:g} s, counted as {timeout:g} s)" if late else ""
        if len(row.lags) < args.trials:
            note += f"  (stopped after {budget:g} s)"
        judged = verdict(p99, LAG_TARGET_MS, at_most=True) if row.placement == PLACEMENTS[0] else "(info)"
        print(
            f"  {row.placement:<8} {row.follower:<8} {row.load.name:<36} {len(row.lags):>6}"
            f" {percentile(row.lags, 50):7.2f} {p99:8.2f} {max(row.lags):8.2f} {'p99 < 5':>9} {judged:<6}"
            f" {median(row.writes):15.2f} {row.read_backs:>10}{note}"
        )
    for placement in dict.fromkeys(r.placement for r in rows):
        print(f"  {placement}: socket p99 / asyncio p99:", end="")
        for load in LOADS:
            loop_p99, thread_p99 = (
                percentile(r.lags, 99)
                for f in FOLLOWERS
                for r in rows
                if r.load is load and r.follower == f and r.placement == placement
            )
            print(f"  {load.name.split(' (')[0]} {thread_p99 / loop_p99:,.1f}x", end="")
        print()


# ---- main -----------------------------------------------------------------------------------


# ---- (d) the local mirror at size ---------------------------------------------------------------

#: The mirror's figures are measured in a process of their own (``--mirror-child``): its memory is
#: the growth of that process's resident set, with nothing else of the benchmark's in it.
SIZES = (10_000, 100_000, 1_000_000)


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def loop_copy(url: str) -> tuple[float, float]:
    """A mirror's first copy on this event loop (what an ASGI app gets): seconds, and the longest
    the loop went without a turn meanwhile (ms), as a 1 ms ticker beside it saw."""
    mirror = MirrorStore(RedisStore(url, timeout=30), prefix="signout", ping_every=1.0)
    longest = 0.0
    done = False

    async def tick() -> None:
        nonlocal longest
        last = time.perf_counter()
        while not done:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            longest = max(longest, now - last - 0.001)
            last = now

    ticker = asyncio.ensure_future(tick())
    started = time.perf_counter()
    if not await mirror.await_in_sync(600):
        raise RuntimeError("the loop's mirror did not get in sync within 600 s")
    seconds = time.perf_counter() - started
    done = True
    await ticker
    await mirror.aclose()
    return seconds, longest * 1000


def mirror_child(url: str) -> None:
    """Run in a process of its own: the thread follower's copy (time, memory), a resync after
    the subscription is dropped, then the loop follower's copy. Prints one line of figures."""
    before = rss()
    started = time.perf_counter()
    mirror = MirrorStore(RedisStore(url, timeout=30), prefix="signout", ping_every=1.0)
    if not mirror.wait_in_sync(600):
        raise RuntimeError("the mirror did not get in sync within 600 s")
    copy = time.perf_counter() - started
    grown = rss() - before
    buckets = mirror.buckets_in_copy
    resyncs = mirror.resyncs
    with redis.Redis.from_url(url) as client:
        dropped = time.perf_counter()
        client.client_kill_filter(_type="pubsub")
    deadline = time.monotonic() + 600
    while mirror.resyncs == resyncs or not mirror.in_sync:  # out of sync, then a fresh copy
        if time.monotonic() > deadline:
            raise RuntimeError("the mirror did not resync within 600 s")
        time.sleep(0.001)
    resync = time.perf_counter() - dropped
    mirror.close()
    del mirror
    loop_seconds, stall_ms = asyncio.run(loop_copy(url))
    print(f"{copy} {grown} {buckets} {resync} {loop_seconds} {stall_ms}", flush=True)


def size(port: int, args: argparse.Namespace) -> None:
    """Redis and a mirror at 10k, 100k and 1M live revocations (``local``: a jti and a sid per logout)."""
    dist = DISTRIBUTIONS[0]
    now = time.time()
    rows = []
    for entries in args.sizes:
        with redis.Redis(port=port) as client:
            client.flushall()
        before = used_memory(port)
        fill(port, dist, entries, "bulk", now)
        grown = used_memory(port) - before
        out = subprocess.run(
            [sys.executable, __file__, "--mirror-child", redis_url(port)],
            capture_output=True,
            text=True,
            timeout=1800,
            check=True,
        ).stdout.split()
        copy, mirror_bytes, buckets, resync, loop_seconds, stall_ms = (float(x) for x in out)
        rows.append((entries, grown, copy, mirror_bytes, int(buckets), resync, loop_seconds, stall_ms))
    print(f"\n== The local mirror at size: {dist.name} ({dist.what}); one process per row for the mirror")
    head = ("revocations", "Redis B/rev", "mirror B/rev", "buckets", "copy s", "resync s", "loop copy s", "loop stall")
    print("  {:>11} {:>11} {:>12} {:>8} {:>7} {:>8} {:>11} {:>10}".format(*head))
    for entries, grown, copy, mirror_bytes, buckets, resync, loop_seconds, stall_ms in rows:
        print(
            f"  {entries:>11,} {grown / entries:11.1f} {mirror_bytes / entries:12.1f} {buckets:>8,}"
            f" {copy:7.2f} {resync:8.2f} {loop_seconds:11.2f} {stall_ms:7.1f} ms"
        )
    print("  copy: the thread follower's first copy (what a WSGI app gets); resync: from the subscription")
    print("  dropped (CLIENT KILL) to a fresh copy; loop: the same copy by the task on an ASGI app's loop,")
    print("  with the longest the loop went without a turn meanwhile. Mirror bytes: the growth of its")
    print("  process's resident set. Every copy reads in pages (SCAN 1,000 keys, HGETALL 256 at a time).")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--parts", default="logouts,memory,lag,size", help="any of logouts,memory,lag,size (default: all)"
    )
    parser.add_argument("--sizes", help="size: live revocations per row (default 10000,100000,1000000)")
    parser.add_argument("--mirror-child", help=argparse.SUPPRESS)
    parser.add_argument("--entries", type=int, help="revoked tokens per distribution (default 1,000,000)")
    parser.add_argument("--via", choices=("bulk", "script"), default="bulk")
    names = ",".join(d.name for d in DISTRIBUTIONS)
    parser.add_argument("--distributions", default=names, help=f"memory: any of {names} (default: all)")
    parser.add_argument("--trials", type=int, default=200, help="lag trials per mode (default 200)")
    parser.add_argument("--rounds", type=int, help="logout rounds (default 5; --quick 3)")
    parser.add_argument("--quick", action="store_true", help="100,000 entries, 3 s of logouts")
    args = parser.parse_args()
    if args.mirror_child:
        mirror_child(args.mirror_child)
        return
    sizes = [int(x) for x in args.sizes.split(",")] if args.sizes else list(SIZES[:2] if args.quick else SIZES)
    args.sizes = [min(max(n, 1000), 10_000_000) for n in sizes]
    args.entries = min(max(args.entries or (100_000 if args.quick else 1_000_000), 1000), 10_000_000)
    args.trials = min(max(args.trials, 10), 10_000)
    args.rounds = args.rounds or (3 if args.quick else 5)
    args.logout_seconds = 3.0 if args.quick else 10.0
    args.distributions = {d.strip() for d in args.distributions.split(",")}
    parts = {p.strip() for p in args.parts.split(",")}
    known = {"logouts", "memory", "lag", "size"}
    if parts - known:
        raise SystemExit(f"unknown part(s): {', '.join(sorted(parts - known))}")
    logging.getLogger("signout").setLevel(logging.ERROR)
    print(versions())
    started = time.perf_counter()
    steal = StealMeter()
    if "logouts" in parts:
        with redis_server() as port:
            assert port is not None
            asyncio.run(logouts(port, args))
    if "memory" in parts:
        with redis_server() as port:
            assert port is not None
            memory(port, args)
    if "lag" in parts:
        with redis_server() as port:
            assert port is not None
            try:
                asyncio.run(lag(port, args))
            finally:
                stop_mirror_threads()
    if "size" in parts:
        with redis_server() as port:
            assert port is not None
            size(port, args)
    print(f"\n({time.perf_counter() - started:.0f} s in all; {steal.report()})")


if __name__ == "__main__":
    main()
