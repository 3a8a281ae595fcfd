"""Revocation stores: ``MemoryStore`` (embedded) and ``RedisStore``."""

from __future__ import annotations

from .base import Store
from .memory import MemoryStore

__all__ = ["MemoryStore", "RedisStore", "Store"]


def __getattr__(name: str) -> object:
    # redis is an extra: import it only when a RedisStore is asked for.
    if name == "RedisStore":
        from .redis import RedisStore

        return RedisStore
    raise AttributeError(name)
