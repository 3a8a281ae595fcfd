"""The follower in a thread on redis-py's sync pub/sub: for stores with no address of their own
(``rediss://``, a client given), in WSGI apps or from ``wait_in_sync()``."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import redis.client

from .follower import BURST, Follower, Setup, Watchdog, check_renewal, chunks, hgetall_each


class PubSubFollower(Follower):
    """A daemon thread with redis-py's sync pub/sub: for callers with no event loop."""

    kind = "pubsub"

    def __init__(self, setup: Setup, client_of: Callable[[], Any]) -> None:
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
            self._copy_sync(client)
            self._synced()
            watchdog = Watchdog(self.setup.ping_every, time.monotonic())
            rereads: dict[str, None] = {}
            while not self._stop.is_set():
                rereads = self._burst(pubsub, watchdog, waiting=not rereads)
                check_renewal(pubsub, seen)
                self._refresh(client, list(rereads))
                if watchdog.ping_due(time.monotonic()):
                    pubsub.ping()
        finally:
            self.ready.clear()
            pubsub.close()

    def _burst(self, pubsub: _CountingPubSub, watchdog: Watchdog, *, waiting: bool) -> dict[str, None]:
        """Take the messages of one burst; returns the buckets to re-read (the rule: see ``Follower``)."""
        rereads: dict[str, None] = {}
        message = pubsub.get_message(timeout=watchdog.wait if waiting else 0)
        taken = 0
        while message is not None:
            self._take(message, watchdog, rereads)
            taken += 1
            if (waiting and rereads) or taken == BURST:
                break  # heard when idle: re-read it now; or enough for one burst
            message = pubsub.get_message(timeout=0)
        return rereads

    def _refresh(self, client: Any, keys: Sequence[str]) -> None:
        for chunk in chunks(keys):
            self._apply(chunk, hgetall_each(client.pipeline(transaction=False), chunk).execute())


class _CountingPubSub(redis.client.PubSub):
    """Counts connects: any after the subscription's first is a silent renewal (see ``check_renewal``)."""

    connects = 0

    def on_connect(self, connection: Any) -> None:
        self.connects += 1
        super().on_connect(connection)
