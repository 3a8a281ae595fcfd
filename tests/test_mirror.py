"""The opt-in local mirror, against the real Redis: sync, lag, loss, fallback, resync.

Most cases run for both followers: ``thread`` (started by ``wait_in_sync`` from
sync code, as WSGI gets it; the ASGI requests then run each in a fresh loop)
and ``loop`` (a task on the loop that serves the requests: a ``TestClient``
used with ``with``, one loop for its life, lifespan included).

The tests go through ``MirrorStore``'s public surface (``in_sync``, ``following``,
``resyncs``, ``buckets_in_copy``, ``fetch_local``, ``wait_in_sync``/``await_in_sync``,
``close``/``aclose``) and what Redis itself counts (``INFO commandstats``, ``CLIENT
LIST``). The exceptions stage a race inside the socket follower, which takes holding its
thread between its ``poll`` and its read (``held``) or wrapping what it applies
(``SocketFollower._heard``): no public surface can do either.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import select as select_module
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from unittest import mock

import httpx
import pytest
import redis
from starlette.testclient import TestClient

from signout import RedisStore, SignOutMiddleware, SignOutWSGIMiddleware, layout
from signout.layout import Lookup, Write
from signout.stores.mirror import MirrorStore
from signout.stores.mirror import socket_follower as follow_socket
from signout.stores.mirror.follower import read_change
from signout.stores.mirror.socket_follower import SocketFollower
from signout.stores.redis import MERGE_SCRIPT, changes_channel

from .apps import starlette_app, wsgi_app
from .conftest import ISS, SECRET, FreezableProxy, PEP3333Transport, RedisServer, TokenFactory, claims
from .helpers import bearer

FOLLOWERS = ["socket", "asyncio", "pubsub"]
#: ``pubsub`` is the thread on redis-py's pub/sub that a store without a socket address of its own
#: gets (``rediss://``, a client given), forced here.
KIND = {"socket": "socket", "asyncio": "asyncio", "pubsub": "pubsub"}


_OPEN: list[MirrorStore] = []


@pytest.fixture(autouse=True)
def _close_mirrors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    before = mirror_threads()
    yield
    socket_followers = False
    while _OPEN:
        store = _OPEN.pop()
        socket_followers |= store.following == "socket"
        store.close()  # stop their threads: no reconnecting to servers that are gone
    if socket_followers:  # woken by close: gone with its subscription at once
        for thread in mirror_threads() - before:
            thread.join(timeout=5)
    gc.collect()  # a pending task dropped without being stopped would be reported now
    logged = [*caplog.get_records("call"), *caplog.records]
    destroyed = [r for r in logged if "Task was destroyed but it is pending" in r.getMessage()]
    assert not destroyed


def mirror_of(middleware: SignOutMiddleware | SignOutWSGIMiddleware) -> MirrorStore:
    store = middleware.store
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
    with contextlib.ExitStack() as stack:
        if follower == "pubsub":  # as for rediss:// or a client given: no address for a socket of its own
            stack.enter_context(mock.patch.object(RedisStore, "address", new=property(lambda self: None)))
        if follower == "asyncio":
            client = stack.enter_context(TestClient(middleware, base_url="https://t"))
            assert client.portal is not None
            assert client.portal.call(store.await_in_sync, 5)
        else:
            assert store.wait_in_sync(5)
            client = TestClient(middleware, base_url="https://t")
        assert store.following == KIND[follower]
        yield store, client
        assert store.following in (KIND[follower], None)


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
        assert two_store.in_sync and two_store.following == KIND[follower]


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
        assert store.following == KIND[follower]  # the same follower, resubscribed and copied again
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
        bucket = next(k for k in redis_client.scan_iter(match="signout:{*")).decode()
        before = calls(redis_client, "hgetall")
        pipe = redis_client.pipeline(transaction=False)
        for _ in range(300):  # 300 changes to one bucket, each of which makes it read back
            pipe.publish(changes_channel("signout"), change(bucket) + b"13:j12")
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
            assert store.following == "asyncio"
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
    until(lambda: subscribers(redis_client) == 0)  # a redis-py thread of an earlier test takes up to 0.5 s to end
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
    until(lambda: subscribers(redis_client) == 0)
    with mirrored(redis_url, "asyncio") as (store, _):
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
            assert store.following == "asyncio"
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
            assert store.following == "asyncio"
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


def test_a_mirror_on_a_silent_network_stops_answering_from_memory(
    proxy: FreezableProxy, make_token: TokenFactory
) -> None:
    middleware = SignOutMiddleware(
        starlette_app(), key=SECRET, redis_url=f"redis://127.0.0.1:{proxy.port}/0", local_mirror=True
    )
    store = middleware.store
    assert isinstance(store, MirrorStore)
    try:
        assert store.wait_in_sync(5)
        proxy.freeze()
        start = time.monotonic()
        while store.in_sync:
            assert time.monotonic() - start < 4, "the mirror never noticed the silent network"
            time.sleep(0.02)
        r = TestClient(middleware, base_url="https://t").get("/me", headers={"Authorization": f"Bearer {make_token()}"})
        assert r.status_code == 503  # not an answer from a copy that may be stale
    finally:
        store.close()


def test_a_wsgi_app_follows_from_a_thread(redis_url: str, redis_client: redis.Redis, make_token: TokenFactory) -> None:
    middleware = SignOutWSGIMiddleware(wsgi_app(), key=SECRET, redis_url=redis_url, local_mirror=True)
    store = mirror_of(middleware)
    client = httpx.Client(transport=PEP3333Transport(middleware), base_url="https://t")  # type: ignore[arg-type]
    token = make_token()
    assert client.get("/me", headers=bearer(token)).status_code == 200  # from Redis; starts the thread
    assert store.following == "socket"
    until(lambda: store.in_sync)
    before = calls(redis_client, "hmget")
    assert client.get("/me", headers=bearer(token)).status_code == 200
    assert calls(redis_client, "hmget") == before
    logout_elsewhere(redis_url, token)
    until(lambda: client.get("/me", headers=bearer(token)).status_code == 401)


class _Held:
    """Holds the socket follower's thread right after its ``poll`` returns, while ``hold`` is set."""

    def __init__(self) -> None:
        self.hold = threading.Event()
        self.release = threading.Event()
        self.held = threading.Event()

    def poll(self) -> _HeldPoll:
        return _HeldPoll(self, select_module.poll())

    def __getattr__(self, name: str) -> object:
        return getattr(select_module, name)


