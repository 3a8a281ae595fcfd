"""The logout routes (SPEC section 4): local logout and single sign-out, and telling the
identity provider after them (``upstream_logout``, SPEC section 10).

A logout revokes what the request presents and verifies, records it, then (with
``upstream_logout``) has the provider told (an ``Upstream`` step the adapter makes, bounded),
or, with ``RPInitiated``, answers with the browser's way to the OP; ``rp_return`` answers its
way back. These are ``core.Engine``'s decisions kept in a module of their own: they take the
engine as a ``context.Judge``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

from . import kinds, rules
from .answers import with_upstream
from .bodies import UnreadableBody, has_body_type, refresh_tokens
from .context import Judge
from .csrf import refusal
from .errors import TokenError
from .layout import Write
from .steps import Commit, Read, Respond, Row, Step, Unread, Upstream, Written
from .tokens import Source, Token
from .upstream import Outcome, RPInitiated
from .web import Answer, Request, query_param

log = logging.getLogger("signout")

# Where the token an upstream_logout preset sends (its ``token``) may come from.
_UPSTREAM_SOURCES = {
    "access": (Source.HEADER, Source.ACCESS_COOKIE),
    "refresh": (Source.REFRESH_COOKIE, Source.REFRESH_BODY),
}
# An opaque token as RFC 6749 allows it (VSCHAR, printable ASCII without space): nothing that
# could break the form it is sent in.
_OPAQUE = re.compile(r"[\x21-\x7e]+")


def logout(engine: Judge, request: Request, *, everywhere: bool) -> Step:
    """``logout_path`` (``everywhere`` false: what the request presents dies) or
    ``logout_all_path`` (every token of its user). A cookie-authenticated cross-site request is
    refused first (``signout.csrf``). A ``return_to`` not allowed changes only the answer (400,
    no redirect; and no trip to the OP with ``RPInitiated``): the tokens still die."""
    s = engine.settings
    a = engine.answers
    name = "logout_all" if everywhere else "logout"
    presented, _ = engine.presented(request, all_cookies=True)
    by_header = any(src is Source.HEADER for src, _ in presented)
    refused = None
    if presented and not by_header:
        refused = refusal(request.method, request.headers, s.trusted_origins, request.scheme)
    if refused is not None:
        engine.event(request, "csrf_refused", "refused", reason=f"{name}: {refused}")
        return Respond(a.cross_site)
    final = a.logged_out_everywhere if everywhere else a.logged_out
    targets = query_param(request.query, "return_to")
    if targets:
        final = a.redirect(targets[0]) if len(targets) == 1 and s.redirect_allowed(targets[0]) else a.bad_redirect
    if everywhere:

        def everywhere_now() -> Step:
            now = s.clock()
            return _everywhere(engine, request, presented, _revocable(engine, presented, now), final, now)

        # Keys unavailable: nothing can be judged, so nothing is revoked (503, as a store failure).
        return engine.keyed(everywhere_now, request, "logout_all", engine.keys_unavailable)

    def with_body(body: bytes | Unread) -> Step:
        found: list[str] = []
        unread: Answer | None = None
        if isinstance(body, Unread):
            unread = a.logout_body_unread[body.value]
        else:
            try:
                found = refresh_tokens(request.headers, body, s.refresh_body_fields)
            except UnreadableBody:
                unread = a.logout_body_unread[415]
        now = s.clock()
        pairs = _revocable(engine, presented + [(Source.REFRESH_BODY, raw) for raw in found], now)
        tokens = [t for t, _ in pairs]
        answer = final
        if unread is not None:
            # The tokens outside the body still die; the answer says a refresh token in it did not.
            log.warning("signout: a logout body could not be read; a refresh token in it was not revoked")
            answer = unread
        elif any(t.jti is None and t.sid is None for t in tokens):
            # Only with require_revocable=False: nothing can end this token before exp.
            log.warning("signout: logged out a token with neither jti nor sid; it stays valid until it expires")
            answer = a.logged_out_unrevoked if final is a.logged_out else final
        writes = rules.token_writes(engine.policy, tokens, now)
        everything = presented + [(Source.REFRESH_BODY, raw) for raw in found]
        return _commit(engine, request, name, tokens, writes, answer, now, _upstream_raw(engine, pairs, everything))

    def keyed(body: bytes | Unread) -> Step:
        # Keys unavailable: the cookies are still cleared, and the answer says the
        # revocation was not recorded (503), never "Logged out" for a token still alive.
        return engine.keyed(lambda: with_body(body), request, "logout", a.not_recorded)

    # simplejwt's clients post {"refresh": ...} to log out: that token dies too. A body
    # with no declared type is not read (a browser's empty POST names no token).
    if has_body_type(request.headers):
        return Read(limit=s.max_body_bytes, resume=keyed)
    return keyed(b"")


def _revocable(engine: Judge, presented: list[tuple[Source, str]], now: float) -> list[tuple[Token, str]]:
    """The presented tokens a logout acts on, each with its raw form: those that verify, and are
    not ID or logout tokens."""
    verifier = engine.settings.verifier
    tokens: list[tuple[Token, str]] = []
    for source, raw in presented:
        try:
            token = verifier.verify(raw, source, now)
        except TokenError:
            # Nothing is revoked on the word of an unverified token (SPEC section 6);
            # a local logout still clears the cookies: it never fails for the user.
            # (KeysMissing goes up: the token may be good, and the keys decide; see _keyed.)
            continue
        if not engine.check_kinds or token.kind in kinds.REVOCABLE:
            tokens.append((token, raw))
    return tokens


def _upstream_raw(
    engine: Judge, pairs: Sequence[tuple[Token, str]], presented: Sequence[tuple[Source, str]] = ()
) -> str | None:
    """The raw token ``upstream_logout`` sends the provider: the first verified one of the kind
    it wants (the access token, or the refresh token), or ``None`` (the call is skipped).

    A refresh token that is not a JWT (``presented``) is the OP's own opaque handle, which
    only the OP can judge (panva's oidc-provider, Keycloak's offline tokens): it is sent
    as it came, so the OP revokes it, when the same logout presented a token that verified.
    Without that, anyone could have signout send the OP client-authenticated requests with any
    string (and fill the calls' worker threads). Nothing is revoked here on its word."""
    preset = engine.settings.upstream_logout
    if preset is None or isinstance(preset, RPInitiated):  # the browser goes to the OP instead
        return None
    sources = _UPSTREAM_SOURCES[preset.token]
    for token, raw in pairs:
        if token.source in sources and (not engine.check_kinds or token.kind in rules.WANTED[token.source]):
            return raw
    if preset.token == "refresh" and pairs:
        limit = engine.settings.verifier.max_token_chars
        for source, raw in presented:
            # No dot at all: a JWT that failed to verify (or one made to look opaque) never goes.
            if source in sources and len(raw) <= limit and _OPAQUE.fullmatch(raw) and "." not in raw:
                return raw
    return None


def _finish(
    engine: Judge,
    request: Request,
    name: str,
    outcome: str,
    token: Token | None,
    final: Answer,
    raw: str | None = None,
    **more: object,
) -> Step:
    """Audit a logout and answer it. With ``upstream_logout``, the provider is told first (the
    local logout already done, whatever it told), and both the audit event and the answer
    carry what became of that: ``ok``, ``failed``, or ``skipped`` with no token to send it."""
    preset = engine.settings.upstream_logout
    if preset is None:
        engine.event(request, name, outcome, token, **more)
        return Respond(final)
    if isinstance(preset, RPInitiated):
        return _to_provider(engine, request, name, outcome, token, final, **more)

    def told(upstream: Outcome) -> Step:
        engine.event(request, name, outcome, token, upstream=upstream, **more)
        return Respond(with_upstream(final, upstream))

    if raw is None:
        return told("skipped")
    return Upstream(preset.call(raw), engine.settings.upstream_timeout, told)


def _to_provider(
    engine: Judge, request: Request, name: str, outcome: str, token: Token | None, final: Answer, **more: object
) -> Step:
    """RP-Initiated Logout: a logout that went through sends the browser to the OP (303; the
    cookies cleared as in every logout answer), ``"upstream": "redirected"``; one that did not
    (refused, nothing to log out everywhere, the store failed) keeps its answer, ``"skipped"``.
    A local logout with no token to revoke still goes: the OP's session may be alive."""
    assert engine.rp is not None
    if outcome == "store_error" or final.status >= 400:
        engine.event(request, name, outcome, token, upstream="skipped", **more)
        return Respond(with_upstream(final, "skipped"))
    target = final.data.get("location") if final.status == 303 else None  # return_to, already allowed
    location = engine.rp.location(target if isinstance(target, str) else None, request.headers)
    engine.event(request, name, outcome, token, upstream="redirected", **more)
    return Respond(engine.answers.to_provider(final, location))


def rp_return(engine: Judge, request: Request) -> Respond:
    """The browser back from the OP's end-session endpoint: on to where the ``state`` signed
    at logout says (its ``return_to``, else ``landing``); a state not signed here, tampered
    with or expired gets 400 and no redirect."""
    assert engine.rp is not None
    a = engine.answers
    if request.method not in ("GET", "HEAD"):
        return Respond(a.rp_return_method)
    states = query_param(request.query, "state")
    target = engine.rp.target(states[0]) if len(states) == 1 else None
    if target is None or not (target == engine.rp.preset.landing or engine.settings.redirect_allowed(target)):
        engine.event(request, "upstream_logout", "refused", reason="state missing, invalid or expired")
        return Respond(a.rp_bad_state)
    # "returned", not "ok": signout saw a browser come back with a state it signed, not the OP's logout.
    engine.event(request, "upstream_logout", "returned")
    return Respond(a.onward(target))


def _commit(
    engine: Judge,
    request: Request,
    name: str,
    tokens: Sequence[Token],
    writes: tuple[Write, ...],
    final: Answer,
    now: float,
    raw: str | None,
) -> Step:
    """Record the revocations, then (``_finish``) tell the provider ``raw``, if there is one.

    The provider is told also when the store failed: the user asked to be logged out, and
    ending the session at the provider does not depend on signout's store."""
    first = tokens[0] if tokens else None
    if not writes:
        return _finish(engine, request, name, "nothing_revoked", first, final, raw)

    def done(written: Written) -> Step:
        if written is Written.YES:
            return _finish(engine, request, name, "revoked", first, final, raw, count=len(tokens))
        unrecorded = engine.answers.not_recorded if written is Written.NO else engine.answers.maybe_recorded
        return _finish(
            engine, request, name, "store_error", first, unrecorded, raw, count=len(tokens), reason=written.value
        )

    return Commit(writes=writes, now=now, resume=done)


def _everywhere(
    engine: Judge,
    request: Request,
    presented: list[tuple[Source, str]],
    pairs: list[tuple[Token, str]],
    final: Answer,
    now: float,
) -> Step:
    """Single sign-out: needs a valid, unrevoked token; then revokes its user in every app on the store.

    The provider (``upstream_logout``) is told only once that is done: a request refused here
    revoked nothing, and its answer says ``"upstream": "skipped"``."""
    a = engine.answers
    name = "logout_all"
    if not pairs:
        return _finish(engine, request, name, "unauthenticated", None, a.unauthenticated)
    tokens = [t for t, _ in pairs]
    found, owners = rules.lookups(engine.policy, tokens)

    def checked(rows: Sequence[Row] | None) -> Step:
        if rows is None:
            return _finish(engine, request, name, "store_error", tokens[0], a.unavailable)
        verdicts = rules.judge(tokens, found, owners, rows, now)
        alive_pairs = [p for p, dead in zip(pairs, verdicts, strict=True) if not dead]
        alive = [t for t, _ in alive_pairs]
        if not alive:
            return _finish(engine, request, name, "unauthenticated", tokens[0], a.unauthenticated, reason="revoked")
        users = {(t.iss, t.sub) for t in alive if t.sub is not None}
        if not users:
            return _finish(engine, request, name, "nothing_revoked", alive[0], a.no_subject, reason="no subject")
        writes = rules.token_writes(engine.policy, alive, now) + tuple(
            rules.user_write(engine.policy, iss=iss, sub=sub, now=now) for iss, sub in sorted(users)
        )
        return _commit(engine, request, name, alive, writes, final, now, _upstream_raw(engine, alive_pairs, presented))

    if not found:  # nothing can revoke these tokens (require_revocable=False): no read to make
        return checked([])
    return engine.fetch(found, now, checked)
