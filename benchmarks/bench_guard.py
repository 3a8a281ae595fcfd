"""Per-request overhead of the signout guard over a bare ASGI app, measured in process.

No HTTP server and no sockets except Redis: every variant is an ASGI callable
awaited directly on one asyncio loop with a prebuilt ``GET /me`` scope that
carries ``Authorization: Bearer <HS256 token>`` (claims sub, sid, jti, iat, exp).

Variants (all wrap the same bare app, which answers 200 "ok"):

* ``bare``            the app alone: the baseline.
* ``signout-memory``  ``SignOutMiddleware(app, key=SECRET, store=MemoryStore())``.
* ``signout-redis``   ``SignOutMiddleware(app, key=SECRET, redis_url=...)`` on a private redis-server.
* ``hand-written``    the pure-ASGI guard people paste: ``jwt.decode`` + ``EXISTS denylist:<jti>``.
* ``tutorial``        the same logic as a Starlette ``BaseHTTPMiddleware``, over a one-route Starlette
                      app; its overhead is taken against ``bare-starlette`` (that Starlette app alone).

Rounds are interleaved (each round runs every variant in turn, starting one
later each round) so drift hits all variants alike; the figure per variant is
the median across rounds of its mean per-request time. "overhead" is that
median minus its baseline's. A ratio below 1.00x means signout adds less
per-request time than the guard it is compared with. The Redis rows include a
loopback round trip to a redis-server on this machine.

    python benchmarks/bench_guard.py [--seconds N] [--rounds R] [--quick] [--fresh]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import shutil
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import jwt
import redis
import redis.asyncio as aredis
import starlette
from starlette.applications import Starlette
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

import signout
from signout.stores.redis import RedisStore

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SECRET = "bench-secret-0123456789-abcdefghijklmnopqrstuvwxyz"
REQUEST: Message = {"type": "http.request", "body": b"", "more_body": False}


async def bare_app(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})


async def receive() -> Message:
    return REQUEST


async def deny(send: Send) -> None:
    await send({"type": "http.response.start", "status": 401, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b'{"detail":"Unauthorized"}'})


class HandWrittenGuard:
    """A typical pasted pure-ASGI guard: decode the bearer token, check a Redis denylist."""

    def __init__(self, app: ASGIApp, client: aredis.Redis) -> None:
        self.app = app
        self.redis = client

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            auth = dict(scope["headers"]).get(b"authorization", b"")
            if not auth.startswith(b"Bearer "):
                return await deny(send)
            try:
                claims = jwt.decode(auth[7:].decode(), SECRET, algorithms=["HS256"])
            except jwt.InvalidTokenError:
                return await deny(send)
            if await self.redis.exists(f"denylist:{claims['jti']}"):
                return await deny(send)
            scope["claims"] = claims
        await self.app(scope, receive, send)


class TutorialGuard(BaseHTTPMiddleware):
    """The same logic the way most tutorials write it."""

    def __init__(self, app: ASGIApp, client: aredis.Redis) -> None:
        super().__init__(app)
        self.redis = client

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer "):
            return JSONResponse({"detail": "Not authenticated"}, status_code=401)
        try:
            claims = jwt.decode(auth[7:], SECRET, algorithms=["HS256"])
        except jwt.InvalidTokenError:
            return JSONResponse({"detail": "Invalid token"}, status_code=401)
        if await self.redis.exists(f"denylist:{claims['jti']}"):
            return JSONResponse({"detail": "Token revoked"}, status_code=401)
        request.state.claims = claims
        return await call_next(request)


async def me(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


class Sink:
    """The ``send`` of one request: keeps its messages, counts non-200 answers."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.not_ok = 0

    async def send(self, message: Message) -> None:
        self.messages.append(message)
        if message["type"] == "http.response.start" and message["status"] != 200:
            self.not_ok += 1


def make_scope(jti: str) -> Scope:
    now = int(time.time())
    claims = {"sub": "user-42", "sid": "session-7", "jti": jti, "iat": now, "exp": now + 600}
    token = jwt.encode(claims, SECRET, algorithm="HS256")
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/me",
        "raw_path": b"/me",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"authorization", b"Bearer " + token.encode())],
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
    }


async def run_batch(app: ASGIApp, scopes: list[Scope]) -> float:
    """Mean microseconds per request over ``scopes``; every answer must be 200."""
    sink = Sink()
    send = sink.send
    gc.collect()
    start = time.perf_counter_ns()
    for scope in scopes:
        sink.messages.clear()
        await app(dict(scope), receive, send)
    elapsed = time.perf_counter_ns() - start
    if sink.not_ok:
        raise RuntimeError(f"{sink.not_ok} of {len(scopes)} requests were not answered 200")
    return elapsed / len(scopes) / 1000


def start_redis() -> tuple[subprocess.Popen[bytes], int] | None:
    binary = shutil.which("redis-server")
    if binary is None:
        return None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port, socket_connect_timeout=0.2)
    deadline = time.monotonic() + 10
    try:
        while True:
            try:
                client.ping()
                return proc, port
            except redis.ConnectionError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("redis-server did not answer PING") from None
                time.sleep(0.02)
    except BaseException:
        stop_redis(proc)
        raise
    finally:
        client.close()


