"""Shared by the benchmark scripts: redis-server, tokens, the guards signout is compared with, the ASGI driver.

Nothing here is timed by itself. The scripts import it as ``_common`` (they
run as ``python benchmarks/<script>.py``, which puts this folder on the path).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import os
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

import jwt
import redis
import redis.asyncio as aredis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

import signout

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SECRET = "bench-secret-0123456789-abcdefghijklmnopqrstuvwxyz"
ISSUER = "https://id.example"
#: signout's default ``verified_cache_size``: a "fresh" token pool must be larger than this.
VERIFIED_CACHE_SIZE = 4096
#: Distinct tokens a fresh-token run cycles through: each is seen again only after more than
#: ``VERIFIED_CACHE_SIZE`` others, so signout's LRU has always forgotten it (every check verifies).
FRESH_POOL = VERIFIED_CACHE_SIZE + 1024
WIDTH = 32  # requests in flight in the concurrent modes

BASE_SCOPE: dict[str, Any] = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1"}
BASE_SCOPE |= {"scheme": "http", "root_path": "", "query_string": b""}
BASE_SCOPE |= {"server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 50000)}
REQUEST: Message = {"type": "http.request", "body": b"", "more_body": False}


# ---- versions, statistics, verdicts ---------------------------------------------------------


def versions() -> str:
    import starlette

    return (
        f"Python {sys.version.split()[0]}, PyJWT {jwt.__version__}, redis-py {redis.__version__}, "
        f"Starlette {starlette.__version__}, signout {signout.__version__}, {_redis_version()}"
    )


def _redis_version() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        return "no redis-server"
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False).stdout
    for part in out.split():
        if part.startswith("v="):
            return f"redis-server {part[2:]}"
    return "redis-server ?"


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (``p`` in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def verdict(measured: float | None, target: float, *, at_most: bool) -> str:
    if measured is None:
        return "n/a"
    ok = measured <= target if at_most else measured >= target
    return "PASS" if ok else "MISS"


def rotations(names: Sequence[str], rounds: int) -> Iterator[str]:
    """Every name once per round, each round starting one later, so drift hits all alike."""
    for r in range(rounds):
        k = r % len(names)
        yield from [*names[k:], *names[:k]]


def _cpu_times() -> list[int] | None:
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    return [int(x) for x in fields[1:]] if fields and fields[0] == "cpu" else None


class StealMeter:
    """The share of CPU time the hypervisor took away (``steal`` in /proc/stat) while it ran: noise."""

    def __init__(self) -> None:
        self.start = _cpu_times()

    def report(self) -> str:
        end = _cpu_times()
        if self.start is None or end is None or len(end) < 8:
            return "cpu steal: unknown"
        delta = [b - a for a, b in zip(self.start, end, strict=False)]
        total = sum(delta[:8]) or 1
        busy = total - delta[3] - delta[4]  # minus idle and iowait
        return (
            f"cpu busy {busy / total:.0%}, stolen by the hypervisor {delta[7] / total:.1%} (above ~2%: noisy numbers)"
        )


def pin_to_one_core(spread: bool) -> str:
    """Run this process, and the redis-server it starts next, on one core (Linux), unless ``spread``.

    A sequential request waits for Redis, and on a small VM a reply that has to wake
    the other (halted) vCPU costs ~80 us more than one on the same core: signout's
    guard measured 121 us a request with the two processes where the scheduler put
    them, 39 us on one core (hand-written: 221 and 164 us). On one core the round trip
    is the loopback's alone, for every guard alike, and the ratios stop being bimodal.
    """
    if spread or not hasattr(os, "sched_setaffinity"):
        return "cores: as the scheduler places them"
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return "cores: one available"
    os.sched_setaffinity(0, {cores[-1]})
    return f"cores: this process and its redis-server on core {cores[-1]} (--spread: as the scheduler places them)"


# ---- redis-server ---------------------------------------------------------------------------


def stop_mirror_threads() -> None:
    """Local mirrors' threads notice ``close()`` within half a second; let them finish before Redis goes."""
    for thread in threading.enumerate():
        if thread.name == "signout-mirror":
            thread.join(2)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def redis_server(*extra: str, required: bool = True) -> Iterator[int | None]:
    """A private redis-server on a free loopback port, no persistence, always stopped on exit.

    Yields its port; ``None`` when redis-server is not installed and not ``required``.
    """
    binary = shutil.which("redis-server")
    if binary is None:
        if required:
            raise SystemExit("redis-server not found: apt-get install redis-server")
        print("note: redis-server not found; skipping the rows that need it")
        yield None
        return
    port = free_port()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", *extra]
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
        stop(proc)


def stop(proc: subprocess.Popen[Any], seconds: float = 5) -> None:
    """SIGTERM, then SIGKILL if it has not ended within ``seconds``."""
    proc.terminate()
    try:
        proc.wait(seconds)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def redis_url(port: int, db: int = 0) -> str:
    return f"redis://127.0.0.1:{port}/{db}"


# ---- keys and tokens ------------------------------------------------------------------------


@dataclass(frozen=True)
class Keys:
    """What signs the benchmark's tokens and what every guard verifies them with (the same for all)."""

    alg: str
    signing: Any  # the HMAC secret, or an RSA private key
    verifying: str  # the HMAC secret, or the PEM public key


@functools.cache
def keys_for(alg: str) -> Keys:
    if alg == "HS256":
        return Keys(alg, SECRET, SECRET)
    if alg == "RS256":
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return Keys(alg, private, pem.decode("ascii"))
    raise ValueError(f"unsupported algorithm {alg!r}")


