"""The OIDC Back-Channel Logout 1.0 receiver (``backchannel_logout_path``; SPEC section 10).

The OpenID Provider ``POST``s a signed *logout token* as the form field ``logout_token``
when a user's session at the OP ends. It is validated as section 2.6 of the spec says,
then the session (``sid``) or the user (``sub``) is revoked, and the OP is answered as
section 2.8 says: 200 when the logout was done, 400 when it was not.

Order of the store calls, so that an OP's retry after a 503 works and a replay changes
nothing: the revocation is written first, then the ``jti`` is claimed (an atomic
set-if-absent, as refresh rotation records a first use). Both writes depend only on the
logout token (the user cutoff is the token's ``iat``, not the arrival time), so a second
delivery of the same token rewrites the same values, and the claim then tells it is a
replay (400). A claim that fails after the write is a 503: the OP's retry writes the same
again and claims.

With ``sid``, every token that carries that (``iss``, ``sid``) is revoked, whether or not
it also carries ``sub``: a session's revocation lives in the session's own bucket
(``signout.layout``), so a logout token with ``sid`` and no ``sub`` ends the whole session
(200), and the guard still reads a token's buckets in one store round trip.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import kinds, layout, rules
from .answers import Answers
from .claims import number, string
from .context import Context
from .errors import InvalidClaim, SignOutError, TokenError
from .layout import Write
from .steps import Claim, Commit, Read, Respond, Step, Unread, Written
from .web import Answer, Request, answer, content_type, form

_FORM = "application/x-www-form-urlencoded"
EVENT = "backchannel_logout"  # the audit event
# Section 2.4: "logout+jwt" is recommended; tokens of OPs from before it say "JWT" or nothing.
_TYPES = frozenset({"logout+jwt", "jwt"})


class InvalidLogoutToken(SignOutError):
    """A logout token that fails section 2.6; the message is safe to send the OP (no claim values)."""


@dataclass(frozen=True, slots=True)
class LogoutToken:
    """What a valid logout token asks: end ``sid``, or every session of ``sub``, at ``iss``."""

    iss: str
    sub: str | None
    sid: str | None
    jti: str
    iat: float
    exp: float


# ---- validation (sans-IO) --------------------------------------------------------------


def check(
    claims: Mapping[str, Any], header: Mapping[str, Any], now: float, leeway: float, max_lifetime: float
) -> LogoutToken:
    """The logout token's rules beyond the signature, ``iss`` and ``aud`` (which the verifier
    checked with the configured ``issuer`` and ``audience``): OIDC Back-Channel Logout 1.0
    section 2.6, steps 3 to 5, and section 2.4's ``typ``; and ``exp`` at most ``max_lifetime``
    (``max_token_lifetime``) ahead of now (+ ``leeway``), as the guard bounds every token's."""
    typ = header.get("typ")
    if typ is not None and (not isinstance(typ, str) or typ.lower().removeprefix("application/") not in _TYPES):
        # Explicit typing (RFC 8725 section 3.11): an access token (at+jwt) or an ID token is no logout token.
        raise InvalidLogoutToken("the token's typ is not logout+jwt")
    try:
        iat, exp = number(claims, "iat"), number(claims, "exp")
        sub, sid, jti = string(claims, "sub"), string(claims, "sid"), string(claims, "jti")
        iss = string(claims, "iss")
    except InvalidClaim as error:
        raise InvalidLogoutToken(error.description) from None
    if iat is None or exp is None:
        raise InvalidLogoutToken("the logout token needs iat and exp")
    if now > exp + leeway:
        raise InvalidLogoutToken("the logout token has expired")
    if exp - now > max_lifetime + leeway:
        # Its jti is remembered until exp (``claim``): a far-future exp would keep that record
        # (a Redis key's TTL) for years. Section 4 wants logout tokens short-lived ("preferably
        # at most two minutes"); max_token_lifetime is the bound the guard puts on any token's exp.
        raise InvalidLogoutToken(f"the logout token's exp is further away than max_token_lifetime ({max_lifetime:g} s)")
    if iat > now + leeway:
        raise InvalidLogoutToken("the logout token was issued in the future")
    if sub is None and sid is None:
        raise InvalidLogoutToken("the logout token needs sub, sid or both")
    events = claims.get("events")
    if not isinstance(events, dict) or not isinstance(events.get(kinds.BACKCHANNEL_EVENT), dict):
        raise InvalidLogoutToken(f"the logout token's events must hold the member {kinds.BACKCHANNEL_EVENT}")
    if "nonce" in claims:
        # Section 2.6 step 5: a nonce would let an ID token pass for a logout token.
        raise InvalidLogoutToken("a logout token may not carry a nonce")
    if jti is None:
        raise InvalidLogoutToken("the logout token needs a jti (replays are refused by it)")
    return LogoutToken(iss=iss or "", sub=sub, sid=sid, jti=jti, iat=iat, exp=exp)