def stop_redis(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def bench(args: argparse.Namespace, port: int | None) -> None:
    starlette_app = Starlette(routes=[Route("/me", me)])
    memory = signout.SignOutMiddleware(bare_app, key=SECRET, store=signout.MemoryStore())
    # name -> (app, baseline name or None)
    variants: dict[str, tuple[ASGIApp, str | None]] = {
        "bare": (bare_app, None),
        "signout-memory": (memory, "bare"),
    }
    clients: list[aredis.Redis] = []
    stores: list[RedisStore] = []
    if port is not None:
        url = f"redis://127.0.0.1:{port}/0"
        client = aredis.Redis.from_url(url)
        clients.append(client)
        guarded = signout.SignOutMiddleware(bare_app, key=SECRET, redis_url=url)
        if isinstance(guarded.store, RedisStore):
            stores.append(guarded.store)
        variants["signout-redis"] = (guarded, "bare")
        variants["hand-written"] = (HandWrittenGuard(bare_app, client), "bare")
        variants["bare-starlette"] = (starlette_app, None)
        variants["tutorial"] = (TutorialGuard(starlette_app, client), "bare-starlette")
    try:
        one = make_scope(uuid.uuid4().hex)
        for name, (app, _) in variants.items():  # sanity check: the guard really passes
            sink = Sink()
            await app(dict(one), receive, sink.send)
            status = sink.messages[0].get("status") if sink.messages else None
            body = b"".join(m.get("body", b"") for m in sink.messages[1:])
            if status != 200 or body != b"ok":
                raise RuntimeError(f"{name}: expected 200 'ok', got {status} {body!r}")
        # Warm-up, which also sizes each batch to about the same wall time.
        sizes: dict[str, int] = {}
        batch_s = args.seconds / (args.rounds * len(variants))
        for name, (app, _) in variants.items():
            per_request, deadline = 0.0, time.perf_counter() + args.warmup
            while time.perf_counter() < deadline:
                per_request = await run_batch(app, [one] * 200)
            sizes[name] = max(50, int(batch_s * 1e6 / per_request))
        if args.fresh:  # a distinct token per request (cycled for the bare apps), made before timing
            guards = [sizes[n] for n, (_, base) in variants.items() if base is not None]
            pool = [make_scope(uuid.uuid4().hex) for _ in range(max(guards))]
            batches = {n: [pool[i % len(pool)] for i in range(k)] for n, k in sizes.items()}
        else:
            batches = {n: [one] * k for n, k in sizes.items()}
        names = list(variants)
        samples: dict[str, list[float]] = {n: [] for n in names}
        for r in range(args.rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                samples[name].append(await run_batch(variants[name][0], batches[name]))
    finally:
        for store in stores:
            await store.aclose()
        for client in clients:
            await client.aclose()
    report(args, variants, samples, sizes)


def report(
    args: argparse.Namespace,
    variants: dict[str, tuple[ASGIApp, str | None]],
    samples: dict[str, list[float]],
    sizes: dict[str, int],
) -> None:
    median = {n: statistics.median(s) for n, s in samples.items()}
    overhead = {n: median[n] - median[base] for n, (_, base) in variants.items() if base is not None}

    def ratio(a: str, b: str) -> str:
        if a not in overhead or b not in overhead:
            return "n/a (needs redis-server)"
        return f"{overhead[a] / overhead[b]:.2f}x" if overhead[b] > 0 else "n/a (baseline overhead <= 0)"

    mode = "a fresh token per request" if args.fresh else "one token reused"
    print(f"\nPython {sys.version.split()[0]}, PyJWT {jwt.__version__}, redis-py {redis.__version__}, ", end="")
    print(f"Starlette {starlette.__version__}, signout {signout.__version__}; {args.rounds} rounds, {mode}")
    print("\nSummary (overhead = median us/request minus its bare app's; < 1.00x: signout adds less)")
    for a, b in (("signout-redis", "hand-written"), ("signout-redis", "tutorial"), ("signout-memory", "hand-written")):
        print(f"  {a + ' overhead':<24} / {b + ' overhead':<22} = {ratio(a, b)}")
    head = ("variant", "baseline", "us/request", "overhead us", "min..max us/req", "n/batch")
    print("\n{:<16} {:<16} {:>10} {:>12} {:>17} {:>8}".format(*head))
    for name, (_, base) in variants.items():
        extra = f"{overhead[name]:12.2f}" if name in overhead else f"{'-':>12}"
        spread = f"{min(samples[name]):.2f}..{max(samples[name]):.2f}"
        print(f"{name:<16} {base or '-':<16} {median[name]:10.2f} {extra} {spread:>17} {sizes[name]:>8}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=40.0, help="total timed seconds (default 40)")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (default 7)")
    parser.add_argument("--quick", action="store_true", help="about 10 s in all: 6 timed seconds, 5 rounds")
    parser.add_argument("--fresh", action="store_true", help="a distinct token per request, made before timing")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.rounds = 6.0, 5
    args.warmup = 0.15 if args.quick else 0.5
    server = start_redis()
    if server is None:
        print("note: redis-server not found; skipping the signout-redis, hand-written and tutorial rows")
    try:
        asyncio.run(bench(args, None if server is None else server[1]))
    finally:
        if server is not None:
            stop_redis(server[0])


if __name__ == "__main__":
    main()
