"""The opt-in local mirror, against the real Redis: sync, lag, loss, fallback, resync."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
import redis
from starlette.testclient import TestClient

from signout import ConfigError, SignOutMiddleware
from signout.stores.mirror import MirrorStore

from .apps import starlette_app
from .conftest import SECRET, TokenFactory


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


_OPEN: list[MirrorStore] = []


@pytest.fixture(autouse=True)
def _close_mirrors() -> Iterator[None]:
    yield
    while _OPEN:
        _OPEN.pop().close()  # stop their threads: no reconnecting to servers that are gone


def mirrored(redis_url: str) -> tuple[SignOutMiddleware, TestClient]:
    middleware = SignOutMiddleware(starlette_app(), key=SECRET, redis_url=redis_url, local_mirror=True)
    store = middleware.store
    assert isinstance(store, MirrorStore)
    _OPEN.append(store)
    assert store.wait_in_sync(5)
    return middleware, TestClient(middleware, base_url="https://t")


def until(condition: Callable[[], bool], timeout: float = 3.0) -> float:
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < timeout, "condition not met in time"
        time.sleep(0.005)
    return time.monotonic() - start


def hmgets(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return int(stats.get("cmdstat_hmget", {}).get("calls", 0))


def test_a_revocation_on_one_instance_reaches_the_others_mirror(
    redis_url: str, redis_client: redis.Redis, make_token: TokenFactory
) -> None:
    _, one = mirrored(redis_url)
    two_mw, two = mirrored(redis_url)
    token = make_token()
    assert two.get("/me", headers=bearer(token)).status_code == 200
    assert one.post("/auth/logout", headers=bearer(token)).status_code == 200
    until(lambda: two.get("/me", headers=bearer(token)).status_code == 401)
    assert isinstance(two_mw.store, MirrorStore) and two_mw.store.in_sync


def test_in_sync_checks_never_touch_redis(redis_url: str, redis_client: redis.Redis, make_token: TokenFactory) -> None:
    _, c = mirrored(redis_url)
    before = hmgets(redis_client)
    for i in range(10):
        assert c.get("/me", headers=bearer(make_token(jti=f"j{i}"))).status_code == 200
    assert hmgets(redis_client) == before


def test_revocations_made_before_start_are_copied(redis_url: str, make_token: TokenFactory) -> None:
    token = make_token()
    plain = TestClient(SignOutMiddleware(starlette_app(), key=SECRET, redis_url=redis_url), base_url="https://t")
    assert plain.post("/auth/logout", headers=bearer(token)).status_code == 200
    _, c = mirrored(redis_url)
    assert c.get("/me", headers=bearer(token)).status_code == 401


def test_a_dropped_subscription_is_noticed_and_resynced(
    redis_url: str, redis_client: redis.Redis, make_token: TokenFactory
) -> None:
    middleware, c = mirrored(redis_url)
    store = middleware.store
    assert isinstance(store, MirrorStore)
    assert store.resyncs == 1
    redis_client.client_kill_filter(_type="pubsub")
    until(lambda: store.resyncs == 2 and store.in_sync)
    token = make_token(jti="after-the-drop")
    plain = TestClient(SignOutMiddleware(starlette_app(), key=SECRET, redis_url=redis_url), base_url="https://t")
    assert plain.post("/auth/logout", headers=bearer(token)).status_code == 200
    until(lambda: c.get("/me", headers=bearer(token)).status_code == 401)


def test_out_of_sync_checks_go_to_redis_and_never_answer_from_a_stale_copy(make_token: TokenFactory) -> None:
    from .conftest import RedisServer

    server = RedisServer().start()
    restarted: RedisServer | None = None
    try:
        middleware, c = mirrored(server.url)
        store = middleware.store
        assert isinstance(store, MirrorStore)
        token = make_token()
        assert c.get("/me", headers=bearer(token)).status_code == 200
        server.stop()
        until(lambda: not store.in_sync)
        assert c.get("/me", headers=bearer(token)).status_code == 503  # fails closed, not a stale 200
        restarted = RedisServer(server.port).start()
        until(lambda: store.in_sync, timeout=10)
        assert c.get("/me", headers=bearer(token)).status_code == 200
    finally:
        server.stop()
        if restarted is not None:
            restarted.stop()


def test_local_mirror_needs_redis() -> None:
    with pytest.raises(ConfigError) as raised:
        SignOutMiddleware(starlette_app(), key=SECRET, local_mirror=True)
    assert raised.value.kwarg == "local_mirror"
