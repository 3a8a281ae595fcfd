"""The WSGI twin against flask-jwt-extended with its documented Redis blocklist, in process.

No HTTP server and no test client: each request is a PEP 3333 environ dict
built here (what a WSGI server hands over for ``GET /me`` with ``Authorization:
Bearer <token>``), copied per request and passed to the app's WSGI callable;
the body iterable is drained and closed. Werkzeug's test client was not used:
it builds a request object and an environ per call, and costs more than the
apps being compared. Variants, all one-route Flask apps answering 200 "ok":

* ``bare-flask``          the app alone: the baseline.
* ``signout-memory``      ``app.wsgi_app = SignOutWSGIMiddleware(app.wsgi_app, key=..., store=MemoryStore())``.
* ``signout-redis``       ``app.wsgi_app = SignOutWSGIMiddleware(app.wsgi_app, key=..., redis_url=...)``.
* ``flask-jwt-extended``  ``@jwt_required()`` on the route, and the blocklist callback from its docs:
                          ``@jwt.token_in_blocklist_loader`` doing ``redis.get(jti)`` (redis-py, sync).

Same modes as bench_guard.py: one token reused, or ``--fresh`` (a pool larger
than signout's verified-claims cache, walked in order); ``--alg RS256``;
``--all`` runs {reused, fresh} x {HS256, RS256}. Interleaved rounds, medians;
overhead is a variant's us/request minus bare-flask's; a ratio is the median over
rounds of that round's ratio of overheads.

    python benchmarks/bench_wsgi.py [--quick] [--fresh] [--alg RS256] [--all]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import Any

import redis
from _common import (
    FRESH_POOL,
    Keys,
    StealMeter,
    keys_for,
    make_claims,
    make_token,
    median,
    pin_to_one_core,
    redis_server,
    redis_url,
    rotations,
    versions,
)
from _common import verdict as judge
from flask import Flask
from flask_jwt_extended import JWTManager, jwt_required

import signout

Environ = dict[str, Any]
WSGIApp = Callable[[Environ, Callable[..., Any]], Iterable[bytes]]
VARIANTS = ("bare-flask", "signout-memory", "signout-redis", "flask-jwt-extended")
TARGET = 0.5  # signout-redis overhead / flask-jwt-extended overhead, at most

BASE_ENVIRON: Environ = {
    "REQUEST_METHOD": "GET",
    "SCRIPT_NAME": "",
    "PATH_INFO": "/me",
    "QUERY_STRING": "",
    "SERVER_NAME": "127.0.0.1",
    "SERVER_PORT": "8000",
    "SERVER_PROTOCOL": "HTTP/1.1",
    "REMOTE_ADDR": "127.0.0.1",
    "REMOTE_PORT": "50000",
    "HTTP_HOST": "127.0.0.1:8000",
    "wsgi.version": (1, 0),
    "wsgi.url_scheme": "http",
    "wsgi.input": io.BytesIO(b""),
    "wsgi.errors": sys.stderr,
    "wsgi.multithread": False,
    "wsgi.multiprocess": False,
    "wsgi.run_once": False,
}


def environ(token: str) -> Environ:
    return {**BASE_ENVIRON, "HTTP_AUTHORIZATION": f"Bearer {token}"}


def flask_app() -> Flask:
    app = Flask("bench")

    @app.get("/me")
    def me() -> str:
        return "ok"

    return app


def jwt_extended_app(keys: Keys, port: int) -> Flask:
    """The flask-jwt-extended Redis blocklist example, with this run's key and redis-server."""
    app = Flask("bench-jwt-extended")
    app.config["JWT_ALGORITHM"] = keys.alg
    if keys.alg == "HS256":
        app.config["JWT_SECRET_KEY"] = keys.verifying
    else:
        app.config["JWT_PUBLIC_KEY"] = keys.verifying
    manager = JWTManager(app)
    blocklist = redis.StrictRedis(host="127.0.0.1", port=port, db=0, decode_responses=True)

    @manager.token_in_blocklist_loader
    def check_if_token_is_revoked(jwt_header: dict[str, Any], jwt_payload: dict[str, Any]) -> bool:
        jti = jwt_payload["jti"]
        token_in_redis = blocklist.get(jti)
        return token_in_redis is not None

    @app.get("/me")
    @jwt_required()  # type: ignore[untyped-decorator]
    def me() -> str:
        return "ok"

    return app


