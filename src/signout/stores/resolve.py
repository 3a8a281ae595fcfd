"""Turn the ``redis_url`` / ``redis`` / ``store`` kwargs into one store."""

from __future__ import annotations

from ..errors import ConfigError
from .base import ForeignStore, Store
from .memory import MemoryStore


def resolve_store(
    *, redis_url: object, redis: object, store: object, timeout: float, local_mirror: object = False, prefix: str = ""
) -> Store:
    given = [
        name for name, value in (("redis_url", redis_url), ("redis", redis), ("store", store)) if value is not None
    ]
    if len(given) > 1:
        raise ConfigError(given[1], f"give only one of redis_url, redis and store (got {', '.join(given)})")
    if not isinstance(local_mirror, bool):
        raise ConfigError("local_mirror", "must be True or False")
    if local_mirror and redis_url is None and redis is None:
        raise ConfigError("local_mirror", "mirrors a Redis store: give redis_url= (or redis=) too")
    if store is not None:
        if isinstance(store, Store):
            return store
        if not (hasattr(store, "fetch") or hasattr(store, "fetch_sync")):
            raise ConfigError("store", "must be a MemoryStore, a RedisStore or implement the store protocol")
        return ForeignStore(store, timeout)
    if redis_url is None and redis is None:
        return MemoryStore()
    try:
        from .redis import RedisStore
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ConfigError(given[0], "needs redis-py: pip install 'signout[redis]'") from exc
    if redis_url is not None and not isinstance(redis_url, str):
        raise ConfigError("redis_url", "must be a string such as 'redis://localhost:6379/0'")
    chosen = RedisStore(redis_url if redis_url is not None else redis, timeout=timeout)  # type: ignore[arg-type]
    if not local_mirror:
        return chosen
    from .mirror import MirrorStore

    if not chosen.serves("sync") and not chosen.on_cluster:
        raise ConfigError(
            "local_mirror",
            "needs redis_url=, a sync redis client or a Redis Cluster client: the mirror's thread is synchronous",
        )
    return MirrorStore(chosen, prefix=prefix)
