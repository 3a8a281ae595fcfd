"""Revoke from app code: a token, a session, a user; and ask whether a token is revoked.

For "password changed: log out everywhere", for rotating refresh tokens, and
for an incident responder. ``middleware.revoker`` shares the middleware's
store, key layout and verifier; ``Revoker(redis_url=...)`` stands alone (the
CLI uses one). Every method has an async form and a ``_sync`` twin; they
differ only in the store call.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any, TypeAlias

from . import kinds, rules
from .audit import AuditEvent, Auditor, Sink, ids
from .claims import string, user_of
from .config import Clock, Settings, build_settings
from .errors import ConfigError, InvalidClaim, unknown_option
from .layout import Lookup, Write
from .stores.base import Store
from .stores.resolve import resolve_store
from .tokens import Source, Token, Verifier

TokenLike: TypeAlias = Mapping[str, Any] | str

# Taken by name in __init__; whatever else ``**verify`` carries goes on to build_settings.
_NAMED_KWARGS = frozenset(
    (
        "redis_url",
        "redis",
        "store",
        "key",
        "key_prefix",
        "leeway",
        "max_token_lifetime",
        "store_timeout",
        "on_event",
        "clock",
    )
)
_VERIFY_KWARGS = frozenset(inspect.signature(build_settings).parameters) - _NAMED_KWARGS


class Revoker:
    """Revocations on a store, with the same rules as the middleware.

    Standalone: ``Revoker(redis_url=..., key_prefix=..., max_token_lifetime=...)``;
    pass ``key=`` (and ``algorithms=``...) too to revoke or check token *strings*.
    """

    def __init__(
        self,
        *,
        redis_url: str | None = None,
        redis: Any = None,
        store: Any = None,
        key: object = None,
        key_prefix: str = "signout",
        leeway: float | timedelta = 30,
        max_token_lifetime: float | timedelta = timedelta(days=30),
        store_timeout: float = 1.0,
        on_event: Sink | None = None,
        clock: Clock | None = None,
        **verify: Any,
    ) -> None:
        unknown = sorted(set(verify) - _VERIFY_KWARGS)
        if unknown:
            raise ConfigError(unknown[0], unknown_option(unknown[0], _VERIFY_KWARGS | _NAMED_KWARGS))
        # Validate with the middleware's own rules; a dummy key stands in when
        # none is given, and then token strings are refused (nothing verifies them).
        settings = build_settings(
            key=key if key is not None else "x" * 64,
            key_prefix=key_prefix,
            leeway=leeway,
            max_token_lifetime=max_token_lifetime,
            store_timeout=store_timeout,
            on_event=on_event,
            clock=clock,
            **verify,
        )
        store = resolve_store(redis_url=redis_url, redis=redis, store=store, timeout=settings.store_timeout)
        self._setup(settings, store, settings.verifier if key is not None else None)

    @classmethod
    def for_settings(cls, settings: Settings, store: Store) -> Revoker:
        self = cls.__new__(cls)
        self._setup(settings, store, settings.verifier)
        return self

    def _setup(self, settings: Settings, store: Store, verifier: Verifier | None) -> None:
        self._store = store
        self._verifier = verifier
        self._clock = settings.clock
        self._user_claim = settings.user_claim
        self.policy = rules.Policy(settings.key_prefix, settings.leeway, settings.max_token_lifetime)
        self._audit = Auditor(settings.on_event)

    # ---- planning (pure) -------------------------------------------------

    def token(self, token: TokenLike) -> Token:
        """A token string verified (needs ``key``), or claims taken at their word (app code)."""
        now = self._clock()
        if isinstance(token, str):
            if self._verifier is None:
                raise ConfigError("key", "this Revoker has no key, so it cannot verify token strings; pass claims")
            shared = self._verifier.verify(token, Source.HEADER, now)
            # The verified cache's Token is the guard's; app code gets one of its own.
            return dataclasses.replace(shared, claims=shared.app_claims(), verified=None)

        def number(name: str) -> float | None:
            value = token.get(name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise InvalidClaim(name, "must be a number")
            return None if value is None else float(value)

        exp = number("exp")
        return Token(
            source=Source.HEADER,
            claims=token,
            iss=string(token, "iss") or "",
            sub=user_of(token, self._user_claim),
            sid=string(token, "sid"),
            jti=string(token, "jti"),
            iat=number("iat"),
            exp=exp if exp is not None else now + self.policy.max_token_lifetime,
            kind=kinds.kind_of(None, token),
        )

    def plan_token(self, token: TokenLike, *, session: bool = False) -> tuple[Token, tuple[Write, ...]]:
        """The token and the writes that revoke it (and, with ``session``, its login)."""
        t = self.token(token)
        writes = rules.token_writes(self.policy, (t,), self._clock(), session=session)
        if not writes:
            raise InvalidClaim("jti", "is missing, and so is sid: nothing identifies this token")
        return t, writes

    def plan_session(self, *, sid: str, iss: str = "", sub: str | None = None) -> tuple[Write, ...]:
        return (rules.session_write(self.policy, iss=iss, sid=sid, sub=sub, now=self._clock()),)

    def plan_user(self, *, sub: str, iss: str = "", at: float | None = None) -> tuple[Write, ...]:
        now = self._clock()
        if at is not None and at > now:
            raise ValueError("at may not be in the future")
        return (rules.user_write(self.policy, iss=iss, sub=sub, now=now, at=at),)

    def _lookup(self, token: TokenLike) -> tuple[Token, Lookup | None]:
        t = self.token(token)
        found, _ = rules.lookups(self.policy, (t,))
        return t, (found[0] if found else None)

    @staticmethod
    def _judge(t: Token, lookup: Lookup, rows: Sequence[Sequence[Any]], now: float) -> bool:
        return rules.revoked(t, dict(zip(lookup.fields, rows[0], strict=True)), now)

    def _done(self, scope: str, **facts: Any) -> None:
        self._audit(AuditEvent("revocation", "revoked", "", None, scope=scope, count=1, **facts))

    # ---- async ---------------------------------------------------------

    async def revoke(self, token: TokenLike, *, session: bool = False) -> None:
        """Denylist one token (claims, or a token string that verifies); ``session=True``: its login too."""
        t, writes = self.plan_token(token, session=session)
        await self._store.write(writes, self._clock())
        self._done("session" if session else "token", **ids(t))

    async def revoke_session(self, *, sid: str, iss: str = "", sub: str | None = None) -> None:
        """Revoke every token of one login. Give ``sub`` when the tokens carry one (their bucket is the user's)."""
        await self._store.write(self.plan_session(sid=sid, iss=iss, sub=sub), self._clock())
        self._done("session", iss=iss or None, sid=sid, sub=sub)

    async def revoke_user(self, *, sub: str, iss: str = "", at: float | None = None) -> None:
        """Revoke every token of ``sub`` issued at or before ``at`` (default: now), in every app on the store."""
        await self._store.write(self.plan_user(sub=sub, iss=iss, at=at), self._clock())
        self._done("user", iss=iss or None, sub=sub)

    async def is_revoked(self, token: TokenLike) -> bool:
        t, lookup = self._lookup(token)
        if lookup is None:
            return False
        now = self._clock()
        return self._judge(t, lookup, await self._store.fetch((lookup,), now), now)

    # ---- sync ----------------------------------------------------------

    def revoke_sync(self, token: TokenLike, *, session: bool = False) -> None:
        t, writes = self.plan_token(token, session=session)
        self._store.write_sync(writes, self._clock())
        self._done("session" if session else "token", **ids(t))

    def revoke_session_sync(self, *, sid: str, iss: str = "", sub: str | None = None) -> None:
        self._store.write_sync(self.plan_session(sid=sid, iss=iss, sub=sub), self._clock())
        self._done("session", iss=iss or None, sid=sid, sub=sub)

    def revoke_user_sync(self, *, sub: str, iss: str = "", at: float | None = None) -> None:
        self._store.write_sync(self.plan_user(sub=sub, iss=iss, at=at), self._clock())
        self._done("user", iss=iss or None, sub=sub)

    def is_revoked_sync(self, token: TokenLike) -> bool:
        t, lookup = self._lookup(token)
        if lookup is None:
            return False
        now = self._clock()
        return self._judge(t, lookup, self._store.fetch_sync((lookup,), now), now)
