"""Revocation stores: ``MemoryStore`` (embedded) and ``RedisStore``."""

from __future__ import annotations

from .base import AsyncStore, SyncStore
from .memory import MemoryStore

__all__ = ["AsyncStore", "MemoryStore", "RedisStore", "SyncStore"]


def __getattr__(name: str) -> object:
    # redis is an extra: import it only when a RedisStore is asked for.
    if name == "RedisStore":
        from .redis import RedisStore

        return RedisStore
    raise AttributeError(name)
