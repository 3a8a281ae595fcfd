"""An opt-in local mirror of the Redis denylist: guard checks without a round trip.

``local_mirror=True`` keeps every live revocation in this process's memory.
A *follower* subscribes to the store's change channel (every write's script
publishes the bucket it changed), then copies every bucket once (``SCAN`` +
``HGETALL``), then re-reads each bucket it hears about. While it is in sync,
checks are answered from memory; until the first copy is done, and from the
moment the subscription is lost until a fresh copy is done, checks go to
Redis directly (and fail closed, as any Redis check does). A silently dead
subscription is noticed within ``2 * ping_every`` seconds (no PONG).
Revocations written by this instance are applied locally at once.

There are two followers; one is live at a time, and it serves every caller:

* **on the event loop** (ASGI): a task on the loop that serves the requests,
  with ``redis.asyncio`` pub/sub on connections of its own. The first check
  made on a loop starts it. It belongs to that loop (SPEC section 5): when the
  loop stops or closes, or the task ends, the mirror is out of sync at once,
  and the next check, from whichever loop, starts a follower on its own loop.
  Its connections are never touched from another loop.
* **in a thread** (WSGI, or ``wait_in_sync()`` from sync code): redis-py's
  sync pub/sub.

Why the loop: a thread has to win the GIL from the serving loop, and on a
loop kept busy without pause it waits. Revocation lag between two instances
(``benchmarks/bench_store.py --parts lag``, p99): the thread 1.3-1.7 ms with
an idle loop but 235-712 ms with a saturated one; the task 1.8-2.7 ms idle
and 0.6-5.5 ms saturated (usually under 4.5). The task's lag is about four
loop turns (the message, the ``HGETALL`` sent, its reply, the apply), so it
grows with the length of a turn: p99 4.4-8.5 ms with 32 requests per turn.
The overhead of a check in sync: the ``signout-mirror`` row of ``bench_guard.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio as aredis
import redis.asyncio.client
import redis.client
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff

from ..errors import StoreError
from ..layout import Lookup, Write
from .base import Value
from .memory import MemoryStore
from .redis import RedisStore, changes_channel

log = logging.getLogger("signout")

#: Buckets re-read in one pipeline (one await): bounds how long applying them holds the loop.
_BURST = 256
#: Buckets asked for per ``SCAN`` step of a full copy.
_SCAN_COUNT = 1000
#: Seconds before retrying after a loss; doubled on each failed attempt, reset by a full copy.
_FIRST_BACKOFF, _LAST_BACKOFF = 0.05, 2.0
#: What a lost or broken connection raises; anything else is a bug and is logged with its traceback.
_LOSSES = (redis.RedisError, OSError, StoreError, asyncio.TimeoutError)


class MirrorStore:
    """A ``RedisStore`` with a local, pub/sub-maintained copy of every bucket under ``prefix``."""

    def __init__(self, redis_store: RedisStore, *, prefix: str, ping_every: float = 1.0) -> None:
        if not redis_store.serves("sync"):
            raise StoreError("local_mirror needs redis_url= (or a sync client): its thread reads Redis synchronously")
        self.redis = redis_store
        self._setup = _Setup(changes_channel(prefix), f"{prefix}:{{*", ping_every, self._copied)
        self._connect = _loop_clients(redis_store, ping_every)
        self._follower: _Follower | None = None
        self._start_lock = threading.Lock()
        #: Full copies made so far (1 after start; +1 after each loss or new follower).
        self.resyncs = 0

    @property
    def in_sync(self) -> bool:
        follower = self._follower
        return follower is not None and follower.in_sync()

    @property
    def following(self) -> str | None:
        """``"loop"`` or ``"thread"``: the follower keeping the copy now; ``None`` when none is live."""
        follower = self._follower
        return follower.kind if follower is not None and follower.alive() else None

    def start(self) -> None:
        """Follow from a thread, unless a follower is live already (sync callers: WSGI, scripts)."""
        self._ensure(lambda: _ThreadFollower(self._setup, self.redis.sync_client))

    def start_on_loop(self) -> None:
        """Follow from a task on the running loop, unless a follower is live already."""
        connect = self._connect
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            connect = None
        if connect is None:  # no loop here, or no URL to open asyncio connections with
            self.start()
        else:
            self._ensure(lambda: _LoopFollower(self._setup, connect))

    def wait_in_sync(self, timeout: float) -> bool:
        """From sync code (never on the follower's loop): start following, wait for the first copy."""
        self.start()
        follower = self._follower
        return follower is not None and follower.ready.wait(timeout)

    async def await_in_sync(self, timeout: float) -> bool:
        """On a loop: start following here (unless a follower is live), wait for the first copy."""
        self.start_on_loop()
        deadline = time.monotonic() + timeout
        while not self.in_sync:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.002)
        return True

    def close(self) -> None:
        """Stop following (from any thread); checks go to Redis until a later one starts a follower."""
        follower = self._detach()
        if follower is not None:
            follower.stop()

    async def aclose(self) -> None:
        """Lifespan shutdown: stop the follower (a task on this loop is awaited, its connections closed)."""
        follower = self._detach()
        if follower is not None:
            await follower.aclose()
        await self.redis.aclose()

    # ---- the store protocol ----------------------------------------------

    def fetch_local(self, lookups: Sequence[Lookup], now: float) -> list[list[Value]] | None:
        """The answer from memory while in sync (no I/O); ``None`` otherwise: ask ``fetch``."""
        follower = self._follower
        if follower is not None and follower.in_sync():
            return follower.local.fetch_sync(lookups, now)
        self.start_on_loop()
        return None

    async def fetch(self, lookups: Sequence[Lookup], now: float) -> list[list[Value]]:
        rows = self.fetch_local(lookups, now)
        return rows if rows is not None else await self.redis.fetch(lookups, now)

    async def write(self, writes: Sequence[Write], now: float) -> None:
        await self.redis.write(writes, now)
        self._keep_own(writes, now)

    def fetch_sync(self, lookups: Sequence[Lookup], now: float) -> list[list[Value]]:
        follower = self._follower
        if follower is not None and follower.in_sync():
            return follower.local.fetch_sync(lookups, now)
        self.start()
        return self.redis.fetch_sync(lookups, now)

    def write_sync(self, writes: Sequence[Write], now: float) -> None:
        self.redis.write_sync(writes, now)
        self._keep_own(writes, now)

    @property
    def bounds_reads(self) -> bool:
        """Reads that miss the copy go to the Redis store, bounded as it bounds them."""
        return self.redis.bounds_reads

    def serves(self, mode: str) -> bool:
        return self.redis.serves(mode)

    # ---- followers ---------------------------------------------------------

    def _ensure(self, make: Callable[[], _Follower]) -> None:
        with self._start_lock:
            current = self._follower
            if current is not None and current.alive():
                return
            if current is not None:
                current.stop()  # e.g. a task whose loop stopped: it must not resume beside the new one
            self._follower = make()

    def _detach(self) -> _Follower | None:
        with self._start_lock:
            follower, self._follower = self._follower, None
        return follower

    def _keep_own(self, writes: Sequence[Write], now: float) -> None:
        # Our own revocations count at once, without waiting for the pub/sub hop.
        follower = self._follower
        if follower is not None:
            follower.local.write_sync(writes, now)

    def _copied(self) -> None:
        self.resyncs += 1


