"""What a Redis store holds: live revocations by kind, bucket keys, memory.

Read-only and for operators (``signout stats``); nothing here is on the
request path. Counts are exact: every bucket is read. Memory is
``MEMORY USAGE`` summed over the first ``sample`` keys SCAN returns (SCAN
walks the hash table, so they are a fair sample) and scaled to all keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis

from . import layout
from .errors import StoreError

SAMPLE = 10_000


@dataclass(frozen=True, slots=True)
class Stats:
    """Live entries by kind, and the keys holding them.

    ``expired``: fields past their expiry that are still stored; the next write
    to their bucket prunes them, and the key's TTL removes the rest.
    ``memory_estimated``: ``memory_bytes`` was scaled from ``memory_sampled`` keys.
    """

    keys: int
    users: int
    sessions: int
    tokens: int
    expired: int
    memory_bytes: int
    memory_estimated: bool
    memory_sampled: int


def collect(client: redis.Redis, prefix: str, now: float, *, sample: int = SAMPLE) -> Stats:
    """Scan every bucket of ``prefix``; raise ``StoreError`` if Redis fails."""
    try:
        return _collect(client, prefix, now, sample)
    except (redis.RedisError, OSError) as exc:
        raise StoreError(f"redis stats failed: {type(exc).__name__}") from exc


def _collect(client: redis.Redis, prefix: str, now: float, sample: int) -> Stats:
    key_length = len(prefix) + 1 + layout.TAG_CHARS
    counts = {"u": 0, "s": 0, "j": 0}
    keys = expired = memory = sampled = 0
    cursor = 0
    while True:
        cursor, page = _scan(client, cursor, f"{prefix}:{{*")
        # MATCH is a glob; the length check drops look-alikes such as "<prefix>:{x}:y".
        page = [k for k in page if len(k) == key_length and k.endswith(b"}")]
        pipe = client.pipeline(transaction=False)
        measure = max(0, sample - sampled)
        for i, key in enumerate(page):
            pipe.hgetall(key)
            if i < measure:
                pipe.memory_usage(key)
        # A key of another type under the prefix is not ours: skip its error, don't fail.
        replies = iter(pipe.execute(raise_on_error=False))
        for i in range(len(page)):
            fields: Any = next(replies)
            size: Any = next(replies) if i < measure else None
            if not isinstance(fields, dict) or not fields:
                continue  # expired between SCAN and HGETALL, or not a hash
            keys += 1
            if isinstance(size, int):
                memory += size
                sampled += 1
            for name, value in fields.items():
                parsed = layout.parse(value)
                if parsed is None or parsed[1] <= now:
                    expired += 1
                    continue
                kind = (name if isinstance(name, str) else name[:1].decode("ascii", "replace"))[:1]
                if kind in counts:
                    counts[kind] += 1
        if cursor == 0:
            break
    estimated = keys > sampled and sampled > 0
    if estimated:
        memory = round(memory * keys / sampled)
    return Stats(
        keys=keys,
        users=counts["u"],
        sessions=counts["s"],
        tokens=counts["j"],
        expired=expired,
        memory_bytes=memory,
        memory_estimated=estimated,
        memory_sampled=sampled,
    )


def _scan(client: redis.Redis, cursor: int, match: str) -> tuple[int, list[bytes]]:
    reply: Any = client.scan(cursor, match=match, count=1000)
    next_cursor, page = reply
    return int(next_cursor), [k if isinstance(k, bytes) else str(k).encode() for k in page]