def writes(policy: rules.Policy, token: LogoutToken, now: float) -> tuple[Write, ...]:
    """What a logout token revokes; only values that depend on the token, so a replay rewrites them.

    With ``sid``: that session, every token of it, whether or not they carry a ``sub`` (the
    session's revocation lives in the session's own bucket, see ``layout``). With ``sub``
    alone: every token of the user issued at or before the logout token's ``iat`` (the OP's
    clock, which also stamps the tokens it issues), never later than now.
    """
    if token.sid is not None:
        return (rules.session_write(policy, iss=token.iss, sid=token.sid, now=now),)
    assert token.sub is not None  # check: sub, sid or both
    return (rules.user_write(policy, iss=token.iss, sub=token.sub, now=now, at=min(token.iat, now)),)


def claim(policy: rules.Policy, token: LogoutToken, now: float) -> Write:
    """Record that this logout token was received, until it expires (replay protection)."""
    key = layout.bucket_key(policy.key_prefix, token.iss, None, None, token.jti)
    assert key is not None
    value = layout.claim_value(math.floor(now * 1000), math.ceil(token.exp) + policy.leeway)
    return Write(key, ((layout.logout_field(token.iss, token.jti), value),))


# ---- the route -----------------------------------------------------------------------------


class Replies:
    """The receiver's answers, built once (``Engine.__init__``)."""

    def __init__(self, answers: Answers, retry_after: int) -> None:
        retry = (b"retry-after", str(retry_after).encode())
        self.method = answer(405, {"error": "invalid_request", "error_description": "Use POST"}, (b"allow", b"POST"))
        self.done = answer(200, {"message": "Logged out"})
        self.too_large = answers.too_large
        self.broken = answers.broken_body
        # 503 with Retry-After: the OP may try again.
        self.unavailable = answer(
            503,
            {"error": "temporarily_unavailable", "error_description": "The logout was not recorded; try again"},
            retry,
        )
        self.unsure = answer(
            503,
            {
                "error": "temporarily_unavailable",
                "error_description": "The store did not confirm the logout in time: it may not have been recorded; "
                "try again",
            },
            retry,
        )


def bad(description: str) -> Answer:
    return answer(400, {"error": "invalid_request", "error_description": description})


def receiver(engine: Context, replies: Replies, request: Request) -> Step:
    """``backchannel_logout_path``: ``POST`` only; the body read up to ``max_body_bytes``."""
    if request.method != "POST":
        return Respond(replies.method)
    return Read(limit=engine.settings.max_body_bytes, resume=lambda body: received(engine, replies, request, body))


def received(engine: Context, replies: Replies, request: Request, body: bytes | Unread) -> Step:
    """The body read: find the one ``logout_token``, validate it, revoke, and answer."""
    s = engine.settings
    if isinstance(body, Unread):
        engine.event(request, EVENT, "invalid_request", reason=f"body {body.name.lower()}")
        return Respond(replies.too_large if body is Unread.TOO_LARGE else replies.broken)
    fields = form(body) if content_type(request.headers) == _FORM else None
    found = [] if fields is None else fields.get("logout_token", [])
    if len(found) != 1:
        why = "send exactly one logout_token field in an application/x-www-form-urlencoded body"
        engine.event(request, EVENT, "invalid_request", reason=why)
        return Respond(bad(why))
    now = s.clock()
    try:
        claims, header = s.verifier.verify_logout(found[0], now)  # KeysMissing goes up: see Engine._keyed
        token = check(claims, header, now, s.leeway, s.max_token_lifetime)
    except TokenError as error:
        return _refused(engine, request, error.description)
    except InvalidLogoutToken as error:
        return _refused(engine, request, str(error))
    return _revoke(engine, replies, request, token, now)


def _refused(engine: Context, request: Request, why: str) -> Respond:
    engine.event(request, EVENT, "invalid_request", reason=why)
    return Respond(bad(why))


def _revoke(engine: Context, replies: Replies, request: Request, token: LogoutToken, now: float) -> Step:
    def event(outcome: str, **more: object) -> None:
        engine.event(
            request, EVENT, outcome, None, iss=token.iss or None, sub=token.sub, sid=token.sid, jti=token.jti, **more
        )

    def claimed(held: bytes | str | None, failed: bool) -> Step:
        if failed:
            event("store_error", reason="the logout token's jti was not recorded")
            return Respond(replies.unavailable)
        if rules.used_at(held) is not None:
            # Received before: what it revoked was just rewritten unchanged, and nothing more.
            event("invalid_request", reason="replayed jti")
            return Respond(bad("this logout token was received before (its jti is replayed)"))
        event("revoked", scope="session" if token.sid is not None else "user")
        return Respond(replies.done)

    def written(outcome: Written) -> Step:
        if outcome is not Written.YES:
            event("store_error", reason=outcome.value)
            return Respond(replies.unavailable if outcome is Written.NO else replies.unsure)
        return Claim(claim(engine.policy, token, now), now, claimed)

    return Commit(writes=writes(engine.policy, token, now), now=now, resume=written)
