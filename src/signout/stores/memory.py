"""The embedded, single-process store: the default when no Redis is given."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from .. import layout
from ..layout import Lookup, Write
from .base import Store, Value

log = logging.getLogger("signout")
_warned = False


class MemoryStore(Store):
    """Revocations in a dict, with the same bucket semantics as ``RedisStore``.

    Only this process sees them: another worker, another instance or a restart
    does not. Fine for development, tests and single-process apps.
    """

    @property
    def where(self) -> str:
        return "memory (this process)"

    answers_locally = True  # every read is a dict lookup: the engine asks inline

    def __init__(self, *, warn: bool = True) -> None:
        global _warned
        if warn and not _warned:
            _warned = True
            log.warning(
                "signout: using MemoryStore; revocations are seen by this process only "
                "and are lost on restart. Pass redis_url= for anything with more than one worker."
            )
        self._buckets: dict[str, tuple[float, dict[bytes, bytes]]] = {}
        # Each distinct value once, with when it expires: a million revocations hold a few
        # thousand distinct values (an expiry second, a cutoff), so every field shares one
        # object instead of a copy of its own (48 bytes each), and each is parsed once.
        self._values: dict[bytes, tuple[bytes, int]] = {}
        self._lock = threading.Lock()
        self._writes = 0

    def fetch_sync(self, lookups: Sequence[Lookup], now: float) -> list[list[Value]]:
        # Without the lock: a dict read is atomic, and every field only ever grows later (a
        # revocation is never taken back early), so a read racing a write sees it or not,
        # as one a moment earlier would. An expired bucket reads as absent; writes sweep it.
        get = self._buckets.get
        out: list[list[Value]] = []
        for lookup in lookups:
            entry = get(lookup.key)
            if entry is None or entry[0] <= now:
                out.append([None] * len(lookup.fields))
            else:
                out.append(list(map(entry[1].get, lookup.fields)))
        return out

    def fetch_local(self, lookups: Sequence[Lookup], now: float) -> list[list[Value]]:
        return self.fetch_sync(lookups, now)

    def write_sync(self, writes: Sequence[Write], now: float) -> None:
        with self._lock:
            for w in writes:
                self._merge(w, now)
            self._writes += 1
            if self._writes % 1024 == 0:
                self._sweep(now)

    def claim_sync(self, write: Write, now: float) -> Value:
        """Merge one claim (``layout.claim_value``); the value its field held before, ``None`` if none."""
        with self._lock:
            entry = self._buckets.get(write.key)
            held = None if entry is None or entry[0] <= now else entry[1].get(write.fields[0][0])
            self._merge(write, now)
        return held

    async def claim(self, write: Write, now: float) -> Value:
        return self.claim_sync(write, now)

    def _merge(self, w: Write, now: float) -> None:
        """Merge one write (under the lock)."""
        entry = self._buckets.get(w.key)
        fields = {} if entry is None or entry[0] <= now else entry[1]
        for name, value in w.fields:
            fields[name] = layout.merge(fields.get(name), value)
        self._keep(w.key, fields, now)

    async def fetch(self, lookups: Sequence[Lookup], now: float) -> list[list[Value]]:
        return self.fetch_sync(lookups, now)

    async def write(self, writes: Sequence[Write], now: float) -> None:
        self.write_sync(writes, now)

    def replace_sync(self, key: str, fields: dict[bytes, bytes], now: float) -> None:
        """Make bucket ``key`` hold exactly ``fields`` (a mirror copying Redis)."""
        with self._lock:
            self._keep(key, dict(fields), now)

    def clear(self) -> None:
        with self._lock:
            self._buckets.clear()
            self._values.clear()

    def _keep(self, key: str, fields: dict[bytes, bytes], now: float) -> None:
        """Drop expired fields; the bucket lives as long as its latest field."""
        latest = 0
        values = self._values
        for name, value in list(fields.items()):
            known = values.get(value)
            if known is None:
                parsed = layout.parse(value)
                if parsed is None:
                    del fields[name]
                    continue
                known = values[value] = (value, parsed[1])
            if known[1] <= now:
                del fields[name]
            else:
                fields[name] = known[0]
                latest = max(latest, known[1])
        if fields:
            self._buckets[key] = (float(latest), fields)
        else:
            self._buckets.pop(key, None)

    def _sweep(self, now: float) -> None:
        for key in [k for k, (expires, _) in self._buckets.items() if expires <= now]:
            del self._buckets[key]
        for value in [v for v, (_, expires) in self._values.items() if expires <= now]:
            del self._values[value]

    def __len__(self) -> int:
        return len(self._buckets)
