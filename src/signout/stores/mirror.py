"""An opt-in local mirror of the Redis denylist: guard checks without a round trip.

``local_mirror=True`` keeps every live revocation in this process's memory.
A background thread subscribes to the store's change channel (every write's
script publishes the bucket it changed), then copies every bucket once, then
re-reads each bucket it hears about. While it is in sync, checks are answered
from memory; until the first copy is done, and from the moment the
subscription is lost until a fresh copy is done, checks go to Redis directly.

The trade-off, documented and measured (lag: ``benchmarks/bench_store.py
--parts lag``; overhead: the ``signout-mirror`` row of ``bench_guard.py``): a
revocation written by another instance is seen here after the pub/sub hop and
one ``HGETALL`` (a millisecond or so on a LAN), not on the very next request;
and a silently dead subscription is noticed within ``2 * ping_every`` seconds
(no PONG). While the serving loop keeps the GIL busy, the mirror's thread may
wait for it: the lag then grows (p99 227 ms measured on a saturated loop).
Revocations written by this instance are applied locally at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

import redis
import redis.client

from ..errors import StoreError
from ..layout import Lookup, Write
from .base import Value
from .memory import MemoryStore
from .redis import RedisStore, changes_channel

log = logging.getLogger("signout")


class MirrorStore:
    """A ``RedisStore`` with a local, pub/sub-maintained copy of every bucket under ``prefix``."""

    def __init__(self, redis_store: RedisStore, *, prefix: str, ping_every: float = 1.0) -> None:
        if not redis_store.serves("sync"):
            raise StoreError("local_mirror needs redis_url= (or a sync client): its thread reads Redis synchronously")
        self.redis = redis_store
        self._prefix = prefix
        self._channel = changes_channel(prefix)
        self._ping_every = ping_every
        self._local = MemoryStore(warn=False)
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        #: Full copies made so far (1 after start; +1 after each loss).
        self.resyncs = 0

    @property
    def in_sync(self) -> bool:
        return self._ready.is_set()

    def start(self) -> None:
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._stop.clear()
                self._thread = threading.Thread(target=self._run, name="signout-mirror", daemon=True)
                self._thread.start()

    def close(self) -> None:
        """Stop following (the thread ends within ``ping_every``); checks go to Redis directly."""
        self._stop.set()
        self._ready.clear()

    async def aclose(self) -> None:
        self.close()
        await self.redis.aclose()

    def wait_in_sync(self, timeout: float) -> bool:
        self.start()
        return self._ready.wait(timeout)

    # ---- the store protocol ----------------------------------------------

    async def fetch(self, lookups: Sequence[Lookup], now: float) -> list[list[Value]]:
        if self._ready.is_set():
            return self._local.fetch_sync(lookups, now)
        self.start()
        return await self.redis.fetch(lookups, now)

    async def write(self, writes: Sequence[Write], now: float) -> None:
        await self.redis.write(writes, now)
        self._local.write_sync(writes, now)  # our own revocations count at once

    def fetch_sync(self, lookups: Sequence[Lookup], now: float) -> list[list[Value]]:
        if self._ready.is_set():
            return self._local.fetch_sync(lookups, now)
        self.start()
        return self.redis.fetch_sync(lookups, now)

    def write_sync(self, writes: Sequence[Write], now: float) -> None:
        self.redis.write_sync(writes, now)
        self._local.write_sync(writes, now)

    def serves(self, mode: str) -> bool:
        return self.redis.serves(mode)

    # ---- the thread ----------------------------------------------------

    def _run(self) -> None:
        backoff = 0.05
        while not self._stop.is_set():
            try:
                self._follow()
                backoff = 0.05
            except (redis.RedisError, OSError, StoreError) as exc:
                self._ready.clear()
                log.warning("signout: local mirror lost Redis (%s); checking Redis directly until resynced", exc)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 2.0)

    def _follow(self) -> None:
        client: Any = self.redis.sync_client()
        # redis-py reconnects a dropped subscription by itself and re-subscribes,
        # silently: whatever was published in between is lost to us. Count the
        # connects, and treat any after the first as a loss that needs a resync.
        pubsub = _CountingPubSub(client.connection_pool, ignore_subscribe_messages=True)
        try:
            # Subscribe before copying, so no change between the two is missed.
            pubsub.subscribe(self._channel)
            seen = pubsub.connects
            self._copy_all(client)
            self.resyncs += 1
            self._ready.set()
            last_ping = last_pong = time.monotonic()
            while not self._stop.is_set():
                message = pubsub.get_message(timeout=self._ping_every / 2)
                if pubsub.connects != seen:
                    raise StoreError("the subscription was dropped and silently renewed")
                now = time.monotonic()
                if message is not None:
                    if message.get("type") == "message":
                        self._refresh(client, message["data"])
                    elif message.get("type") == "pong":
                        last_pong = now
                if now - last_pong > 2 * self._ping_every:
                    # A network that drops packets without closing the socket
                    # raises nothing: only a missing PONG tells.
                    raise StoreError(f"no PONG for {now - last_pong:.1f} s")
                if now - last_ping >= self._ping_every:
                    pubsub.ping()
                    last_ping = now
        finally:
            self._ready.clear()
            pubsub.close()

    def _copy_all(self, client: Any) -> None:
        self._local.clear()
        for key in client.scan_iter(match=f"{self._prefix}:{{*", count=1000):
            self._refresh(client, key)

    def _refresh(self, client: Any, key: bytes | str) -> None:
        name = key.decode() if isinstance(key, bytes) else key
        fields = client.hgetall(name)
        self._local.replace_sync(name, fields, time.time())


class _CountingPubSub(redis.client.PubSub):
    connects = 0

    def on_connect(self, connection: Any) -> None:
        self.connects += 1
        super().on_connect(connection)
