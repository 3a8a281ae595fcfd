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
from collections.abc import Callable, Sequence
from typing import cast

from . import backchannel, kinds, rules
from .answers import Answers
from .audit import AuditEvent, Auditor, ids
from .bodies import UnreadableBody, refresh_tokens
from .config import Settings
from .endpoint import revocation_endpoint
from .errors import InvalidClaim, KeysMissing, KeysNeeded, MalformedToken, TokenError, WrongTokenKind
from .layout import Lookup
from .logout import logout, rp_return
from .rotation import refresh_uses
from .rp_logout import RPLogout
from .steps import Fetch, Keys, Pass, Read, Respond, Row, Step, Unread
from .tokens import Source, Token, after_fetch
from .upstream import RPInitiated
from .web import (
    Answer,
    BadAuthorization,
    Headers,
    Request,
    answer,
    bearer_token,
    cookies,
    path_matches,
    peer,
)

log = logging.getLogger("signout")

_PASS = Pass()
LocalFetch = Callable[[tuple[Lookup, ...], float], "Sequence[Row] | None"]
_SOURCE_ORDER = {Source.HEADER: 0, Source.ACCESS_COOKIE: 1, Source.REFRESH_COOKIE: 2, Source.REFRESH_BODY: 3}
_HEADER = Source.HEADER  # an Enum member read off its class costs a lookup through the metaclass
_WANTED = rules.WANTED
_AS_ACCESS = kinds.AS_ACCESS


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
        self.check_kinds = settings.check_token_type
        self._rotating = settings.refresh_rotation
        preset = settings.upstream_logout
        #: OIDC RP-Initiated Logout (``upstream.RPInitiated``): the redirect to the OP, and its way back.
        self.rp = (
            RPLogout(preset, settings.verifier.max_token_chars, settings.clock, settings.leeway)
            if isinstance(preset, RPInitiated)
            else None
        )
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
                    return logout(self, request, everywhere=False)
                if request.method != "OPTIONS":  # CORS preflight belongs to the app
                    return Respond(self.answers.logout_method)
            elif path == s.logout_all_path:
                if request.method in ("GET", "POST"):
                    return logout(self, request, everywhere=True)
                if request.method != "OPTIONS":
                    return Respond(self.answers.logout_all_method)
            elif path == s.revoke_path and s.clients:
                return self._revocation(request)
            elif path == s.backchannel_logout_path:
                return self._backchannel(request)
            elif self.rp is not None and path == self.rp.path:
                return rp_return(self, request)
        for prefix in s.exclude_paths:
            if path_matches(request.path, prefix):
                return _PASS
        try:
            return self._guard(request)
        except KeysMissing as missing:  # only with jwks_url; a try costs nothing until it raises
            return self._keys_missing(missing, lambda: self._guard(request), request, "rejected", self.keys_unavailable)

    def quick(self, path: str, headers: Headers) -> Token | TokenError | None:
        """The usual guarded request (``usual``), answered from memory: the token to pass on, or
        the ``TokenError`` its token deserves (``refused`` answers it).

        Otherwise ``None``, unless ``usual`` knows the request and the store's in-memory
        answer holds nothing that revokes its token; the caller then asks
        ``start``, which judges the request from the beginning, as if this had
        not been asked: this only ever says yes where ``start`` would pass the
        same token on (only for an http request, with ``quick_ready`` true).
        """
        usual = self.usual(path, headers)
        if usual is None or isinstance(usual, TokenError):
            return usual  # what is wrong with its token (``refused``), or ask start
        token, found, now = usual
        if found:
            fetch = self.fetch_local
            rows = None if fetch is None else fetch(found, now)
            # Inline, not clean(): this is the hot path of an in-memory store.
            if rows is None or (any(map(any, rows)) and rules.revoked_alone(token, found, rows, now)):
                return None
        return token

    def usual(self, path: str, headers: Headers) -> tuple[Token, tuple[Lookup, ...], float] | TokenError | None:
        """The usual guarded request, known without a ``Request`` or a step: its token, the
        lookups that judge it (none: nothing can revoke it) and the time it is judged at; or
        the ``TokenError`` its token deserves (``refused`` answers it).

        Usual: not one of signout's routes, an excluded path or under the
        refresh cookie's path, and a Bearer token (read by ``bearer_token``, as
        ``presented`` reads it); no access cookie is configured (``usual_ready``),
        so that header is the request's one token. A token in the verified-claims
        cache passes on its lookups worked out before; one not seen yet is
        verified here, as ``_guard_one`` verifies it. Anything else (a key to fetch
        among them) is ``None``: ask ``start``. A token whose rows are ``clean``
        passes as ``start`` would pass it (only for an http request, with
        ``usual_ready`` true).
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
        if known is None:
            try:
                token = self._verify(raw, Source.HEADER, now)
            except TokenError as error:
                return error
            except KeysMissing:  # start fetches the keys, or says they are unavailable
                return None
            return token, rules.lookups_of(self.policy, token), now
        if self.check_kinds and known.kind not in _AS_ACCESS:
            return None
        memo = known.memo
        if memo is None or memo[0] is not self.policy:
            return None
        return known.token(_HEADER), cast("tuple[Lookup, ...]", memo[1]), now

    def refused(self, request: Request, error: TokenError) -> Step:
        """What ``start`` answers a request whose one token ``usual`` found wanting."""
        return self._reject(request, error, Source.HEADER) if self.settings.on_invalid_token == "reject" else _PASS

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

    def keyed(self, decide: Callable[[], Step], request: Request, event: str, unavailable: Answer) -> Step:
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
        return self._keyed_body(step, request, "revocation", self.answers.revoke_unavailable)

    def _backchannel(self, request: Request) -> Step:
        """The back-channel logout receiver (``signout.backchannel``), its token verified once the body is read."""
        step = backchannel.receiver(self, self.backchannel, request)
        return self._keyed_body(step, request, backchannel.EVENT, self.backchannel.unavailable)

    def _keyed_body(self, step: Step, request: Request, event: str, unavailable: Answer) -> Step:
        """A handler's first step; when it reads a body and keys come from ``jwks_url``, what the
        body names is verified through ``keyed`` (a fetch first when a token's key is not at hand)."""
        if not isinstance(step, Read) or self.settings.keyset is None:
            return step
        received = step.resume
        return Read(step.limit, lambda body: self.keyed(lambda: received(body), request, event, unavailable))

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
                resume=lambda body: self.keyed(
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
        if self.check_kinds and token.kind not in _WANTED[source]:
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

        return self.fetch(found, now, judge)

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

        return self.fetch(found, now, judge)

    def fetch(self, lookups: tuple[Lookup, ...], now: float, resume: Callable[[Sequence[Row] | None], Step]) -> Step:
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
