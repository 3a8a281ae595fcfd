"""The follower of a Redis Cluster: a thread on sync clients of its own, one per primary.

Every write's script publishes its change on the node that ran it, and a
cluster forwards every (classic) pub/sub message to every node: one
subscription, on any primary, hears the writes of them all. What it cannot
tell is that another primary went away, and with it any message that primary
had not forwarded yet. So with every ping the follower also pings each primary
and asks one of them which nodes are primaries now: a primary that does not
answer, or a set of primaries that changed (a failover, a node added), costs a
full copy, and checks go to Redis until it is done, as after any loss.

The full copy ``SCAN``s each primary in turn. A bucket that moved from a
primary not yet scanned to one already scanned (a slot migration under way)
would be missed, so a copy counts only when no primary was moving a slot
before it and every primary holds the same slots after it. The same check
runs with every ping: a migration, or slots that changed hands, cost a full
copy once the slots have settled, with checks going to Redis meanwhile (the
copy's routing of re-reads follows the slots it was made with).

The follower's own clients are bounded by twice ``ping_every``, whatever
timeouts the application's cluster client has: a paused node fails a check,
it never holds the thread. The application's client, sync or asyncio, is only
read for the nodes it knows and how to reach them (``clients.cluster_seeds``,
no I/O); so the thread serves ASGI apps on an asyncio cluster client too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.retry import Retry

from ...drive import run_sync
from ...errors import StoreError
from .follower import Setup, Source, call, no_turn
from .pubsub_follower import CountingPubSub, ThreadFollower

_SLOTS = 16384


@dataclass(frozen=True)
class _Primary:
    """One primary as ``CLUSTER NODES`` names it: its id, address and slots (ranges as Redis writes them)."""

    id: str
    host: str
    port: int
    slots: tuple[str, ...]


class ClusterFollower(ThreadFollower):
    """A daemon thread following every primary of a cluster (``redis=`` a ``RedisCluster``, sync or asyncio)."""

    kind = "cluster"

    def __init__(self, setup: Setup, seeds_of: Callable[[], list[Any] | None]) -> None:
        self._seeds_of = seeds_of  # before the thread starts: it calls it
        self._patience = 2 * setup.ping_every
        super().__init__(setup)

    def _follow(self) -> None:
        seeds = self._seeds_of()
        if not seeds:
            raise StoreError("the cluster client knows no node")
        ring = _Ring(seeds, self._patience)
        try:
            pubsub = CountingPubSub(ring.home.connection_pool, ignore_subscribe_messages=True)
            try:
                run_sync(self._following(Source(_Routed(ring), ring.nodes(), ring.watch), pubsub, no_turn), call)
            finally:
                self.ready.clear()
                pubsub.close()
        finally:
            ring.close()


class _Ring:
    """The primaries of a cluster at one moment, each on a client of this follower's own."""

    def __init__(self, seeds: Sequence[Any], patience: float) -> None:
        self._template = seeds[0].connection_pool
        self._patience = patience
        self._clients: dict[str, Any] = {}
        try:
            self.primaries = self._ask(seeds)
            self.home = self._client(self.primaries[0])
            self._owner = _owners(self.primaries)
            self.watch()  # every primary answers, none is moving a slot, and they agree with the seed
        except BaseException:
            self.close()
            raise

    def nodes(self) -> tuple[redis.Redis, ...]:
        return tuple(self._client(p) for p in self.primaries)

    def client_for(self, key: str) -> Any:
        return self._client(self._owner[key_slot(key.encode())])

    def watch(self) -> None:
        """Raise if a primary is gone or moving a slot, or the primaries or their slots changed."""
        for primary in self.primaries:
            primaries, moving = _view(self._client(primary).execute_command("CLUSTER", "NODES"))
            if moving:
                raise StoreError("a slot of the cluster is migrating; copying once it has moved")
            if primary is self.primaries[0] and _layout(primaries) != _layout(self.primaries):
                raise StoreError("the cluster's primaries or their slots changed; copying again")

    def close(self) -> None:
        for client in self._clients.values():
            client.connection_pool.disconnect()
        self._clients.clear()

    def _ask(self, seeds: Sequence[Any]) -> list[_Primary]:
        """The primaries, as the first node that answers says."""
        failure: Exception | None = None
        for seed in seeds:
            bounded = self._bounded(seed.connection_pool.connection_kwargs)
            try:
                reply = bounded.execute_command("CLUSTER", "NODES")
            except (redis.RedisError, OSError) as exc:
                failure = exc
                continue
            finally:
                bounded.connection_pool.disconnect()
            return _view(reply)[0]
        raise StoreError(f"no node of the cluster answered: {failure!r}")

    def _client(self, primary: _Primary) -> Any:
        client = self._clients.get(primary.id)
        if client is None:
            kwargs = {**self._template.connection_kwargs, "host": primary.host, "port": primary.port}
            client = self._clients[primary.id] = self._bounded(kwargs)
        return client

    def _bounded(self, kwargs: dict[str, Any]) -> Any:
        # No retry: any failure means a full copy anyway, and a retried timeout doubles the wait.
        options = {
            **kwargs,
            "socket_timeout": self._patience,
            "socket_connect_timeout": self._patience,
            "retry": Retry(NoBackoff(), 0),
        }
        pool = redis.ConnectionPool(connection_class=self._template.connection_class, **options)
        return redis.Redis(connection_pool=pool)


