"""Token verification over PyJWT, with the clock as a parameter.

PyJWT reads the wall clock inside its checks; signout passes ``now`` in, so
expiry is tested without sleeping. PyJWT still does what needs no clock
(signature, ``aud``, ``iss``, claim types); the time claims are checked here.
Never take the algorithm from the token: it is only used to pick, among the
pinned algorithms, which prepared key to try.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import jwt

from .errors import (
    BadSignature,
    DisallowedAlgorithm,
    ExpiredToken,
    ImmatureToken,
    InvalidClaim,
    MalformedToken,
    TokenError,
)
from .keys import VerificationKey

# A JWT is three base64url segments; anything longer than this is refused
# before any parsing, so a 64 KB header costs nothing.
MAX_TOKEN_CHARS = 16384
_TOKEN_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")


class Source(Enum):
    """Where a token came from; decides CSRF rules and which cookie to clear."""

    HEADER = "header"
    ACCESS_COOKIE = "access_cookie"
    REFRESH_COOKIE = "refresh_cookie"


@dataclass(frozen=True, slots=True)
class Token:
    """A verified token: the claims, and the ids signout keys revocations by."""

    source: Source
    claims: Mapping[str, Any]
    iss: str
    sub: str | None
    sid: str | None
    jti: str | None
    iat: float | None
    exp: float


@dataclass(frozen=True, slots=True)
class _Verified:
    """What a good signature established about a token; time is judged on every use."""

    claims: Mapping[str, Any]
    iss: str
    sub: str | None
    sid: str | None
    jti: str | None
    iat: float | None
    nbf: float | None
    exp: float | None


class Verifier:
    """Verifies JWTs against pinned keys and algorithms.

    With ``cache_size`` > 0, a bounded LRU keyed by the exact token string
    remembers tokens whose signature and claims verified, so a token seen
    again skips PyJWT (the costliest part of a guarded request). ``exp``,
    ``nbf`` and ``iat`` are still judged against the clock on every use, and
    revocation is still checked on every request by the caller. Keys are fixed
    at construction, so an entry can never outlive the key that verified it.
    """

    def __init__(
        self,
        *,
        keys: Sequence[VerificationKey],
        algorithms: Sequence[str],
        audience: str | Sequence[str] | None,
        issuer: str | Sequence[str] | None,
        leeway: float,
        max_lifetime: float,
        required: Sequence[str] = ("exp",),
        cache_size: int = 0,
    ) -> None:
        self._keys = tuple(keys)
        self._algorithms = frozenset(algorithms)
        self._audience = audience
        self._issuer = issuer
        self.leeway = leeway
        self.max_lifetime = max_lifetime
        self._required = tuple(required)
        self._options: Any = {
            "verify_signature": True,
            "verify_exp": False,
            "verify_nbf": False,
            "verify_iat": False,
            "verify_aud": audience is not None,
            "verify_iss": issuer is not None,
            "require": [c for c in required if c not in ("exp", "nbf", "iat")],
        }
        self._cache_size = cache_size
        self._cache: OrderedDict[str, _Verified] = OrderedDict()

    def verify(self, raw: str, source: Source, now: float) -> Token:
        """Return the verified token or raise a ``TokenError``."""
        known = self._cache.get(raw) if self._cache_size else None
        if known is None:
            try:
                known = self._parse(self._signed_claims(raw))
            except TokenError:
                raise
            except Exception as exc:
                # Whatever else a hostile token makes PyJWT or json raise is a
                # malformed token, never a 500 (SPEC section 6).
                raise MalformedToken() from exc
            exp = self._timely(known, now)
            if self._cache_size:
                self._remember(raw, known)
        else:
            exp = self._timely(known, now)
            try:  # noqa: SIM105 - contextlib.suppress costs more on the hot path
                self._cache.move_to_end(raw)
            except KeyError:  # evicted by another thread meanwhile (WSGI)
                pass
        # A copy per request: an app that edits its claims must not edit the cache.
        return Token(source, _copy(known.claims), known.iss, known.sub, known.sid, known.jti, known.iat, exp)

    def _remember(self, raw: str, known: _Verified) -> None:
        cache = self._cache
        cache[raw] = known
        while len(cache) > self._cache_size:
            try:
                cache.popitem(last=False)
            except KeyError:
                break

    def _signed_claims(self, raw: str) -> dict[str, Any]:
        if not raw or len(raw) > MAX_TOKEN_CHARS or raw.count(".") != 2:
            raise MalformedToken()
        if not _TOKEN_CHARS.issuperset(raw.encode("ascii", "replace")):
            raise MalformedToken()
        header = _header(raw)
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self._algorithms:
            raise DisallowedAlgorithm()
        kid = header.get("kid")
        candidates = [k for k in self._keys if alg in k.algorithms and (k.kid is None or kid is None or k.kid == kid)]
        if not candidates:
            raise BadSignature()
        return self._decode(raw, alg, candidates)

    def _decode(self, raw: str, alg: str, candidates: Sequence[VerificationKey]) -> dict[str, Any]:
        last: TokenError = BadSignature()
        for candidate in candidates:
            try:
                claims: dict[str, Any] = jwt.decode(
                    raw,
                    key=candidate.key,
                    algorithms=[alg],
                    options=self._options,
                    audience=self._audience,
                    issuer=self._issuer,
                )
                return claims
            except jwt.InvalidSignatureError as exc:
                last = BadSignature()
                last.__cause__ = exc
            except jwt.MissingRequiredClaimError as exc:
                raise InvalidClaim(exc.claim, "is missing") from exc
            except jwt.InvalidAudienceError as exc:
                raise InvalidClaim("aud") from exc
            except jwt.InvalidIssuerError as exc:
                raise InvalidClaim("iss") from exc
            except jwt.exceptions.InvalidSubjectError as exc:
                raise InvalidClaim("sub") from exc
            except jwt.exceptions.InvalidJTIError as exc:
                raise InvalidClaim("jti") from exc
            except jwt.InvalidAlgorithmError as exc:
                raise DisallowedAlgorithm() from exc
            except (jwt.InvalidTokenError, ValueError, TypeError, KeyError, binascii.Error) as exc:
                raise MalformedToken() from exc
        raise last

    def _parse(self, claims: dict[str, Any]) -> _Verified:
        """Claim types and the checks that do not depend on the time."""
        for claim in ("exp", *self._required):
            # exp is always required: a token without one would outlive any
            # revocation, which lives max_token_lifetime at most.
            if claims.get(claim) is None:
                raise InvalidClaim(claim, "is missing")
        exp, iat = _number(claims, "exp"), _number(claims, "iat")
        if exp is not None and iat is not None and exp - iat > self.max_lifetime + self.leeway:
            raise InvalidClaim("exp", "is further from iat than max_token_lifetime")
        return _Verified(
            claims=claims,
            iss=_string(claims, "iss") or "",
            sub=_string(claims, "sub"),
            sid=_string(claims, "sid"),
            jti=_string(claims, "jti"),
            iat=iat,
            nbf=_number(claims, "nbf"),
            exp=exp,
        )

    def _timely(self, known: _Verified, now: float) -> float:
        """Judge the time claims against ``now``; return the expiry to use."""
        leeway = self.leeway
        exp = known.exp
        assert exp is not None  # _parse requires it
        if now > exp + leeway:
            raise ExpiredToken()
        elif exp - now > self.max_lifetime + leeway:
            # Session and user revocations live max_token_lifetime; a token that
            # outlives them would come back to life, so it is refused instead.
            raise InvalidClaim("exp", "is further away than max_token_lifetime")
        if known.nbf is not None and now + leeway < known.nbf:
            raise ImmatureToken()
        if known.iat is not None and known.iat > now + leeway:
            raise ImmatureToken("Token was issued in the future")
        return exp


def _copy(claims: Mapping[str, Any]) -> dict[str, Any]:
    """A copy deep enough that editing it (``claims["roles"].append(...)``) leaves the cache alone."""
    return {k: _copy_value(v) for k, v in claims.items()}


def _copy_value(value: Any) -> Any:
    if type(value) is dict:
        return {k: _copy_value(v) for k, v in value.items()}
    if type(value) is list:
        return [_copy_value(v) for v in value]
    return value  # str, int, float, bool, None: immutable


def _header(raw: str) -> dict[str, Any]:
    """The JOSE header, read only to pick a key; PyJWT checks it again in ``decode``.

    Decoded here rather than with ``jwt.get_unverified_header``, which in
    PyJWT 2.14+ parses and re-encodes all three segments (~28 us per call).
    """
    segment = raw[: raw.index(".")]
    try:
        header = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (ValueError, binascii.Error, RecursionError) as exc:  # RecursionError: "[[[[..." 5,000 deep
        raise MalformedToken() from exc
    if not isinstance(header, dict):
        raise MalformedToken()
    return header


def _number(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    # bool is an int in Python, but ``"exp": true`` is not a NumericDate (RFC 7519 section 2).
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidClaim(name, "must be a number")
    return float(value)


def _string(claims: Mapping[str, Any], name: str) -> str | None:
    value = claims.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise InvalidClaim(name, "must be a non-empty string")
    return value