def guarded(keys: Keys, **store: Any) -> tuple[Flask, signout.SignOutWSGIMiddleware]:
    app = flask_app()
    middleware = signout.SignOutWSGIMiddleware(app.wsgi_app, key=keys.verifying, algorithms=[keys.alg], **store)
    app.wsgi_app = middleware  # type: ignore[method-assign]
    return app, middleware


# ---- driving --------------------------------------------------------------------------------


def request(app: WSGIApp, env: Environ) -> tuple[str, bytes]:
    """One request: its status line and body."""
    seen: list[str] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        seen.append(status)

    body = app(dict(env), start_response)
    try:
        data = b"".join(body)
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()
    return seen[0], data


def run(app: WSGIApp, environs: Sequence[Environ]) -> float:
    """Mean microseconds per request; each environ copied, as a server makes a new one."""
    wrong = 0

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        nonlocal wrong
        if not status.startswith("200"):
            wrong += 1

    gc.collect()
    start = time.perf_counter_ns()
    for env in environs:
        body = app(dict(env), start_response)
        for _ in body:
            pass
        close = getattr(body, "close", None)
        if close is not None:
            close()
    elapsed = time.perf_counter_ns() - start
    if wrong:
        raise RuntimeError(f"{wrong} of {len(environs)} requests were not answered 200")
    return elapsed / len(environs) / 1000


@contextlib.contextmanager
def variants(keys: Keys, port: int) -> Iterator[dict[str, WSGIApp]]:
    memory, _ = guarded(keys, store=signout.MemoryStore(warn=False))
    on_redis, middleware = guarded(keys, redis_url=redis_url(port))
    apps: dict[str, WSGIApp] = {
        "bare-flask": flask_app(),
        "signout-memory": memory,
        "signout-redis": on_redis,
        "flask-jwt-extended": jwt_extended_app(keys, port),
    }
    check_revocation(apps, keys, port)
    try:
        yield apps
    finally:
        if hasattr(middleware.store, "sync_client"):
            middleware.store.sync_client().close()


def check_revocation(apps: dict[str, WSGIApp], keys: Keys, port: int) -> None:
    """Every guard must refuse a revoked token, or the comparison means nothing."""
    claims = make_claims()
    env = environ(make_token(keys, claims))
    for name, app in apps.items():
        status, body = request(app, env)
        if not status.startswith("200") or body != b"ok":
            raise RuntimeError(f"{name}: a valid token got {status} {body!r}")
    for name in ("signout-memory", "signout-redis"):
        middleware = apps[name].wsgi_app  # type: ignore[attr-defined]
        assert isinstance(middleware, signout.SignOutWSGIMiddleware)
        middleware.revoker.revoke_sync(claims)
    with redis.Redis(port=port) as client:
        client.set(claims["jti"], "", ex=600)  # what the docs' logout route does
    for name, app in apps.items():
        if name != "bare-flask" and request(app, env)[0][:3] != "401":
            raise RuntimeError(f"{name}: a revoked token was not refused with 401")


@dataclass
class Result:
    alg: str
    fresh: bool
    samples: dict[str, list[float]] = field(default_factory=dict)

    def us(self, name: str) -> float:
        return median(self.samples[name])

    def overhead(self, name: str) -> float:
        return self.us(name) - self.us("bare-flask")

    def ratio(self, a: str, b: str) -> float | None:
        """Median over rounds of a's overhead / b's in that round (measured within a second of each other)."""
        bare = self.samples["bare-flask"]
        pairs = zip(self.samples[a], self.samples[b], bare, strict=True)
        ratios = [(x - base) / (y - base) for x, y, base in pairs if y > base]
        return median(ratios) if ratios else None