@dataclass(frozen=True)
class _Setup:
    """What every follower of one mirror is told."""

    channel: str
    pattern: str  # every bucket key: "<prefix>:{..."
    ping_every: float
    copied: Callable[[], None]  # counts full copies (MirrorStore.resyncs)


class _Follower:
    """One follower's copy and in-sync flag, and what both kinds share.

    Each follower fills a copy of its own, so one that ends late (a task on a
    loop that stopped) can never clear or overwrite the copy of its successor.

    Both read their messages alike (``_burst``): when idle, wait for the next
    message and re-read its bucket at once (a lone revocation waits for no
    company, not even one more loop turn); right after a re-read, take all
    that arrived meanwhile without waiting, each bucket once (a burst of
    writes to one bucket costs two ``HGETALL``s, not one per message).
    """

    kind = ""

    def __init__(self, setup: _Setup) -> None:
        self.setup = setup
        self.local = MemoryStore(warn=False)
        # Set by a full copy; cleared the moment the subscription is in doubt.
        self.ready = threading.Event()
        self._backoff = _FIRST_BACKOFF

    def in_sync(self) -> bool:
        return self.ready.is_set()

    def alive(self) -> bool:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        self.stop()

    def _synced(self) -> None:
        self._backoff = _FIRST_BACKOFF
        self.setup.copied()
        self.ready.set()

    def _lost(self, exc: Exception) -> float:
        """Out of sync at once; returns the seconds to wait before the next attempt."""
        self.ready.clear()
        if isinstance(exc, _LOSSES):
            log.warning("signout: local mirror lost Redis (%s); checking Redis directly until resynced", exc)
        else:
            log.error("signout: local mirror failed; checking Redis directly until resynced", exc_info=exc)
        wait, self._backoff = self._backoff, min(self._backoff * 2, _LAST_BACKOFF)
        return wait

    def _take(self, message: dict[str, Any], watchdog: _Watchdog, keys: dict[str, None]) -> None:
        """Note what one pub/sub message says: a bucket to re-read, or a PONG."""
        kind = message.get("type")
        if kind == "message":
            keys[_text(message["data"])] = None  # a dict: each bucket once per burst, in order
        elif kind == "pong":
            watchdog.pong(time.monotonic())

    def _apply(self, keys: Sequence[str], replies: Sequence[dict[bytes, bytes]]) -> None:
        now = time.time()
        for key, fields in zip(keys, replies, strict=True):
            self.local.replace_sync(key, fields, now)


