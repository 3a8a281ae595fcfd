"""The opt-in local mirror, against the real Redis: sync, lag, loss, fallback, resync.

Most cases run for both followers: ``thread`` (started by ``wait_in_sync`` from
sync code, as WSGI gets it; the ASGI requests then run each in a fresh loop)
and ``loop`` (a task on the loop that serves the requests: a ``TestClient``
used with ``with``, one loop for its life, lifespan included).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
import redis
from starlette.testclient import TestClient

from signout import ConfigError, RedisStore, SignOutMiddleware, SignOutWSGIMiddleware
from signout.stores.mirror import MirrorStore
from signout.stores.redis import changes_channel

from .apps import starlette_app, wsgi_app
from .conftest import SECRET, PEP3333Transport, RedisServer, TokenFactory

FOLLOWERS = ["thread", "loop"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


_OPEN: list[MirrorStore] = []


@pytest.fixture(autouse=True)
def _close_mirrors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    yield
    while _OPEN:
        _OPEN.pop().close()  # stop their threads: no reconnecting to servers that are gone
    gc.collect()  # a pending task dropped without being stopped would be reported now
    logged = [*caplog.get_records("call"), *caplog.records]
    destroyed = [r for r in logged if "Task was destroyed but it is pending" in r.getMessage()]
    assert not destroyed


def mirror_of(middleware: SignOutMiddleware | SignOutWSGIMiddleware) -> MirrorStore:
    store = middleware.raw_store
    assert isinstance(store, MirrorStore)
    _OPEN.append(store)
    return store


def guarded(redis_url: str, ping_every: float | None = None) -> SignOutMiddleware:
    if ping_every is None:
        return SignOutMiddleware(starlette_app(), key=SECRET, redis_url=redis_url, local_mirror=True)
    # The middleware's mirror PINGs every second; a test of the watchdog wants it sooner.
    store = MirrorStore(RedisStore(redis_url), prefix="signout", ping_every=ping_every)
    return SignOutMiddleware(starlette_app(), key=SECRET, store=store)


@contextlib.contextmanager
def mirrored(
    redis_url: str, follower: str, ping_every: float | None = None
) -> Iterator[tuple[MirrorStore, TestClient]]:
    """An ASGI app with a local mirror, in sync, followed by ``follower``; and a client of it."""
    middleware = guarded(redis_url, ping_every)
    store = mirror_of(middleware)
    if follower == "thread":
        assert store.wait_in_sync(5)
        yield store, TestClient(middleware, base_url="https://t")
    else:
        with TestClient(middleware, base_url="https://t") as client:
            assert client.portal is not None
            assert client.portal.call(store.await_in_sync, 5)
            yield store, client
    assert store.following in (follower, None)


def logout_elsewhere(redis_url: str, token: str) -> None:
    """A revocation by another instance (no mirror of its own)."""
    other = TestClient(SignOutMiddleware(starlette_app(), key=SECRET, redis_url=redis_url), base_url="https://t")
    assert other.post("/auth/logout", headers=bearer(token)).status_code == 200


def until(condition: Callable[[], bool], timeout: float = 3.0) -> float:
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < timeout, "condition not met in time"
        time.sleep(0.005)
    return time.monotonic() - start


async def until_async(condition: Callable[[], bool], timeout: float = 3.0) -> None:
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < timeout, "condition not met in time"
        await asyncio.sleep(0.005)


def calls(client: redis.Redis, command: str) -> int:
    stats = client.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


def subscribers(client: redis.Redis) -> int:
    return len(client.client_list(_type="pubsub"))


def mirror_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "signout-mirror"}


# ---- both followers -------------------------------------------------------------------------


@pytest.mark.parametrize("follower", FOLLOWERS)
def test_a_revocation_on_one_instance_reaches_the_others_mirror(
    follower: str, redis_url: str, make_token: TokenFactory
) -> None:
    with mirrored(redis_url, follower) as (_, one), mirrored(redis_url, follower) as (two_store, two):
        token = make_token()
        assert two.get("/me", headers=bearer(token)).status_code == 200
        assert one.post("/auth/logout", headers=bearer(token)).status_code == 200
        assert one.get("/me", headers=bearer(token)).status_code == 401  # its own: at once
        until(lambda: two.get("/me", headers=bearer(token)).status_code == 401)
        assert two_store.in_sync and two_store.following == follower


@pytest.mark.parametrize("follower", FOLLOWERS)
def test_in_sync_checks_never_touch_redis(
    follower: str, redis_url: str, redis_client: redis.Redis, make_token: TokenFactory
) -> None:
    with mirrored(redis_url, follower) as (_, c):
        before = calls(redis_client, "hmget")
        for i in range(10):
            assert c.get("/me", headers=bearer(make_token(jti=f"j{i}"))).status_code == 200
        assert calls(redis_client, "hmget") == before


@pytest.mark.parametrize("follower", FOLLOWERS)
def test_revocations_made_before_start_are_copied(follower: str, redis_url: str, make_token: TokenFactory) -> None:
    token = make_token()
    logout_elsewhere(redis_url, token)
    with mirrored(redis_url, follower) as (_, c):
        assert c.get("/me", headers=bearer(token)).status_code == 401


@pytest.mark.parametrize("follower", FOLLOWERS)
def test_a_dropped_subscription_is_noticed_and_resynced(
    follower: str, redis_url: str, redis_client: redis.Redis, make_token: TokenFactory
) -> None:
    with mirrored(redis_url, follower) as (store, c):
        assert store.resyncs == 1
        redis_client.client_kill_filter(_type="pubsub")
        until(lambda: store.resyncs == 2 and store.in_sync)
        assert store.following == follower  # the same follower, resubscribed and copied again
        token = make_token(jti="after-the-drop")
        logout_elsewhere(redis_url, token)
        until(lambda: c.get("/me", headers=bearer(token)).status_code == 401)


@pytest.mark.parametrize("follower", FOLLOWERS)
def test_out_of_sync_checks_go_to_redis_and_never_answer_from_a_stale_copy(
    follower: str, make_token: TokenFactory
) -> None:
    server = RedisServer().start()
    restarted: RedisServer | None = None
    try:
        with mirrored(server.url, follower) as (store, c):
            token = make_token()
            assert c.get("/me", headers=bearer(token)).status_code == 200
            server.stop()
            until(lambda: not store.in_sync)
            assert c.get("/me", headers=bearer(token)).status_code == 503  # fails closed, not a stale 200
            restarted = RedisServer(server.port).start()
            until(lambda: store.in_sync, timeout=10)
            assert store.resyncs >= 2
            assert c.get("/me", headers=bearer(token)).status_code == 200
    finally:
        server.stop()
        if restarted is not None:
            restarted.stop()


@pytest.mark.parametrize("follower", FOLLOWERS)
def test_a_paused_server_is_noticed_by_the_pong_watchdog(follower: str, make_token: TokenFactory) -> None:
    server = RedisServer().start()
    assert server.process is not None
    pid = server.process.pid
    try:
        with mirrored(server.url, follower, ping_every=0.2) as (store, c):
            os.kill(pid, signal.SIGSTOP)  # the socket stays open; nothing is answered
            try:
                noticed = until(lambda: not store.in_sync, timeout=3)
                assert noticed < 1.5  # 2 * ping_every, and a little
                assert c.get("/me", headers=bearer(make_token())).status_code == 503
            finally:
                os.kill(pid, signal.SIGCONT)
            until(lambda: store.in_sync, timeout=10)
            assert store.resyncs >= 2
            assert c.get("/me", headers=bearer(make_token())).status_code == 200
    finally:
        os.kill(pid, signal.SIGCONT)
        server.stop()


@pytest.mark.parametrize("follower", FOLLOWERS)
def test_a_burst_of_changes_to_one_bucket_is_read_back_a_few_times_not_once_each(
    follower: str, redis_url: str, redis_client: redis.Redis, make_token: TokenFactory
) -> None:
    with mirrored(redis_url, follower) as (_, c):
        token = make_token(jti="the-marker", sid="s-marker")
        logout_elsewhere(redis_url, token)
        until(lambda: c.get("/me", headers=bearer(token)).status_code == 401)
        bucket = next(k for k in redis_client.scan_iter(match="signout:{*"))
        before = calls(redis_client, "hgetall")
        pipe = redis_client.pipeline(transaction=False)
        for _ in range(300):  # as 300 writes to one bucket would announce themselves
            pipe.publish(changes_channel("signout"), bucket)
        assert pipe.execute() == [1] * 300  # each reached the one subscriber
        token = make_token(jti="after-the-burst", sid="s-after")
        logout_elsewhere(redis_url, token)
        until(lambda: c.get("/me", headers=bearer(token)).status_code == 401)
        assert calls(redis_client, "hgetall") - before <= 10


# ---- the task on the serving loop -------------------------------------------------------------


def test_an_asgi_app_follows_on_its_serving_loop_without_a_thread(
    redis_url: str, redis_client: redis.Redis, make_token: TokenFactory
) -> None:
    middleware = guarded(redis_url)
    store = mirror_of(middleware)
    threads = mirror_threads()
    token = make_token()

    async def serve() -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=middleware), base_url="https://t") as c:
            assert (await c.get("/me", headers=bearer(token))).status_code == 200  # from Redis; starts the task
            assert store.following == "loop"
            await until_async(lambda: store.in_sync)
            names = [task.get_name() for task in asyncio.all_tasks()]  # this loop's tasks
            assert names.count("signout-mirror") == 1
            before = calls(redis_client, "hmget")
            assert (await c.get("/me", headers=bearer(token))).status_code == 200
            assert calls(redis_client, "hmget") == before  # answered from the copy
            await middleware.aclose()

    asyncio.run(serve())
    assert mirror_threads() <= threads  # no thread of its own was started


def test_aclose_stops_the_task_and_closes_its_connections(redis_url: str, redis_client: redis.Redis) -> None:
    middleware = guarded(redis_url)
    store = mirror_of(middleware)

    async def serve() -> None:
        assert await store.await_in_sync(5)
        assert subscribers(redis_client) == 1
        await middleware.aclose()
        assert not store.in_sync and store.following is None
        assert "signout-mirror" not in [task.get_name() for task in asyncio.all_tasks()]

    asyncio.run(serve())
    until(lambda: subscribers(redis_client) == 0)


def test_lifespan_shutdown_stops_the_task(redis_url: str, redis_client: redis.Redis) -> None:
    with mirrored(redis_url, "loop") as (store, _):
        assert subscribers(redis_client) == 1
    assert not store.in_sync and store.following is None
    until(lambda: subscribers(redis_client) == 0)


def test_one_middleware_used_from_event_loops_in_turn(
    redis_url: str, redis_client: redis.Redis, make_token: TokenFactory
) -> None:
    middleware = guarded(redis_url)
    store = mirror_of(middleware)

    # Without "with", each request runs in a fresh loop: the task started there ends with it.
    fresh = TestClient(middleware, base_url="https://t")
    assert fresh.get("/me", headers=bearer(make_token())).status_code == 200
    assert not store.in_sync and store.following is None

    loops: list[asyncio.AbstractEventLoop] = []

    async def turn(jti: str) -> None:
        loops.append(asyncio.get_running_loop())
        token = make_token(jti=jti, sid=jti)  # its logout revokes its session: one of its own
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=middleware), base_url="https://t") as c:
            assert (await c.get("/me", headers=bearer(token))).status_code == 200
            await until_async(lambda: store.in_sync)
            assert store.following == "loop"
            await asyncio.to_thread(logout_elsewhere, redis_url, token)
            for _ in range(600):  # seen through this loop's follower, within 3 s
                if (await c.get("/me", headers=bearer(token))).status_code == 401:
                    break
                await asyncio.sleep(0.005)
            else:
                raise AssertionError("the revocation never reached the mirror")

    copies = store.resyncs
    asyncio.run(turn("first-loop"))
    assert not store.in_sync and store.following is None  # the loop closed: its copy is not trusted
    asyncio.run(turn("second-loop"))
    assert loops[0] is not loops[1]
    assert store.resyncs == copies + 2
    until(lambda: subscribers(redis_client) == 0)  # each loop's task closed its connections


def test_a_follower_whose_loop_stopped_is_out_of_sync_and_replaced(redis_url: str, make_token: TokenFactory) -> None:
    middleware = guarded(redis_url)
    store = mirror_of(middleware)
    idle = asyncio.new_event_loop()
    try:
        assert idle.run_until_complete(store.await_in_sync(5))
        # The loop still exists but runs nothing: its task cannot follow.
        assert not store.in_sync and store.following is None

        async def elsewhere() -> None:
            assert await store.await_in_sync(5)
            assert store.following == "loop"
            await middleware.aclose()

        asyncio.run(elsewhere())
        # The stopped loop's task was told to end; it does when that loop runs again.
        idle.run_until_complete(asyncio.sleep(0.05))
        assert not [t for t in asyncio.all_tasks(idle) if t.get_name() == "signout-mirror"]
    finally:
        idle.close()


def test_a_task_that_ends_leaves_the_mirror_out_of_sync_and_the_next_check_starts_another(
    redis_url: str, make_token: TokenFactory
) -> None:
    middleware = guarded(redis_url)
    store = mirror_of(middleware)

    async def serve() -> None:
        assert await store.await_in_sync(5)
        first = next(t for t in asyncio.all_tasks() if t.get_name() == "signout-mirror")
        first.cancel()
        await asyncio.wait([first])
        assert not store.in_sync and store.following is None
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=middleware), base_url="https://t") as c:
            assert (await c.get("/me", headers=bearer(make_token()))).status_code == 200  # from Redis
        await until_async(lambda: store.in_sync)
        assert store.resyncs == 2
        await middleware.aclose()

    asyncio.run(serve())


# ---- the thread -----------------------------------------------------------------------------


def test_a_wsgi_app_follows_from_a_thread(redis_url: str, redis_client: redis.Redis, make_token: TokenFactory) -> None:
    middleware = SignOutWSGIMiddleware(wsgi_app(), key=SECRET, redis_url=redis_url, local_mirror=True)
    store = mirror_of(middleware)
    client = httpx.Client(transport=PEP3333Transport(middleware), base_url="https://t")  # type: ignore[arg-type]
    token = make_token()
    assert client.get("/me", headers=bearer(token)).status_code == 200  # from Redis; starts the thread
    assert store.following == "thread"
    until(lambda: store.in_sync)
    before = calls(redis_client, "hmget")
    assert client.get("/me", headers=bearer(token)).status_code == 200
    assert calls(redis_client, "hmget") == before
    logout_elsewhere(redis_url, token)
    until(lambda: client.get("/me", headers=bearer(token)).status_code == 401)


def test_local_mirror_needs_redis() -> None:
    with pytest.raises(ConfigError) as raised:
        SignOutMiddleware(starlette_app(), key=SECRET, local_mirror=True)
    assert raised.value.kwarg == "local_mirror"
