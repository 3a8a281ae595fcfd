"""The store protocol: read fields of buckets, merge writes into buckets.

A store knows nothing of tokens: the core hands it ``Lookup``s and ``Write``s
(see ``signout.layout``) and interprets the raw values it returns. That keeps
the revocation rules in one pure place and every store a thin I/O layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from ..layout import Lookup, Write

Value = bytes | str | None


@runtime_checkable
class AsyncStore(Protocol):
    async def fetch(self, lookups: Sequence[Lookup], now: float) -> list[list[Value]]:
        """The values of each lookup's fields, in order; ``None`` where absent."""
        ...

    async def write(self, writes: Sequence[Write], now: float) -> None:
        """Merge every write; raise ``StoreError`` unless all were written."""
        ...


@runtime_checkable
class SyncStore(Protocol):
    def fetch_sync(self, lookups: Sequence[Lookup], now: float) -> list[list[Value]]: ...

    def write_sync(self, writes: Sequence[Write], now: float) -> None: ...
