"""What every follower of a local mirror shares: the copy, the messages, the watchdog.

A *change message* is what ``MERGE_SCRIPT`` publishes after each write, on
``<prefix>:changes``::

    \\x01 <netstring: bucket key> (<netstring: field> <netstring: value>)*

a netstring being ``<decimal length>:<bytes>,``. The fields are the ones the
write merged and Redis still holds, each with the value Redis now holds for
it; a follower merges them into its copy as they are (``layout.merge``, the
script's own rule), with no round trip. A message whose fields it cannot
read makes it re-read that bucket with ``HGETALL``; one whose bucket it cannot
even tell costs a full copy: the one way to be sure no revocation in it is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import redis

from ...errors import StoreError, describe
from ...layout import Lookup, Write
from ..base import Value
from ..memory import MemoryStore

log = logging.getLogger("signout")

#: Buckets re-read in one pipeline, and messages taken in one burst: bounds how long one holds the loop.
BURST = 256
#: Buckets asked for per ``SCAN`` step of a full copy.
SCAN_COUNT = 1000
#: Seconds before retrying after a loss; doubled on each failed attempt, reset by a subscription
#: that stayed in sync for ``_HEALTHY`` seconds.
_FIRST_BACKOFF, _LAST_BACKOFF, _HEALTHY = 0.05, 2.0, 10.0
#: What a lost or broken connection raises; anything else is a bug and is logged with its traceback.
_LOSSES = (redis.RedisError, OSError, StoreError, asyncio.TimeoutError)
#: The first byte of a change message that carries its fields.
_FIELDS_MARK = b"\x01"

Fields = tuple[tuple[bytes, bytes], ...]
#: One call a follower's plan needs made: its result, or (on an asyncio client) a coroutine of it.
Call = Callable[[], Any]
_T = TypeVar("_T")
#: A follower's plan (``drive``): yields the calls to make, is sent their results, returns a ``_T``.
Plan = Generator[Call, Any, _T]


@dataclass(frozen=True)
class Source:
    """Where a follower copies from: one Redis, or each primary of a cluster.

    ``nodes`` are ``SCAN``ned in turn for the full copy; ``reader`` runs the
    ``HGETALL`` pipelines (a cluster client routes each key to its node).
    ``watch`` (a cluster's) is made after the copy and with every ping; it
    raises when a node is gone or the topology moved, which costs a full copy.
    """

    reader: Any
    nodes: tuple[Any, ...]
    watch: Call | None = None

    @classmethod
    def single(cls, client: Any) -> Source:
        return cls(client, (client,))


def call(need: Call) -> Any:
    """The one piece of I/O a follower's plan asks for, for either driver (``drive.run_sync``
    makes it in this thread; ``drive.run`` awaits the coroutine an asyncio client returns)."""
    return need()


def no_turn() -> None:
    """A thread's ``turn``: nobody waits for it to let go (it holds no event loop)."""


class _Unreadable(StoreError):
    """A change message whose bucket cannot be told: only a full copy makes up for it."""


@dataclass(frozen=True)
class Setup:
    """What every follower of one mirror is told."""

    channel: str
    pattern: str  # every bucket key: "<prefix>:{..."
    ping_every: float
    copied: Callable[[], None]  # counts full copies (MirrorStore.resyncs)
    where: str = "redis"  # the store's address, for log lines

    @property
    def buckets(self) -> str:
        """What every bucket key starts with: the keys the full copy covers."""
        return self.pattern[:-1]


