"""The sans-IO heart of signout: request facts and store answers in, decisions out.

``Engine.start`` looks at a request and returns a *step*:

* ``Pass``: hand the request to the app (with the verified claims, if any);
* ``Respond``: send this answer and stop;
* ``Fetch``: read these store fields, then call ``resume`` with the rows
  (or ``None`` when the store failed) for the next step;
* ``Commit``: write these revocations, then call ``resume`` with whether the
  write succeeded.

The ASGI and WSGI adapters run the same loop around it and differ only in
whether the store call is awaited. Nothing here imports asyncio, redis or a
web framework, and nothing reads the wall clock except through ``clock``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import layout
from .config import Settings
from .errors import MalformedToken, TokenError
from .http import (
    Answer,
    BadAuthorization,
    Request,
    answer,
    bearer_token,
    cookies,
    origin_of,
    path_matches,
    query_param,
    with_headers,
)
from .layout import Lookup, Write
from .tokens import Source, Token

log = logging.getLogger("signout")

Row = Sequence[bytes | str | None]


@dataclass(frozen=True, slots=True)
class Pass:
    token: Token | None = None

    @property
    def claims(self) -> Mapping[str, Any] | None:
        return None if self.token is None else self.token.claims


@dataclass(frozen=True, slots=True)
class Respond:
    answer: Answer


@dataclass(frozen=True, slots=True)
class Fetch:
    lookups: tuple[Lookup, ...]
    now: float
    resume: Callable[[Sequence[Row] | None], Step]


@dataclass(frozen=True, slots=True)
class Commit:
    writes: tuple[Write, ...]
    now: float
    resume: Callable[[bool], Step]


Step = Pass | Respond | Fetch | Commit

_PASS = Pass()
_SOURCE_ORDER = {Source.HEADER: 0, Source.ACCESS_COOKIE: 1, Source.REFRESH_COOKIE: 2}


def _challenge(description: str | None) -> tuple[bytes, bytes]:
    # RFC 6750 section 3: error and error_description in the Bearer challenge.
    if description is None:
        return (b"www-authenticate", b"Bearer")
    return (b"www-authenticate", f'Bearer error="invalid_token", error_description="{description}"'.encode())


def revoked(token: Token, values: Mapping[bytes, Any], now: float) -> bool:
    """Whether the stored values revoke ``token`` (SPEC section 3)."""
    if token.sub is not None:
        user = layout.parse(values.get(layout.USER_FIELD))
        # iat equal to the cutoff second is revoked; no iat: any cutoff revokes.
        if user is not None and now < user[1] and (token.iat is None or token.iat <= user[0]):
            return True
    if token.sid is not None:
        session = layout.parse(values.get(layout.session_field(token.sid)))
        if session is not None and now < session[1]:
            return True
    if token.jti is not None:
        single = layout.parse(values.get(layout.token_field(token.jti)))
        if single is not None and now < single[1]:
            return True
    return False


class Engine:
    """Decides what to do with a request; owns no connection and no clock reading."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        s = settings
        self._delete_refresh = (b"set-cookie", s.delete_refresh)
        self._delete_access = None if s.delete_access is None else (b"set-cookie", s.delete_access)
        self._revoked = answer(
            401, {"error": "invalid_token", "message": "Token has been revoked"}, _challenge("Token has been revoked")
        )
        self._unavailable = answer(
            503,
            {"error": "temporarily_unavailable", "message": "The revocation store is unavailable; try again shortly"},
            (b"retry-after", str(s.retry_after).encode()),
        )
        logout_extra: list[tuple[bytes, bytes]] = [self._delete_refresh]
        if self._delete_access is not None:
            logout_extra.append(self._delete_access)
        if s.clear_site_data is not None:
            logout_extra.append((b"clear-site-data", s.clear_site_data))
        self._logout_headers = tuple(logout_extra)
        self._logged_out = answer(200, {"message": "Logged out successfully"}, *logout_extra)
        self._not_recorded = answer(
            503,
            {
                "error": "temporarily_unavailable",
                "message": (
                    "Cookies were cleared, but the revocation was not recorded; "
                    "the token stays valid until it expires. Try again shortly."
                ),
            },
            (b"retry-after", str(s.retry_after).encode()),
            *logout_extra,
        )
        self._bad_redirect = answer(
            400, {"error": "invalid_request", "message": "return_to is not an allowed redirect"}, *logout_extra
        )
        self._logout_method = answer(
            405, {"error": "method_not_allowed", "message": "Use POST to log out"}, (b"allow", b"POST")
        )
        self._invalid_cache: dict[str, Answer] = {}

    # ---- routing -------------------------------------------------------

    def start(self, request: Request) -> Step:
        s = self.settings
        if request.kind == "http" and request.path == s.logout_path:
            if request.method == "POST":
                return self._logout(request)
            if request.method != "OPTIONS":
                return Respond(self._logout_method)
        for prefix in s.exclude_paths:
            if path_matches(request.path, prefix):
                return _PASS
        return self._guard(request)

    # ---- token collection ------------------------------------------------

    def _presented(self, request: Request, *, all_cookies: bool) -> tuple[list[tuple[Source, str]], bool]:
        """The raw tokens of a request, and whether the Authorization header was unusable."""
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

    def _cookie_deletions(self, sources: set[Source]) -> list[tuple[bytes, bytes]]:
        out = []
        if Source.REFRESH_COOKIE in sources:
            out.append(self._delete_refresh)
        if Source.ACCESS_COOKIE in sources and self._delete_access is not None:
            out.append(self._delete_access)
        return out

    def _invalid(self, error: TokenError, sources: set[Source]) -> Respond:
        base = self._invalid_cache.get(error.description)
        if base is None:
            base = answer(401, {"error": "invalid_token", "message": error.description}, _challenge(error.description))
            if len(self._invalid_cache) < 64:
                self._invalid_cache[error.description] = base
        return Respond(with_headers(base, self._cookie_deletions(sources)))

    # ---- the guard -----------------------------------------------------

    def _guard(self, request: Request) -> Step:
        s = self.settings
        presented, bad_header = self._presented(request, all_cookies=False)
        if bad_header and s.on_invalid_token == "reject":
            return self._invalid(MalformedToken("Authorization header is malformed"), set())
        if not presented:
            return _PASS
        now = s.clock()
        tokens: list[Token] = []
        for source, raw in presented:
            try:
                tokens.append(s.verifier.verify(raw, source, now))
            except TokenError as error:
                if s.on_invalid_token == "reject":
                    # Clear only the cookie that failed, not a valid one beside it.
                    return self._invalid(error, {source} - {Source.HEADER})
        if not tokens:
            return _PASS
        tokens.sort(key=lambda t: _SOURCE_ORDER[t.source])
        lookups, owners = self._lookups(tokens)
        if not lookups:
            return Pass(tokens[0])

        def judge(rows: Sequence[Row] | None) -> Step:
            if rows is None:
                if s.on_store_error == "allow":
                    log.warning(
                        "signout: revocation store unavailable; letting a request through (on_store_error='allow')"
                    )
                    return Pass(tokens[0])
                return Respond(self._unavailable)
            values: dict[str, dict[bytes, Any]] = {}
            for lookup, row in zip(lookups, rows, strict=True):
                values[lookup.key] = dict(zip(lookup.fields, row, strict=True))
            dead = {t.source for t in tokens if revoked(t, values.get(owners[id(t)], {}), now)}
            if dead:
                return Respond(with_headers(self._revoked, self._cookie_deletions(dead)))
            return Pass(tokens[0])

        return Fetch(lookups=lookups, now=now, resume=judge)

    def _lookups(self, tokens: Sequence[Token]) -> tuple[tuple[Lookup, ...], dict[int, str]]:
        """One lookup per bucket (tokens of one user share it), and each token's bucket."""
        prefix = self.settings.key_prefix
        fields: dict[str, list[bytes]] = {}
        owners: dict[int, str] = {}
        for t in tokens:
            key = layout.bucket_key(prefix, t.iss, t.sub, t.sid, t.jti)
            if key is None:
                continue
            owners[id(t)] = key
            wanted = fields.setdefault(key, [])
            for f in fields_of(t):
                if f not in wanted:
                    wanted.append(f)
        return tuple(Lookup(k, tuple(v)) for k, v in fields.items()), owners

    # ---- local logout ----------------------------------------------------

    def _logout(self, request: Request) -> Step:
        s = self.settings
        presented, _ = self._presented(request, all_cookies=True)
        now = s.clock()
        final = self._logged_out
        targets = query_param(request.query, "return_to")
        if targets:
            location = targets[0] if len(targets) == 1 else None
            if location is None or not self._redirect_allowed(location):
                final = self._bad_redirect
            else:
                final = Answer(
                    status=303,
                    headers=(
                        (b"location", location.encode("utf-8")),
                        (b"cache-control", b"no-store"),
                        (b"content-length", b"0"),
                        *self._logout_headers,
                    ),
                    data={"location": location},
                )
        tokens: list[Token] = []
        for source, raw in presented:
            try:
                tokens.append(s.verifier.verify(raw, source, now))
            except TokenError:
                # Nothing is revoked on the word of an unverified token (SPEC section 6);
                # the cookies are still cleared: logging out never fails for the user.
                continue
        writes = self.revocations(tokens, now)
        if not writes:
            return Respond(final)

        def done(ok: bool) -> Step:
            return Respond(final if ok else self._not_recorded)

        return Commit(writes=writes, now=now, resume=done)

    def revocations(self, tokens: Sequence[Token], now: float) -> tuple[Write, ...]:
        """The writes that revoke each token, and its session when it has one.

        A token's ``jti`` lives until the token could no longer be accepted
        (``exp`` + leeway); its ``sid`` until any token of that login could
        (``max_token_lifetime`` + leeway), because the refresh token of the same
        login is never sent to the logout route (its cookie path differs).
        """
        s = self.settings
        session_expires = math.ceil(now) + s.max_token_lifetime + s.leeway
        buckets: dict[str, dict[bytes, bytes]] = {}
        for t in tokens:
            key = layout.bucket_key(s.key_prefix, t.iss, t.sub, t.sid, t.jti)
            if key is None:
                log.warning(
                    "signout: a token with neither jti, sid nor sub cannot be revoked; only its cookie was cleared"
                )
                continue
            fields = buckets.setdefault(key, {})
            if t.jti is not None:
                f = layout.token_field(t.jti)
                fields[f] = layout.merge(fields.get(f), layout.expiry_value(math.ceil(t.exp) + s.leeway))
            if t.sid is not None:
                fields[layout.session_field(t.sid)] = layout.expiry_value(session_expires)
            if t.jti is None and t.sid is None:
                log.warning(
                    "signout: a token with neither jti nor sid cannot be revoked alone; only its cookie was cleared"
                )
        return tuple(Write(k, tuple(v.items())) for k, v in buckets.items() if v)

    def _redirect_allowed(self, location: str) -> bool:
        s = self.settings
        origin = origin_of(location)
        if origin is None:
            return False
        return location in s.allowed_redirects or origin in s.allowed_origins


def fields_of(token: Token) -> list[bytes]:
    out = []
    if token.sub is not None:
        out.append(layout.USER_FIELD)
    if token.sid is not None:
        out.append(layout.session_field(token.sid))
    if token.jti is not None:
        out.append(layout.token_field(token.jti))
    return out
