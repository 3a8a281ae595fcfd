"""Coalescing: store calls that arrive in one event-loop tick share one Redis pipeline.

The first call of a tick opens a batch and schedules its sending for the next
loop iteration, so every call started in the same tick joins it; then all of
them go as one pipeline, in a task of its own, and each caller gets its
replies. Under load that is one write and one read for N requests instead of N
of each, on one connection instead of N from the pool; alone, it costs one
loop iteration. A caller that is cancelled (its client went away) leaves the
batch alone: the others still get their replies.

Even a call alone waits for the next iteration: one sent at once would start
its deadline before a burst's backlog (the rest of the tick's requests) and
time out behind it. That costs a sequential logout ~20 us (``bench_store.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Generic, TypeVar

from ...errors import StoreError

I = TypeVar("I")  # noqa: E741 - an item sent
R = TypeVar("R")  # its reply


class _Batch(Generic[I, R]):
    __slots__ = ("items", "waiters")

    def __init__(self) -> None:
        self.items: list[I] = []
        self.waiters: list[tuple[int, int, asyncio.Future[list[R]]]] = []


class Coalescer(Generic[I, R]):
    """One per event loop (its futures belong to that loop). ``send``: the items' replies, in
    order, or ``StoreError`` (it keeps the store's deadline itself)."""

    def __init__(self, send: Callable[[Sequence[I]], Coroutine[Any, Any, list[R]]]) -> None:
        self._send = send
        self._open: _Batch[I, R] | None = None
        self._sending: set[asyncio.Task[list[R]]] = set()

    async def __call__(self, items: Sequence[I]) -> list[R]:
        loop = asyncio.get_running_loop()
        batch = self._open
        if batch is None:
            batch = self._open = _Batch()
            loop.call_soon(self._go, batch)
        future: asyncio.Future[list[R]] = loop.create_future()
        start = len(batch.items)
        batch.items.extend(items)
        batch.waiters.append((start, len(batch.items), future))
        return await future

    def _go(self, batch: _Batch[I, R]) -> None:
        if self._open is batch:
            self._open = None
        task = asyncio.get_running_loop().create_task(self._send(batch.items))
        self._sending.add(task)  # a task nobody holds may be collected mid-flight
        task.add_done_callback(lambda done: self._answer(done, batch))

    def _answer(self, task: asyncio.Task[list[R]], batch: _Batch[I, R]) -> None:
        self._sending.discard(task)
        failure: BaseException | None
        if task.cancelled():  # the loop is shutting down
            failure = StoreError("the store call was cancelled", unsure=True)
        else:
            failure = task.exception()
            if failure is not None and not isinstance(failure, StoreError):
                failure = StoreError(f"the store call failed: {type(failure).__name__}", unsure=True)
        for start, end, future in batch.waiters:
            if future.done():  # its caller was cancelled
                continue
            if failure is not None:
                future.set_exception(failure)
            else:
                future.set_result(task.result()[start:end])