class Follower:
    """One follower's copy and in-sync flag, and what both kinds share.

    Each follower fills a copy of its own, so one that ends late (a task on a
    loop that stopped) can never clear or overwrite the copy of its successor.

    Every follower reads its messages alike (``_burst``): when idle, wait for the
    next message; merge the fields a message carries at once; note the buckets to
    re-read (unreadable fields), each once per burst. A burst
    takes every message that has already arrived (up to ``BURST``), except
    that a bucket to re-read, heard when idle, is re-read at once (a lone
    revocation waits for no company, not even one more loop turn). Right
    after a re-read, the next burst takes all that arrived meanwhile without
    waiting, so a burst of unreadable changes to one bucket costs two ``HGETALL``s,
    not one per message. Merging before the re-read is safe: the reply was
    asked for after every message of the burst, so it is newer than them all.
    """

    kind = ""

    def __init__(self, setup: Setup) -> None:
        self.setup = setup
        self.local = MemoryStore(warn=False)
        # Set by a full copy; cleared the moment the subscription is in doubt.
        self.ready = threading.Event()
        self._backoff = _FIRST_BACKOFF
        self._synced_at: float | None = None
        self._pid = os.getpid()

    def in_sync(self) -> bool:
        # A forked child inherits the copy and the flag, not the thread that kept them.
        return self.ready.is_set() and self._pid == os.getpid()

    def answer(self, lookups: Sequence[Lookup], now: float) -> list[list[Value]] | None:
        """The rows from the copy while it is in sync; ``None``: ask Redis."""
        return self.local.fetch_sync(lookups, now) if self.in_sync() else None

    def alive(self) -> bool:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        self.stop()

    def _synced(self) -> None:
        self._synced_at = time.monotonic()
        self.setup.copied()
        self.ready.set()

    def _lost(self, exc: Exception) -> float:
        """Out of sync at once; returns the seconds to wait before the next attempt."""
        self.ready.clear()
        # The backoff starts over only after a subscription that lasted: one that fails right
        # after each copy (whatever the cause) must not make a full copy 20 times a second.
        if self._synced_at is not None and time.monotonic() - self._synced_at > _HEALTHY:
            self._backoff = _FIRST_BACKOFF
        self._synced_at = None
        if isinstance(exc, _Unreadable):
            log.warning(
                "signout: local mirror of %s: %s; checking Redis directly until it has copied every bucket",
                self.setup.where,
                exc,
            )
        elif isinstance(exc, _LOSSES):
            log.warning(
                "signout: local mirror lost %s (%s); checking Redis directly until resynced",
                self.setup.where,
                describe(exc),
            )
        else:
            log.error(
                "signout: local mirror of %s failed; checking Redis directly until resynced",
                self.setup.where,
                exc_info=exc,
            )
        wait, self._backoff = self._backoff, min(self._backoff * 2, _LAST_BACKOFF)
        return wait

    def _take(self, message: dict[str, Any], watchdog: Watchdog, rereads: dict[str, None]) -> None:
        """Act on one pub/sub message: merge its fields, or note its bucket to re-read; or a PONG."""
        kind = message.get("type")
        if kind == "message":
            self._heard(message["data"], rereads)
        elif kind == "pong":
            watchdog.pong(time.monotonic())

    def _heard(self, data: bytes | str, rereads: dict[str, None]) -> None:
        try:
            key, fields = read_change(data)
        except ValueError:
            # Its bucket is unknown, so re-reading one cannot make up for it. Its
            # size, never its bytes, is logged: those are the ids' digests.
            raise _Unreadable(f"a change message names no bucket ({len(data)} bytes)") from None
        if not key.startswith(self.setup.buckets):
            return  # not a bucket of ours: the full copy would not have it either
        if fields is None:
            rereads[key] = None  # a dict: each bucket once per burst, in order
        else:
            # write_sync merges by the script's rule, prunes the bucket's expired
            # fields and sweeps expired buckets every 1024 calls, as for our own writes.
            self.local.write_sync((Write(key, fields),), time.time())

    # The plans below are ``drive`` plans: each yields the calls it needs made on a redis-py
    # client or pub/sub (sync or asyncio alike: ``call`` makes one), and is sent the result.

    def _following(self, source: Source, pubsub: Any, turn: Call) -> Plan[None]:
        """Subscribe, copy, then take the messages and re-read what they ask, until stopped.

        ``turn``: what lets the requests have a turn after a full burst (the loop follower's)."""
        # Subscribe before copying, so no change between the two is missed.
        yield functools.partial(pubsub.subscribe, self.setup.channel)
        seen = pubsub.connects
        yield from self._copying(source)
        self._synced()
        watchdog = Watchdog(self.setup.ping_every, time.monotonic())
        rereads: dict[str, None] = {}
        while self._going_on():
            rereads = yield from self._bursting(pubsub, watchdog, turn, waiting=not rereads)
            check_renewal(pubsub, seen)
            yield from self._refreshing(source.reader, list(rereads))
            if watchdog.ping_due(time.monotonic()):
                yield pubsub.ping
                if source.watch is not None:
                    yield source.watch

    def _going_on(self) -> bool:
        """Whether to take another burst (a follower asked to stop says no, or raises)."""
        raise NotImplementedError

    def _bursting(self, pubsub: Any, watchdog: Watchdog, turn: Call, *, waiting: bool) -> Plan[dict[str, None]]:
        """Take the messages of one burst; returns the buckets to re-read (the rule: see ``Follower``)."""
        rereads: dict[str, None] = {}
        message = yield functools.partial(pubsub.get_message, timeout=watchdog.wait if waiting else 0)
        taken = 0
        while message is not None:
            self._take(message, watchdog, rereads)
            taken += 1
            if waiting and rereads:
                break  # heard when idle: re-read it now
            if taken == BURST:
                yield turn  # taken without a pause so far: enough for one burst
                break
            message = yield functools.partial(pubsub.get_message, timeout=0)
        return rereads

    def _copying(self, source: Source) -> Plan[None]:
        """The full copy: ``SCAN`` every bucket of every node, ``HGETALL`` a chunk at a time."""
        self.local.clear()
        for node in source.nodes:
            cursor = 0
            while True:
                scan = functools.partial(node.scan, cursor, match=self.setup.pattern, count=SCAN_COUNT)
                cursor, found = yield scan
                yield from self._refreshing(source.reader, [key_text(k) for k in found])
                if not cursor:
                    break
        if source.watch is not None:
            yield source.watch  # a bucket that moved between two nodes' scans may have been missed

    def _refreshing(self, client: Any, keys: Sequence[str]) -> Plan[None]:
        """Replace these buckets with what Redis holds, a chunk at a time (one round trip each)."""
        for chunk in chunks(keys):
            self._apply(chunk, (yield hgetall_each(client.pipeline(transaction=False), chunk).execute))

    def _apply(self, keys: Sequence[str], replies: Sequence[dict[bytes, bytes]]) -> None:
        now = time.time()
        for key, fields in zip(keys, replies, strict=True):
            self.local.replace_sync(key, fields, now)


