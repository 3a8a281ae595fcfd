"""The sans-IO heart of signout: request facts and store answers in, decisions out.

``Engine.start`` looks at a request and returns a step (``signout.steps``):
``Pass`` or ``Respond`` end it; ``Read``, ``Fetch``, ``Commit``, ``Claim``,
``Keys`` and ``Upstream`` ask the adapter for one piece of I/O and say what to do with the result. The ASGI and
WSGI adapters run the same loop around it and differ only in whether the I/O
is awaited. Nothing here imports asyncio, redis or a web framework, and time
is read only through ``settings.clock``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from typing import cast

from . import backchannel, kinds, rules
from .answers import Answers, with_upstream
from .audit import AuditEvent, Auditor, ids
from .bodies import UnreadableBody, has_body_type, refresh_tokens
from .config import Settings
from .csrf import refusal
from .endpoint import revocation_endpoint
from .errors import InvalidClaim, KeysMissing, KeysNeeded, MalformedToken, TokenError, WrongTokenKind
from .layout import Lookup, Write
from .rotation import refresh_uses
from .rp_logout import RPLogout
from .steps import Commit, Fetch, Keys, Pass, Read, Respond, Row, Step, Unread, Upstream, Written
from .tokens import Source, Token, after_fetch, looks_like_jwt
from .upstream import Outcome, RPInitiated
from .web import (
    Answer,
    BadAuthorization,
    Headers,
    Request,
    answer,
    bearer_token,
    cookies,
    origin_of,
    path_matches,
    peer,
    query_param,
)

log = logging.getLogger("signout")

_PASS = Pass()
LocalFetch = Callable[[tuple[Lookup, ...], float], "Sequence[Row] | None"]
_SOURCE_ORDER = {Source.HEADER: 0, Source.ACCESS_COOKIE: 1, Source.REFRESH_COOKIE: 2, Source.REFRESH_BODY: 3}
_HEADER = Source.HEADER  # an Enum member read off its class costs a lookup through the metaclass
# The kinds each source accepts with check_token_type (SPEC section 8).
_WANTED = {
    Source.HEADER: kinds.AS_ACCESS,
    Source.ACCESS_COOKIE: kinds.AS_ACCESS,
    Source.REFRESH_COOKIE: kinds.AS_REFRESH,
    Source.REFRESH_BODY: kinds.AS_REFRESH,
}
_AS_ACCESS = kinds.AS_ACCESS
# Where the token an upstream_logout preset sends (its ``token``) may come from.
# An opaque token as RFC 6749 allows it (VSCHAR, printable ASCII without space): nothing that
# could break the form it is sent in, or a log line.
_OPAQUE = re.compile(r"[\x21-\x7e]+")
_UPSTREAM_SOURCES = {
    "access": (Source.HEADER, Source.ACCESS_COOKIE),
    "refresh": (Source.REFRESH_COOKIE, Source.REFRESH_BODY),
}


class Engine:
    """Decides what to do with a request; owns no connection and reads no clock of its own."""

    def __init__(self, settings: Settings, *, fetch_local: LocalFetch | None = None) -> None:
        self.settings = settings
        # A store's in-memory answer (``None`` when it has none now), asked inline
        # (``_fetch``): no Fetch step for the adapter to drive, no I/O.
        self.fetch_local = fetch_local
        self.policy = rules.Policy(settings.key_prefix, settings.leeway, settings.max_token_lifetime)
        self.answers = Answers(settings)
        self.backchannel = backchannel.Replies(self.answers, settings.retry_after)
        #: A token's keys are not at hand: no good fetch of ``jwks_url`` yet (fail closed, SPEC section 10).
        self.keys_unavailable = answer(
            503,
            {
                "error": "temporarily_unavailable",
                "message": "The token signing keys are unavailable; try again shortly",
            },
            (b"retry-after", str(settings.retry_after).encode()),
        )
        self.audit = Auditor(settings.on_event)
        #: ``usual`` can know requests here: no access cookie that could stand beside the header
        #: (tokens then come from the header alone), and a verified-claims cache. ``quick``
        #: can decide them too when the store also answers from memory.
        self.usual_ready = settings.access_cookie is None and settings.verifier.caches
        self.quick_ready = fetch_local is not None and self.usual_ready
        self._check_kinds = settings.check_token_type
        self._rotating = settings.refresh_rotation
        preset = settings.upstream_logout
        #: OIDC RP-Initiated Logout (``upstream.RPInitiated``): the redirect to the OP, and its way back.
        self.rp = RPLogout(preset, settings.verifier.max_token_chars) if isinstance(preset, RPInitiated) else None
        # Paths quick never judges: signout's routes, and refresh paths (their bodies are read).
        self._routes = (
            frozenset(
                p
                for p in (
                    settings.logout_path,
                    settings.logout_all_path,
                    settings.revoke_path,
                    settings.backchannel_logout_path,
                    None if self.rp is None else self.rp.path,
                )
                if p is not None
            )
            | settings.refresh_paths
        )

    # ---- routing -------------------------------------------------------

    def start(self, request: Request) -> Step:
        s = self.settings
        if request.kind == "http":
            path = request.path
            if path == s.logout_path:
                if request.method == "POST":
                    return self._logout(request, everywhere=False)
                if request.method != "OPTIONS":  # CORS preflight belongs to the app
                    return Respond(self.answers.logout_method)
            elif path == s.logout_all_path:
                if request.method in ("GET", "POST"):
                    return self._logout(request, everywhere=True)
                if request.method != "OPTIONS":
                    return Respond(self.answers.logout_all_method)
            elif path == s.revoke_path and s.clients:
                return self._revocation(request)
            elif path == s.backchannel_logout_path:
                return self._backchannel(request)
            elif self.rp is not None and path == self.rp.path:
                return self._rp_return(request)
        for prefix in s.exclude_paths:
            if path_matches(request.path, prefix):
                return _PASS
        try:
            return self._guard(request)
        except KeysMissing as missing:  # only with jwks_url; a try costs nothing until it raises
            return self._keys_missing(missing, lambda: self._guard(request), request, "rejected", self.keys_unavailable)

    def quick(self, path: str, headers: Headers) -> Token | None:
        """The usual guarded request (``usual``), answered from memory: the token to pass on.

        ``None`` unless ``usual`` knows the request and the store's in-memory
        answer holds nothing that revokes its token; the caller then asks
        ``start``, which judges the request from the beginning, as if this had
        not been asked: this only ever says yes where ``start`` would pass the
        same token on (only for an http request, with ``quick_ready`` true).
        """
        usual = self.usual(path, headers)
        if usual is None:
            return None
        token, found, now = usual
        if found:
            fetch = self.fetch_local
            rows = None if fetch is None else fetch(found, now)
            # Inline, not clean(): this is the hot path of an in-memory store.
            if rows is None or (any(map(any, rows)) and rules.revoked_alone(token, found, rows, now)):
                return None
        return token

    def usual(self, path: str, headers: Headers) -> tuple[Token, tuple[Lookup, ...], float] | None:
        """The usual guarded request, known without a ``Request`` or a step: its token, the
        lookups that judge it (none: nothing can revoke it) and the time it is judged at.

        Usual: not one of signout's routes, an excluded path or under the
        refresh cookie's path; a Bearer token (read by ``bearer_token``, as
        ``presented`` reads it) in the verified-claims cache and timely, of an
        access token's kind, and its lookups worked out before. Anything else is
        ``None`` (ask ``start``). A token whose rows are ``clean`` passes as
        ``start`` would pass it (only for an http request, with ``usual_ready`` true).
        """
        if path in self._routes:
            return None
        s = self.settings
        for prefix in s.exclude_paths:
            if path_matches(path, prefix):
                return None
        if path_matches(path, s.refresh_cookie_path):
            return None
        try:
            raw = bearer_token(headers)  # as presented() reads it, so both see the same token
        except BadAuthorization:
            return None
        if raw is None:
            return None
        now = s.clock()
        known = s.verifier.cached(raw, now)
        if known is None or (self._check_kinds and known.kind not in _AS_ACCESS):
            return None
        memo = known.memo
        if memo is None or memo[0] is not self.policy:
            return None
        return known.token(_HEADER), cast("tuple[Lookup, ...]", memo[1]), now

    @staticmethod
    def clean(token: Token, found: Sequence[Lookup], rows: Sequence[Row], now: float) -> bool:
        """Whether the store's ``rows`` for ``usual``'s lookups let its token pass: nothing in them
        (the usual answer), or nothing that revokes it (a user's cutoff it was issued after,
        an expired value), judged as ``_guard_one`` judges it."""
        return not any(map(any, rows)) or not rules.revoked_alone(token, found, rows, now)

    # ---- shared pieces -------------------------------------------------

    def presented(self, request: Request, *, all_cookies: bool) -> tuple[list[tuple[Source, str]], bool]:
        """The raw tokens of a request, and whether its Authorization header was unusable."""
        s = self.settings
        found: list[tuple[Source, str]] = []
        bad_header = False
        try:
            raw = bearer_token(request.headers)
        except BadAuthorization:
            bad_header = True
        else:
            if raw is not None:
                found.append((Source.HEADER, raw))
        if s.access_cookie is not None:
            found += [(Source.ACCESS_COOKIE, v) for v in cookies(request.headers, s.access_cookie)]
        if all_cookies or path_matches(request.path, s.refresh_cookie_path):
            found += [(Source.REFRESH_COOKIE, v) for v in cookies(request.headers, s.refresh_cookie)]
        return found, bad_header

    def event(self, request: Request, event: str, outcome: str, token: Token | None = None, **more: object) -> None:
        self.audit(AuditEvent(event, outcome, request.path, peer(request.client), **ids(token), **more))  # type: ignore[arg-type]

    # ---- keys from jwks_url ----------------------------------------------------

    def _keyed(self, decide: Callable[[], Step], request: Request, event: str, unavailable: Answer) -> Step:
        """``decide`` (which verifies tokens); when a token's key is not at hand, see ``_keys_missing``."""
        try:
            return decide()
        except KeysMissing as missing:
            return self._keys_missing(missing, decide, request, event, unavailable)

    def _keys_missing(
        self, missing: KeysMissing, decide: Callable[[], Step], request: Request, event: str, unavailable: Answer
    ) -> Step:
        """A ``Keys`` step when a fetch of the key set may find the key, then ``decide`` once more
        (a key still missing is final then: an unknown ``kid`` is an invalid token); else ``unavailable``."""
        keyset = self.settings.keyset
        if not isinstance(missing, KeysNeeded) or keyset is None:
            return self._no_keys(missing, request, event, unavailable)

        def again() -> Step:
            try:
                return after_fetch(decide)
            except KeysMissing as still:
                return self._no_keys(still, request, event, unavailable)

        return Keys(keyset, again)

    def _no_keys(self, missing: KeysMissing, request: Request, event: str, unavailable: Answer) -> Step:
        self.event(request, event, "keys_unavailable", reason=str(missing))
        return Respond(unavailable)

    def _revocation(self, request: Request) -> Step:
        """The revocation endpoint (``signout.endpoint``), its token verified once the body is read."""
        step = revocation_endpoint(self, request)
        if not isinstance(step, Read) or self.settings.keyset is None:
            return step
        received = step.resume
        unavailable = self.answers.revoke_unavailable
        return Read(step.limit, lambda body: self._keyed(lambda: received(body), request, "revocation", unavailable))

    def _backchannel(self, request: Request) -> Step:
        """The back-channel logout receiver (``signout.backchannel``), its token verified once the body is read."""
        step = backchannel.receiver(self, self.backchannel, request)
        if not isinstance(step, Read) or self.settings.keyset is None:
            return step
        received = step.resume
        unavailable = self.backchannel.unavailable
        return Read(
            step.limit, lambda body: self._keyed(lambda: received(body), request, backchannel.EVENT, unavailable)
        )

    # ---- the guard -----------------------------------------------------

    def _guard(self, request: Request) -> Step:
        s = self.settings
        presented, bad_header = self.presented(request, all_cookies=False)
        if bad_header and s.on_invalid_token == "reject":
            return self._reject(request, MalformedToken("Authorization header is malformed"), Source.HEADER)
        if request.path in s.refresh_paths and request.kind == "http":
            # simplejwt's clients send the refresh token in the body: read it (the
            # adapter hands the app the same bytes), then judge it beside the rest.
            return Read(
                limit=s.max_body_bytes,
                resume=lambda body: self._keyed(
                    lambda: self._guard_body(request, presented, body), request, "rejected", self.keys_unavailable
                ),
            )
        if not presented:
            return _PASS
        now = s.clock()
        if len(presented) == 1 and not (self._rotating and presented[0][0] is Source.REFRESH_COOKIE):
            return self._guard_one(request, *presented[0], now)
        return self._guard_many(request, presented, now)

    def _guard_body(self, request: Request, presented: list[tuple[Source, str]], body: bytes | Unread) -> Step:
        s = self.settings
        a = self.answers
        if isinstance(body, Unread):
            self.event(request, "rejected", "invalid_request", reason=f"refresh body {body.name.lower()}")
            return Respond(a.too_large if body is Unread.TOO_LARGE else a.broken_body)
        try:
            found = refresh_tokens(request.headers, body, s.refresh_body_fields)
        except UnreadableBody:
            self.event(request, "rejected", "invalid_request", reason="refresh body is multipart")
            return Respond(a.unreadable_body)
        presented = presented + [(Source.REFRESH_BODY, raw) for raw in found]
        if not presented:
            return _PASS
        return self._guard_many(request, presented, s.clock())

    def _verify(self, raw: str, source: Source, now: float) -> Token:
        """Verify a token presented by the guard from ``source``: its signature, claims and kind."""
        token = self.settings.verifier.verify(raw, source, now)
        if self._check_kinds and token.kind not in _WANTED[source]:
            raise WrongTokenKind(kinds.refusal(_WANTED[source]))
        if self._rotating and token.jti is None and source in rules.REFRESH_SOURCES:
            raise InvalidClaim("jti", "is missing, and refresh_rotation needs it to notice a reused refresh token")
        return token

    def _guard_many(self, request: Request, presented: list[tuple[Source, str]], now: float) -> Step:
        """The guard for several tokens, or for refresh tokens whose use is recorded (``refresh_rotation``)."""
        s = self.settings
        tokens: list[Token] = []
        for source, raw in presented:
            try:
                tokens.append(self._verify(raw, source, now))
            except TokenError as error:
                if s.on_invalid_token == "reject":
                    return self._reject(request, error, source)
        if not tokens:
            return _PASS
        tokens.sort(key=lambda t: _SOURCE_ORDER[t.source])
        rotation = self._rotating and any(t.source in rules.REFRESH_SOURCES for t in tokens)
        found, owners = rules.lookups(self.policy, tokens, rotation=rotation)
        if not found:
            return Pass(tokens[0])

        def judge(rows: Sequence[Row] | None) -> Step:
            if rows is None:
                return self._store_failed(request, tokens[0])
            verdicts = rules.judge(tokens, found, owners, rows, now)
            if any(verdicts):
                return self._revoked(request, [t for t, v in zip(tokens, verdicts, strict=True) if v])
            if not rotation:
                return Pass(tokens[0])
            return refresh_uses(self, request, tokens, rules.first_uses(tokens, found, owners, rows), now)

        return self._fetch(found, now, judge)

    def _guard_one(self, request: Request, source: Source, raw: str, now: float) -> Step:
        """The guard for the usual request: one token (a reused one derives nothing anew)."""
        try:
            token = self._verify(raw, source, now)
        except TokenError as error:
            return self._reject(request, error, source) if self.settings.on_invalid_token == "reject" else _PASS
        found = rules.lookups_of(self.policy, token)
        if not found:
            return Pass(token)

        def judge(rows: Sequence[Row] | None) -> Step:
            if rows is None:
                return self._store_failed(request, token)
            if rules.revoked_alone(token, found, rows, now):
                return self._revoked(request, [token])
            return Pass(token)

        return self._fetch(found, now, judge)

    def _fetch(self, lookups: tuple[Lookup, ...], now: float, resume: Callable[[Sequence[Row] | None], Step]) -> Step:
        """Read the store: at once when it answers from memory, else through the adapter (a ``Fetch``)."""
        if self.fetch_local is not None:
            rows = self.fetch_local(lookups, now)
            if rows is not None:
                return resume(rows)
        return Fetch(lookups=lookups, now=now, resume=resume)

    def _store_failed(self, request: Request, token: Token) -> Step:
        if self.settings.on_store_error == "allow":
            return Pass(token)
        self.event(request, "rejected", "store_error", token)
        return Respond(self.answers.unavailable)

    def _revoked(self, request: Request, dead: list[Token]) -> Respond:
        self.event(request, "rejected", "revoked", dead[0], count=len(dead))
        return Respond(self.answers.clearing(self.answers.revoked, {t.source for t in dead}))

    def _reject(self, request: Request, error: TokenError, source: Source) -> Respond:
        self.event(request, "rejected", "invalid_token", reason=error.description)
        # Clear only the cookie that failed, not a valid one beside it.
        return Respond(self.answers.clearing(self.answers.invalid_token(error.description), {source}))

    # ---- logout: local and everywhere --------------------------------------

    def _logout(self, request: Request, *, everywhere: bool) -> Step:
        s = self.settings
        a = self.answers
        name = "logout_all" if everywhere else "logout"
        presented, _ = self.presented(request, all_cookies=True)
        by_header = any(src is Source.HEADER for src, _ in presented)
        refused = None
        if presented and not by_header:
            refused = refusal(request.method, request.headers, s.trusted_origins, request.scheme)
        if refused is not None:
            self.event(request, "csrf_refused", "refused", reason=f"{name}: {refused}")
            return Respond(a.cross_site)
        final = a.logged_out_everywhere if everywhere else a.logged_out
        targets = query_param(request.query, "return_to")
        if targets:
            final = (
                a.redirect(targets[0]) if len(targets) == 1 and self._redirect_allowed(targets[0]) else a.bad_redirect
            )
        if everywhere:

            def everywhere_now() -> Step:
                now = s.clock()
                return self._everywhere(request, presented, self._revocable(presented, now), final, now)

            # Keys unavailable: nothing can be judged, so nothing is revoked (503, as a store failure).
            return self._keyed(everywhere_now, request, "logout_all", self.keys_unavailable)

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
            pairs = self._revocable(presented + [(Source.REFRESH_BODY, raw) for raw in found], now)
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
            writes = rules.token_writes(self.policy, tokens, now)
            everything = presented + [(Source.REFRESH_BODY, raw) for raw in found]
            return self._commit(request, name, tokens, writes, answer, now, self._upstream_raw(pairs, everything))

        def keyed(body: bytes | Unread) -> Step:
            # Keys unavailable: the cookies are still cleared, and the answer says the
            # revocation was not recorded (503), never "Logged out" for a token still alive.
            return self._keyed(lambda: with_body(body), request, "logout", a.not_recorded)

        # simplejwt's clients post {"refresh": ...} to log out: that token dies too. A body
        # with no declared type is not read (a browser's empty POST names no token).
        if has_body_type(request.headers):
            return Read(limit=s.max_body_bytes, resume=keyed)
        return keyed(b"")

    def _revocable(self, presented: list[tuple[Source, str]], now: float) -> list[tuple[Token, str]]:
        """The presented tokens a logout acts on, each with its raw form: those that verify, and are
        not ID or logout tokens."""
        verifier = self.settings.verifier
        tokens: list[tuple[Token, str]] = []
        for source, raw in presented:
            try:
                token = verifier.verify(raw, source, now)
            except TokenError:
                # Nothing is revoked on the word of an unverified token (SPEC section 6);
                # a local logout still clears the cookies: it never fails for the user.
                # (KeysMissing goes up: the token may be good, and the keys decide; see _keyed.)
                continue
            if not self._check_kinds or token.kind in kinds.REVOCABLE:
                tokens.append((token, raw))
        return tokens

    def _upstream_raw(
        self, pairs: Sequence[tuple[Token, str]], presented: Sequence[tuple[Source, str]] = ()
    ) -> str | None:
        """The raw token ``upstream_logout`` sends the provider: the first verified one of the kind
        it wants (the access token, or the refresh token), or ``None`` (the call is skipped).

        A refresh token that is not a JWT (``presented``) is the OP's own opaque handle, which
        only the OP can judge (panva's oidc-provider, Keycloak's offline tokens): it is sent
        as it came, so the OP revokes it. Nothing is revoked here on its word."""
        preset = self.settings.upstream_logout
        if preset is None or isinstance(preset, RPInitiated):  # the browser goes to the OP instead
            return None
        sources = _UPSTREAM_SOURCES[preset.token]
        for token, raw in pairs:
            if token.source in sources and (not self._check_kinds or token.kind in _WANTED[token.source]):
                return raw
        if preset.token == "refresh":
            limit = self.settings.verifier.max_token_chars
            for source, raw in presented:
                if source in sources and len(raw) <= limit and _OPAQUE.fullmatch(raw) and not looks_like_jwt(raw):
                    return raw
        return None

    def _finish(
        self,
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
        preset = self.settings.upstream_logout
        if preset is None:
            self.event(request, name, outcome, token, **more)
            return Respond(final)
        if isinstance(preset, RPInitiated):
            return self._to_provider(request, name, outcome, token, final, **more)

        def told(upstream: Outcome) -> Step:
            self.event(request, name, outcome, token, upstream=upstream, **more)
            return Respond(with_upstream(final, upstream))

        if raw is None:
            return told("skipped")
        return Upstream(preset.call(raw), self.settings.upstream_timeout, told)

    def _to_provider(
        self, request: Request, name: str, outcome: str, token: Token | None, final: Answer, **more: object
    ) -> Step:
        """RP-Initiated Logout: a logout that went through sends the browser to the OP (303; the
        cookies cleared as in every logout answer), ``"upstream": "redirected"``; one that did not
        (refused, nothing to log out everywhere, the store failed) keeps its answer, ``"skipped"``.
        A local logout with no token to revoke still goes: the OP's session may be alive."""
        assert self.rp is not None
        if outcome == "store_error" or final.status >= 400:
            self.event(request, name, outcome, token, upstream="skipped", **more)
            return Respond(with_upstream(final, "skipped"))
        target = final.data.get("location") if final.status == 303 else None  # return_to, already allowed
        location = self.rp.location(target if isinstance(target, str) else None, request.headers)
        self.event(request, name, outcome, token, upstream="redirected", **more)
        return Respond(self.answers.to_provider(final, location))

    def _rp_return(self, request: Request) -> Respond:
        """The browser back from the OP's end-session endpoint: on to where the ``state`` signed
        at logout says (its ``return_to``, else ``landing``); a state not signed here, tampered
        with or expired gets 400 and no redirect."""
        assert self.rp is not None
        a = self.answers
        if request.method not in ("GET", "HEAD"):
            return Respond(a.rp_return_method)
        states = query_param(request.query, "state")
        target = self.rp.target(states[0]) if len(states) == 1 else None
        if target is None or not (target == self.rp.preset.landing or self._redirect_allowed(target)):
            self.event(request, "upstream_logout", "refused", reason="state missing, invalid or expired")
            return Respond(a.rp_bad_state)
        self.event(request, "upstream_logout", "ok")
        return Respond(a.redirect(target))

    def _commit(
        self,
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
            return self._finish(request, name, "nothing_revoked", first, final, raw)

        def done(written: Written) -> Step:
            if written is Written.YES:
                return self._finish(request, name, "revoked", first, final, raw, count=len(tokens))
            unrecorded = self.answers.not_recorded if written is Written.NO else self.answers.maybe_recorded
            return self._finish(
                request, name, "store_error", first, unrecorded, raw, count=len(tokens), reason=written.value
            )

        return Commit(writes=writes, now=now, resume=done)

    def _everywhere(
        self,
        request: Request,
        presented: list[tuple[Source, str]],
        pairs: list[tuple[Token, str]],
        final: Answer,
        now: float,
    ) -> Step:
        """Single sign-out: needs a valid, unrevoked token; then revokes its user in every app on the store.

        The provider (``upstream_logout``) is told only once that is done: a request refused here
        revoked nothing, and its answer says ``"upstream": "skipped"``."""
        a = self.answers
        name = "logout_all"
        if not pairs:
            return self._finish(request, name, "unauthenticated", None, a.unauthenticated)
        tokens = [t for t, _ in pairs]
        found, owners = rules.lookups(self.policy, tokens)

        def checked(rows: Sequence[Row] | None) -> Step:
            if rows is None:
                return self._finish(request, name, "store_error", tokens[0], a.unavailable)
            verdicts = rules.judge(tokens, found, owners, rows, now)
            alive_pairs = [p for p, dead in zip(pairs, verdicts, strict=True) if not dead]
            alive = [t for t, _ in alive_pairs]
            if not alive:
                return self._finish(request, name, "unauthenticated", tokens[0], a.unauthenticated, reason="revoked")
            users = {(t.iss, t.sub) for t in alive if t.sub is not None}
            if not users:
                return self._finish(request, name, "nothing_revoked", alive[0], a.no_subject, reason="no subject")
            writes = rules.token_writes(self.policy, alive, now) + tuple(
                rules.user_write(self.policy, iss=iss, sub=sub, now=now) for iss, sub in sorted(users)
            )
            return self._commit(request, name, alive, writes, final, now, self._upstream_raw(alive_pairs, presented))

        return self._fetch(found, now, checked)

    def _redirect_allowed(self, location: str) -> bool:
        s = self.settings
        origin = origin_of(location)
        if origin is None:
            return False
        return location in s.allowed_redirects or origin in s.allowed_origins
