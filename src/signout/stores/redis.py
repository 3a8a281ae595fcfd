"""Revocations in Redis: one hash per user, read with one ``HMGET``.

The key layout is in ``signout.layout``. Writes go through ``MERGE_SCRIPT``, so
merging a field, pruning the expired ones and setting the key's TTL happen
atomically; a hash field has no TTL of its own before Redis 7.4.

Reads from a ``redis://`` or ``unix://`` URL go through ``stores.resp``, a
lean RESP2 reader (the guard's ``HMGET`` costs well under half of what it costs
through redis-py); everything else, writes, ``rediss://`` and the clients you
pass (cluster, sentinel), goes through redis-py.

An asyncio connection belongs to the event loop that opened it, so async
connections are kept per loop (SPEC section 5): a URL or a factory makes them
per loop; a client you pass is used on the loop that first uses it, and a plain
``redis.asyncio.Redis`` is cloned (same pool settings) for any other loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import weakref
from collections.abc import Callable, Sequence
from typing import Any, Union
from urllib.parse import urlsplit, urlunsplit

import redis
import redis.asyncio as aredis
import redis.asyncio.cluster
import redis.cluster
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.exceptions import MaxConnectionsError, NoPermissionError, NoScriptError
from redis.retry import Retry

from ..errors import ConfigError, StoreError, describe
from ..layout import Lookup, Write
from .base import Mode, Rows, Store, Value, within
from .batch import Coalescer
from .reader_async import AsyncReader
from .reader_sync import SyncReader
from .resp import Address

MERGE_SCRIPT = """
local key = KEYS[1]
local now = tonumber(ARGV[1])
local channel = ARGV[2]
-- Prune and set the TTL by the earlier of the writer's and the server's clocks:
-- a writer whose clock runs ahead must not shorten anyone's revocations.
local server_now = tonumber(redis.call('TIME')[1])
if server_now < now then now = server_now end
local function parse(v)
  local a, b = string.match(v, '^(%-?%d+):(%-?%d+)$')
  if a then return tonumber(a), tonumber(b) end
  local e = tonumber(v)
  return e, e