class _Watchdog:
    """PING every ``every`` seconds; a PONG missing for ``2 * every`` means the connection is dead.

    A network that drops packets without closing the socket raises nothing:
    only a missing PONG tells.
    """

    def __init__(self, every: float, now: float) -> None:
        self.every = every
        self.last_ping = self.last_pong = now

    @property
    def wait(self) -> float:
        """How long to wait for a message at most, so no PING is sent late."""
        return self.every / 2

    def pong(self, now: float) -> None:
        self.last_pong = now

    def ping_due(self, now: float) -> bool:
        """Raise when the PONGs stopped; True (and counted as sent) when a PING is due."""
        if now - self.last_pong > 2 * self.every:
            raise StoreError(f"no PONG for {now - self.last_pong:.1f} s")
        if now - self.last_ping >= self.every:
            self.last_ping = now
            return True
        return False


def _check_renewal(pubsub: _CountingPubSub | _CountingAsyncPubSub, seen: int) -> None:
    # redis-py reconnects a dropped subscription by itself and re-subscribes,
    # silently: whatever was published in between is lost to us.
    if pubsub.connects != seen:
        raise StoreError("the subscription was dropped and silently renewed")


def _hgetall_each(pipe: Any, keys: Sequence[str]) -> Any:
    for key in keys:
        pipe.hgetall(key)
    return pipe


def _chunks(keys: Sequence[str]) -> list[Sequence[str]]:
    return [keys[i : i + _BURST] for i in range(0, len(keys), _BURST)]


def _text(key: bytes | str) -> str:
    return key.decode() if isinstance(key, bytes) else key


# ---- the task on the serving loop ---------------------------------------------------------


class _LoopFollower(_Follower):
    """A task on the running loop; its connections are its own and never leave that loop."""

    kind = "loop"

    def __init__(self, setup: _Setup, connect: Callable[[], aredis.Redis]) -> None:
        super().__init__(setup)
        self._connect = connect
        self._stopping = False
        self.loop = asyncio.get_running_loop()
        self.task = self.loop.create_task(self._run(), name="signout-mirror")

    def in_sync(self) -> bool:
        # A loop that stopped or closed runs no follower: its copy is stale from that moment on.
        return self.ready.is_set() and self.loop.is_running()

    def alive(self) -> bool:
        return not self._stopping and not self.task.done() and self.loop.is_running()

    def stop(self) -> None:
        """End the task; callable from any thread (only its own loop touches its connections)."""
        self._stopping = True
        self.ready.clear()
        if self._on_own_loop():
            self.task.cancel()
        elif not self.loop.is_closed():
            with contextlib.suppress(RuntimeError):  # closed in between: nothing runs there any more
                self.loop.call_soon_threadsafe(self.task.cancel)

    async def aclose(self) -> None:
        self.stop()
        if self._on_own_loop():
            await asyncio.wait([self.task])  # wait, not await: its CancelledError is not ours

    def _on_own_loop(self) -> bool:
        try:
            return asyncio.get_running_loop() is self.loop
        except RuntimeError:
            return False

    async def _run(self) -> None:
        try:
            while True:
                try:
                    await self._follow()
                except Exception as exc:  # survive everything: a dead task is restarted at request rate
                    await asyncio.sleep(self._lost(exc))
        finally:
            self.ready.clear()

    async def _follow(self) -> None:
        client = self._connect()
        pubsub = _CountingAsyncPubSub(client.connection_pool, ignore_subscribe_messages=True)
        try:
            # Subscribe before copying, so no change between the two is missed.
            await pubsub.subscribe(self.setup.channel)
            seen = pubsub.connects
            await self._copy_all(client)
            self._synced()
            watchdog = _Watchdog(self.setup.ping_every, time.monotonic())
            keys: dict[str, None] = {}
            while True:
                keys = await self._burst(pubsub, watchdog, waiting=not keys)
                _check_renewal(pubsub, seen)
                await self._refresh(client, list(keys))
                if watchdog.ping_due(time.monotonic()):
                    await pubsub.ping()
        finally:
            self.ready.clear()
            await _close(pubsub, client)

    async def _burst(self, pubsub: _CountingAsyncPubSub, watchdog: _Watchdog, *, waiting: bool) -> dict[str, None]:
        """The buckets to re-read next (the rule: see ``_Follower``)."""
        keys: dict[str, None] = {}
        message = await pubsub.get_message(timeout=watchdog.wait if waiting else 0)
        while message is not None:
            self._take(message, watchdog, keys)
            if waiting or len(keys) >= _BURST:
                break
            message = await pubsub.get_message(timeout=0)
        return keys

    async def _copy_all(self, client: aredis.Redis) -> None:
        self.local.clear()
        cursor = 0
        while True:
            cursor, found = await client.scan(cursor, match=self.setup.pattern, count=_SCAN_COUNT)
            await self._refresh(client, [_text(k) for k in found])
            if not cursor:
                return

    async def _refresh(self, client: aredis.Redis, keys: Sequence[str]) -> None:
        for chunk in _chunks(keys):  # one await per chunk; the loop serves requests in between
            self._apply(chunk, await _hgetall_each(client.pipeline(transaction=False), chunk).execute())


