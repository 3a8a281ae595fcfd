"""How the Redis store reaches Redis through redis-py: its clients' timeouts and retries, a client
cloned for another event loop, where a client connects (for log lines), and which failures
may have let a write through."""

from __future__ import annotations

from typing import Any, Union
from urllib.parse import urlsplit, urlunsplit

import redis
import redis.asyncio as aredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.exceptions import MaxConnectionsError
from redis.retry import Retry

from ...errors import StoreError

AsyncClient = Union["aredis.Redis", "aredis.RedisCluster"]
SyncClient = Union["redis.Redis", "redis.RedisCluster"]
# RuntimeError: asyncio's "Event loop is closed" and kin, from a connection
# that outlived its loop; a store failure, never a 500.


def may_have_landed(exc: BaseException) -> bool:
    """Whether a write that failed with ``exc`` may still have reached Redis.

    Refused for sure: Redis answered with an error (OOM, READONLY, NOPERM...),
    or no connection was made (redis-py says "connecting to"), or the pool had
    none to give. Anything else (a timeout, a connection lost mid-call) may
    have happened after the command was sent.
    """
    if isinstance(exc, (redis.ResponseError, redis.AuthenticationError, MaxConnectionsError)):
        return False
    return not (isinstance(exc, redis.ConnectionError | redis.TimeoutError) and "connecting to" in str(exc).lower())


def where_of_url(url: str) -> str:
    """``url`` without its credentials and query (``?password=`` is valid there)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


def where_of_client(client: Any) -> str:
    """Where a redis-py client connects, as far as it says (never its credentials)."""
    if isinstance(client, (redis.RedisCluster, aredis.RedisCluster)):
        nodes = [f"{n.host}:{n.port}" for n in client.get_nodes()[:3]]
        return "redis cluster " + ",".join(nodes)
    pool = getattr(client, "connection_pool", None)
    service = getattr(pool, "service_name", None)
    if service is not None:
        return f"sentinel service {service!r}"
    options: dict[str, Any] = getattr(pool, "connection_kwargs", {})
    if options.get("path"):
        return f"unix://{options['path']}"
    return f"redis://{options.get('host', '?')}:{options.get('port', '?')}/{options.get('db', 0)}"


def with_timeout(client: SyncClient, timeout: float) -> SyncClient:
    """A sync client bounded by ``store_timeout``: nothing else stops a WSGI worker waiting on Redis.

    A plain ``redis.Redis`` is re-pooled (same server, credentials and options)
    with ``store_timeout`` as its socket timeout and one quick reconnect: redis-py
    8's default retries a timeout ten times with backoff, close to a minute
    against a silent server. Any other client (Cluster, Sentinel) is used as
    given: set its timeouts and retries yourself.
    """
    if type(client) is not redis.Redis or type(client.connection_pool) is not redis.ConnectionPool:
        return client
    pool = client.connection_pool
    kwargs = {**pool.connection_kwargs, "socket_timeout": timeout, "retry": sync_retry()}
    if kwargs.get("socket_connect_timeout") is None:
        kwargs["socket_connect_timeout"] = timeout
    fresh = redis.ConnectionPool(connection_class=pool.connection_class, max_connections=pool.max_connections, **kwargs)
    return redis.Redis(connection_pool=fresh)


def async_retry() -> AsyncRetry:
    # redis.asyncio needs its own Retry class: a sync one silently never retries there.
    return AsyncRetry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,))


def sync_retry() -> Retry:
    # One immediate retry, of connection errors only: it reconnects a connection
    # the server dropped (restart, failover); a timeout retried would double the wait.
    return Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,))


#: What a node's connections need to be reached by another client: who we are, and TLS.
_SEED_OPTIONS = ("username", "password", "credential_provider", "client_name", "protocol")
_TLS_OPTIONS = (
    "ssl_keyfile", "ssl_certfile", "ssl_cert_reqs", "ssl_ca_certs", "ssl_ca_data", "ssl_ca_path",
    "ssl_check_hostname", "ssl_password", "ssl_min_version", "ssl_ciphers",
)  # fmt: skip


def cluster_seeds(client: object) -> list[redis.Redis] | None:
    """Sync clients, one per node a cluster client knows (no I/O: it is not asked anything), with
    its credentials and TLS; ``None`` for a client that is not a cluster's. The local mirror's
    follower finds the cluster from them, on clients of its own."""
    if isinstance(client, redis.RedisCluster):
        known: Any = client  # redis-py leaves its sync cluster's get_nodes untyped
        return [known.get_redis_connection(node) for node in known.get_nodes()]
    if not isinstance(client, aredis.RedisCluster):
        return None
    nodes = client.get_nodes() or list(client.nodes_manager.startup_nodes.values())
    seeds = []
    for node in nodes:
        given = node.connection_kwargs
        options: dict[str, Any] = {k: given[k] for k in _SEED_OPTIONS if k in given}
        if issubclass(node.connection_class, aredis.SSLConnection):
            options.update({k: given[k] for k in _TLS_OPTIONS if k in given}, ssl=True)
        seeds.append(redis.Redis(host=node.host, port=int(node.port), **options))
    return seeds


def clone(client: AsyncClient) -> AsyncClient:
    """The same server and settings, with a pool of this loop's own."""
    if type(client) is aredis.Redis and type(client.connection_pool) is aredis.ConnectionPool:
        pool = client.connection_pool
        fresh = aredis.ConnectionPool(
            connection_class=pool.connection_class, max_connections=pool.max_connections, **pool.connection_kwargs
        )
        return aredis.Redis(connection_pool=fresh)
    raise StoreError(
        "this Redis client belongs to another event loop; pass redis_url= or a factory "
        "(lambda: RedisCluster(...)) so each loop gets its own connections"
    )
