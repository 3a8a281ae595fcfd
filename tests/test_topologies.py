"""RedisStore over a real Redis Cluster and a real Sentinel-managed master."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from starlette.testclient import TestClient

from signout import SignOutMiddleware, SignOutWSGIMiddleware

from .apps import starlette_app, wsgi_app
from .cluster import Cluster
from .conftest import SECRET, TokenFactory, free_port, missing_redis, spawn_redis, wait_for_redis


def _spawn(args: list[str]) -> subprocess.Popen[bytes]:
    try:
        return spawn_redis(args)
    except FileNotFoundError:
        missing_redis("redis-server is not installed")
        raise


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[int]]:
    running = Cluster(tmp_path_factory.mktemp("cluster"), primaries=3)
    try:
        yield running.ports
    finally:
        running.stop()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_cluster_logout_and_guard_with_a_factory(cluster: list[int], make_token: TokenFactory) -> None:
    from redis.asyncio.cluster import RedisCluster

    def factory() -> Any:
        return RedisCluster(host="127.0.0.1", port=cluster[0])

    # A new loop per request means a cluster discovery (CLUSTER SLOTS, a connection per node) per
    # request, inside the check's bound: the default 0.25 s is tight for it late in a long test run.
    c = TestClient(
        SignOutMiddleware(starlette_app(), key=SECRET, redis=factory, store_timeout=2.0), base_url="https://t"
    )
    users = [make_token(sub=f"user-{i}", sid=f"s-{i}", jti=f"j-{i}") for i in range(12)]
    for token in users[::2]:
        assert c.post("/auth/logout", headers=bearer(token)).status_code == 200
    for i, token in enumerate(users):
        assert c.get("/me", headers=bearer(token)).status_code == (401 if i % 2 == 0 else 200)
    # The buckets are spread over the cluster, each in one slot: per logout, its user's (the jti)
    # and its session's (the sid), read by the guard in one round trip (a pipeline over the nodes).
    sync = redis.RedisCluster(host="127.0.0.1", port=cluster[0])
    keys = list(sync.scan_iter(match="signout:*"))
    assert len(keys) == 12
    assert all(int(sync.ttl(k)) > 0 for k in keys)
    sync.close()


def test_cluster_client_passed_in_on_one_loop(cluster: list[int], make_token: TokenFactory) -> None:
    from redis.asyncio.cluster import RedisCluster

    client = RedisCluster(host="127.0.0.1", port=cluster[0])
    token = make_token(sub="cluster-single", jti="cj")
    app = SignOutMiddleware(starlette_app(), key=SECRET, redis=client, store_timeout=2.0)  # discovery: see above
    with TestClient(app, base_url="https://t") as c:
        assert c.post("/auth/logout", headers=bearer(token)).status_code == 200
        assert c.get("/me", headers=bearer(token)).status_code == 401


def test_cluster_sync_client_for_a_wsgi_app(cluster: list[int], make_token: TokenFactory) -> None:
    """A WSGI app on a sync ``RedisCluster``: logouts are written (redis-py 8's sync cluster
    pipeline has an ``eval()`` of its own that takes no script) and the guard refuses them."""
    from werkzeug.test import Client

    client = redis.RedisCluster(host="127.0.0.1", port=cluster[0])
    app = SignOutWSGIMiddleware(wsgi_app(), key=SECRET, redis=client, key_prefix="wsgi", store_timeout=2.0)
    c = Client(app)
    users = [make_token(sub=f"wsgi-{i}", sid=f"ws-{i}", jti=f"wj-{i}") for i in range(8)]
    for token in users[::2]:
        assert c.post("/auth/logout", headers=bearer(token)).status_code == 200
    assert c.post("/auth/logout-all", headers=bearer(users[1])).status_code == 200
    for i, token in enumerate(users):
        assert c.get("/me", headers=bearer(token)).status_code == (401 if i % 2 == 0 or i == 1 else 200), i
    keys = list(client.scan_iter(match="wsgi:*"))
    # Per logout (logout-all too: it ends the session it came from) its user's bucket and its session's.
    assert len(keys) == 10
    nodes: Any = client  # redis-py leaves get_node_from_key untyped
    assert len({nodes.get_node_from_key(k).name for k in keys}) > 1  # spread over the primaries
    assert all(int(client.ttl(k)) > 0 for k in keys)
    client.close()


@pytest.fixture(scope="module")
def sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    folder = tmp_path_factory.mktemp("sentinel")
    master, sentinel_port = free_port(), free_port()
    conf = folder / "sentinel.conf"
    conf.write_text(
        f"port {sentinel_port}\nbind 127.0.0.1\nsentinel monitor signout-test 127.0.0.1 {master} 1\n"
        "sentinel down-after-milliseconds signout-test 5000\n"
    )
    processes = [
        _spawn(["--port", str(master), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]),
        _spawn([str(conf), "--sentinel"]),
    ]
    try:
        wait_for_redis(master, processes[0])
        wait_for_redis(sentinel_port, processes[1])
        yield sentinel_port
    finally:
        for process in processes:
            process.terminate()
            process.wait(10)


def test_sentinel_master_client(sentinel: int, make_token: TokenFactory) -> None:
    from redis.asyncio.sentinel import Sentinel

    def factory() -> Any:
        return Sentinel([("127.0.0.1", sentinel)], socket_timeout=0.5).master_for("signout-test")  # type: ignore[no-untyped-call]

    # Each request runs on a fresh loop, so each first asks the sentinel where the master is: the
    # default 0.25 s bound on a check is tight for that two-step connect late in a long test run.
    app = SignOutMiddleware(starlette_app(), key=SECRET, redis=factory, store_timeout=2.0)
    c = TestClient(app, base_url="https://t")
    token = make_token(sub="sentinel-user")
    assert c.get("/me", headers=bearer(token)).status_code == 200
    assert c.post("/auth/logout", headers=bearer(token)).status_code == 200
    assert c.get("/me", headers=bearer(token)).status_code == 401
