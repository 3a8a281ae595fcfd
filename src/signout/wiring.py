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
from .errors import ConfigError, StoreError, unknown_option
from .revoker import Revoker
from .steps import Claim, Commit, Fetch, Step, Written
from .stores.base import Mode, Store
from .stores.resolve import resolve_store

log = logging.getLogger("signout")

#: Where the verified claims of the request's token are put: the ASGI scope, the WSGI environ.
CLAIMS_KEY = "signout.claims"
#: Where the middleware's ``Revoker`` is put on every request it lets through: app code reaches
#: it there when ``app.add_middleware(...)`` keeps the instance out of reach.
REVOKER_KEY = "signout.revoker"

_STORE_KWARGS = frozenset({"redis_url", "redis", "store", "local_mirror"})
_SETTINGS_KWARGS = frozenset(inspect.signature(build_settings).parameters)


@dataclass(frozen=True, slots=True)
class Wiring:
    settings: Settings
    store: Store
    engine: Engine
    revoker: Revoker


def wire(kwargs: dict[str, Any], *, mode: Mode, kind: str) -> Wiring:
    """Validate every kwarg (``ConfigError`` names the bad one) and build the parts."""
    unknown = sorted(set(kwargs) - _SETTINGS_KWARGS - _STORE_KWARGS)
    if unknown:
        raise ConfigError(unknown[0], unknown_option(unknown[0], _SETTINGS_KWARGS | _STORE_KWARGS))
    settings = build_settings(**{k: v for k, v in kwargs.items() if k not in _STORE_KWARGS})
    store = resolve_store(
        redis_url=kwargs.get("redis_url"),
        redis=kwargs.get("redis"),
        store=kwargs.get("store"),
        timeout=settings.store_timeout,
        local_mirror=kwargs.get("local_mirror", False),
        prefix=settings.key_prefix,
    )
    if not store.serves(mode):
        given = next((k for k in ("redis", "store") if kwargs.get(k) is not None), "store")
        client = "an asyncio client (redis.asyncio)" if mode == "async" else "a sync client (redis.Redis)"
        raise ConfigError(given, f"{kind} needs {client} or a redis_url")
    if settings.refresh_rotation and not store.claims():
        raise ConfigError(
            "refresh_rotation", "needs a store that records a first use atomically (MemoryStore, RedisStore)"
        )
    if settings.backchannel_logout_path is not None and not store.claims():
        raise ConfigError(
            "backchannel_logout_path",
            "needs a store that records a logout token's jti atomically (MemoryStore, RedisStore): replays are refused",
        )
    # A store that answers from memory (embedded, a mirror in sync) is asked inline by the guard.
    engine = Engine(settings, fetch_local=store.fetch_local if store.answers_locally else None)
    return Wiring(settings, store, engine, Revoker.for_settings(settings, store))


class Adapter:
    """What the ASGI and WSGI middlewares share: their parts, and what a store failure means."""

    def __init__(self, app: Any, kwargs: dict[str, Any], *, mode: Mode, kind: str) -> None:
        parts = wire(kwargs, mode=mode, kind=kind)
        self.app = app
        self.settings = parts.settings
        #: Every call returns or raises ``StoreError`` within ``store_timeout`` (``stores.base``).
        self.store: Store = parts.store
        self.engine = parts.engine
        #: Revoke tokens, sessions and users from app code, on this middleware's store.
        self.revoker = parts.revoker
        #: The keys published at ``jwks_url``, or ``None`` (static keys only).
        self.keyset = self.settings.keyset
        self._outage = OutageLog(letting_through=self.settings.on_store_error == "allow")

    def failed(self, step: Fetch | Commit | Claim, exc: StoreError) -> Step:
        """The next step after a store call that failed or ran out of time."""
        reason = self.reason(exc)
        if isinstance(step, Fetch):
            self._outage.warn(reason)
            return step.resume(None)
        if isinstance(step, Claim):
            # A refresh token's first use (refresh_rotation), or a back-channel logout token's jti.
            log.error("signout: a first use (a refresh token's, a logout token's) was NOT recorded: %s", reason)
            return step.resume(None, True)
        if exc.unsure:
            log.error("signout: revocation may NOT have been recorded (the store may still apply it): %s", reason)
            return step.resume(Written.UNSURE)
        log.error("signout: revocation NOT recorded: %s", reason)
        return step.resume(Written.NO)

    def reason(self, exc: StoreError) -> str:
        """What failed, where, and why, for a log line."""
        return str(exc) if exc.where is not None else f"{exc} [store {self.store.where}]"
