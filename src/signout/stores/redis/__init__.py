"""The Redis store: ``RedisStore``, its merge script, and how it reaches Redis through redis-py."""

from __future__ import annotations

from .script import MERGE_SCRIPT, changes_channel
from .store import RedisStore

__all__ = ["MERGE_SCRIPT", "RedisStore", "changes_channel"]
