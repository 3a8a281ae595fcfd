"""Refresh token rotation and reuse (RFC 9700 section 4.14.2; SPEC section 8).

With ``refresh_rotation``, a refresh token whose request the app answers with
a 2xx is recorded as used; when a used one comes back later than
``refresh_reuse_grace`` seconds after its first use, its whole login is
revoked. The guard reads each refresh token's first use in the same bucket
read that judges it, so this costs refresh requests no extra round trip before
the app, and every other request nothing at all.
"""

from __future__ import annotations

from collections.abc import Sequence

from . import rules
from .context import Context
from .steps import Claim, Commit, Pass, Respond, Step, Written
from .tokens import Source, Token
from .web import Request


def refresh_uses(
    engine: Context, request: Request, tokens: Sequence[Token], first_uses: Sequence[float | None], now: float
) -> Step:
    """The guard's answer for unrevoked ``tokens`` whose refresh tokens were first used at ``first_uses``."""
    for token, first in zip(tokens, first_uses, strict=True):
        if token.source in rules.REFRESH_SOURCES and first is not None and reused(engine, now - first):
            return reuse(engine, request, token, now)
    # A refresh is a POST (RFC 6749 section 3.2): a GET under a broad refresh cookie path
    # (Path=/auth and GET /auth/me) uses nothing. A refresh path names the endpoint itself.
    # One claim per refresh token: the same token sent twice in one request is one use.
    refresh = list(
        {
            (t.iss, t.jti): t
            for t in tokens
            if t.source is Source.REFRESH_BODY or (t.source is Source.REFRESH_COOKIE and request.method == "POST")
        }.values()
    )
    if not refresh:
        return Pass(tokens[0])
    return Pass(tokens[0], after=lambda: mark_used(engine, request, refresh))


def reused(engine: Context, elapsed: float) -> bool:
    """Whether a refresh token first used ``elapsed`` seconds ago is reused now (grace 0: any second use)."""
    grace = engine.settings.refresh_reuse_grace
    return elapsed > grace or grace == 0


def mark_used(engine: Context, request: Request, pending: list[Token]) -> Step:
    """Record each refresh token's first use, once the app has accepted it (a 2xx).

    A claim, atomic in the store: when two instances let the same token through
    at once, the one that records second learns the first use, and past the
    grace its answer is replaced by the reuse answer.
    """
    if not pending:
        return Pass()
    token, rest = pending[0], pending[1:]
    now = engine.settings.clock()

    def claimed(held: bytes | str | None, failed: bool) -> Step:
        if failed:
            # The adapter has logged why (Adapter.failed).
            engine.event(request, "refresh", "store_error", token)
            return Pass() if engine.settings.on_store_error == "allow" else Respond(engine.answers.unavailable)
        first = rules.used_at(held)
        if first is not None and reused(engine, now - first):
            return reuse(engine, request, token, now)
        return mark_used(engine, request, rest)

    return Claim(rules.claim_use(engine.policy, token, now), now, claimed)


def reuse(engine: Context, request: Request, token: Token, now: float) -> Step:
    """A rotated-out refresh token came back: revoke its whole login, refuse the request."""
    answers = engine.answers

    def done(written: Written) -> Step:
        ok = written is Written.YES
        engine.event(request, "refresh_reuse", "revoked" if ok else "store_error", token)
        if not ok:
            return Respond(answers.unavailable)
        return Respond(answers.clearing(answers.reused, {token.source}))

    return Commit(writes=rules.login_writes(engine.policy, token, now), now=now, resume=done)