def read_change(data: bytes | str) -> tuple[str, Fields | None]:
    """The bucket a change message names, and the fields it carries (``None``: re-read the bucket).

    Raises ``ValueError`` when the bucket cannot be told.
    """
    if isinstance(data, str):  # a client that decodes replies; what it decoded encodes back exactly
        data = data.encode()
    if not data.startswith(_FIELDS_MARK):
        raise ValueError("not a change message")
    raw, at = _netstring(data, 1)
    key = raw.decode()
    fields: list[tuple[bytes, bytes]] = []
    try:
        while at < len(data):
            name, at = _netstring(data, at)
            value, at = _netstring(data, at)
            fields.append((name, value))
    except ValueError:
        return key, None
    return key, tuple(fields)


def _netstring(data: bytes, at: int) -> tuple[bytes, int]:
    """The netstring at ``at`` and where the next one starts; ``ValueError`` if there is none."""
    colon = data.index(b":", at, at + 11)  # at most 10 digits
    digits = data[at:colon]
    if not digits.isdigit():  # ASCII digits only: no sign, space or "_" that int() would take
        raise ValueError("netstring length")
    end = colon + 1 + int(digits)
    if data[end : end + 1] != b",":  # also what a truncated one lacks
        raise ValueError("netstring end")
    return data[colon + 1 : end], end + 1


class Watchdog:
    """PING every ``every`` seconds; a PING left unanswered for ``2 * every`` means the connection is dead.

    A network that drops packets without closing the socket raises nothing:
    only a missing PONG tells; a dead server is noticed within about
    ``3.5 * every`` (the next PING, its patience, the next wake). The clock runs
    from each PING, not from the last PONG: a follower kept from running (a
    thread starved of the GIL) sends no PING meanwhile, and must not take its
    own silence for the server's. PONGs may be taken by another thread (a
    check reading the socket): the PINGs in flight are a deque, whose ends are
    safe to use from two threads.
    """

    def __init__(self, every: float, now: float) -> None:
        self.every = every
        self.last_ping = now
        self._sent: deque[float] = deque()  # when each PING not yet answered was sent, oldest first

    @property
    def wait(self) -> float:
        """How long to wait for a message at most, so no PING is sent late."""
        return self.every / 2

    def pong(self, now: float) -> None:
        """A PONG answers the oldest PING in flight (Redis answers in order)."""
        with contextlib.suppress(IndexError):
            self._sent.popleft()

    def ping_due(self, now: float) -> bool:
        """Raise when a PING went unanswered too long; True (and counted as sent) when a PING is due."""
        try:
            oldest = self._sent[0]
        except IndexError:
            oldest = None
        if oldest is not None and now - oldest > 2 * self.every:
            raise StoreError(f"no PONG for {now - oldest:.1f} s")
        if now - self.last_ping >= self.every:
            self.last_ping = now
            self._sent.append(now)
            return True
        return False


class _Connects(Protocol):
    connects: int


def check_renewal(pubsub: _Connects, seen: int) -> None:
    # redis-py reconnects a dropped subscription by itself and re-subscribes,
    # silently: whatever was published in between is lost to us.
    if pubsub.connects != seen:
        raise StoreError("the subscription was dropped and silently renewed")


def hgetall_each(pipe: Any, keys: Sequence[str]) -> Any:
    for key in keys:
        pipe.hgetall(key)
    return pipe


def chunks(keys: Sequence[str]) -> list[Sequence[str]]:
    return [keys[i : i + BURST] for i in range(0, len(keys), BURST)]


def key_text(key: bytes | str) -> str:
    return key.decode() if isinstance(key, bytes) else key
