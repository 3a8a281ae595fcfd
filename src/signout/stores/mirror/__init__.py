"""The local mirror: ``MirrorStore``, an in-memory copy of every bucket, kept current by a follower.

A follower subscribes to the change messages the merge script publishes and
copies every bucket at start and after every loss (``follower``). Three follow
with different means: a raw socket in a thread (``socket_follower``, for
``redis://`` and ``unix://`` URLs), a task on the serving event loop
(``asyncio_follower``, redis-py's asyncio pub/sub), and a thread on redis-py's
pub/sub (``pubsub_follower``, for ``rediss://`` and clients given).
"""

from __future__ import annotations

from .store import MirrorStore

__all__ = ["MirrorStore"]
