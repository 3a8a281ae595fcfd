"""Revoke from app code: a token, a session, a user; and ask whether a token is revoked.

For "password changed: log out everywhere", for rotating refresh tokens, and
for an incident responder. ``middleware.revoker`` shares the middleware's
store, key layout and verifier; ``Revoker(redis_url=...)`` stands alone (the
CLI uses one). Every method has an async form and a ``_sync`` twin; they
differ only in the store call (and, with ``jwks_url``, in how the key set is
fetched when a token string names a key not at hand: off the loop, or inline).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Generator, Mapping, Sequence
from datetime import timedelta
from typing import Any, TypeAlias, TypeVar

from . import kinds, rules
from .audit import AuditEvent, Auditor, Sink, ids
from .claims import string, user_of
from .config import Clock, Settings, build_settings
from .drive import run, run_sync
from .errors import ConfigError, InvalidClaim, KeysNeeded, unknown_option
from .keyset import KeySet
from .layout import Lookup, Write
from .stores.base import Store
from .stores.resolve import resolve_store
from .tokens import Source, Token, Verifier, after_fetch

TokenLike: TypeAlias = Mapping[str, Any] | str
_T = TypeVar("_T")

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
    pass ``key=`` or ``jwks_url=`` (and ``algorithms=``...) too to revoke or check
    token *strings*. With ``jwks_url``, a token string whose key is not at hand
    fetches the key set (once, rate-limited, as the middleware does) and is
    verified again; while no key set is usable it raises ``KeysUnavailable``.
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
        jwks = verify.get("jwks_url") is not None
        verifies = key is not None or jwks
        settings = build_settings(
            key=key if key is not None or jwks else "x" * 64,
            key_prefix=key_prefix,
            leeway=leeway,
            max_token_lifetime=max_token_lifetime,
            store_timeout=store_timeout,
            on_event=on_event,
            clock=clock,
            **verify,
        )
        store = resolve_store(redis_url=redis_url, redis=redis, store=store, timeout=settings.store_timeout)
        self._setup(settings, store, settings.verifier if verifies else None)

    @classmethod
    def for_settings(cls, settings: Settings, store: Store) -> Revoker:
        self = cls.__new__(cls)
        self._setup(settings, store, settings.verifier)
        return self

    def _setup(self, settings: Settings, store: Store, verifier: Verifier | None) -> None:
        self._store = store
        self._verifier = verifier
        self._keyset = settings.keyset
        self._clock = settings.clock
        self._user_claim = settings.user_claim
        self.policy = rules.Policy(settings.key_prefix, settings.leeway, settings.max_token_lifetime)
        self._audit = Auditor(settings.on_event)

    # ---- planning (pure) -------------------------------------------------

    def token(self, token: TokenLike) -> Token:
        """A token string verified (needs ``key`` or ``jwks_url``), or claims taken at their word (app code).

        With ``jwks_url``, a key not at hand is fetched in this thread (see ``_keyed_sync``)."""
        return self._keyed_sync(lambda: self._token(token))

    def _keyed_sync(self, plan: Callable[[], _T]) -> _T:
        """``plan`` (which may verify a token string), with the key set fetched in this thread when needed."""
        return run_sync(self._keying(plan), KeySet.refresh_sync)

    async def _keyed(self, plan: Callable[[], _T]) -> _T:
        """``_keyed_sync`` for async code: the fetch runs off the event loop."""
        return await run(self._keying(plan), KeySet.refresh)

    def _keying(self, plan: Callable[[], _T]) -> Generator[KeySet, None, _T]:
        """``plan``; when a fetch of the key set may find the token's key, yield the key set
        to be fetched (a ``drive`` plan), and plan once more (a key still missing is final)."""
        try:
            return plan()
        except KeysNeeded:
            assert self._keyset is not None  # only a key set raises it
            yield self._keyset
            return after_fetch(plan)

    def _token(self, token: TokenLike) -> Token:
        now = self._clock()
        if isinstance(token, str):
            if self._verifier is None:
                raise ConfigError(
                    "key", "this Revoker has no key (nor jwks_url), so it cannot verify token strings; pass claims"
                )
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
        return self._keyed_sync(lambda: self._plan_token(token, session))

    def _plan_token(self, token: TokenLike, session: bool) -> tuple[Token, tuple[Write, ...]]:
        t = self._token(token)
        writes = rules.token_writes(self.policy, (t,), self._clock(), session=session)
        if not writes:
            raise InvalidClaim("jti", "is missing, and so is sid: nothing identifies this token")
        return t, writes

    def plan_session(self, *, sid: str, iss: str = "", sub: str | None = None) -> tuple[Write, ...]:
        """The write that revokes session (iss, sid); ``sub`` is accepted and unused (see ``revoke_session``)."""
        return (rules.session_write(self.policy, iss=iss, sid=sid, now=self._clock()),)

    def plan_user(self, *, sub: str, iss: str = "", at: float | None = None) -> tuple[Write, ...]:
        now = self._clock()
        if at is not None and at > now:
            raise ValueError("at may not be in the future")
        return (rules.user_write(self.policy, iss=iss, sub=sub, now=now, at=at),)

    def _token_revocation(self, token: TokenLike, session: bool) -> _Revocation:
        t, writes = self._plan_token(token, session)
        return self._revocation(writes, "session" if session else "token", **ids(t))

    def _session_revocation(self, sid: str, iss: str, sub: str | None) -> _Revocation:
        return self._revocation(
            self.plan_session(sid=sid, iss=iss, sub=sub), "session", iss=iss or None, sid=sid, sub=sub
        )

    def _user_revocation(self, sub: str, iss: str, at: float | None) -> _Revocation:
        return self._revocation(self.plan_user(sub=sub, iss=iss, at=at), "user", iss=iss or None, sub=sub)

    def _revocation(self, writes: tuple[Write, ...], scope: str, **facts: Any) -> _Revocation:
        event = AuditEvent("revocation", "revoked", "", None, scope=scope, count=1, **facts)
        return _Revocation(writes, self._clock(), event)

    def _check(self, token: TokenLike) -> _Check | None:
        """What ``is_revoked`` reads; ``None`` when nothing could have revoked the token."""
        t = self._token(token)
        found = rules.lookups_of(self.policy, t)
        return _Check(t, found, self._clock()) if found else None

    # ---- async (the same plans as the sync twins below; only the store call differs) ----

    async def revoke(self, token: TokenLike, *, session: bool = False) -> None:
        """Denylist one token (claims, or a token string that verifies); ``session=True``: its login too."""
        await self._apply(await self._keyed(lambda: self._token_revocation(token, session)))

    async def revoke_session(self, *, sid: str, iss: str = "", sub: str | None = None) -> None:
        """Revoke every token of one login (iss, sid), whether or not its tokens carry a ``sub``.

        ``sub`` is not needed: it is accepted for older callers and only named in the audit record.
        """
        await self._apply(self._session_revocation(sid, iss, sub))

    async def revoke_user(self, *, sub: str, iss: str = "", at: float | None = None) -> None:
        """Revoke every token of ``sub`` issued at or before ``at`` (default: now), in every app on the store."""
        await self._apply(self._user_revocation(sub, iss, at))

    async def is_revoked(self, token: TokenLike) -> bool:
        check = await self._keyed(lambda: self._check(token))
        return check is not None and check.answer(await self._store.fetch(check.lookups, check.now))

    async def _apply(self, revocation: _Revocation) -> None:
        await self._store.write(revocation.writes, revocation.now)
        self._audit(revocation.event)

    # ---- sync ----------------------------------------------------------

    def revoke_sync(self, token: TokenLike, *, session: bool = False) -> None:
        self._apply_sync(self._keyed_sync(lambda: self._token_revocation(token, session)))

    def revoke_session_sync(self, *, sid: str, iss: str = "", sub: str | None = None) -> None:
        self._apply_sync(self._session_revocation(sid, iss, sub))

    def revoke_user_sync(self, *, sub: str, iss: str = "", at: float | None = None) -> None:
        self._apply_sync(self._user_revocation(sub, iss, at))

    def is_revoked_sync(self, token: TokenLike) -> bool:
        check = self._keyed_sync(lambda: self._check(token))
        return check is not None and check.answer(self._store.fetch_sync(check.lookups, check.now))

    def _apply_sync(self, revocation: _Revocation) -> None:
        self._store.write_sync(revocation.writes, revocation.now)
        self._audit(revocation.event)


@dataclasses.dataclass(frozen=True, slots=True)
class _Revocation:
    """What one revoke call writes, when, and the audit record it emits once written."""

    writes: tuple[Write, ...]
    now: float
    event: AuditEvent


@dataclasses.dataclass(frozen=True, slots=True)
class _Check:
    """What ``is_revoked`` reads, and how it judges the answer."""

    token: Token
    lookups: tuple[Lookup, ...]
    now: float

    def answer(self, rows: Sequence[Sequence[Any]]) -> bool:
        return rules.revoked_alone(self.token, self.lookups, rows, self.now)