def make_claims(*, sub: str | None = None, lifetime: int = 600) -> dict[str, Any]:
    """An access token's claims: a UUID ``jti`` and ``sid`` (as Keycloak and flask-jwt-extended make them)."""
    now = int(time.time())
    return {
        "iss": ISSUER,
        "sub": sub or f"user-{uuid.uuid4().hex[:12]}",
        "sid": str(uuid.uuid4()),
        "jti": str(uuid.uuid4()),
        "iat": now,
        "exp": now + lifetime,
    }


def make_token(keys: Keys, claims: dict[str, Any] | None = None) -> str:
    return jwt.encode(claims or make_claims(), keys.signing, algorithm=keys.alg)


def http_scope(token: str | None, *, method: str = "GET", path: str = "/me") -> Scope:
    headers = [(b"host", b"127.0.0.1:8000")]
    if token is not None:
        headers.append((b"authorization", b"Bearer " + token.encode("ascii")))
    return {**BASE_SCOPE, "method": method, "path": path, "raw_path": path.encode(), "headers": headers}


# ---- the apps and the guards signout is compared with ----------------------------------------


async def bare_app(scope: Scope, receive: Receive, send: Send) -> None:
    """The protected app: answers 200 "ok" and nothing else."""
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})


async def _me(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


def starlette_app() -> Starlette:
    """The same app as a one-route Starlette app (the tutorial guard's base)."""
    return Starlette(routes=[Route("/me", _me)])


async def _deny(send: Send) -> None:
    await send({"type": "http.response.start", "status": 401, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b'{"detail":"Unauthorized"}'})


class HandWrittenGuard:
    """The pure-ASGI guard people paste: ``jwt.decode`` + ``EXISTS denylist:<jti>`` (jti only)."""

    def __init__(self, app: ASGIApp, client: aredis.Redis, keys: Keys) -> None:
        self.app = app
        self.redis = client
        self.key = keys.verifying
        self.algorithms = [keys.alg]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            auth = dict(scope["headers"]).get(b"authorization", b"")
            if not auth.startswith(b"Bearer "):
                return await _deny(send)
            try:
                claims = jwt.decode(auth[7:].decode(), self.key, algorithms=self.algorithms)
            except jwt.InvalidTokenError:
                return await _deny(send)
            if await self.redis.exists(f"denylist:{claims['jti']}"):
                return await _deny(send)
            scope["claims"] = claims
        await self.app(scope, receive, send)


class TutorialGuard(BaseHTTPMiddleware):
    """The same logic the way most tutorials write it: a Starlette ``BaseHTTPMiddleware``."""

    def __init__(self, app: ASGIApp, client: aredis.Redis, keys: Keys) -> None:
        super().__init__(app)
        self.redis = client
        self.key = keys.verifying
        self.algorithms = [keys.alg]

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer "):
            return JSONResponse({"detail": "Not authenticated"}, status_code=401)
        try:
            claims = jwt.decode(auth[7:], self.key, algorithms=self.algorithms)
        except jwt.InvalidTokenError:
            return JSONResponse({"detail": "Invalid token"}, status_code=401)
        if await self.redis.exists(f"denylist:{claims['jti']}"):
            return JSONResponse({"detail": "Token revoked"}, status_code=401)
        request.state.claims = claims
        return await call_next(request)


def signout_kwargs(keys: Keys) -> dict[str, Any]:
    return {"key": keys.verifying, "algorithms": [keys.alg]}


# ---- the in-process ASGI driver -------------------------------------------------------------


async def receive() -> Message:
    return REQUEST


class Sink:
    """The ``send`` of the requests: counts answers that were not the expected status."""

    def __init__(self, expect: int = 200) -> None:
        self.expect = expect
        self.wrong = 0

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start" and message["status"] != self.expect:
            self.wrong += 1


async def call(app: ASGIApp, scope: Scope) -> tuple[int | None, bytes]:
    """One request: its status and body."""
    messages: list[Message] = []

    async def send(message: Message) -> None:
        messages.append(message)

    await app(dict(scope), receive, send)
    status = next((m["status"] for m in messages if m["type"] == "http.response.start"), None)
    return status, b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")


def _checked(sink: Sink, n: int) -> None:
    if sink.wrong:
        raise RuntimeError(f"{sink.wrong} of {n} requests were not answered {sink.expect}")


async def run_sequential(app: ASGIApp, scopes: Sequence[Scope], expect: int = 200) -> float:
    """Mean microseconds per request, one after the other (each scope copied, as a server makes a new one)."""
    sink = Sink(expect)
    send = sink.send
    gc.collect()
    start = time.perf_counter_ns()
    for scope in scopes:
        await app(dict(scope), receive, send)
    elapsed = time.perf_counter_ns() - start
    _checked(sink, len(scopes))
    return elapsed / len(scopes) / 1000


async def run_concurrent(app: ASGIApp, scopes: Sequence[Scope], width: int = WIDTH, expect: int = 200) -> float:
    """Wall microseconds per request, ``width`` at a time (``asyncio.gather`` of each slice)."""
    sink = Sink(expect)
    send = sink.send
    gc.collect()
    start = time.perf_counter_ns()
    for i in range(0, len(scopes), width):
        await asyncio.gather(*[app(dict(s), receive, send) for s in scopes[i : i + width]])
    elapsed = time.perf_counter_ns() - start
    _checked(sink, len(scopes))
    return elapsed / len(scopes) / 1000


class Cycle:
    """Hands out consecutive slices of a token pool, wrapping around; one cursor per variant."""

    def __init__(self, pool: Sequence[Scope]) -> None:
        self.pool = pool
        self.cursor = 0

    def take(self, n: int) -> list[Scope]:
        pool, start = self.pool, self.cursor
        self.cursor = (start + n) % len(pool)
        return [pool[(start + i) % len(pool)] for i in range(n)]
