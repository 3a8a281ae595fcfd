"""Per-request overhead of the signout guard over a bare ASGI app, measured in process.

No HTTP server: every variant is an ASGI callable awaited directly on one
asyncio loop with a prebuilt ``GET /me`` scope carrying ``Authorization: Bearer
<token>`` (claims iss, sub, sid, jti, iat, exp). Variants, all over one bare app
that answers 200 "ok":

* ``bare``            the app alone: the baseline.
* ``signout-memory``  ``SignOutMiddleware(app, key=..., store=MemoryStore())``.
* ``signout-redis``   ``SignOutMiddleware(app, key=..., redis_url=...)`` on a private redis-server
                      (checks jti, sid and user-wide cutoff in one HMGET; concurrent checks coalesce).
* ``signout-mirror``  the same with ``local_mirror=True``, in sync before timing (no Redis trip per check).
* ``hand-written``    the pure-ASGI guard people paste: ``jwt.decode`` + ``EXISTS denylist:<jti>``.
* ``bare-starlette``  a one-route Starlette app: the tutorial guard's baseline.
* ``tutorial``        the hand-written logic as a Starlette ``BaseHTTPMiddleware`` over that app.

Modes: one token reused (signout's verified-claims cache hits), or ``--fresh``:
a pool of more distinct tokens than that cache holds (made before timing),
walked in order by each variant, so no check ever hits the cache. ``--alg
RS256``: signout gets the PEM public key, the other guards the same PEM.
``--concurrent``: ``asyncio.gather`` of 32 requests at a time; reported as
requests/s. ``--all`` runs {reused, fresh} x {HS256, RS256} x {sequential,
32-concurrent} and ends with one table of the targets, PASS/MISS beside each.
``--jwks`` (RS256 only): the signout variants get their key from ``jwks_url``, a JWK Set
served from a thread on 127.0.0.1, instead of the PEM (fetched once, before timing);
the other guards keep the PEM. Issue 13: the guard's overhead is the same as with
static keys.

Rounds are interleaved (every variant in turn, starting one later each round)
so drift hits all alike. us/request is the median over rounds of each batch's
mean; overhead is that minus the variant's bare app. A ratio is the median over
rounds of that round's ratio (its two batches ran within a second of each
other), so a slow spell of the machine does not tilt it. A ratio below 1.00x
means signout adds less than the guard it is compared with.

    python benchmarks/bench_guard.py [--quick] [--fresh] [--alg RS256] [--jwks] [--concurrent] [--all]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import redis.asyncio as aredis
from _common import (
    FRESH_POOL,
    WIDTH,
    ASGIApp,
    Cycle,
    HandWrittenGuard,
    Keys,
    Scope,
    StealMeter,
    TutorialGuard,
    bare_app,
    call,
    http_scope,
    keys_for,
    make_claims,
    make_token,
    median,
    pin_to_one_core,
    redis_server,
    redis_url,
    rotations,
    run_concurrent,
    run_sequential,
    signout_kwargs,
    starlette_app,
    stop_mirror_threads,
    verdict,
    versions,
)
from jwt.algorithms import RSAAlgorithm

import signout
from signout.stores.mirror import MirrorStore
from signout.stores.redis import RedisStore

#: Each variant's baseline (variants absent here are baselines).
BASELINE = {
    "signout-memory": "bare",
    "signout-redis": "bare",
    "signout-mirror": "bare",
    "hand-written": "bare",
    "tutorial": "bare-starlette",
}
Runner = Callable[[ASGIApp, Sequence[Scope]], Awaitable[float]]


#: Requests in flight in the burst rows (one event loop, ``asyncio.gather``).
BURST = 1000
#: Past this many requests in flight, redis-py's asyncio pool (100 connections) starts refusing.
POOL_LIMIT = 100
#: The variants that call Redis through a redis-py asyncio pool of their own.
ON_REDIS_PY_POOL = ("hand-written", "tutorial")


@dataclass(frozen=True)
class Config:
    fresh: bool
    alg: str
    width: int  # 1: sequential

    @property
    def label(self) -> str:
        mode = "fresh" if self.fresh else "reused"
        return f"{self.alg} {mode} {'sequential' if self.width == 1 else f'{self.width}-concurrent'}"


@dataclass
class Result:
    config: Config
    samples: dict[str, list[float]] = field(default_factory=dict)  # us/request of each round
    sizes: dict[str, int] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)  # not timed: requests of one burst not answered 200

    def us(self, name: str) -> float | None:
        return median(self.samples[name]) if name in self.samples else None

    def overhead(self, name: str) -> float | None:
        mine, base = self.us(name), self.us(BASELINE.get(name, ""))
        return None if mine is None or base is None else mine - base

    def rps(self, name: str) -> float | None:
        us = self.us(name)
        return None if us is None else 1e6 / us

    def _round_overheads(self, name: str) -> list[float]:
        base = self.samples[BASELINE[name]]
        return [mine - bare for mine, bare in zip(self.samples[name], base, strict=True)]

    def overhead_ratio(self, a: str, b: str) -> float | None:
        """Median over rounds of a's overhead / b's in that round (measured within a second of each other)."""
        if a not in self.samples or b not in self.samples:
            return None
        pairs = zip(self._round_overheads(a), self._round_overheads(b), strict=True)
        ratios = [x / y for x, y in pairs if y > 0]
        return median(ratios) if ratios else None

    def rps_ratio(self, a: str, b: str) -> float | None:
        """Median over rounds of a's requests/s / b's in that round."""
        if a not in self.samples or b not in self.samples:
            return None
        return median([y / x for x, y in zip(self.samples[a], self.samples[b], strict=True)])


# ---- the variants ---------------------------------------------------------------------------


@contextlib.contextmanager
def jwks_server(keys: Keys) -> Iterator[str]:
    """The URL of a JWK Set holding ``keys``' public key, served from a thread on 127.0.0.1."""
    jwk: dict[str, Any] = json.loads(RSAAlgorithm.to_jwk(RSAAlgorithm(RSAAlgorithm.SHA256).prepare_key(keys.verifying)))
    body = json.dumps({"keys": [{**jwk, "use": "sig", "alg": keys.alg}]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.asynccontextmanager
async def variants(keys: Keys, port: int | None, jwks_url: str | None = None) -> AsyncIterator[dict[str, ASGIApp]]:
    """Every variant, freshly built (empty verified-claims caches); closed on exit.

    ``jwks_url``: signout's variants take their key from it instead of the PEM."""
    kw = signout_kwargs(keys) if jwks_url is None else {"jwks_url": jwks_url, "algorithms": [keys.alg]}
    apps: dict[str, ASGIApp] = {
        "bare": bare_app,
        "signout-memory": signout.SignOutMiddleware(bare_app, store=signout.MemoryStore(warn=False), **kw),
    }
    async with contextlib.AsyncExitStack() as stack:
        if port is not None:
            url = redis_url(port)
            client = aredis.Redis.from_url(url)
            stack.push_async_callback(client.aclose)
            guarded = signout.SignOutMiddleware(bare_app, redis_url=url, **kw)
            assert isinstance(guarded.store, RedisStore)
            stack.push_async_callback(guarded.store.aclose)
            mirrored = signout.SignOutMiddleware(bare_app, redis_url=url, local_mirror=True, **kw)
            mirror = mirrored.store
            assert isinstance(mirror, MirrorStore)
            stack.push_async_callback(mirror.aclose)
            # On this loop, as an ASGI app's mirror follows (a task among the requests, no thread).
            if not await mirror.await_in_sync(10):
                raise RuntimeError("the local mirror did not get in sync within 10 s")
            starlette = starlette_app()
            apps |= {
                "signout-redis": guarded,
                "signout-mirror": mirrored,
                "hand-written": HandWrittenGuard(bare_app, client, keys),
                "bare-starlette": starlette,
                "tutorial": TutorialGuard(starlette, client, keys),
            }
            await check_revocation(apps, keys, client)
        yield apps


async def check_revocation(apps: dict[str, ASGIApp], keys: Keys, client: aredis.Redis) -> None:
    """Every guard must refuse a revoked token, or the comparison means nothing."""
    claims = make_claims()
    scope = http_scope(make_token(keys, claims))
    for name in BASELINE:
        if await call(apps[name], scope) != (200, b"ok"):
            raise RuntimeError(f"{name}: a valid token was not answered 200 'ok'")
    for name in ("signout-memory", "signout-redis"):
        app = apps[name]
        assert isinstance(app, signout.SignOutMiddleware)
        await app.revoker.revoke(claims)
    await client.set(f"denylist:{claims['jti']}", 1, ex=600)
    for _ in range(2000):  # up to 2 s: the mirror learns of it through pub/sub
        if (await call(apps["signout-mirror"], scope))[0] == 401:
            break
        await asyncio.sleep(0.001)
    for name in BASELINE:
        status, _ = await call(apps[name], scope)
        if status != 401:
            raise RuntimeError(f"{name}: a revoked token was answered {status}, not 401")


# ---- measuring ------------------------------------------------------------------------------


async def burst_failures(app: ASGIApp, scopes: Sequence[Scope]) -> int:
    """How many of ``scopes``, all in flight at once, get no 200 (an exception counts)."""
    answers = await asyncio.gather(*(call(app, s) for s in scopes), return_exceptions=True)
    return sum(1 for a in answers if isinstance(a, BaseException) or a[0] != 200)


async def measure(config: Config, apps: dict[str, ASGIApp], pool: Sequence[Scope], args: argparse.Namespace) -> Result:
    """Warm-up (which sizes the batches), then interleaved timed rounds."""
    width = config.width
    run: Runner = run_sequential if width == 1 else functools.partial(run_concurrent, width=width)
    one = http_scope(make_token(keys_for(config.alg)))
    cycles = {name: Cycle(pool) for name in apps}

    def batch(name: str, n: int) -> list[Scope]:
        return cycles[name].take(n) if config.fresh else [one] * n

    result = Result(config)
    if width > POOL_LIMIT:
        # redis-py's asyncio pool refuses a connection past 100 in use: the guards built on
        # it fail a burst instead of being timed. Say how many of one burst they fail.
        for name in [n for n in apps if n in ON_REDIS_PY_POOL]:
            result.failed[name] = await burst_failures(apps.pop(name), batch(name, width))
    batch_seconds = args.seconds / (args.rounds * len(apps))
    for name, app in apps.items():
        per_request, deadline = 0.0, time.perf_counter() + args.warmup
        while time.perf_counter() < deadline:
            per_request = await run(app, batch(name, max(4 * WIDTH, width)))
        size = int(batch_seconds * 1e6 / per_request) // width * width
        result.sizes[name] = min(max(2 * width, size), 500_000)
    result.samples = {name: [] for name in apps}
    for name in rotations(list(apps), args.rounds):
        scopes = batch(name, result.sizes[name])
        result.samples[name].append(await run(apps[name], scopes))
    return result


def fresh_pool(alg: str) -> list[Scope]:
    keys = keys_for(alg)
    return [http_scope(make_token(keys)) for _ in range(FRESH_POOL)]


# ---- reporting ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    what: str
    value: float | None
    goal: float
    at_most: bool
    unit: str
    beside: str  # the absolute numbers

    def row(self, label: str) -> str:
        shown = "n/a" if self.value is None else f"{self.value:.2f}{self.unit}"
        goal = f"{'<=' if self.at_most else '>='} {self.goal:.2f}{self.unit}"
        result = verdict(self.value, self.goal, at_most=self.at_most)
        return f"  {self.what:<40} {label:<26} {shown:>9}  {goal:>10}  {result:<4}  {self.beside}"


def _us(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def targets(r: Result) -> list[Target]:
    """The issue's targets that this configuration measures."""
    out: list[Target] = []
    if r.config.width == 1:
        goal = 1.05 if r.config.fresh else 0.90
        for other, limit in (("hand-written", goal), ("tutorial", 0.60)):
            out.append(
                Target(
                    f"signout-redis / {other} overhead",
                    r.overhead_ratio("signout-redis", other),
                    limit,
                    True,
                    "x",
                    f"{_us(r.overhead('signout-redis'))} vs {_us(r.overhead(other))} us/request",
                )
            )
        if not r.config.fresh:
            mirror = r.overhead("signout-mirror")
            memory = r.overhead("signout-memory")
            beside = f"over bare; signout-memory {_us(memory)} us (the guard without any store I/O)"
            out.append(Target("signout-mirror overhead, cached token", mirror, 10.0, True, "us", beside))
    elif r.config.width > POOL_LIMIT:
        # Every timed batch checks that each request got 200: a 503 stops the run before here.
        timed = sum(r.sizes.get("signout-redis", 0) for _ in r.samples.get("signout-redis", []))
        beside = f"{timed:,} requests timed, each answered 200; {r.rps('signout-redis') or 0:,.0f} req/s"
        out.append(Target("signout-redis requests not answered 200", 0.0, 0.0, True, "", beside))
    else:
        out.append(
            Target(
                "signout-redis / hand-written requests/s",
                r.rps_ratio("signout-redis", "hand-written"),
                2.0,
                False,
                "x",
                f"{r.rps('signout-redis') or 0:,.0f} vs {r.rps('hand-written') or 0:,.0f} req/s",
            )
        )
    return out


TARGET_HEAD = f"  {'target':<40} {'configuration':<26} {'measured':>9}  {'target':>10}  {'':<4}  absolute"


def report(r: Result, rounds: int) -> None:
    c = r.config
    mode = "a fresh token per request (cache never hits)" if c.fresh else "one token reused"
    shape = "sequential" if c.width == 1 else f"{c.width} concurrent (asyncio.gather)"
    print(f"\n== {c.alg}, {mode}, {shape}; {rounds} interleaved rounds")
    print(TARGET_HEAD)
    for t in targets(r):
        print(t.row(c.label))
    if c.width == 1:
        for a, b in (("signout-memory", "hand-written"), ("signout-mirror", "hand-written")):
            ratio = r.overhead_ratio(a, b)
            if ratio is not None:
                print(f"  (info) {a} / {b} overhead = {ratio:.2f}x")
    for name, failed in r.failed.items():
        print(f"  (info) {name}: {failed:,} of {c.width:,} requests in flight at once not answered 200 (not timed)")
    if c.width != 1:
        for a, b in (("signout-mirror", "hand-written"), ("signout-redis", "tutorial")):
            ratio = r.rps_ratio(a, b)
            if ratio is not None:
                print(f"  (info) {a} / {b} requests/s = {ratio:.2f}x")
    head = ("variant", "baseline", "us/request", "overhead us", "req/s", "min..max us/req", "n/batch")
    print("\n  {:<15} {:<15} {:>10} {:>11} {:>9} {:>17} {:>8}".format(*head))
    for name, samples in r.samples.items():
        over = r.overhead(name)
        extra = f"{over:11.2f}" if over is not None else f"{'-':>11}"
        spread = f"{min(samples):.2f}..{max(samples):.2f}"
        us = r.us(name) or 0.0
        rps = f"{1e6 / us:9,.0f}"
        print(f"  {name:<15} {BASELINE.get(name, '-'):<15} {us:10.2f} {extra} {rps} {spread:>17} {r.sizes[name]:>8}")


def summary(results: list[Result]) -> None:
    print("\n== Targets (ratios from this one run; absolute numbers beside them)")
    print(TARGET_HEAD)
    for r in results:
        for t in targets(r):
            print(t.row(r.config.label))


# ---- main -----------------------------------------------------------------------------------


async def bench(configs: list[Config], args: argparse.Namespace, port: int | None) -> list[Result]:
    results = []
    pools: dict[str, list[Scope]] = {}
    for config in configs:
        pool: list[Scope] = []
        if config.fresh:
            if config.alg not in pools:
                started = time.perf_counter()
                pools[config.alg] = fresh_pool(config.alg)
                print(f"({len(pools[config.alg])} {config.alg} tokens made in {time.perf_counter() - started:.1f} s)")
            pool = pools[config.alg]
        keys = keys_for(config.alg)
        with jwks_server(keys) if args.jwks else contextlib.nullcontext() as url:
            async with variants(keys, port, url) as apps:
                result = await measure(config, apps, pool, args)
        report(result, args.rounds)
        results.append(result)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--all", action="store_true", help="the whole matrix, then the targets table")
    parser.add_argument("--fresh", action="store_true", help="a distinct token per request, made before timing")
    parser.add_argument("--alg", choices=("HS256", "RS256"), default="HS256")
    parser.add_argument("--jwks", action="store_true", help="signout's key from a jwks_url (implies --alg RS256)")
    parser.add_argument("--concurrent", action="store_true", help=f"{WIDTH} requests in flight (asyncio.gather)")
    parser.add_argument("--burst", action="store_true", help=f"{BURST:,} requests in flight (asyncio.gather)")
    parser.add_argument("--seconds", type=float, help="timed seconds per configuration (default 40, --all 12)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 25, --all 15; --quick 5)")
    parser.add_argument("--quick", action="store_true", help="short: 6 s (--all: 3 s per configuration)")
    parser.add_argument(
        "--spread", action="store_true", help="no pinning: the scheduler places this process and its redis-server"
    )
    args = parser.parse_args()
    if args.jwks:
        if args.all:
            parser.error("--jwks measures RS256 configurations one at a time; leave out --all")
        args.alg = "RS256"  # a JWK Set holds public keys: no HMAC secret is ever published
    if args.all:
        args.seconds = args.seconds or (3.0 if args.quick else 12.0)
        configs = [Config(f, a, w) for a in ("HS256", "RS256") for f in (False, True) for w in (1, WIDTH)]
        configs += [Config(f, "HS256", BURST) for f in (False, True)]
    else:
        args.seconds = args.seconds or (6.0 if args.quick else 40.0)
        configs = [Config(args.fresh, args.alg, BURST if args.burst else WIDTH if args.concurrent else 1)]
    args.rounds = args.rounds or (5 if args.quick else 15 if args.all else 25)
    args.warmup = 0.15 if args.quick else 0.4
    # Quiets the mirror's and the store's warnings; a store failure still fails the run
    # (the guard then answers 503, and every batch checks for 200).
    logging.getLogger("signout").setLevel(logging.ERROR)
    print(versions())
    print(pin_to_one_core(args.spread))
    started = time.perf_counter()
    steal = StealMeter()
    with redis_server(required=False) as port:
        try:
            results = asyncio.run(bench(configs, args, port))
        finally:
            stop_mirror_threads()
    if args.all:
        summary(results)
    print(f"\n({time.perf_counter() - started:.0f} s in all; {steal.report()})")


if __name__ == "__main__":
    main()