class _HeldPoll:
    def __init__(self, held: _Held, real: Any) -> None:
        self._held, self._real = held, real

    def register(self, *args: Any) -> None:
        self._real.register(*args)

    def poll(self, *args: Any) -> Any:
        got = self._real.poll(*args)
        held = self._held
        if held.hold.is_set() and threading.current_thread().name == "signout-mirror":
            held.held.set()
            held.release.wait(10)
        return got


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Held]:
    held = _Held()
    monkeypatch.setattr(follow_socket, "select", held)
    yield held
    held.release.set()


def arrived(client: redis.Redis) -> None:
    """Until Redis has sent its subscribers all it holds for them (their output buffers are empty).

    Asked after a message was published, this answer comes after Redis wrote it: over loopback the
    message then waits on the follower's socket, read by no one yet.
    """
    until(lambda: all(int(c["obl"]) == 0 and int(c["oll"]) == 0 for c in client.client_list(_type="pubsub")))


def subscription_fd(client: redis.Redis) -> int:
    """The file descriptor of this process's one subscription, found by the port Redis lists it on."""
    (subscriber,) = client.client_list(_type="pubsub")
    port = int(subscriber["addr"].rpartition(":")[2])
    for name in os.listdir("/proc/self/fd"):
        try:
            copy = os.dup(int(name))
        except OSError:  # the listing's own descriptor, closed by now
            continue
        try:
            sock = socket.socket(fileno=copy)
        except OSError:  # not a socket
            os.close(copy)
            continue
        with sock:
            if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.getsockname()[1] == port:
                return int(name)
    raise AssertionError(f"no socket of this process has port {port}")


