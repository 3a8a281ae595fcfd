"""The follower in a thread on redis-py's sync pub/sub: for stores with no address of their own
(``rediss://``, a client given), in WSGI apps or from ``wait_in_sync()``. ``ThreadFollower``
is the thread it runs in, and the cluster's follower too."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import redis.client

from ...drive import run_sync
from .follower import Follower, Setup, Source, call, no_turn


class ThreadFollower(Follower):
    """A follower in a daemon thread of its own on redis-py's sync clients: it follows
    (``_follow``) until stopped, and after each loss waits ``_lost``'s backoff and starts over."""

    def __init__(self, setup: Setup) -> None:
        super().__init__(setup)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="signout-mirror", daemon=True)
        self.thread.start()

    def alive(self) -> bool:
        return not self._stop.is_set() and self.thread.is_alive()

    def stop(self) -> None:
        """The thread ends within ``ping_every / 2``."""
        self._stop.set()
        self.ready.clear()

    def _going_on(self) -> bool:
        return not self._stop.is_set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._follow()
            except Exception as exc:  # survive everything: a dead thread is restarted at request rate
                self._stop.wait(self._lost(exc))

    def _follow(self) -> None:
        raise NotImplementedError


class PubSubFollower(ThreadFollower):
    """A daemon thread with redis-py's sync pub/sub: for callers with no event loop."""

    kind = "pubsub"

    def __init__(self, setup: Setup, client_of: Callable[[], Any]) -> None:
        self._client_of = client_of  # before the thread starts: it calls it
        super().__init__(setup)

    def _follow(self) -> None:
        client = self._client_of()
        pubsub = CountingPubSub(client.connection_pool, ignore_subscribe_messages=True)
        try:
            run_sync(self._following(Source.single(client), pubsub, no_turn), call)
        finally:
            self.ready.clear()
            pubsub.close()


class CountingPubSub(redis.client.PubSub):
    """Counts connects: any after the subscription's first is a silent renewal (see ``check_renewal``)."""

    connects = 0

    def on_connect(self, connection: Any) -> None:
        self.connects += 1
        super().on_connect(connection)
