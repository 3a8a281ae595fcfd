"""The follower on the serving event loop (ASGI): a task on redis-py's asyncio pub/sub, with
connections of its own on that loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import redis.asyncio as aredis
import redis.asyncio.client
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff

from ...drive import run
from ...layout import Lookup
from ..base import Value
from ..redis.store import RedisStore
from .follower import Follower, Setup, Source, call

log = logging.getLogger("signout")


class AsyncioFollower(Follower):
    """A task on the running loop; its connections are its own and never leave that loop."""

    kind = "asyncio"

    def __init__(self, setup: Setup, connect: Callable[[], aredis.Redis]) -> None:
        super().__init__(setup)
        self._connect = connect
        self._stopping = False
        self.loop = asyncio.get_running_loop()
        if sys.version_info >= (3, 11):
            self.task: asyncio.Task[None] = self.loop.create_task(self._run(), name="signout-mirror")
        else:  # pragma: no cover - Python 3.10: see _check_cancelled
            self.task = _TeardownNotingTask(self._run(), loop=self.loop, name="signout-mirror")

    def in_sync(self) -> bool:
        # A loop that stopped or closed runs no follower: its copy is stale from that moment on.
        return self.ready.is_set() and self.loop.is_running()

    def answer(self, lookups: Sequence[Lookup], now: float) -> list[list[Value]] | None:
        # in_sync inlined: the guard's hot path under ASGI.
        return self.local.fetch_sync(lookups, now) if self.ready.is_set() and self.loop.is_running() else None

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

    def _check_cancelled(self) -> None:
        """Raise ``CancelledError`` if this task was asked to end.

        redis-py (8.1) can swallow a cancellation that lands while a pipeline
        runs: the call returns and the request stays pending, so a follower
        that went on would follow for ever, and hang a shutdown that waits
        for it (``asyncio.run``'s). Python 3.10 has no ``Task.cancelling``:
        there ``stop()``'s flag tells, and so does a cancel from a loop's
        teardown, which never calls ``stop()`` (``_TeardownNotingTask``).
        """
        task = asyncio.current_task()
        cancelling = getattr(task, "cancelling", None)
        if self._stopping or (cancelling is not None and cancelling()) or getattr(task, "torn_down", False):
            raise asyncio.CancelledError

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
                    self._check_cancelled()
                    await asyncio.sleep(self._lost(exc))
        finally:
            self.ready.clear()

    async def _follow(self) -> None:
        client = self._connect()
        pubsub = _CountingAsyncPubSub(client.connection_pool, ignore_subscribe_messages=True)
        try:
            await run(self._following(Source.single(client), pubsub, _turn), call)
        finally:
            self.ready.clear()
            await _close(pubsub, client)

    def _going_on(self) -> bool:
        self._check_cancelled()
        return True


def _turn() -> Coroutine[Any, Any, None]:
    """Messages already received are taken without a pause: let the requests have a turn."""
    return asyncio.sleep(0)


async def _close(pubsub: _CountingAsyncPubSub, client: aredis.Redis) -> None:
    try:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await client.aclose()
    except Exception as exc:  # a broken connection may fail to close: it is gone either way
        log.debug("signout: local mirror: closing its connections: %s", type(exc).__name__)


def loop_clients(store: RedisStore, ping_every: float) -> Callable[[], aredis.Redis] | None:
    """Makes the asyncio clients of a loop follower; ``None`` when the store has no URL to open them with.

    Each follower owns one (its pool, on its loop), closed when it ends. No
    retries: any failure means a resync anyway. Every read is bounded by the
    watchdog's patience, so a paused server cannot hold a copy forever.
    """
    url = store.url
    if url is None:
        return None
    patience = 2 * ping_every

    def connect() -> aredis.Redis:
        return aredis.Redis.from_url(
            url, socket_connect_timeout=patience, socket_timeout=patience, retry=AsyncRetry(NoBackoff(), 0)
        )

    return connect


class _CountingAsyncPubSub(redis.asyncio.client.PubSub):
    """Counts connects: any after the subscription's first is a silent renewal (see ``check_renewal``)."""

    connects = 0

    async def on_connect(self, connection: Any) -> None:
        self.connects += 1
        await super().on_connect(connection)


if sys.version_info < (3, 11):  # pragma: no cover - Python 3.10

    class _TeardownNotingTask(asyncio.Task):  # type: ignore[type-arg]
        """Notes a cancel made while its loop is not running: a teardown's (``asyncio.run``,
        anyio's runner, uvicorn without lifespan cancel what is left between two runs of the loop).

        Python 3.10's ``asyncio.wait_for``, which redis-py sends each command through when
        ``socket_timeout`` is set, returns normally when the cancel lands as the write completes
        (bpo-42130), and 3.10 has no ``Task.cancelling()`` to tell afterwards. Cancels made while
        the loop runs are not noted: async_timeout's own (a read's timeout) are among them.
        """

        torn_down = False

        def cancel(self, msg: Any = None) -> bool:
            if not self.get_loop().is_running():
                self.torn_down = True
            return super().cancel(msg)