def measure(keys: Keys, fresh: bool, port: int, args: argparse.Namespace) -> Result:
    one = environ(make_token(keys))
    pool = [environ(make_token(keys)) for _ in range(FRESH_POOL)] if fresh else [one]
    cursor = dict.fromkeys(VARIANTS, 0)

    def batch(name: str, n: int) -> list[Environ]:
        start = cursor[name]
        cursor[name] = (start + n) % len(pool)
        return [pool[(start + i) % len(pool)] for i in range(n)]

    result = Result(keys.alg, fresh, {name: [] for name in VARIANTS})
    with variants(keys, port) as apps:
        sizes = {}
        per_batch = args.seconds / (args.rounds * len(apps))
        for name, app in apps.items():
            per_request, deadline = 0.0, time.perf_counter() + args.warmup
            while time.perf_counter() < deadline:
                per_request = run(app, batch(name, 100))
            sizes[name] = min(max(100, int(per_batch * 1e6 / per_request)), 500_000)
        for name in rotations(list(apps), args.rounds):
            result.samples[name].append(run(apps[name], batch(name, sizes[name])))
    return result


def target_row(r: Result) -> str:
    ratio = r.ratio("signout-redis", "flask-jwt-extended")
    shown = "n/a" if ratio is None else f"{ratio:.2f}x"
    label = f"{r.alg} {'fresh' if r.fresh else 'reused'}"
    absolute = f"{r.overhead('signout-redis'):.1f} vs {r.overhead('flask-jwt-extended'):.1f} us/request"
    result = judge(ratio, TARGET, at_most=True)
    what = "signout-redis / flask-jwt-extended overhead"
    return f"  {what:<44} {label:<13} {shown:>8}  <= {TARGET:.2f}x  {result:<4}  {absolute}"


def report(r: Result, rounds: int) -> None:
    mode = "a fresh token per request (cache never hits)" if r.fresh else "one token reused"
    print(f"\n== WSGI, {r.alg}, {mode}; {rounds} interleaved rounds")
    print(f"  {'target':<44} {'configuration':<13} {'measured':>8}  {'target':>8}  {'':<4}  absolute")
    print(target_row(r))
    memory = r.ratio("signout-memory", "flask-jwt-extended")
    if memory is not None:
        print(f"  (info) signout-memory / flask-jwt-extended overhead = {memory:.2f}x")
    print(f"\n  {'variant':<20} {'us/request':>10} {'overhead us':>11} {'min..max us/req':>17}")
    for name, samples in r.samples.items():
        over = "-" if name == "bare-flask" else f"{r.overhead(name):.2f}"
        spread = f"{min(samples):.2f}..{max(samples):.2f}"
        print(f"  {name:<20} {r.us(name):10.2f} {over:>11} {spread:>17}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--all", action="store_true", help="{reused, fresh} x {HS256, RS256}, then the targets")
    parser.add_argument("--fresh", action="store_true", help="a distinct token per request, made before timing")
    parser.add_argument("--alg", choices=("HS256", "RS256"), default="HS256")
    parser.add_argument("--seconds", type=float, help="timed seconds per configuration (default 20; --quick 4)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 15; --quick 5)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--spread", action="store_true", help="no pinning: the scheduler places this process and its redis-server"
    )
    args = parser.parse_args()
    args.seconds = args.seconds or (4.0 if args.quick else 20.0)
    args.rounds = args.rounds or (5 if args.quick else 15)
    args.warmup = 0.15 if args.quick else 0.4
    configs = [(a, f) for a in ("HS256", "RS256") for f in (False, True)] if args.all else [(args.alg, args.fresh)]
    logging.getLogger("signout").setLevel(logging.ERROR)
    print(f"{versions()}, Flask {version('flask')}, flask-jwt-extended {version('flask-jwt-extended')}")
    print(pin_to_one_core(args.spread))
    started = time.perf_counter()
    steal = StealMeter()
    results = []
    with redis_server() as port:
        assert port is not None
        for alg, fresh in configs:
            result = measure(keys_for(alg), fresh, port, args)
            report(result, args.rounds)
            results.append(result)
    if len(results) > 1:
        print("\n== Target (ratios from this one run; absolute overheads beside them)")
        for r in results:
            print(target_row(r))
    print(f"\n({time.perf_counter() - started:.0f} s in all; {steal.report()})")


if __name__ == "__main__":
    main()
