"""The store contract: everything the adapters, the engine and the ``Revoker`` ask of a store.

A store knows nothing of tokens: the core hands it ``Lookup``s and ``Write``s
(see ``signout.layout``) and interprets the raw values it returns. That keeps
the revocation rules in one pure place and every store a thin I/O layer.

The promise every call keeps: it returns, or raises ``StoreError``, within
``timeout`` seconds of time spent waiting for the store. Callers (the guard,
logout routes, the revocation endpoint, the ``Revoker``, the CLI) add no
deadline of their own. A write that fails after it may have reached the store
raises ``StoreError`` with ``unsure=True``.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal, TypeVar

from ..errors import StoreError
from ..layout import Lookup, Write

Value = bytes | str | None
Rows = list[list[Value]]
Mode = Literal["async", "sync"]
T = TypeVar("T")


class Store:
    """Base of every store; a subclass overrides the calls it serves.

    ``answers_locally``: ``fetch_local`` may answer from memory (no I/O), so the
    engine asks it inline before driving a ``Fetch``.
    """

    answers_locally: bool = False

    @property
    def where(self) -> str:
        """Where the store is, for log lines: a URL without credentials, "memory (this process)"..."""
        return type(self).__name__

    @property
    def timeout(self) -> float:
        """The deadline every call keeps (seconds)."""
        return 0.0

    def serves(self, mode: Mode) -> bool:
        """Whether this store can serve ``"async"`` (ASGI) or ``"sync"`` (WSGI, scripts) callers."""
        return True

    # reads: the values of each lookup's fields, in order; None where absent
    async def fetch(self, lookups: Sequence[Lookup], now: float) -> Rows:
        raise StoreError("this store serves no asyncio callers", where=self.where)

    def fetch_sync(self, lookups: Sequence[Lookup], now: float) -> Rows:
        raise StoreError("this store serves no sync callers", where=self.where)

    def fetch_local(self, lookups: Sequence[Lookup], now: float) -> Rows | None:
        """The rows from memory, without I/O; ``None`` when they must be fetched."""
        return None

    # writes: merge every write, or raise StoreError
    async def write(self, writes: Sequence[Write], now: float) -> None:
        raise StoreError("this store serves no asyncio callers", where=self.where)

    def write_sync(self, writes: Sequence[Write], now: float) -> None:
        raise StoreError("this store serves no sync callers", where=self.where)

    # claims (refresh rotation): merge one claim (layout.claim_value); what its field held before
    async def claim(self, write: Write, now: float) -> Value:
        raise StoreError("this store records no claims", where=self.where)

    def claim_sync(self, write: Write, now: float) -> Value:
        raise StoreError("this store records no claims", where=self.where)

    def claims(self) -> bool:
        """Whether ``claim`` records a first use atomically (refresh rotation needs it)."""
        return type(self).claim is not Store.claim or type(self).claim_sync is not Store.claim_sync

    async def aclose(self) -> None:
        """Close the connections this store opened on the running loop (lifespan shutdown)."""

    def close(self) -> None:
        """Close the connections this store opened for sync callers."""


class ForeignStore(Store):
    """A store object of the app's own (``store=``) that is not a ``Store``: held to the contract.

    Its asyncio calls are bounded here; its sync calls cannot be interrupted from
    outside, so a sync store of one's own must bound them itself (README, Storage).
    """

    def __init__(self, inner: Any, timeout: float) -> None:
        self._inner = inner
        self._timeout = timeout
        self._where = str(getattr(inner, "where", None) or type(inner).__name__)

    @property
    def where(self) -> str:
        return self._where

    @property
    def timeout(self) -> float:
        return self._timeout

    def serves(self, mode: Mode) -> bool:
        return callable(getattr(self._inner, "fetch" if mode == "async" else "fetch_sync", None))

    def claims(self) -> bool:
        return callable(getattr(self._inner, "claim", None)) or callable(getattr(self._inner, "claim_sync", None))

    async def fetch(self, lookups: Sequence[Lookup], now: float) -> Rows:
        rows: Rows = await self._within(self._inner.fetch(lookups, now), unsure=False)
        return rows

    def fetch_sync(self, lookups: Sequence[Lookup], now: float) -> Rows:
        rows: Rows = self._inner.fetch_sync(lookups, now)
        return rows

    async def write(self, writes: Sequence[Write], now: float) -> None:
        await self._within(self._inner.write(writes, now), unsure=True)

    def write_sync(self, writes: Sequence[Write], now: float) -> None:
        self._inner.write_sync(writes, now)

    async def claim(self, write: Write, now: float) -> Value:
        held: Value = await self._within(self._inner.claim(write, now), unsure=True)
        return held

    def claim_sync(self, write: Write, now: float) -> Value:
        held: Value = self._inner.claim_sync(write, now)
        return held

    async def aclose(self) -> None:
        closer = getattr(self._inner, "aclose", None)
        if closer is not None:
            await closer()

    def close(self) -> None:
        closer = getattr(self._inner, "close", None)
        if closer is not None:
            closer()

    async def _within(self, call: Awaitable[T], *, unsure: bool) -> T:
        def late() -> StoreError:
            return StoreError(f"no answer within {self.timeout:g} s", where=self.where, unsure=unsure)

        try:
            return await within(call, self.timeout, late)
        except StoreError:
            raise
        except Exception as exc:  # an app's store failing its own way: a store failure, never a 500
            raise StoreError(f"the store failed: {type(exc).__name__}", where=self.where, unsure=unsure) from exc


async def within(call: Awaitable[T], timeout: float, failure: Callable[[], StoreError]) -> T:
    """``call``, or ``failure()`` once ``timeout`` seconds have passed (the store's own deadline)."""
    try:
        if sys.version_info >= (3, 11):
            # asyncio.timeout cancels in place; wait_for wraps the call in a new Task (before 3.12).
            async with asyncio.timeout(timeout):
                return await call
        return await asyncio.wait_for(call, timeout)  # pragma: no cover - Python 3.10
    except asyncio.TimeoutError:
        raise failure() from None
