"""The revocation rules, as pure functions: what to read, what to write, what it means.

Shared by the middleware's routes and the programmatic ``Revoker``, so a
token revoked from app code, from the CLI or from a logout route is revoked
the same way, and judged the same way by the guard.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from . import kinds, layout
from .layout import Lookup, Write
from .tokens import Source, Token

#: Where refresh tokens are presented: the refresh cookie, a body on ``refresh_paths``.
REFRESH_SOURCES = frozenset({Source.REFRESH_COOKIE, Source.REFRESH_BODY})
#: The kinds each source accepts with check_token_type (SPEC section 8).
WANTED = {
    Source.HEADER: kinds.AS_ACCESS,
    Source.ACCESS_COOKIE: kinds.AS_ACCESS,
    Source.REFRESH_COOKIE: kinds.AS_REFRESH,
    Source.REFRESH_BODY: kinds.AS_REFRESH,
}


@dataclass(frozen=True, slots=True)
class Policy:
    """What every revocation needs to know, besides the token."""

    key_prefix: str
    leeway: int
    max_token_lifetime: int

    def session_expiry(self, now: float) -> int:
        # How long any token of the login (its refresh token included) can still be
        # accepted: issued up to now (+ leeway, a clock running ahead), with exp up to
        # max_token_lifetime (+ leeway) later, and accepted until exp + leeway.
        return math.ceil(now) + self.max_token_lifetime + 2 * self.leeway


def fields_of(token: Token) -> list[bytes]:
    """The fields of its owner bucket that decide whether ``token`` is revoked.

    Its ``s`` field too: where the session bucket is the owner bucket (no ``sub``),
    that is where it lives; elsewhere, it is where the previous layout wrote it
    (the transition read, see ``layout``).
    """
    out = []
    if token.sub is not None:
        out.append(layout.user_field(token.iss, token.sub))
    if token.sid is not None:
        out.append(layout.session_field(token.iss, token.sid))
    if token.jti is not None:
        out.append(layout.token_field(token.iss, token.jti))
    return out


def bucket_of(policy: Policy, token: Token) -> str | None:
    """The owner bucket of ``token`` (its user's, else its session's, else its own)."""
    return layout.bucket_key(policy.key_prefix, token.iss, token.sub, token.sid, token.jti)


def session_bucket_of(policy: Policy, token: Token) -> str | None:
    """The bucket of the session of ``token``; ``None`` without a ``sid``."""
    return None if token.sid is None else layout.session_key(policy.key_prefix, token.iss, token.sid)


def buckets_of(policy: Policy, token: Token) -> tuple[str, ...]:
    """The buckets that judge ``token``: its owner bucket, then its session bucket when that
    is another key; none when it has no ``sub``, ``sid`` or ``jti``."""
    owner = bucket_of(policy, token)
    if owner is None:
        return ()
    session = session_bucket_of(policy, token)
    return (owner,) if session is None or session == owner else (owner, session)


def lookups_of(policy: Policy, token: Token) -> tuple[Lookup, ...]:
    """The lookups that judge ``token`` alone (the guard's common case): one per bucket of
    ``buckets_of``, answered by the store in one round trip; none when nothing can revoke it.

    Remembered on the token's verified-cache entry, so a reused token pays for
    its bucket digests and field names once, not on every request.
    """
    verified = token.verified
    if verified is not None and verified.memo is not None and verified.memo[0] is policy:
        return cast("tuple[Lookup, ...]", verified.memo[1])
    keys = buckets_of(policy, token)
    found: tuple[Lookup, ...] = ()
    if keys:
        found = (Lookup(keys[0], tuple(fields_of(token))),)
        if len(keys) > 1:
            assert token.sid is not None  # a second bucket is a session's
            found += (Lookup(keys[1], (layout.session_field(token.iss, token.sid),)),)
    if verified is not None:
        verified.memo = (policy, found)
    return found


def revoked_alone(token: Token, found: Sequence[Lookup], rows: Sequence[Sequence[Any]], now: float) -> bool:
    """Whether ``rows`` (the store's answer to ``lookups_of(token)``) revoke ``token``."""
    if not any(map(any, rows)):  # nothing stored for any of its ids: the usual answer
        return False
    return revoked(token, _token_values(token, [lookup.key for lookup in found], _values(found, rows)), now)


def lookups(
    policy: Policy, tokens: Iterable[Token], *, rotation: bool = False
) -> tuple[tuple[Lookup, ...], list[tuple[str, ...]]]:
    """One lookup per bucket (tokens of one user or one session share it), and each token's
    buckets (``buckets_of``). The store answers them all in one round trip.

    With ``rotation``, each refresh token's first use is read too (``first_uses``),
    from its owner bucket.
    """
    fields: dict[str, list[bytes]] = {}
    owners: list[tuple[str, ...]] = []
    for t in tokens:
        keys = buckets_of(policy, t)
        owners.append(keys)
        if not keys:
            continue
        wanted = fields.setdefault(keys[0], [])
        mine = fields_of(t)
        if rotation and t.source in REFRESH_SOURCES and t.jti is not None:
            mine.append(layout.used_field(t.iss, t.jti))
        wanted.extend(f for f in mine if f not in wanted)
        if len(keys) > 1:
            assert t.sid is not None
            session = fields.setdefault(keys[1], [])
            field = layout.session_field(t.iss, t.sid)
            if field not in session:
                session.append(field)
    return tuple(Lookup(k, tuple(v)) for k, v in fields.items()), owners


def revoked(token: Token, values: Mapping[bytes, Any], now: float) -> bool:
    """Whether the stored values revoke ``token`` (SPEC section 3)."""
    if token.sub is not None:
        user = layout.parse(values.get(layout.user_field(token.iss, token.sub)))
        # iat equal to the cutoff second is revoked; no iat: any cutoff revokes.
        if user is not None and now < user[1] and (token.iat is None or token.iat <= user[0]):
            return True
    if token.sid is not None:
        session = layout.parse(values.get(layout.session_field(token.iss, token.sid)))
        if session is not None and now < session[1]:
            return True
    if token.jti is not None:
        single = layout.parse(values.get(layout.token_field(token.iss, token.jti)))
        if single is not None and now < single[1]:
            return True
    return False


def judge(
    tokens: Sequence[Token],
    found: tuple[Lookup, ...],
    owners: Sequence[Sequence[str]],
    rows: Sequence[Sequence[Any]],
    now: float,
) -> list[bool]:
    """For each token, whether the rows a store returned for ``found`` revoke it."""
    values = _values(found, rows)
    return [
        bool(keys) and revoked(t, _token_values(t, keys, values), now) for t, keys in zip(tokens, owners, strict=True)
    ]


def first_uses(
    tokens: Sequence[Token],
    found: tuple[Lookup, ...],
    owners: Sequence[Sequence[str]],
    rows: Sequence[Sequence[Any]],
) -> list[float | None]:
    """For each token, when it was first used as a refresh token (seconds), if the rows say it was."""
    values = _values(found, rows)
    out: list[float | None] = []
    for t, keys in zip(tokens, owners, strict=True):
        held = None if not keys or t.jti is None else values.get(keys[0], {}).get(layout.used_field(t.iss, t.jti))
        out.append(used_at(held))
    return out


def _values(found: Sequence[Lookup], rows: Sequence[Sequence[Any]]) -> dict[str, dict[bytes, Any]]:
    return {lookup.key: dict(zip(lookup.fields, row, strict=True)) for lookup, row in zip(found, rows, strict=True)}


def _token_values(token: Token, keys: Sequence[str], values: Mapping[str, Mapping[bytes, Any]]) -> Mapping[bytes, Any]:
    """The values that judge ``token``: its owner bucket's, its session field read in both
    its session bucket and (the transition read, see ``layout``) its owner bucket."""
    own = values.get(keys[0], {})
    if len(keys) < 2 or token.sid is None:
        return own
    field = layout.session_field(token.iss, token.sid)
    moved = values.get(keys[1], {}).get(field)
    if moved is None:
        return own
    return {**own, field: _later(own.get(field), moved)}


def _later(old: Any, new: Any) -> Any:
    """Of two expiry values, the one that expires later (an unreadable one loses)."""
    was, now = layout.parse(old), layout.parse(new)
    if was is None:
        return new
    return old if now is None or was[1] >= now[1] else new


def claim_use(policy: Policy, token: Token, now: float) -> Write:
    """Record ``now`` as the first use of refresh token ``token``, unless one is recorded (a claim)."""
    key = bucket_of(policy, token)
    assert key is not None and token.jti is not None  # a refresh token judged for reuse has a jti
    value = layout.claim_value(math.floor(now * 1000), math.ceil(token.exp) + policy.leeway)
    return Write(key, ((layout.used_field(token.iss, token.jti), value),))


def used_at(held: bytes | str | None) -> float | None:
    """The first use a claim found already recorded (seconds); ``None`` when the claim set it."""
    parsed = layout.parse(held)
    return None if parsed is None else parsed[0] / 1000


def login_writes(policy: Policy, token: Token, now: float) -> tuple[Write, ...]:
    """Revoke the whole login of ``token``: itself, its session (in the session bucket), or its
    user when it has no session."""
    writes = token_writes(policy, (token,), now)
    if token.sid is None and token.sub is not None:
        writes += (user_write(policy, iss=token.iss, sub=token.sub, now=now),)
    return writes


class _Writes:
    """Fields to merge, grouped by bucket so each bucket is written once."""

    def __init__(self) -> None:
        self.buckets: dict[str, dict[bytes, bytes]] = {}

    def add(self, key: str, field: bytes, value: bytes) -> None:
        fields = self.buckets.setdefault(key, {})
        fields[field] = layout.merge(fields.get(field), value)

    def done(self) -> tuple[Write, ...]:
        return tuple(Write(k, tuple(v.items())) for k, v in self.buckets.items() if v)


def token_writes(policy: Policy, tokens: Iterable[Token], now: float, *, session: bool = True) -> tuple[Write, ...]:
    """Revoke each token (its ``jti`` until ``exp`` + leeway, in its owner bucket) and, with
    ``session``, its ``sid`` (in the session bucket).

    The session matters at logout: the refresh token of the same login is never
    sent to the logout route (its cookie path differs), so only its ``sid`` can
    reach it. A token with neither ``jti`` nor ``sid`` yields no write.
    """
    out = _Writes()
    for t in tokens:
        key = bucket_of(policy, t)
        if key is None:
            continue
        if t.jti is not None:
            out.add(key, layout.token_field(t.iss, t.jti), layout.expiry_value(math.ceil(t.exp) + policy.leeway))
        if t.sid is not None and (session or t.jti is None):
            write = session_write(policy, iss=t.iss, sid=t.sid, now=now)
            out.add(write.key, *write.fields[0])
    return out.done()


def session_write(policy: Policy, *, iss: str, sid: str, now: float) -> Write:
    """Every token of session (iss, sid) is revoked, whether or not it carries a ``sub``.

    Written in the session bucket only (``layout``); the owner bucket's ``s`` field,
    where the previous layout wrote it, is still read, never written.
    """
    key = layout.session_key(policy.key_prefix, iss, sid)
    return Write(key, ((layout.session_field(iss, sid), layout.expiry_value(policy.session_expiry(now))),))


def user_write(policy: Policy, *, iss: str, sub: str, now: float, at: float | None = None) -> Write:
    """Every token of (iss, sub) issued at or before ``at`` (default: now) is revoked."""
    key = layout.bucket_key(policy.key_prefix, iss, sub, None, None)
    assert key is not None
    cutoff = math.floor(now if at is None else at)
    return Write(key, ((layout.user_field(iss, sub), layout.cutoff_value(cutoff, policy.session_expiry(now))),))