def test_a_check_applies_what_arrived_itself_while_the_thread_cannot_run(
    held: _Held, redis_url: str, redis_client: redis.Redis, make_token: TokenFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As in a busy process, where the follower thread waits for the GIL: the check must not wait for it.
    applied_by: list[str] = []
    real_heard = SocketFollower._heard

    def heard(self: SocketFollower, data: bytes | str, rereads: dict[str, None]) -> None:
        applied_by.append(threading.current_thread().name)
        real_heard(self, data, rereads)

    monkeypatch.setattr(SocketFollower, "_heard", heard)
    with mirrored(redis_url, "socket") as (store, c):
        token = make_token(jti="applied-by-the-check")
        assert c.get("/me", headers=bearer(token)).status_code == 200
        held.hold.set()
        logout_elsewhere(redis_url, token)
        arrived(redis_client)
        before = calls(redis_client, "hmget")
        assert c.get("/me", headers=bearer(token)).status_code == 401  # the very next check, from the copy
        assert calls(redis_client, "hmget") == before
        # One message per bucket the logout wrote (its user's: the jti; its session's: the sid),
        # each applied by the check, not the thread.
        assert len(applied_by) == 2 and "signout-mirror" not in applied_by
        assert held.held.wait(2)  # the thread woke for the message, and is still held
        held.release.set()
        assert store.in_sync and store.resyncs == 1


def test_a_bucket_to_read_back_is_asked_of_redis_until_the_thread_has_read_it(
    held: _Held, redis_url: str, redis_client: redis.Redis, make_token: TokenFactory
) -> None:
    # A message whose fields cannot be read names a bucket the copy is behind on: no check may answer from it.
    with mirrored(redis_url, "socket") as (store, c):
        alone(redis_client)
        token = make_token(jti="unsure-bucket")
        key = revoke_unannounced(redis_client, "unsure-bucket")
        held.hold.set()
        assert redis_client.publish(CHANNEL, UNREADABLE_FIELDS["truncated name"](key)) == 1
        arrived(redis_client)
        before = calls(redis_client, "hmget")
        assert c.get("/me", headers=bearer(token)).status_code == 401  # from Redis, at once
        # Its two lookups (its user's bucket, its session's), in one round trip.
        assert calls(redis_client, "hmget") == before + 2
        assert c.get("/me", headers=bearer(make_token(sub="someone-else"))).status_code == 200
        assert calls(redis_client, "hmget") == before + 2  # other buckets: still from the copy
        held.release.set()
        unsure = (Lookup(key, (layout.token_field(ISS, "unsure-bucket"),)),)
        until(lambda: store.fetch_local(unsure, time.time()) is not None)  # read back: the copy answers again
        assert c.get("/me", headers=bearer(token)).status_code == 401
        assert calls(redis_client, "hmget") == before + 2  # read back: from the copy again
        assert store.resyncs == 1


def test_checks_from_many_threads_at_once(redis_url: str, make_token: TokenFactory) -> None:
    # A threaded WSGI server checks from many threads; each reads the socket when something arrived.
    middleware = SignOutWSGIMiddleware(wsgi_app(), key=SECRET, redis_url=redis_url, local_mirror=True)
    store = mirror_of(middleware)
    assert store.wait_in_sync(5)
    tokens = [make_token(sub=f"many-{i}", sid=f"many-s-{i}", jti=f"many-{i}") for i in range(8)]
    # The logouts run beside 8 threads that want the GIL all the time: more than 0.25 s to write.
    other = TestClient(SignOutMiddleware(starlette_app(), key=SECRET, redis_url=redis_url, store_timeout=5.0))
    statuses: list[set[int]] = [set() for _ in tokens]
    stop = threading.Event()

    def hammer(i: int) -> None:
        client = httpx.Client(transport=PEP3333Transport(middleware), base_url="https://t")  # type: ignore[arg-type]
        while not stop.is_set():
            statuses[i].add(client.get("/me", headers=bearer(tokens[i])).status_code)

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(len(tokens))]
    for thread in threads:
        thread.start()
    try:
        for token in tokens[::2]:
            assert other.post("https://t/auth/logout", headers=bearer(token)).status_code == 200
        time.sleep(0.3)
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
    assert [sorted(s) for s in statuses] == [[200, 401] if i % 2 == 0 else [200] for i in range(len(tokens))]
    assert store.in_sync and store.resyncs == 1
    client = httpx.Client(transport=PEP3333Transport(middleware), base_url="https://t")  # type: ignore[arg-type]
    for i, token in enumerate(tokens):  # each revoked one stays revoked
        assert client.get("/me", headers=bearer(token)).status_code == (401 if i % 2 == 0 else 200)


