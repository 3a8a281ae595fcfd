"""Per-request overhead of the signout guard over a bare ASGI app, measured in process.

No HTTP server: every variant is an ASGI callable awaited directly on one
asyncio loop with a prebuilt ``GET /me`` scope carrying ``Authorization: Bearer
<HS256 token>`` (claims sub, sid, jti, iat, exp). Variants, all over one bare app
that answers 200 "ok":

* ``bare``            the app alone: the baseline.
* ``signout-memory``  ``SignOutMiddleware(app, key=SECRET, store=MemoryStore())``.
* ``signout-redis``   ``SignOutMiddleware(app, key=SECRET, redis_url=...)`` on a private redis-server.
* ``hand-written``    the pure-ASGI guard people paste: ``jwt.decode`` + ``EXISTS denylist:<jti>``.
* ``tutorial``        the same logic as a Starlette ``BaseHTTPMiddleware`` over a one-route Starlette
                      app; its overhead is taken against ``bare-starlette`` (that app alone).

Rounds are interleaved (every variant in turn, starting one later each round)
so drift hits all alike. us/request is the median over rounds of each batch's
mean; overhead is that minus the baseline's. A ratio below 1.00x means signout
adds less than the guard it is compared with. Redis rows include a loopback
round trip to a redis-server on this machine; min..max shows the noise.

    python benchmarks/bench_guard.py [--seconds N] [--rounds R] [--quick] [--fresh]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import shutil
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
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
Variants = dict[str, tuple[ASGIApp, str | None]]  # name -> (app, name of its baseline or None)

SECRET = "bench-secret-0123456789-abcdefghijklmnopqrstuvwxyz"
SCOPE: dict[str, Any] = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1"}
SCOPE |= {"method": "GET", "scheme": "http", "path": "/me", "raw_path": b"/me", "root_path": "", "query_string": b""}
SCOPE |= {"server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 50000)}
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
    """The ``send`` of the requests: keeps the last request's messages, counts non-200 answers."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.not_ok = 0

    async def send(self, message: Message) -> None:
        self.messages.append(message)
        if message["type"] == "http.response.start" and message["status"] != 200:
            self.not_ok += 1


def make_scope() -> Scope:
    """``GET /me`` with a fresh bearer token, valid for 10 minutes."""
    now = int(time.time())
    claims = {"sub": "user-42", "sid": "session-7", "jti": uuid.uuid4().hex, "iat": now, "exp": now + 600}
    token = jwt.encode(claims, SECRET, algorithm="HS256")
    return {**SCOPE, "headers": [(b"authorization", b"Bearer " + token.encode())]}


async def run_batch(app: ASGIApp, scopes: list[Scope]) -> float:
    """Mean microseconds per request over ``scopes`` (each copied, as a server makes a new one)."""
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


@contextlib.contextmanager
def redis_server() -> Iterator[int | None]:
    """A private redis-server on a free loopback port, stopped on exit; ``None`` if not installed."""
    binary = shutil.which("redis-server")
    if binary is None:
        print("note: redis-server not found; skipping the signout-redis, hand-written and tutorial rows")
        yield None
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with redis.Redis(port=port, socket_connect_timeout=0.2) as client:
            deadline = time.monotonic() + 10
            while True:
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise RuntimeError("redis-server did not answer PING") from None
                    time.sleep(0.02)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def measure(args: argparse.Namespace, variants: Variants) -> tuple[dict[str, list[float]], dict[str, int]]:
    """Sanity check, warm-up (which sizes the batches), then interleaved timed rounds."""
    one = make_scope()
    for name, (app, _) in variants.items():
        sink = Sink()
        await app(dict(one), receive, sink.send)
        status = sink.messages[0].get("status") if sink.messages else None
        body = b"".join(m.get("body", b"") for m in sink.messages[1:])
        if status != 200 or body != b"ok":
            raise RuntimeError(f"{name}: expected 200 'ok', got {status} {body!r}")
    sizes: dict[str, int] = {}
    batch_seconds = args.seconds / (args.rounds * len(variants))
    for name, (app, _) in variants.items():
        per_request, deadline = 0.0, time.perf_counter() + args.warmup
        while time.perf_counter() < deadline:
            per_request = await run_batch(app, [one] * 200)
        sizes[name] = max(50, int(batch_seconds * 1e6 / per_request))
    if args.fresh:  # a distinct token per request (cycled for the bare apps), made before timing
        pool = [make_scope() for _ in range(max(sizes[n] for n, (_, base) in variants.items() if base))]
        batches = {n: [pool[i % len(pool)] for i in range(k)] for n, k in sizes.items()}
    else:
        batches = {n: [one] * k for n, k in sizes.items()}
    names = list(variants)
    samples: dict[str, list[float]] = {n: [] for n in names}
    for r in range(args.rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            samples[name].append(await run_batch(variants[name][0], batches[name]))
    return samples, sizes


async def bench(args: argparse.Namespace, port: int | None) -> None:
    starlette_app = Starlette(routes=[Route("/me", me)])
    memory = signout.SignOutMiddleware(bare_app, key=SECRET, store=signout.MemoryStore())
    variants: Variants = {"bare": (bare_app, None), "signout-memory": (memory, "bare")}
    async with contextlib.AsyncExitStack() as stack:
        if port is not None:
            url = f"redis://127.0.0.1:{port}/0"
            client = aredis.Redis.from_url(url)
            stack.push_async_callback(client.aclose)
            guarded = signout.SignOutMiddleware(bare_app, key=SECRET, redis_url=url)
            if isinstance(guarded.store, RedisStore):
                stack.push_async_callback(guarded.store.aclose)
            variants["signout-redis"] = (guarded, "bare")
            variants["hand-written"] = (HandWrittenGuard(bare_app, client), "bare")
            variants["bare-starlette"] = (starlette_app, None)
            variants["tutorial"] = (TutorialGuard(starlette_app, client), "bare-starlette")
        samples, sizes = await measure(args, variants)
    report(args, variants, samples, sizes)


def report(
    args: argparse.Namespace, variants: Variants, samples: dict[str, list[float]], sizes: dict[str, int]
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
    parser.add_argument("--seconds", type=float, help="total timed seconds (default 40; 6 with --quick)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 7; 5 with --quick)")
    parser.add_argument("--quick", action="store_true", help="about 10 s in all: 6 timed seconds, 5 rounds")
    parser.add_argument("--fresh", action="store_true", help="a distinct token per request, made before timing")
    args = parser.parse_args()
    args.seconds = args.seconds or (6.0 if args.quick else 40.0)
    args.rounds = args.rounds or (5 if args.quick else 7)
    args.warmup = 0.15 if args.quick else 0.5
    # Quiets the one-time MemoryStore warning; a store failure still fails the run
    # (the guard then answers 503, and every batch checks for 200).
    logging.getLogger("signout").setLevel(logging.ERROR)
    with redis_server() as port:
        asyncio.run(bench(args, port))


if __name__ == "__main__":
    main()
