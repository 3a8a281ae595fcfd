"""An opt-in local mirror of the Redis denylist: guard checks without a round trip.

``local_mirror=True`` keeps every live revocation in this process's memory.
A *follower* subscribes to the store's change channel, then copies every
bucket once (``SCAN`` + ``HGETALL``). Every write's script publishes the
fields it merged, each with the value Redis now holds for it, and the
follower merges them into its copy as they come, with no round trip; a
message it cannot read makes it re-read that bucket (the format and the
rules: ``follower``). While it is in sync,
checks are answered from memory; until the first copy is done, and from the
moment the subscription is lost until a fresh copy is done, checks go to
Redis directly (and fail closed, as any Redis check does). A silently dead
subscription is noticed within about ``3.5 * ping_every`` seconds (a PING unanswered for two).
Revocations written by this instance are applied locally at once.

One follower is live at a time, and it serves every caller:

* **on the event loop** (ASGI, ``asyncio_follower``): a task on the loop
  that serves the requests, with ``redis.asyncio`` pub/sub on connections of
  its own. The first check made on a loop starts it. It belongs to that loop
  (SPEC section 5): when the loop stops or closes, or the task ends, the
  mirror is out of sync at once, and the next check, from whichever loop,
  starts a follower on its own loop. Its connections are never touched from
  another loop.
* **in a thread** (WSGI, or ``wait_in_sync()`` from sync code): on a socket
  of its own for ``redis://`` and ``unix://`` stores (``socket_follower``),
  which every check reads first: a check answers from no copy older than what
  its instance has received, however long the thread waits for the GIL. A
  store without an address of its own (``rediss://``, a client given) gets
  redis-py's sync pub/sub (``pubsub_follower``), and a thread that must win
  the GIL before it applies anything.

Revocation lag between two instances and the overhead of a check in sync are
measured by ``benchmarks/bench_store.py --parts lag`` and the ``signout-mirror``
row of ``benchmarks/bench_guard.py`` (figures in ``benchmarks/README.md``).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence

from ...errors import StoreError
from ...layout import Lookup, Write
from ..base import Mode, Store, Value
from ..redis.script import changes_channel
from ..redis.store import RedisStore
from .asyncio_follower import AsyncioFollower, loop_clients
from .cluster_follower import ClusterFollower
from .follower import Follower, Setup
from .pubsub_follower import PubSubFollower
from .socket_follower import SocketFollower


class MirrorStore(Store):
    """A ``RedisStore`` with a local, pub/sub-maintained copy of every bucket under ``prefix``."""

    answers_locally = True  # from the copy while it is in sync

    def __init__(self, redis_store: RedisStore, *, prefix: str, ping_every: float = 1.0) -> None:
        # A cluster's follower runs on sync clients of its own, whatever client the store holds.
        self._on_cluster = redis_store.on_cluster
        if not redis_store.serves("sync") and not self._on_cluster:
            raise StoreError("local_mirror needs redis_url= (or a sync client): its thread reads Redis synchronously")
        self.redis = redis_store
        self._setup = Setup(changes_channel(prefix), f"{prefix}:{{*", ping_every, self._copied, redis_store.where)
        self._connect = loop_clients(redis_store, ping_every)
        self._follower: Follower | None = None
        self._start_lock = threading.Lock()
        #: Full copies made so far (1 after start; +1 after each loss or new follower).
        self.resyncs = 0

    @property
    def in_sync(self) -> bool:
        follower = self._follower
        return follower is not None and follower.in_sync()

    @property
    def following(self) -> str | None:
        """The follower keeping the copy now (``"socket"``, ``"asyncio"``, ``"pubsub"``); ``None``: none is live."""
        follower = self._follower
        return follower.kind if follower is not None and follower.alive() else None

    @property
    def buckets_in_copy(self) -> int:
        """How many buckets the local copy holds now (0 before the first follower). Read-only.

        For operators sizing the mirror's memory, and for tests of what the copy keeps (an expired
        field or bucket is dropped, a key outside the prefix never enters). It says nothing of
        being in sync: see ``in_sync``.
        """
        follower = self._follower
        return 0 if follower is None else len(follower.local)

    def start(self) -> None:
        """Follow from a thread, unless a follower is live already (sync callers: WSGI, scripts)."""
        address = self.redis.address
        if address is not None:  # a socket of its own, which every check reads first
            self._ensure(lambda: SocketFollower(self._setup, address, self.redis.sync_client))
        elif self._on_cluster:  # every primary, on clients of its own
            self._ensure(lambda: ClusterFollower(self._setup, self.redis.cluster_seeds))
        else:  # TLS, or a client given: redis-py's pub/sub
            self._ensure(lambda: PubSubFollower(self._setup, self.redis.sync_client))

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
            self._ensure(lambda: AsyncioFollower(self._setup, connect))

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
        if follower is not None:
            rows = follower.answer(lookups, now)
            if rows is not None:
                return rows
            if follower.alive():  # resyncing: nothing to start (and no lock taken on every request)
                return None
        self.start_on_loop()
        return None

    async def fetch(self, lookups: Sequence[Lookup], now: float) -> list[list[Value]]:
        rows = self.fetch_local(lookups, now)
        return rows if rows is not None else await self.redis.fetch(lookups, now)

    async def write(self, writes: Sequence[Write], now: float) -> None:
        await self.redis.write(writes, now)
        self._keep_own(writes, now)

    async def claim(self, write: Write, now: float) -> Value:
        return self._keep_claim(write, await self.redis.claim(write, now), now)

    def claim_sync(self, write: Write, now: float) -> Value:
        return self._keep_claim(write, self.redis.claim_sync(write, now), now)

    def fetch_sync(self, lookups: Sequence[Lookup], now: float) -> list[list[Value]]:
        follower = self._follower
        if follower is not None:
            rows = follower.answer(lookups, now)
            if rows is not None:
                return rows
        if follower is None or not follower.alive():
            self.start()
        return self.redis.fetch_sync(lookups, now)

    def write_sync(self, writes: Sequence[Write], now: float) -> None:
        self.redis.write_sync(writes, now)
        self._keep_own(writes, now)

    @property
    def where(self) -> str:
        return self.redis.where

    @property
    def timeout(self) -> float:
        return self.redis.timeout

    def serves(self, mode: Mode) -> bool:
        return self.redis.serves(mode)

    # ---- followers ---------------------------------------------------------

    def _ensure(self, make: Callable[[], Follower]) -> None:
        with self._start_lock:
            current = self._follower
            if current is not None and current.alive():
                return
            if current is not None:
                current.stop()  # e.g. a task whose loop stopped: it must not resume beside the new one
            self._follower = make()

    def _detach(self) -> Follower | None:
        with self._start_lock:
            follower, self._follower = self._follower, None
        return follower

    def _keep_own(self, writes: Sequence[Write], now: float) -> None:
        # Our own revocations count at once, without waiting for the pub/sub hop.
        follower = self._follower
        if follower is not None:
            follower.local.write_sync(writes, now)

    def _keep_claim(self, claim: Write, held: Value, now: float) -> Value:
        """Keep a claim as Redis settled it (``held``: the value already there, which stays first)."""
        self._keep_own((_as_held(claim, held),), now)
        return held

    def _copied(self) -> None:
        self.resyncs += 1


def _as_held(claim: Write, held: Value) -> Write:
    """A claim as Redis settled it: the value already there, else the claim's (the first use stays first)."""
    if held is None:
        return claim
    name = claim.fields[0][0]
    return Write(claim.key, ((name, held if isinstance(held, bytes) else held.encode()),))