end
-- merged[f]: the value this write left in field f; names: the fields in order, once each.
local merged, names = {}, {}
local claimed = false
for i = 3, #ARGV, 2 do
  local f, v = ARGV[i], ARGV[i + 1]
  local old = redis.call('HGET', key, f)
  if string.sub(v, 1, 1) == '=' then
    -- A claim (layout.claim_value): the first value stays, and the caller learns it.
    if old then
      v = old
      claimed = old
    else
      v = string.sub(v, 2)
    end
  elseif old then
    local oa, ob = parse(old)
    local na, nb = parse(v)
    if oa and na then
      if string.find(v, ':', 1, true) then
        v = string.format('%d:%d', math.max(oa, na), math.max(ob, nb))
      else
        v = string.format('%d', math.max(ob, nb))
      end
    end
  end
  redis.call('HSET', key, f, v)
  if not merged[f] then names[#names + 1] = f end
  merged[f] = v
end
local all = redis.call('HGETALL', key)
local latest = 0
for i = 1, #all, 2 do
  local _, e = parse(all[i + 1])
  if not e or e <= now then
    redis.call('HDEL', key, all[i])
    merged[all[i]] = nil
  elseif e > latest then
    latest = e
  end
end
if latest > now then
  redis.call('EXPIRE', key, latest - now + 1)
end
-- Tell local mirrors (stores.mirror) what changed, so they need not read the
-- bucket back: byte 1, then netstrings ("<length>:<bytes>,"; a field name is
-- any bytes) of the key and of each field written and still held, followed by
-- the value Redis now holds for it (stores.follow reads this).
if channel ~= '' then
  -- Concatenation, not string.format: Lua 5.1's %s cuts a string at a NUL byte.
  local out = {'\\1', tostring(#key), ':', key, ','}
  for _, f in ipairs(names) do
    local v = merged[f]
    if v then
      out[#out + 1] = tostring(#f) .. ':' .. f .. ',' .. tostring(#v) .. ':' .. v .. ','
    end
  end
  redis.call('PUBLISH', channel, table.concat(out))
end
-- The key's new expiry, and what a claim found already there (nil when it set its field).
return {latest, claimed}
"""
#: What ``EVALSHA`` names the script by (Redis caches every script ``EVAL`` ran, by this digest).
MERGE_SHA = hashlib.sha1(MERGE_SCRIPT.encode(), usedforsecurity=False).hexdigest()

AsyncClient = Union["aredis.Redis", "aredis.RedisCluster"]
SyncClient = Union["redis.Redis", "redis.RedisCluster"]
# RuntimeError: asyncio's "Event loop is closed" and kin, from a connection
# that outlived its loop; a store failure, never a 500.
_FAILURES = (redis.RedisError, OSError, asyncio.TimeoutError, RuntimeError)
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

    From a ``redis://`` or ``unix://`` URL, reads use ``stores.resp``; the URL's
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
            self._sync = _with_timeout(source, timeout)
        elif callable(source):
            self._factory = source
        else:
            raise ConfigError("redis", f"expected a Redis URL, client or factory, not {type(source).__name__}")
        self._links_lock = threading.Lock()
        self._per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopLinks] = weakref.WeakKeyDictionary()
        #: Calls started in one loop tick share one pipeline (see ``stores.batch``).
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
            f"redis {what} failed: {describe(exc)}", where=self.where, unsure=what == "write" and _unsure(exc)
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
        retry = _async_retry() if asyncio_client else _retry()
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

    def _reader(self, address: Address) -> AsyncReader:
        links = self._links(asyncio.get_running_loop())
        reader = links.reader
        if reader is None:
            reader = links.reader = AsyncReader(address, timeout=self._timeout, coalesce=self._coalesce)
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
            return _clone(self._given)
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

    def sync_client(self) -> SyncClient:
        """The sync client (made from the URL on first use); for WSGI, the CLI and scripts."""
        if self._sync is None:
            if self._url is None:
                raise StoreError("this RedisStore holds an asyncio client; give a sync client or a URL for WSGI")
            self._sync = redis.Redis.from_url(self._url, **self._options(asyncio_client=False))
        return self._sync

    # ---- async ---------------------------------------------------------

    async def fetch(self, lookups: Sequence[Lookup], now: float) -> Rows:
        address = self._address
        if address is not None:  # the reader pipelines, coalesces and keeps the deadline by itself
            return await self._read(address, lookups)
        if not self._coalesce:
            return await self._fetch_now(lookups)
        links = self._links(asyncio.get_running_loop())
        if links.reads is None:
            links.reads = Coalescer(self._fetch_now)
        return await links.reads(lookups)

    async def _read(self, address: Address, lookups: Sequence[Lookup]) -> Rows:
        try:
            reader = self._reader(address)
            if len(lookups) == 1:
                return [await reader.hmget(lookups[0].key, lookups[0].fields)]  # type: ignore[list-item]
            return await reader.hmget_many([(lookup.key, lookup.fields) for lookup in lookups])  # type: ignore[return-value]
        except StoreError as exc:
            raise self._located(exc) from exc.__cause__
        except (OSError, RuntimeError) as exc:  # these would be a bug, never a 500
            raise self._failure("read", exc) from exc

    async def _fetch_now(self, lookups: Sequence[Lookup]) -> Rows:
        """The redis-py read (``rediss://``, client or factory stores; ``fetch`` sends the rest to ``_read``)."""
        try:
            return await within(self._fetch_rows(lookups), self._timeout, lambda: self._late("read"))
        except _FAILURES as exc:
            raise self._failure("read", exc) from exc

    async def _fetch_rows(self, lookups: Sequence[Lookup]) -> Rows:
        client = self._client()
        if len(lookups) == 1:
            return [list(await client.execute_command("HMGET", lookups[0].key, *lookups[0].fields))]
        pipe = client.pipeline(transaction=False)
        for lookup in lookups:
            pipe.execute_command("HMGET", lookup.key, *lookup.fields)
        return [list(r) for r in await pipe.execute()]

    async def write(self, writes: Sequence[Write], now: float) -> None:
        await self._merge(writes, now)

    async def claim(self, write: Write, now: float) -> Value:
        """Merge one claim (``layout.claim_value``); the value its field held before, ``None`` if none."""
        return _claimed(await self._merge((write,), now))

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
            return await within(self._merge_pipelined(writes, now), self._timeout, lambda: self._late("write"))
        except _FAILURES as exc:
            raise self._failure("write", exc) from exc

    async def _merge_pipelined(self, writes: Sequence[Write], now: float) -> list[Any]:
        client = self._client()
        pipe = client.pipeline(transaction=False)
        replies: list[Any] = [None] * len(writes)
        pending = list(range(len(writes)))
        if self._by_digest and not isinstance(pipe, _CLUSTER_PIPES):
            results = await _queue(pipe, writes, now, whole=False).execute(raise_on_error=False)
            pending = self._refused(results, replies)
            if not pending:
                return replies
            pipe = client.pipeline(transaction=False)
        # Errors raise here, so redis-py's cluster pipelines still retry a failover.
        results = await _queue(pipe, [writes[i] for i in pending], now, whole=True).execute()
        return _placed(replies, pending, results)

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
                    return [reader.hmget(lookups[0].key, lookups[0].fields)]  # type: ignore[list-item]
                # Every command in one sendall, then the replies in order.
                return reader.hmget_many([(lookup.key, lookup.fields) for lookup in lookups])  # type: ignore[return-value]
            except StoreError as exc:
                raise self._located(exc) from exc.__cause__
        try:
            client = self.sync_client()
            if len(lookups) == 1:  # the common case: no pipeline object to build
                return [list(client.execute_command("HMGET", lookups[0].key, *lookups[0].fields))]  # type: ignore[no-untyped-call]
            pipe = client.pipeline(transaction=False)
            for lookup in lookups:
                pipe.execute_command("HMGET", lookup.key, *lookup.fields)
            return [list(r) for r in pipe.execute()]
        except _FAILURES as exc:
            raise self._failure("read", exc) from exc

    def write_sync(self, writes: Sequence[Write], now: float) -> None:
        self._merge_sync(writes, now)

    def claim_sync(self, write: Write, now: float) -> Value:
        return _claimed(self._merge_sync((write,), now))

    def _merge_sync(self, writes: Sequence[Write], now: float) -> list[Any]:
        try:
            client = self.sync_client()
            pipe = client.pipeline(transaction=False)
            replies: list[Any] = [None] * len(writes)
            pending = list(range(len(writes)))
            if self._by_digest and not isinstance(pipe, _CLUSTER_PIPES):
                results = _queue(pipe, writes, now, whole=False).execute(raise_on_error=False)
                pending = self._refused(results, replies)
                if not pending:
                    return replies
                pipe = client.pipeline(transaction=False)
            results = _queue(pipe, [writes[i] for i in pending], now, whole=True).execute()
        except _FAILURES as exc:
            raise self._failure("write", exc) from exc
        return _placed(replies, pending, results)

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
        links = self._per_loop.pop(asyncio.get_running_loop(), None)
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


def _unsure(exc: BaseException) -> bool:
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


def _placed(replies: list[Any], pending: Sequence[int], results: Sequence[Any]) -> list[Any]:
    """``replies`` with the results of the writes sent whole (``pending``) in their places."""
    for i, result in zip(pending, results, strict=True):
        replies[i] = result
    return replies


def _claimed(replies: list[Any]) -> Value:
    reply = replies[0]
    # The script answers {expiry, what the claim found}; Lua's false arrives as None.
    return reply[1] if isinstance(reply, list) and len(reply) == 2 else None


def changes_channel(prefix: str) -> str:
    """The pub/sub channel every write announces its bucket on."""
    return f"{prefix}:changes"


_CLUSTER_PIPES = (redis.cluster.ClusterPipeline, aredis.cluster.ClusterPipeline)


def _queue(pipe: Any, writes: Sequence[Write], now: float, *, whole: bool) -> Any:
    """``pipe`` with one merge script call per write: by its SHA1, or (``whole``) with its text.

    ``EVALSHA`` sends 40 bytes where ``EVAL`` sends the script's 2 KB and has
    Redis hash them again on every logout. redis-py's own ``Script`` objects
    would ask ``SCRIPT EXISTS`` before every pipeline: a round trip more.
    redis-py's cluster pipelines refuse ``EVALSHA``: they get the text.
    """
    for w in writes:
        if whole:
            pipe.eval(MERGE_SCRIPT, 1, w.key, *_args(w, now))  # also caches it for the next EVALSHA
        else:
            pipe.evalsha(MERGE_SHA, 1, w.key, *_args(w, now))
    return pipe


def _args(write: Write, now: float) -> list[bytes | int | str]:
    # Every bucket key starts with "<prefix>:{", so the channel follows from it.
    args: list[bytes | int | str] = [int(now), changes_channel(write.key.partition(":{")[0])]
    for name, value in write.fields:
        args += [name, value]
    return args


def _with_timeout(client: SyncClient, timeout: float) -> SyncClient:
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
    kwargs = {**pool.connection_kwargs, "socket_timeout": timeout, "retry": _retry()}
    if kwargs.get("socket_connect_timeout") is None:
        kwargs["socket_connect_timeout"] = timeout
    fresh = redis.ConnectionPool(connection_class=pool.connection_class, max_connections=pool.max_connections, **kwargs)
    return redis.Redis(connection_pool=fresh)


def _async_retry() -> AsyncRetry:
    # redis.asyncio needs its own Retry class: a sync one silently never retries there.
    return AsyncRetry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,))


def _retry() -> Retry:
    # One immediate retry, of connection errors only: it reconnects a connection
    # the server dropped (restart, failover); a timeout retried would double the wait.
    return Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,))


def _clone(client: AsyncClient) -> AsyncClient:
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
