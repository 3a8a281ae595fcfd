"""``RedisStore``: revocations in Redis, one shared hash per bucket, read with one ``HMGET``.

The key layout is in ``signout.layout``. Writes go through the merge script
(``script``), so merging a field, pruning the expired ones and setting the
key's TTL happen atomically; a hash field has no TTL of its own before Redis 7.4.

Reads from a ``redis://`` or ``unix://`` URL go through the lean connections of
``stores.wire`` (the guard's ``HMGET`` costs well under half of what it costs
through redis-py); everything else, writes, ``rediss://`` and the clients you
pass (cluster, sentinel), goes through redis-py (``clients``). The calls of one
event-loop tick go as one pipeline (``batch``), and every call keeps the
store's deadline (``stores.base``).

An asyncio connection belongs to the event loop that opened it, so async
connections are kept per loop (SPEC section 5): a URL or a factory makes them
per loop; a client you pass is used on the loop that first uses it, and a plain
``redis.asyncio.Redis`` is cloned (same pool settings) for any other loop.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import weakref
from collections.abc import Callable, Coroutine, Generator, Sequence
from typing import Any

import redis
import redis.asyncio as aredis
import redis.asyncio.cluster
import redis.cluster
from redis.exceptions import NoPermissionError, NoScriptError

from ...drive import run, run_sync
from ...errors import ConfigError, StoreError, describe
from ...layout import Lookup, Write
from ..base import Mode, Rows, Store, Value, within
from ..wire.blocking import SyncReader
from ..wire.pipelined import AsyncReader
from ..wire.resp import Address
from .batch import Coalescer
from .clients import (
    AsyncClient,
    SyncClient,
    async_retry,
    clone,
    cluster_seeds,
    may_have_landed,
    sync_retry,
    where_of_client,
    where_of_url,
    with_timeout,
)
from .script import CLUSTER_PIPES, claimed, placed, queue_merges

_FAILURES = (redis.RedisError, OSError, asyncio.TimeoutError, RuntimeError)
# A merge without its I/O: yields (pipeline, errors raise), is sent the results, returns the replies.
Merging = Generator[tuple[Any, bool], list[Any], list[Any]]
# Seconds redis-py may take per command to pack it and parse its reply in a pipeline: 1,000
# logouts (2,000 merges: a user's bucket and a session's) took 53-78 ms on 2 idle vCPUs, 183 ms
# cold (each EVALSHA refused, then sent whole), Redis's own time included; 100 us leaves room
# for a busy machine.
_CLIENT_COST = 100e-6
# Connections an asyncio client from a URL may open per loop; beyond them a call waits.
_POOL_SIZE = 64


class _LoopLinks:
    """What one event loop holds of this store: the reader and the redis-py client, each made on first use."""

    __slots__ = ("client", "merges", "reader", "reads")

    def __init__(self) -> None:
        self.client: AsyncClient | None = None
        self.reader: AsyncReader | None = None
        # The calls of one tick, coalesced into one pipeline (redis-py reads; every write).
        self.reads: Coalescer[Lookup, list[Value]] | None = None
        self.merges: Coalescer[tuple[Write, float], Any] | None = None


class RedisStore(Store):
    """A Redis revocation store.

    ``source`` is a URL (``redis://``, ``rediss://``, ``unix://``), a client
    (``redis.asyncio.Redis``, ``redis.asyncio.RedisCluster``, a Sentinel
    ``master_for(...)`` client, or their sync twins for WSGI), or a
    zero-argument factory returning an asyncio client (called once per loop).

    From a ``redis://`` or ``unix://`` URL, reads use ``stores.wire``; the URL's
    host, port, db, username and password mean what they mean to redis-py
    (its parser reads them). ``coalesce=False`` sends each read on its own
    (tests and measurements; it costs round trips under load).
    """

    def __init__(
        self,
        source: str | AsyncClient | SyncClient | Callable[[], AsyncClient],
        *,
        timeout: float = 0.25,
        coalesce: bool = True,
    ) -> None:
        self._url: str | None = None
        self._factory: Callable[[], AsyncClient] | None = None
        self._given: AsyncClient | None = None
        self._given_loop: asyncio.AbstractEventLoop | None = None
        self._sync: SyncClient | None = None
        self._timeout = timeout
        #: Logouts name the merge script by its digest, until an ACL refuses EVALSHA.
        self._by_digest = True
        #: Where the lean reader connects; ``None`` when reads go through redis-py.
        self._address: Address | None = None
        self._sync_reader: SyncReader | None = None
        if isinstance(source, str):
            if not source.startswith(("redis://", "rediss://", "unix://")):
                raise ConfigError("redis_url", "must start with redis://, rediss:// or unix://")
            self._url = source
            address = Address.from_url(source)  # a bad URL fails here, not on the first request
            if not source.startswith("rediss://"):  # TLS stays with redis-py
                self._address = address
                self._sync_reader = SyncReader(address, timeout=timeout)
        elif isinstance(source, (aredis.Redis, aredis.RedisCluster)):
            self._given = source
        elif isinstance(source, (redis.Redis, redis.RedisCluster)):
            self._sync = with_timeout(source, timeout)
        elif callable(source):
            self._factory = source
        else:
            raise ConfigError("redis", f"expected a Redis URL, client or factory, not {type(source).__name__}")
        self._links_lock = threading.Lock()
        self._per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopLinks] = weakref.WeakKeyDictionary()
        self._hot: tuple[asyncio.AbstractEventLoop, AsyncReader] | None = None
        #: Calls started in one loop tick share one pipeline (``batch``).
        self._coalesce = coalesce

    @property
    def url(self) -> str | None:
        """The URL this store was built from; ``None`` when it was given a client or a factory."""
        return self._url

    @property
    def address(self) -> Address | None:
        """Where the lean reader connects (``redis://``, ``unix://``); ``None`` when redis-py does all I/O."""
        return self._address

    @property
    def timeout(self) -> float:
        return self._timeout

    @property
    def where(self) -> str:
        """The store's address for log lines: URL without credentials, or what the client says."""
        if self._url is not None:
            return where_of_url(self._url)
        client = self._sync if self._sync is not None else self._given
        return where_of_client(client) if client is not None else "a client factory"

    def _failure(self, what: str, exc: BaseException) -> StoreError:
        """``exc`` (from redis-py or a socket) as the ``StoreError`` a log line can diagnose."""
        return StoreError(
            f"redis {what} failed: {describe(exc)}", where=self.where, unsure=what == "write" and may_have_landed(exc)
        )

    def _located(self, exc: StoreError) -> StoreError:
        if exc.where is not None:
            return exc
        return StoreError(exc.message, where=self.where, unsure=exc.unsure)

    def serves(self, mode: Mode) -> bool:
        """Whether this store can serve ``"async"`` (ASGI) or ``"sync"`` (WSGI) callers."""
        if mode == "sync":
            return self._url is not None or self._sync is not None
        return self._url is not None or self._given is not None or self._factory is not None

    # ---- clients -------------------------------------------------------

    def _options(self, *, asyncio_client: bool) -> dict[str, Any]:
        # One quick retry reconnects a connection the server dropped (restart,
        # failover). An asyncio call is bounded by this store (``within``), so the
        # client needs no per-read timeout of its own (each one arms another
        # asyncio timer); the sync client has nothing else to stop it.
        retry = async_retry() if asyncio_client else sync_retry()
        options: dict[str, Any] = {"socket_connect_timeout": self._timeout, "retry": retry}
        if not asyncio_client:
            options["socket_timeout"] = self._timeout
        return options

    def _links(self, loop: asyncio.AbstractEventLoop) -> _LoopLinks:
        links = self._per_loop.get(loop)
        if links is None:
            # Loops in several threads (SPEC section 5) may miss at once: one at a time.
            with self._links_lock:
                links = self._per_loop.get(loop)
                if links is None:
                    # A connection holds its loop, so weak keys alone would never let
                    # go of a closed loop: drop those entries on a miss.
                    for stale in [old for old in list(self._per_loop) if old.is_closed()]:
                        gone = self._per_loop.pop(stale, None)
                        if gone is not None and gone.reader is not None:
                            gone.reader.discard()
                    links = self._per_loop[loop] = _LoopLinks()
        return links

    def _reader(self, address: Address, loop: asyncio.AbstractEventLoop) -> AsyncReader:
        links = self._links(loop)
        reader = links.reader
        if reader is None:
            reader = links.reader = AsyncReader(
                address, timeout=self._timeout, coalesce=self._coalesce, where=self.where
            )
        return reader

    def _client(self) -> AsyncClient:
        loop = asyncio.get_running_loop()
        if self._given is not None and (self._given_loop is None or self._given_loop is loop):
            self._given_loop = loop
            return self._given  # yours: used as given, never closed by us
        links = self._links(loop)
        if links.client is None:
            links.client = self._new_client()
        return links.client

    def _new_client(self) -> AsyncClient:
        if self._given is not None:
            return clone(self._given)
        if self._factory is not None:
            return self._factory()
        if self._url is not None:
            # A call beyond the pool's connections waits for one (bounded by the call's deadline)
            # instead of failing at once, as the default pool does past 100.
            pool = aredis.BlockingConnectionPool.from_url(
                self._url, max_connections=_POOL_SIZE, timeout=self._timeout, **self._options(asyncio_client=True)
            )
            return aredis.Redis(connection_pool=pool)
        raise StoreError("this RedisStore holds a sync client; give an asyncio client for ASGI")

    @functools.cached_property
    def on_cluster(self) -> bool:
        """Whether this store's client is a Redis Cluster's (a factory is called once to look)."""
        client = self._factory() if self._factory is not None else self._sync if self._sync is not None else self._given
        return isinstance(client, (redis.RedisCluster, aredis.RedisCluster))

    def cluster_seeds(self) -> list[redis.Redis] | None:
        """Sync clients for the nodes this store's Redis Cluster client knows (``clients.cluster_seeds``);
        ``None`` when the store is not on a cluster. A factory is called for a client to look at."""
        if self._factory is not None:
            return cluster_seeds(self._factory())
        return cluster_seeds(self._sync if self._sync is not None else self._given)

    def sync_client(self) -> SyncClient:
        """The sync client (made from the URL on first use); for WSGI, the CLI and scripts."""
        if self._sync is None:
            if self._url is None:
                raise StoreError("this RedisStore holds an asyncio client; give a sync client or a URL for WSGI")
            self._sync = redis.Redis.from_url(self._url, **self._options(asyncio_client=False))
        return self._sync

    # ---- async ---------------------------------------------------------

    def fetch(self, lookups: Sequence[Lookup], now: float) -> Coroutine[Any, Any, Rows]:
        # Not a coroutine of its own: the reader's, handed on, is the only frame alive while
        # the guard's read waits (AsyncReader.hmget_many says why that matters). The reader
        # pipelines, coalesces, keeps the deadline and names this store in its errors.
        address = self._address
        if address is None:
            return self._fetch_redis_py(lookups)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # made before its loop runs: find the loop's reader once awaited
            return self._fetch_later(address, lookups)
        hot = self._hot
        if hot is not None and hot[0] is loop:
            return hot[1].hmget_many(lookups)  # type: ignore[return-value]  # list[bytes|None] rows
        reader = self._reader(address, loop)
        # The loop that read last, and its reader: the usual read skips the per-loop lookup.
        self._hot = (loop, reader)
        return reader.hmget_many(lookups)  # type: ignore[return-value]

    async def _fetch_later(self, address: Address, lookups: Sequence[Lookup]) -> Rows:
        return await self._reader(address, asyncio.get_running_loop()).hmget_many(lookups)  # type: ignore[return-value]

    async def _fetch_redis_py(self, lookups: Sequence[Lookup]) -> Rows:
        if not self._coalesce:
            return await self._fetch_now(lookups)
        links = self._links(asyncio.get_running_loop())
        if links.reads is None:
            links.reads = Coalescer(self._fetch_now)
        return await links.reads(lookups)

    async def _fetch_now(self, lookups: Sequence[Lookup]) -> Rows:
        """The redis-py read (``rediss://``, client or factory stores; the rest go to the lean reader)."""
        try:
            return await within(self._fetch_rows(lookups), self._budget(len(lookups)), lambda: self._late("read"))
        except _FAILURES as exc:
            raise self._failure("read", exc) from exc

    async def _fetch_rows(self, lookups: Sequence[Lookup]) -> Rows:
        call, many = _hmgets(self._client(), lookups)
        return _rows(await call(), many)

    async def write(self, writes: Sequence[Write], now: float) -> None:
        await self._merge(writes, now)

    async def claim(self, write: Write, now: float) -> Value:
        """Merge one claim (``layout.claim_value``); the value its field held before, ``None`` if none."""
        return claimed(await self._merge((write,), now))

    async def _merge(self, writes: Sequence[Write], now: float) -> list[Any]:
        """Run the merge script on every write (with the other writes of this tick); each one's reply."""
        if not self._coalesce:
            return await self._merge_now(writes, now)
        links = self._links(asyncio.get_running_loop())
        if links.merges is None:
            links.merges = Coalescer(self._merge_batch)
        return await links.merges([(w, now) for w in writes])

    async def _merge_batch(self, batch: Sequence[tuple[Write, float]]) -> list[Any]:
        # One "now" per pipeline: the earliest, as the script itself takes the earlier clock.
        return await self._merge_now([w for w, _ in batch], min(now for _, now in batch))

    async def _merge_now(self, writes: Sequence[Write], now: float) -> list[Any]:
        try:
            # A server without the script refuses every EVALSHA at once; then each goes whole:
            # twice the commands for the client to pack and parse, in one deadline.
            commands = len(writes) * (2 if self._by_digest else 1)
            merging = run(self._merging(self._client(), writes, now), _execute)
            return await within(merging, self._budget(commands), lambda: self._late("write"))
        except _FAILURES as exc:
            raise self._failure("write", exc) from exc

    def _merging(self, client: Any, writes: Sequence[Write], now: float) -> Merging:
        """The merge, without its I/O (a ``drive`` plan): yields each pipeline to execute (and
        whether its errors raise), is sent its results, returns each write's reply in order."""
        pipe = client.pipeline(transaction=False)
        replies: list[Any] = [None] * len(writes)
        pending = list(range(len(writes)))
        if self._by_digest and not isinstance(pipe, CLUSTER_PIPES):
            results = yield queue_merges(pipe, writes, now, whole=False), False
            pending = self._refused(results, replies)
            if not pending:
                return replies
            pipe = client.pipeline(transaction=False)
        # Errors raise here, so redis-py's cluster pipelines still retry a failover.
        results = yield queue_merges(pipe, [writes[i] for i in pending], now, whole=True), True
        return placed(replies, pending, results)

    def _budget(self, commands: int) -> float:
        """The deadline of one redis-py pipeline: ``timeout``, plus the client's own time to pack
        and parse a large one (a burst's batch of thousands), which is not time waiting for Redis."""
        return self._timeout + commands * _CLIENT_COST

    def _late(self, what: str) -> StoreError:
        # Cut off by the deadline: a write may already be on its way, so it may still be applied.
        message = f"redis {what} failed: no answer within store_timeout={self._timeout:g} s"
        return StoreError(message, where=self.where, unsure=what == "write")

    # ---- sync ----------------------------------------------------------

    def fetch_sync(self, lookups: Sequence[Lookup], now: float) -> list[list[Value]]:
        reader = self._sync_reader
        if reader is not None:
            try:
                if len(lookups) == 1:
                    return [reader.hmget(*lookups[0])]  # type: ignore[list-item]
                return reader.hmget_many(lookups)  # type: ignore[return-value]  # one sendall, the replies in order
            except StoreError as exc:
                raise self._located(exc) from exc.__cause__
        try:
            call, many = _hmgets(self.sync_client(), lookups)
            return _rows(call(), many)
        except _FAILURES as exc:
            raise self._failure("read", exc) from exc

    def write_sync(self, writes: Sequence[Write], now: float) -> None:
        self._merge_sync(writes, now)

    def claim_sync(self, write: Write, now: float) -> Value:
        return claimed(self._merge_sync((write,), now))

    def _merge_sync(self, writes: Sequence[Write], now: float) -> list[Any]:
        try:
            return run_sync(self._merging(self.sync_client(), writes, now), _execute)
        except _FAILURES as exc:
            raise self._failure("write", exc) from exc

    def _refused(self, results: Sequence[object], replies: list[Any]) -> list[int]:
        """Which writes' ``EVALSHA`` Redis refused, so did not run (the others' replies go into
        ``replies``); raises any other error.

        NOSCRIPT: this server has not seen the script yet (a restart, a new
        replica promoted): sent whole, it is cached for the next one. NOPERM: an
        ACL that allows ``EVAL`` but not ``EVALSHA``: whole from now on.
        """
        refused: list[int] = []
        for i, result in enumerate(results):
            if isinstance(result, NoScriptError):
                refused.append(i)
            elif isinstance(result, NoPermissionError):
                refused.append(i)
                self._by_digest = False
            elif isinstance(result, Exception):
                raise result
            else:
                replies[i] = result
        return refused

    async def aclose(self) -> None:
        """Close this loop's connections that this store opened (not a client you passed in)."""
        loop = asyncio.get_running_loop()
        hot = self._hot
        if hot is not None and hot[0] is loop:
            self._hot = None  # its reader is closed below: the next read finds a new one
        links = self._per_loop.pop(loop, None)
        if links is None:
            return
        if links.reader is not None:
            await links.reader.aclose()
        if links.client is not None:
            await links.client.aclose()

    def close(self) -> None:
        """Close the sync reader's sockets and the sync client, if this store made them from a URL."""
        if self._sync_reader is not None:
            self._sync_reader.close()
        if self._url is not None and self._sync is not None:
            self._sync.close()
            self._sync = None


def _execute(step: tuple[Any, bool]) -> Any:
    """One piece of a merge's I/O: its pipeline executed (a coroutine for an asyncio client)."""
    pipe, raising = step
    return pipe.execute(raise_on_error=raising)


def _hmgets(client: Any, lookups: Sequence[Lookup]) -> tuple[Callable[[], Any], bool]:
    """The redis-py call that reads ``lookups`` (awaitable from an asyncio client), and whether
    it answers a list of rows (a pipeline) or one row."""
    if len(lookups) == 1:  # the common case: no pipeline object to build
        lookup = lookups[0]
        return (lambda: client.execute_command("HMGET", lookup.key, *lookup.fields)), False
    pipe = client.pipeline(transaction=False)
    for lookup in lookups:
        pipe.execute_command("HMGET", lookup.key, *lookup.fields)
    return pipe.execute, True


def _rows(result: Any, many: bool) -> Rows:
    return [list(r) for r in result] if many else [list(result)]
