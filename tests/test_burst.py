"""A burst is a normal day: thousands of concurrent requests in one event loop, over a real Redis.

The store keeps its deadline (``stores.base``): time spent waiting for Redis,
not time queued behind the app's own backlog; calls beyond the pool wait; the
logouts of one tick go as one pipeline. And a Redis that is slow or silent
still fails within ``store_timeout``, never hangs.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
import threading
import time
from collections.abc import Iterator, MutableMapping
from typing import Any

import jwt
import pytest
import redis.asyncio as aredis

from signout import Revoker, SignOutMiddleware, SignOutWSGIMiddleware, StoreError

from .apps import wsgi_app
from .conftest import ISS, SECRET
from .helpers import asgi_status

Message = MutableMapping[str, Any]


async def plain_app(scope: Message, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def middleware(url: str, client: str, **options: Any) -> SignOutMiddleware:
    if client == "lean":  # redis_url: the lean pipelined reader; writes through redis-py
        return SignOutMiddleware(plain_app, key=SECRET, redis_url=url, **options)
    return SignOutMiddleware(plain_app, key=SECRET, redis=lambda: aredis.Redis.from_url(url), **options)


def tokens(count: int, users: int = 50) -> list[str]:
    now = int(time.time()) - 1
    return [
        jwt.encode(
            {"iss": ISS, "sub": f"u{i % users}", "sid": f"s{i}", "jti": f"j{i}", "iat": now, "exp": now + 600}, SECRET
        )
        for i in range(count)
    ]


CLIENTS = ["lean", "redis-py"]


@pytest.mark.parametrize("client", CLIENTS)
def test_ten_thousand_concurrent_guarded_requests(redis_url: str, client: str) -> None:
    app = middleware(redis_url, client)
    every = tokens(10_000)

    async def main() -> collections.Counter[int]:
        try:
            return collections.Counter(await asyncio.gather(*(asgi_status(app, t) for t in every)))
        finally:
            await app.aclose()

    started = time.monotonic()
    assert asyncio.run(main()) == {200: 10_000}
    assert time.monotonic() - started < 60


@pytest.mark.parametrize("client", CLIENTS)
def test_a_thousand_concurrent_logouts_each_refused_right_after(redis_url: str, client: str) -> None:
    app = middleware(redis_url, client)
    every = tokens(1_000)

    async def log_out_then_use(token: str) -> tuple[int, int]:
        logout = await asgi_status(app, token, "/auth/logout", "POST")
        return logout, await asgi_status(app, token)

    async def main() -> collections.Counter[tuple[int, int]]:
        try:
            return collections.Counter(await asyncio.gather(*(log_out_then_use(t) for t in every)))
        finally:
            await app.aclose()

    assert asyncio.run(main()) == {(200, 401): 1_000}


def test_logouts_of_one_tick_go_as_one_pipeline(redis_url: str) -> None:
    """Counted from Redis's side: the connections the burst opened (the pool would give up past 100)."""
    import redis

    app = middleware(redis_url, "lean")
    every = tokens(1_000)
    watcher = redis.Redis.from_url(redis_url)
    before = int(watcher.info("stats")["total_connections_received"])

    async def main() -> list[int]:
        try:
            return await asyncio.gather(*(asgi_status(app, t, "/auth/logout", "POST") for t in every))
        finally:
            await app.aclose()

    assert set(asyncio.run(main())) == {200}
    opened = int(watcher.info("stats")["total_connections_received"]) - before
    watcher.close()
    assert opened <= 2  # one for the writes, at most one more for a retry


# ---- slow and silent servers: 503 within the deadline, never a hang --------------------------


@contextlib.contextmanager
def fake_redis(answer_after: float | None) -> Iterator[str]:
    """A server that accepts connections and answers every command with an empty array after
    ``answer_after`` seconds, or never (``None``)."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    stop = threading.Event()
    held: list[socket.socket] = []

    def serve(conn: socket.socket) -> None:
        conn.settimeout(0.05)
        while not stop.is_set():
            try:
                data = conn.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            if answer_after is not None:
                time.sleep(answer_after)
                with contextlib.suppress(OSError):
                    conn.sendall(b"*0\r\n" * data.count(b"*"))  # a reply per command sent

    def accept() -> None:
        while not stop.is_set():
            try:
                conn = listener.accept()[0]
            except TimeoutError:
                continue
            held.append(conn)
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"redis://127.0.0.1:{listener.getsockname()[1]}/0"
    finally:
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()
        listener.close()


@pytest.mark.parametrize("answer_after", [None, 2.0], ids=["silent", "slow"])
@pytest.mark.parametrize("client", CLIENTS)
def test_a_slow_or_silent_server_gets_503_within_the_deadline(client: str, answer_after: float | None) -> None:
    with fake_redis(answer_after) as url:
        app = middleware(url, client, store_timeout=0.25)
        token = tokens(1)[0]

        async def main() -> list[tuple[int, float]]:
            out = []
            try:
                for path, method in (("/me", "GET"), ("/auth/logout", "POST")):
                    started = time.monotonic()
                    out.append((await asgi_status(app, token, path, method), time.monotonic() - started))
            finally:
                await app.aclose()
            return out

        for code, took in asyncio.run(main()):
            assert code == 503
            assert took < 1.0, took


@pytest.mark.parametrize("answer_after", [None, 2.0], ids=["silent", "slow"])
def test_the_wsgi_guard_gets_503_within_the_deadline(answer_after: float | None) -> None:
    import httpx

    from .conftest import PEP3333Transport

    with fake_redis(answer_after) as url:
        app = SignOutWSGIMiddleware(wsgi_app(), key=SECRET, redis_url=url, store_timeout=0.25)
        client = httpx.Client(transport=PEP3333Transport(app), base_url="http://app.test")  # type: ignore[arg-type]
        for method, path in (("GET", "/me"), ("POST", "/auth/logout")):
            started = time.monotonic()
            answer = client.request(method, path, headers={"Authorization": f"Bearer {tokens(1)[0]}"})
            assert answer.status_code == 503
            assert time.monotonic() - started < 1.5  # connect, send and read: each bounded


@pytest.mark.parametrize("answer_after", [None, 2.0], ids=["silent", "slow"])
def test_the_revoker_fails_within_the_deadline(answer_after: float | None) -> None:
    with fake_redis(answer_after) as url:
        revoker = Revoker(redis_url=url, store_timeout=0.25)
        claims = {"iss": ISS, "sub": "frank", "jti": "j", "exp": time.time() + 60}
        calls: list[Any] = [
            lambda: asyncio.run(revoker.revoke_user(sub="frank", iss=ISS)),
            lambda: asyncio.run(revoker.revoke(claims)),
            lambda: asyncio.run(revoker.is_revoked(claims)),
            lambda: revoker.revoke_user_sync(sub="frank", iss=ISS),
            lambda: revoker.is_revoked_sync(claims),
        ]
        for call in calls:
            started = time.monotonic()
            with pytest.raises(StoreError):
                call()
            assert time.monotonic() - started < 1.0