async def _close(pubsub: _CountingAsyncPubSub, client: aredis.Redis) -> None:
    try:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await client.aclose()
    except Exception as exc:  # a broken connection may fail to close: it is gone either way
        log.debug("signout: local mirror: closing its connections: %s", type(exc).__name__)


def _loop_clients(store: RedisStore, ping_every: float) -> Callable[[], aredis.Redis] | None:
    """Makes the asyncio clients of a loop follower; ``None`` when the store has no URL to open them with.

    Each follower owns one (its pool, on its loop), closed when it ends. No
    retries: any failure means a resync anyway. Every read is bounded by the
    watchdog's patience, so a paused server cannot hold a copy forever.
    RedisStore keeps its URL private; a public accessor there would replace the ``_url`` read.
    """
    url = store._url
    if url is None:
        return None
    patience = 2 * ping_every

    def connect() -> aredis.Redis:
        return aredis.Redis.from_url(
            url, socket_connect_timeout=patience, socket_timeout=patience, retry=AsyncRetry(NoBackoff(), 0)
        )

    return connect


class _CountingAsyncPubSub(redis.asyncio.client.PubSub):
    """Counts connects: any after the subscription's first is a silent renewal (see ``_check_renewal``)."""

    connects = 0

    async def on_connect(self, connection: Any) -> None:
        self.connects += 1
        await super().on_connect(connection)


# ---- the thread (WSGI) -------------------------------------------------------------------


class _ThreadFollower(_Follower):
    """A daemon thread with redis-py's sync pub/sub: for callers with no event loop."""

    kind = "thread"

    def __init__(self, setup: _Setup, client_of: Callable[[], Any]) -> None:
        super().__init__(setup)
        self._client_of = client_of
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="signout-mirror", daemon=True)
        self.thread.start()

    def alive(self) -> bool:
        return not self._stop.is_set() and self.thread.is_alive()

    def stop(self) -> None:
        """The thread ends within ``ping_every / 2``."""
        self._stop.set()
        self.ready.clear()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._follow()
            except Exception as exc:  # survive everything: a dead thread is restarted at request rate
                self._stop.wait(self._lost(exc))

    def _follow(self) -> None:
        client = self._client_of()
        pubsub = _CountingPubSub(client.connection_pool, ignore_subscribe_messages=True)
        try:
            # Subscribe before copying, so no change between the two is missed.
            pubsub.subscribe(self.setup.channel)
            seen = pubsub.connects
            self._copy_all(client)
            self._synced()
            watchdog = _Watchdog(self.setup.ping_every, time.monotonic())
            keys: dict[str, None] = {}
            while not self._stop.is_set():
                keys = self._burst(pubsub, watchdog, waiting=not keys)
                _check_renewal(pubsub, seen)
                self._refresh(client, list(keys))
                if watchdog.ping_due(time.monotonic()):
                    pubsub.ping()
        finally:
            self.ready.clear()
            pubsub.close()

    def _burst(self, pubsub: _CountingPubSub, watchdog: _Watchdog, *, waiting: bool) -> dict[str, None]:
        """The buckets to re-read next (the rule: see ``_Follower``)."""
        keys: dict[str, None] = {}
        message = pubsub.get_message(timeout=watchdog.wait if waiting else 0)
        while message is not None:
            self._take(message, watchdog, keys)
            if waiting or len(keys) >= _BURST:
                break
            message = pubsub.get_message(timeout=0)
        return keys

    def _copy_all(self, client: Any) -> None:
        self.local.clear()
        cursor = 0
        while True:
            cursor, found = client.scan(cursor, match=self.setup.pattern, count=_SCAN_COUNT)
            self._refresh(client, [_text(k) for k in found])
            if not cursor:
                return

    def _refresh(self, client: Any, keys: Sequence[str]) -> None:
        for chunk in _chunks(keys):
            self._apply(chunk, _hgetall_each(client.pipeline(transaction=False), chunk).execute())


class _CountingPubSub(redis.client.PubSub):
    """Counts connects: any after the subscription's first is a silent renewal (see ``_check_renewal``)."""

    connects = 0

    def on_connect(self, connection: Any) -> None:
        self.connects += 1
        super().on_connect(connection)