class _Routed:
    """Pipelines that send each ``HGETALL`` to the primary holding its bucket (``Source.reader``).

    A bucket found elsewhere (``MOVED``/``ASK``: its slot moved) raises: the
    follower copies again, with the cluster as it is now."""

    def __init__(self, ring: _Ring) -> None:
        self._ring = ring

    def pipeline(self, transaction: bool = False) -> _RoutedPipeline:
        return _RoutedPipeline(self._ring)


class _RoutedPipeline:
    def __init__(self, ring: _Ring) -> None:
        self._ring = ring
        self._keys: list[str] = []

    def hgetall(self, key: str) -> _RoutedPipeline:
        self._keys.append(key)
        return self

    def execute(self) -> list[Any]:
        by_node: dict[int, tuple[redis.Redis, list[int]]] = {}
        for i, key in enumerate(self._keys):
            client = self._ring.client_for(key)
            by_node.setdefault(id(client), (client, []))[1].append(i)
        replies: list[Any] = [None] * len(self._keys)
        for client, positions in by_node.values():
            pipe = client.pipeline(transaction=False)
            for i in positions:
                pipe.hgetall(self._keys[i])
            try:
                results = pipe.execute()
            except redis.ResponseError as exc:  # MOVED or ASK: its slot moved meanwhile
                raise StoreError(f"a bucket's slot moved ({exc}); copying again") from exc
            for i, result in zip(positions, results, strict=True):
                replies[i] = result
        return replies


def _view(reply: bytes | str) -> tuple[list[_Primary], bool]:
    """What one node's ``CLUSTER NODES`` says: the primaries serving slots (in id order), and
    whether that node is moving a slot (``[slot->-id]`` or ``[slot-<-id]`` on its own line).
    Raises when it holds a primary failed."""
    text = reply.decode() if isinstance(reply, bytes) else reply
    found = []
    moving = False
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 8:
            continue
        flags = fields[2].split(",")
        slots = tuple(s for s in fields[8:] if not s.startswith("["))
        if "myself" in flags and len(slots) != len(fields) - 8:
            moving = True
        if "master" not in flags or not slots or "noaddr" in flags or "handshake" in flags:
            continue  # a primary without slots serves nothing (yet)
        if "fail" in flags:
            raise StoreError("a primary of the cluster has failed; copying once a replica has taken over")
        host, _, port = fields[1].split("@")[0].split(",")[0].rpartition(":")
        found.append(_Primary(fields[0], host, int(port), slots))
    if not found:
        raise StoreError("the cluster named no primary")
    return sorted(found, key=lambda p: p.id), moving


def _layout(primaries: Sequence[_Primary]) -> list[tuple[str, tuple[str, ...]]]:
    return [(p.id, p.slots) for p in primaries]


def _owners(primaries: Sequence[_Primary]) -> list[_Primary]:
    """Each slot's primary; raises unless every slot has one. Mid-failover a node's view can
    show the failed primary's slots served by nobody yet: a copy made then would miss them."""
    owner: list[_Primary | None] = [None] * _SLOTS
    for primary in primaries:
        for span in primary.slots:
            first, _, last = span.partition("-")
            for slot in range(int(first), int(last or first) + 1):
                owner[slot] = primary
    served = [p for p in owner if p is not None]
    if len(served) != _SLOTS:
        raise StoreError(f"{_SLOTS - len(served)} slots of the cluster have no primary; copying once they do")
    return served
