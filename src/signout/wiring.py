"""What both adapters build from their kwargs: settings, store, engine, revoker.

Kept in one place so the ASGI and WSGI middlewares accept exactly the same
kwargs and differ only in their I/O.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass
from typing import Any

from .audit import OutageLog
from .config import Settings, build_settings
from .core import Engine
from .errors import ConfigError
from .revoker import Revoker
from .steps import Claim, Commit, Fetch, Step
from .stores.base import AsyncStore
from .stores.resolve import resolve_store

log = logging.getLogger("signout")

#: Where the verified claims of the request's token are put: the ASGI scope, the WSGI environ.
CLAIMS_KEY = "signout.claims"

_STORE_KWARGS = frozenset({"redis_url", "redis", "store", "local_mirror"})
_SETTINGS_KWARGS = frozenset(inspect.signature(build_settings).parameters)


@dataclass(frozen=True, slots=True)
class Wiring:
    settings: Settings
    store: Any
    engine: Engine
    revoker: Revoker


def wire(kwargs: dict[str, Any], *, protocol: type, kind: str) -> Wiring:
    """Validate every kwarg (``ConfigError`` names the bad one) and build the parts."""
    unknown = sorted(set(kwargs) - _SETTINGS_KWARGS - _STORE_KWARGS)
    if unknown:
        known = ", ".join(sorted(_SETTINGS_KWARGS | _STORE_KWARGS))
        raise ConfigError(unknown[0], f"is not a signout option; known options: {known}")
    settings = build_settings(**{k: v for k, v in kwargs.items() if k not in _STORE_KWARGS})
    store = resolve_store(
        redis_url=kwargs.get("redis_url"),
        redis=kwargs.get("redis"),
        store=kwargs.get("store"),
        timeout=settings.store_timeout,
        local_mirror=kwargs.get("local_mirror", False),
        prefix=settings.key_prefix,
    )
    mode = "async" if protocol is AsyncStore else "sync"
    serves = getattr(store, "serves", None)
    if not isinstance(store, protocol) or (callable(serves) and not serves(mode)):
        given = next((k for k in ("redis", "store") if kwargs.get(k) is not None), "store")
        client = "an asyncio client (redis.asyncio)" if mode == "async" else "a sync client (redis.Redis)"
        raise ConfigError(given, f"{kind} needs {client} or a redis_url")
    if settings.refresh_rotation and not callable(getattr(store, "claim" if mode == "async" else "claim_sync", None)):
        raise ConfigError(
            "refresh_rotation", "needs a store that records a first use atomically (MemoryStore, RedisStore)"
        )
    # A store that answers from memory (embedded, a mirror in sync) is asked inline by the guard.
    engine = Engine(settings, fetch_local=getattr(store, "fetch_local", None))
    return Wiring(settings, store, engine, Revoker.for_settings(settings, store))


class Adapter:
    """What the ASGI and WSGI middlewares share: their parts, and what a store failure means."""

    def __init__(self, app: Any, kwargs: dict[str, Any], *, protocol: type, kind: str) -> None:
        parts = wire(kwargs, protocol=protocol, kind=kind)
        self.app = app
        self.settings = parts.settings
        self.raw_store: Any = parts.store
        self.engine = parts.engine
        #: Revoke tokens, sessions and users from app code, on this middleware's store.
        self.revoker = parts.revoker
        self._outage = OutageLog()
        # Refresh rotation's atomic first-use record (checked by ``wire`` when it is on).
        self.claim: Any = getattr(parts.store, "claim", None)
        self.claim_sync: Any = getattr(parts.store, "claim_sync", None)

    def failed(self, step: Fetch | Commit | Claim, exc: BaseException) -> Step:
        """The next step after a store call that failed or ran out of time."""
        if isinstance(step, Fetch):
            self._outage.warn(exc)
            return step.resume(None)
        if isinstance(step, Claim):
            return step.resume(None, True)
        log.error("signout: revocation NOT recorded: %s", str(exc) or type(exc).__name__)
        return step.resume(False)
