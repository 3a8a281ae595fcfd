"""Revoke from app code: a token, a session, a user; and ask whether a token is revoked.

For "password changed: log out everywhere", for rotating refresh tokens, and
for an incident responder. Uses the same store and key layout as the
middleware it comes from (``middleware.revoker``). Every method has an async
form and a ``_sync`` twin; they differ only in the store call.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from . import layout
from .core import Engine, fields_of, revoked
from .errors import InvalidClaim, StoreError
from .layout import Lookup, Write
from .tokens import Source, Token

TokenLike = Mapping[str, Any] | str


class Revoker:
    def __init__(self, engine: Engine, store: Any) -> None:
        self._engine = engine
        self._store = store
        self._prefix = engine.settings.key_prefix

    # ---- planning (pure) -------------------------------------------------

    def _token(self, token: TokenLike) -> Token:
        s = self._engine.settings
        if isinstance(token, str):
            return s.verifier.verify(token, Source.HEADER, s.clock())
        exp = token.get("exp")
        iat = token.get("iat")

        def text(name: str) -> str | None:
            value = token.get(name)
            if value is not None and not isinstance(value, str):
                raise InvalidClaim(name, "must be a string")
            return value

        return Token(
            source=Source.HEADER,
            claims=token,
            iss=text("iss") or "",
            sub=text("sub"),
            sid=text("sid"),
            jti=text("jti"),
            iat=float(iat) if isinstance(iat, (int, float)) else None,
            exp=float(exp) if isinstance(exp, (int, float)) else s.clock() + s.max_token_lifetime,
        )

    def plan_token(self, token: TokenLike) -> tuple[Write, ...]:
        s = self._engine.settings
        return self._engine.revocations([self._token(token)], s.clock())

    def plan_session(self, *, sid: str, iss: str = "", sub: str | None = None) -> tuple[Write, ...]:
        s = self._engine.settings
        key = layout.bucket_key(self._prefix, iss, sub, sid, None)
        assert key is not None
        expires = math.ceil(s.clock()) + s.max_token_lifetime + s.leeway
        return (Write(key, ((layout.session_field(sid), layout.expiry_value(expires)),)),)

    def plan_user(self, *, sub: str, iss: str = "", at: float | None = None) -> tuple[Write, ...]:
        s = self._engine.settings
        now = s.clock()
        cutoff = math.floor(now if at is None else at)
        key = layout.bucket_key(self._prefix, iss, sub, None, None)
        assert key is not None
        value = layout.cutoff_value(cutoff, math.ceil(now) + s.max_token_lifetime + s.leeway)
        return (Write(key, ((layout.USER_FIELD, value),)),)

    def _lookup(self, token: TokenLike) -> tuple[Token, Lookup | None]:
        t = self._token(token)
        key = layout.bucket_key(self._prefix, t.iss, t.sub, t.sid, t.jti)
        if key is None:
            return t, None
        return t, Lookup(key, tuple(fields_of(t)))

    # ---- async ---------------------------------------------------------

    async def _write(self, writes: tuple[Write, ...]) -> None:
        if not writes:
            raise StoreError("nothing to revoke: the token has neither jti, sid nor sub")
        await self._store.write(writes, self._engine.settings.clock())

    async def revoke(self, token: TokenLike) -> None:
        """Denylist one token (claims, or a token string that must verify) and its session."""
        await self._write(self.plan_token(token))

    async def revoke_session(self, *, sid: str, iss: str = "", sub: str | None = None) -> None:
        """Revoke every token of one login. Give ``sub`` when the tokens carry one."""
        await self._write(self.plan_session(sid=sid, iss=iss, sub=sub))

    async def revoke_user(self, *, sub: str, iss: str = "", at: float | None = None) -> None:
        """Revoke every token of ``sub`` issued at or before ``at`` (default: now)."""
        await self._write(self.plan_user(sub=sub, iss=iss, at=at))

    async def is_revoked(self, token: TokenLike) -> bool:
        t, lookup = self._lookup(token)
        if lookup is None:
            return False
        now = self._engine.settings.clock()
        rows = await self._store.fetch((lookup,), now)
        return revoked(t, dict(zip(lookup.fields, rows[0], strict=True)), now)

    # ---- sync ----------------------------------------------------------

    def _write_sync(self, writes: tuple[Write, ...]) -> None:
        if not writes:
            raise StoreError("nothing to revoke: the token has neither jti, sid nor sub")
        self._store.write_sync(writes, self._engine.settings.clock())

    def revoke_sync(self, token: TokenLike) -> None:
        self._write_sync(self.plan_token(token))

    def revoke_session_sync(self, *, sid: str, iss: str = "", sub: str | None = None) -> None:
        self._write_sync(self.plan_session(sid=sid, iss=iss, sub=sub))

    def revoke_user_sync(self, *, sub: str, iss: str = "", at: float | None = None) -> None:
        self._write_sync(self.plan_user(sub=sub, iss=iss, at=at))

    def is_revoked_sync(self, token: TokenLike) -> bool:
        t, lookup = self._lookup(token)
        if lookup is None:
            return False
        now = self._engine.settings.clock()
        rows = self._store.fetch_sync((lookup,), now)
        return revoked(t, dict(zip(lookup.fields, rows[0], strict=True)), now)