def test_a_follower_with_a_file_descriptor_past_1024(
    redis_url: str, make_token: TokenFactory, redis_client: redis.Redis
) -> None:
    # select() cannot wait on a descriptor past FD_SETSIZE; a busy server has that many open.
    hogs = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        with mirrored(redis_url, "socket") as (store, c):
            alone(redis_client)
            assert subscription_fd(redis_client) > 1024
            token = make_token(jti="past-1024")
            logout_elsewhere(redis_url, token)
            until(lambda: c.get("/me", headers=bearer(token)).status_code == 401)
            time.sleep(0.2)
            assert store.in_sync and store.resyncs == 1
    finally:
        for fd in hogs:
            os.close(fd)


class _Interrupted(BaseException):
    """As a gevent.Timeout or a signal-raised request timeout: not an Exception."""


def test_a_check_interrupted_while_applying_puts_the_copy_out_of_sync(
    held: _Held, redis_url: str, redis_client: redis.Redis, make_token: TokenFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_heard = SocketFollower._heard
    interrupt = threading.Event()

    def heard(self: SocketFollower, data: bytes | str, rereads: dict[str, None]) -> None:
        if interrupt.is_set() and threading.current_thread().name != "signout-mirror":
            interrupt.clear()
            raise _Interrupted
        real_heard(self, data, rereads)

    monkeypatch.setattr(SocketFollower, "_heard", heard)
    with mirrored(redis_url, "socket") as (store, c):
        token = make_token(jti="interrupted")
        held.hold.set()
        logout_elsewhere(redis_url, token)
        arrived(redis_client)
        interrupt.set()
        with pytest.raises(_Interrupted):  # the check's thread is interrupted: it goes on up, as it would anyway
            store.in_sync  # noqa: B018
        assert not store.in_sync  # the message it took is gone from the socket: the copy cannot be trusted
        assert c.get("/me", headers=bearer(token)).status_code == 401  # from Redis meanwhile
        held.hold.clear()
        held.release.set()
        until(lambda: store.resyncs == 2 and store.in_sync)
        assert c.get("/me", headers=bearer(token)).status_code == 401


def test_a_thread_kept_from_running_takes_no_pong_for_lost(
    held: _Held, redis_url: str, make_token: TokenFactory
) -> None:
    # The watchdog times a PING from when it was sent: a thread that could not send one
    # (starved, or here held) must not take its own silence for a dead connection.
    with mirrored(redis_url, "socket", ping_every=0.1) as (store, c):
        time.sleep(0.3)  # a few PINGs answered
        held.hold.set()
        assert held.held.wait(2)
        time.sleep(0.6)  # three times the watchdog's patience, no PING sent meanwhile
        assert c.get("/me", headers=bearer(make_token())).status_code == 200
        held.hold.clear()
        held.release.set()
        time.sleep(0.3)
        assert store.in_sync and store.resyncs == 1


def test_a_forked_child_does_not_answer_from_its_parents_copy(redis_url: str) -> None:
    with mirrored(redis_url, "socket") as (store, _):
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: the copy and the flag came along, the thread that keeps them did not
            os.write(write, b"1" if store.in_sync else b"0")
            os._exit(0)
        os.close(write)
        assert os.read(read, 1) == b"0"
        os.waitpid(pid, 0)
        os.close(read)
        assert store.in_sync  # the parent's is untouched


# ---- change messages that carry their fields ----------------------------------------------------

CHANNEL = changes_channel("signout")


def netstring(data: bytes) -> bytes:
    return b"%d:%s," % (len(data), data)


def change(key: str, *fields: tuple[bytes, bytes]) -> bytes:
    """A change message as the merge script publishes it."""
    return b"\x01" + netstring(key.encode()) + b"".join(netstring(n) + netstring(v) for n, v in fields)


def alone(client: redis.Redis) -> None:
    """Until ours is the only subscriber: a thread follower of an earlier test takes up to 0.5 s to end."""
    until(lambda: subscribers(client) == 1)


def read_backs(client: redis.Redis) -> int:
    """``HGETALL``s sent by clients: every merge script run counts one of its own (a NOSCRIPT ran none)."""
    stats = client.info("commandstats")
    runs = [stats.get(f"cmdstat_{name}", {}) for name in ("eval", "evalsha")]
    scripts = sum(int(run.get("calls", 0)) - int(run.get("failed_calls", 0)) for run in runs)
    return calls(client, "hgetall") - scripts


def revoke_unannounced(client: redis.Redis, jti: str) -> str:
    """Revoke ``make_token(jti=jti)`` in Redis as a logout would, but announce nothing; its bucket."""
    c = claims(jti=jti)
    key = layout.bucket_key("signout", ISS, c["sub"], c["sid"], jti)
    assert key is not None
    expires = layout.expiry_value(c["exp"] + 60)
    client.eval(MERGE_SCRIPT, 1, key, int(time.time()), "", layout.token_field(ISS, jti), expires)  # "": no PUBLISH
    return key


@pytest.mark.parametrize("follower", FOLLOWERS)
def test_a_revocation_elsewhere_is_applied_from_its_message_without_reading_the_bucket(
    follower: str, redis_url: str, redis_client: redis.Redis, make_token: TokenFactory
) -> None:
    with mirrored(redis_url, follower) as (store, c):
        alone(redis_client)
        for i in range(3):
            token = make_token(jti=f"carried-{i}", sid=f"s-carried-{i}")
            assert c.get("/me", headers=bearer(token)).status_code == 200
            before = read_backs(redis_client)
            logout_elsewhere(redis_url, token)
            until(lambda: c.get("/me", headers=bearer(token)).status_code == 401)  # noqa: B023
            assert read_backs(redis_client) == before
        assert store.resyncs == 1 and store.following == KIND[follower]


# Each names its bucket, but what follows cannot be read: the bucket is read back.
UNREADABLE_FIELDS = {
    "truncated value": lambda key: change(key) + b"13:j123456789012,10:17",
    "truncated name": lambda key: change(key) + b"13:j12",
    "name without value": lambda key: change(key, (b"j", b"1")) + b"1:x,",
    "no comma": lambda key: change(key) + b"1:x;1:9,",
    "signed length": lambda key: change(key) + b"+1:x,1:9,",
    "no length": lambda key: change(key) + b":x,1:9,",
    "huge length": lambda key: change(key) + b"99999999999:x,",
    "garbage": lambda key: change(key) + b"\xff\x00\n garbage",
}


@pytest.mark.parametrize("damage", sorted(UNREADABLE_FIELDS))
@pytest.mark.parametrize("follower", FOLLOWERS)
def test_a_message_with_unreadable_fields_is_answered_by_reading_its_bucket_back(
    follower: str, damage: str, redis_url: str, redis_client: redis.Redis, make_token: TokenFactory
) -> None:
    with mirrored(redis_url, follower) as (store, c):
        alone(redis_client)
        token = make_token(jti=f"damaged-{damage}")
        key = revoke_unannounced(redis_client, f"damaged-{damage}")
        before = read_backs(redis_client)
        assert redis_client.publish(CHANNEL, UNREADABLE_FIELDS[damage](key)) == 1
        until(lambda: c.get("/me", headers=bearer(token)).status_code == 401)  # not lost
        # A check may hear of it first and ask Redis (socket follower): the thread's re-read can come just after.
        until(lambda: read_backs(redis_client) >= before + 1)
        assert read_backs(redis_client) == before + 1
        assert store.resyncs == 1 and store.in_sync and store.following == KIND[follower]  # the follower carried on


# Each names no bucket it can be sure of: only a full copy makes up for it.
NO_BUCKET = {
    "marker only": b"\x01",
    "truncated key": b"\x0112:signout:{0",
    "key without comma": b"\x0114:signout:{0000}",
    "key not UTF-8": b"\x012:\xff\xfe,",
    "bare key not UTF-8": b"\xff\xfe\x00",
    "bare key": b"signout:{0000}",  # no leading byte: not a change message
}


@pytest.mark.parametrize("message", sorted(NO_BUCKET))
@pytest.mark.parametrize("follower", FOLLOWERS)
def test_a_message_naming_no_bucket_costs_a_full_copy_not_the_follower(
    follower: str,
    message: str,
    redis_url: str,
    redis_client: redis.Redis,
    make_token: TokenFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with mirrored(redis_url, follower) as (store, c):
        alone(redis_client)
        token = make_token(jti=f"no-bucket-{message}")
        revoke_unannounced(redis_client, f"no-bucket-{message}")
        assert redis_client.publish(CHANNEL, NO_BUCKET[message]) == 1
        until(lambda: store.resyncs == 2 and store.in_sync)
        assert store.following == KIND[follower]
        assert c.get("/me", headers=bearer(token)).status_code == 401  # copied with everything else
    assert any("names no bucket" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("follower", FOLLOWERS)
def test_a_message_for_a_key_outside_the_prefix_is_ignored(
    follower: str, redis_url: str, redis_client: redis.Redis
) -> None:
    with mirrored(redis_url, follower) as (store, _):
        alone(redis_client)
        far = str(int(time.time()) + 3600).encode()
        redis_client.publish(CHANNEL, change("other:{0000}", (b"jforeign", far)))
        redis_client.publish(CHANNEL, change("signout:{0001}", (b"jours", far)))
        until(lambda: store.buckets_in_copy == 1)
        assert store.fetch_local([Lookup("signout:{0001}", (b"jours",))], time.time()) == [[far]]
        assert store.resyncs == 1


# Field names are bytes: the message must carry any of them whole.
BINARY_NAMES = (b"j:1:2:", b"s\n\r\n", b"u0123456789:", b"j\x00\x00\x00", b"s12:ab,3:", b":", b"\x01", b"0:,")


@pytest.mark.parametrize("follower", FOLLOWERS)
def test_binary_field_names_reach_the_copy_whole_from_both_write_paths(
    follower: str, redis_url: str, redis_client: redis.Redis
) -> None:
    now = int(time.time())
    values = [
        layout.cutoff_value(now - i, now + 3600 + i) if name.startswith(b"u") else layout.expiry_value(now + 600 + i)
        for i, name in enumerate(BINARY_NAMES)
    ]
    sync_key, async_key = "signout:{0a0a}", "signout:{0b0b}"
    with mirrored(redis_url, follower) as (store, _):
        alone(redis_client)
        before = read_backs(redis_client)
        writer = RedisStore(redis_url)
        writer.write_sync([Write(sync_key, tuple(zip(BINARY_NAMES, values, strict=True)))], now)

        async def write_async() -> None:
            await writer.write([Write(async_key, tuple(zip(BINARY_NAMES, values, strict=True)))], now)
            await writer.aclose()

        asyncio.run(write_async())
        writer.close()
        lookups = [Lookup(sync_key, BINARY_NAMES), Lookup(async_key, BINARY_NAMES)]
        until(lambda: store.fetch_local(lookups, time.time()) == [values, values])
        assert read_backs(redis_client) == before
        assert redis_client.hgetall(sync_key) == dict(zip(BINARY_NAMES, values, strict=True))


@pytest.mark.parametrize("follower", FOLLOWERS)
def test_the_copy_keeps_no_expired_field_it_hears_of(follower: str, redis_url: str, redis_client: redis.Redis) -> None:
    with mirrored(redis_url, follower) as (store, _):
        alone(redis_client)
        now = int(time.time())
        pipe = redis_client.pipeline(transaction=False)
        for shard in range(100):  # already expired: never kept
            pipe.publish(CHANNEL, change(f"signout:{{{shard:04x}}}", (b"jold", str(now - 1).encode())))
        live = str(now + 600).encode()
        pipe.publish(CHANNEL, change("signout:{ffff}", (b"jlive", live), (b"jdead", str(now - 5).encode())))
        pipe.publish(CHANNEL, change("signout:{fffe}", (b"jsoon", str(now + 2).encode())))  # in 1-2 s
        pipe.execute()
        until(lambda: store.buckets_in_copy == 2)
        # Its expired field was dropped on arrival: the bucket holds jlive alone.
        assert store.fetch_local([Lookup("signout:{ffff}", (b"jlive", b"jdead"))], time.time()) == [[live, None]]
        # A bucket whose fields all expire later goes in the next sweep, every 1024 writes to the copy.
        time.sleep(max(0.0, now + 2.05 - time.time()))
        for shard in range(1100):
            pipe.publish(CHANNEL, change(f"signout:{{{shard:04x}}}", (b"jold", b"1")))
        pipe.execute()
        until(lambda: store.buckets_in_copy == 1)  # {fffe} swept (asking for it would drop it itself)
        assert store.fetch_local([Lookup("signout:{ffff}", (b"jlive",))], time.time()) == [[live]]
        assert store.resyncs == 1


def test_read_change() -> None:
    assert read_change(change("k")) == ("k", ())
    assert read_change(change("k").decode()) == ("k", ())  # a client that decodes replies
    assert read_change(change("k", (b"", b""), (b"a:b", b"1"))) == ("k", ((b"", b""), (b"a:b", b"1")))
    assert read_change(change("k") + b"1:a,") == ("k", None)
    for bad in NO_BUCKET.values():
        with pytest.raises(ValueError):
            read_change(bad)


def test_a_refresh_tokens_first_use_reaches_the_other_instances_mirror(
    redis_url: str, redis_client: redis.Redis, make_token: TokenFactory
) -> None:
    """refresh_rotation over mirrors: the use one instance records is in the other's copy, which
    then catches the reuse at the guard (one round trip: the login's revocation, its jti in its user's
    bucket and its sid in its session's), before its app runs."""
    apps = [
        SignOutMiddleware(
            starlette_app(),
            key=SECRET,
            redis_url=redis_url,
            local_mirror=True,
            refresh_rotation=True,
            refresh_reuse_grace=0,
        )
        for _ in range(2)
    ]
    stores = [mirror_of(m) for m in apps]
    assert all(s.wait_in_sync(5) for s in stores)
    one, two = (TestClient(m, base_url="https://t") for m in apps)
    token = make_token(sid="s-9", jti="r-9")
    cookie = {"Cookie": f"refresh_token={token}"}
    assert one.post("/auth/refresh", headers=cookie).status_code == 200
    bucket = layout.bucket_key("signout", ISS, "alice", None, None)
    assert bucket is not None
    used = Lookup(bucket, (layout.used_field(ISS, "r-9"),))
    until(lambda: (stores[1].fetch_local((used,), time.time()) or [[None]])[0][0] is not None)
    writes = calls(redis_client, "evalsha") + calls(redis_client, "eval")
    r = two.post("/auth/refresh", headers=cookie)
    assert r.status_code == 401 and "already used" in r.json()["message"]
    assert calls(redis_client, "evalsha") + calls(redis_client, "eval") == writes + 2


def test_a_claim_leaves_the_first_use_in_the_local_copy_not_its_own(redis_url: str, redis_client: redis.Redis) -> None:
    """The copy must hold what Redis settled on, or this instance's guard would time the grace from the
    later use, and catch a reuse only after its app had answered."""
    store = MirrorStore(RedisStore(redis_url), prefix="signout")
    _OPEN.append(store)
    assert store.wait_in_sync(5)
    now = time.time()
    expires = int(now) + 600
    field = layout.used_field(ISS, "r-1")
    # Another instance's first use, whose message this copy has not heard yet.
    redis_client.hset("signout:{0abc}", field, f"1000:{expires}")
    redis_client.expire("signout:{0abc}", 600)
    claim = Write("signout:{0abc}", ((field, layout.claim_value(9_000, expires)),))
    assert store.claim_sync(claim, now) == f"1000:{expires}".encode()
    row = store.fetch_local((Lookup("signout:{0abc}", (field,)),), now)
    assert row is not None and layout.parse(row[0][0]) == (1_000, expires)
