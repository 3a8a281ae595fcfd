"""Coalescing: guard checks that arrive in one event-loop tick share one Redis pipeline.

The first check of a tick becomes the *leader*: it yields once (``sleep(0)``),
so every check started in the same tick can join its batch, then sends all of
them as one pipeline and hands each follower its rows. Under load that is one
write and one read for N requests instead of N of each; alone, it costs one
loop iteration. A leader that fails or is cancelled (its ``store_timeout``)
fails its followers too, so nobody waits forever.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from ..errors import StoreError
from ..layout import Lookup
from .base import Value

Rows = list[list[Value]]
Send = Callable[[Sequence[Lookup]], Awaitable[Rows]]


class _Batch:
    __slots__ = ("followers", "lookups")

    def __init__(self) -> None:
        self.lookups: list[Lookup] = []
        self.followers: list[tuple[int, int, asyncio.Future[Rows]]] = []


class Coalescer:
    """One per event loop (its futures belong to that loop)."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self._open: _Batch | None = None

    async def fetch(self, lookups: Sequence[Lookup]) -> Rows:
        batch = self._open
        if batch is not None:
            future: asyncio.Future[Rows] = asyncio.get_running_loop().create_future()
            start = len(batch.lookups)
            batch.lookups.extend(lookups)
            batch.followers.append((start, len(batch.lookups), future))
            return await future
        batch = self._open = _Batch()
        batch.lookups.extend(lookups)
        mine = len(batch.lookups)
        try:
            try:
                await asyncio.sleep(0)  # let the rest of this tick join
            finally:
                self._open = None
            rows = await self._send(batch.lookups)
        except BaseException as exc:  # cancelled in the sleep or the send: fail the joiners too
            failure = exc if isinstance(exc, StoreError) else StoreError("the batch's leader gave up")
            for _, _, future in batch.followers:
                if not future.done():
                    future.set_exception(failure)
            raise
        for start, end, future in batch.followers:
            if not future.done():  # a follower past its own timeout is cancelled
                future.set_result(rows[start:end])
        return rows[:mine]
