"""Token verification over PyJWT, with the clock as a parameter.

PyJWT reads the wall clock inside its checks; signout passes ``now`` in, so
expiry is tested without sleeping. PyJWT still does what needs no clock
(signature, ``aud``, ``iss``, claim types); the time claims are checked here.
Never take the algorithm from the token: it is only used to pick, among the
pinned algorithms, which prepared key to try.
"""

from __future__ import annotations

import binascii
import json
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

from jwt.algorithms import get_default_algorithms

from . import kinds
from .claims import copy_claims, copy_value, number, string, user_of
from .errors import (
    BadSignature,
    DisallowedAlgorithm,
    ExpiredToken,
    ImmatureToken,
    InvalidClaim,
    KeysMissing,
    KeysNeeded,
    MalformedToken,
    TokenError,
    UnknownKey,
    UnrevocableToken,
)
from .keys import VerificationKey

if TYPE_CHECKING:
    from .keyset import KeySet

# A JWT is three base64url segments; anything longer than this (``max_token_bytes``)
# is refused before any parsing, so a 64 KB header costs nothing.
MAX_TOKEN_CHARS = 16384
#: What a token's ``aud`` is checked against (``None``: it must name none).
Audience: TypeAlias = "str | Sequence[str] | None"
# Three base64url segments and nothing else: no padding, whitespace or non-ASCII.
_SHAPE = re.compile(r"[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*")


def looks_like_jwt(value: str) -> bool:
    """Whether ``value`` has a compact JWS's shape: three base64url segments (nothing is verified)."""
    return _SHAPE.fullmatch(value) is not None


_URLSAFE = bytes.maketrans(b"-_", b"+/")
_MAX_PLANS = 256
# What a JOSE header decides: the algorithm, the keys to try, the kind its typ names, and
# whether a fetch of the key set might find a key the candidates lack (``_Keyring.misses``).
_Plan = tuple[str, tuple[VerificationKey, ...], "str | None", bool]
_T = TypeVar("_T")
# Set while a decision runs again after the key set was refreshed for it: a key still
# missing is then final (UnknownKey, or KeysUnavailable), never a second fetch.
_FETCHED: ContextVar[bool] = ContextVar("signout_keys_fetched", default=False)


def after_fetch(decide: Callable[[], _T]) -> _T:
    """Run ``decide`` again once the key set was refreshed for it (a ``KeysNeeded`` answered).

    Inside it ``Verifier.verify`` never raises ``KeysNeeded``: a ``kid`` still unknown is an
    ``UnknownKey`` (a ``TokenError``), a set still unusable ``KeysUnavailable``.
    """
    reset = _FETCHED.set(True)
    try:
        return decide()
    finally:
        _FETCHED.reset(reset)


class Source(Enum):
    """Where a token came from; decides CSRF rules and which cookie to clear."""

    HEADER = "header"
    ACCESS_COOKIE = "access_cookie"
    REFRESH_COOKIE = "refresh_cookie"
    REFRESH_BODY = "refresh_body"  # a field of the request body on refresh_paths and logout

    # Members are singletons compared by identity, so identity hashing is consistent; Enum's
    # own hash(self._name_) is Python code, and a reused token looks its Token up by source
    # on every request (0.45 -> 0.09 us per lookup).
    __hash__ = object.__hash__


@dataclass(frozen=True, slots=True)
class Token:
    """A verified token: the claims, and the ids signout keys revocations by.

    ``claims`` is shared with the verified-claims cache, so it is read-only
    here; ``app_claims()`` gives the app a copy of its own.
    """

    source: Source
    claims: Mapping[str, Any]
    iss: str
    sub: str | None
    sid: str | None
    jti: str | None
    iat: float | None
    exp: float
    #: What the token says it is (``signout.kinds``): decides where it is accepted.
    kind: str = kinds.UNKNOWN
    # The cache entry this token came from, where the engine keeps what it
    # derives from the ids (its store lookup) so a reused token derives it once.
    verified: _Verified | None = field(default=None, compare=False, repr=False)

    def app_claims(self) -> dict[str, Any]:
        """A copy deep enough that editing it (``claims["roles"].append(...)``) leaves the cache alone."""
        if self.verified is not None:
            return self.verified.copy_claims()
        return copy_claims(self.claims)


class _Verified:
    """What a good signature established about a token; time is judged on every use."""

    __slots__ = (
        "_nested",
        "_view",
        "claims",
        "exp",
        "iat",
        "iss",
        "jti",
        "kind",
        "memo",
        "nbf",
        "sid",
        "sub",
        "tokens",
    )

    def __init__(
        self,
        claims: dict[str, Any],
        iss: str,
        sub: str | None,
        sid: str | None,
        jti: str | None,
        iat: float | None,
        nbf: float | None,
        exp: float,
        kind: str,
    ) -> None:
        self.claims = claims
        self.kind = kind
        self._view = MappingProxyType(claims)
        self.iss, self.sub, self.sid, self.jti = iss, sub, sid, jti
        self.iat, self.nbf, self.exp = iat, nbf, exp
        # Only lists and objects need a deep copy; most claims are strings and numbers.
        self._nested = tuple(k for k, v in claims.items() if type(v) is list or type(v) is dict)
        #: One Token per source it was presented from: a reused token builds none.
        self.tokens: dict[Source, Token] = {}
        #: Whatever the engine derived from the ids (see ``rules.lookups_of``), for its owner.
        self.memo: tuple[object, object] | None = None

    def token(self, source: Source) -> Token:
        token = self.tokens.get(source)
        if token is None:
            token = Token(
                source, self._view, self.iss, self.sub, self.sid, self.jti, self.iat, self.exp, self.kind, self
            )
            self.tokens[source] = token
        return token

    def copy_claims(self) -> dict[str, Any]:
        out = self.claims.copy()
        for name in self._nested:
            out[name] = copy_value(out[name])
        return out


class _Keyring:
    """The keys of one ``KeySet.version``, and everything derived from them.

    Replaced whole when the version changes, never edited: a verification that
    began with the old keys can only write into the old ring's caches, so neither
    a plan nor a verified token outlives the key it was made with.
    """

    __slots__ = ("cache", "keys", "kids", "plans", "ready", "version")

    def __init__(
        self, version: int, keys: tuple[VerificationKey, ...], published: tuple[VerificationKey, ...], ready: bool
    ) -> None:
        self.version = version
        self.keys = keys
        self.kids = frozenset(k.kid for k in published if k.kid is not None)
        self.ready = ready
        self.plans: dict[str, _Plan] = {}
        self.cache: OrderedDict[str, _Verified] = OrderedDict()

    def misses(self, kid: object) -> bool:
        """Whether a fetch of the key set might find the key of a token with this ``kid``."""
        return not self.ready or (isinstance(kid, str) and kid not in self.kids)


class Verifier:
    """Verifies JWTs against pinned keys and algorithms.

    With ``cache_size`` > 0, a bounded LRU keyed by the exact token string
    remembers tokens whose signature and claims verified, so a token seen
    again skips PyJWT (the costliest part of a guarded request). ``exp``,
    ``nbf`` and ``iat`` are still judged against the clock on every use, and
    revocation is still checked on every request by the caller.

    Keys: the static ``keys``, and those of ``keyset`` (``jwks_url``). Every
    use compares the key set's ``version`` with the one seen last (one integer
    compare, cached tokens included); on a change the plans and the cache are
    dropped with the old keys, so an entry can never outlive the key that
    verified it. A token whose key the set might hold after a fetch raises
    ``KeysNeeded`` (when the rate limit allows one; else ``UnknownKey``, or
    ``KeysUnavailable`` while no set is usable).
    """

    def __init__(
        self,
        *,
        keys: Sequence[VerificationKey],
        algorithms: Sequence[str],
        audience: str | Sequence[str] | None,
        issuer: str | Sequence[str] | None,
        leeway: float,
        logout_audience: str | Sequence[str] | None = None,
        max_lifetime: float,
        required: Sequence[str] = ("exp",),
        cache_size: int = 0,
        max_token_chars: int = MAX_TOKEN_CHARS,
        user_claim: str = "sub",
        require_revocable: bool = True,
        keyset: KeySet | None = None,
    ) -> None:
        self._static = tuple(keys)
        self._keyset = keyset
        self._algorithms = frozenset(algorithms)
        self._audience = audience
        # A back-channel logout token's aud (the app's client id), when it differs from the
        # access tokens': then a token for the client (an ID token) never passes the guard.
        self._logout_audience = audience if logout_audience is None else logout_audience
        self._issuer = issuer
        self.leeway = leeway
        self.max_lifetime = max_lifetime
        self._required = tuple(required)
        self._max_chars = max_token_chars
        self.user_claim = user_claim
        self._require_revocable = require_revocable
        self._algorithm_objects = {name: get_default_algorithms()[name] for name in self._algorithms}
        self._cache_size = cache_size
        # Static keys only: a ring that never changes (``version`` 0, and no key set to compare with).
        self._ring = _Keyring(0, self._static, (), True) if keyset is None else _Keyring(-1, (), (), False)

    @property
    def _cache(self) -> OrderedDict[str, _Verified]:
        """The verified-claims cache of the keys in use (tests look into it)."""
        return self._ring.cache

    @property
    def max_token_chars(self) -> int:
        """The longest token string verified (``max_token_bytes``)."""
        return self._max_chars

    @property
    def keyset(self) -> KeySet | None:
        """The key set from ``jwks_url``, when there is one."""
        return self._keyset

    def _renew(self, keyset: KeySet) -> _Keyring:
        """A ring for the key set's current keys (the old one, and its caches, are dropped)."""
        version = keyset.version  # first: the keys read after it are at least as new
        published = keyset.keys
        ring = _Keyring(version, self._static + published, published, keyset.ready)
        self._ring = ring
        return ring

    def verify(self, raw: str, source: Source, now: float) -> Token:
        """Return the verified token or raise a ``TokenError`` (or, with a key set, ``KeysMissing``)."""
        ring = self._ring
        keyset = self._keyset
        if keyset is not None and keyset.version != ring.version:
            ring = self._renew(keyset)
        known = ring.cache.get(raw) if self._cache_size else None
        if known is None:
            try:
                known = self._parse(*self._signed_claims(ring, raw, self._audience))
            except (TokenError, KeysMissing):
                raise
            except Exception as exc:
                # Whatever else a hostile token makes PyJWT or json raise is a
                # malformed token, never a 500 (SPEC section 6).
                raise MalformedToken() from exc
            self._timely(known, now)
            if self._cache_size:
                self._remember(ring.cache, raw, known)
        else:
            self._timely(known, now)
            try:  # noqa: SIM105 - contextlib.suppress costs more on the hot path
                ring.cache.move_to_end(raw)
            except KeyError:  # evicted by another thread meanwhile (WSGI)
                pass
        return known.token(source)

    def verify_logout(self, raw: str, now: float) -> tuple[dict[str, Any], dict[str, Any]]:
        """The claims and JOSE header of a back-channel logout token whose signature, ``aud`` and
        ``iss`` verify (``signout.backchannel`` checks the rest, OIDC Back-Channel Logout 1.0
        section 2.6); raises a ``TokenError`` (or, with a key set, ``KeysMissing``).

        The keys and pinned algorithms are the guard's; the guard's other rules
        (``require_revocable``, kinds, the verified-claims cache) are not applied: a logout
        token is never an access token, and it is never cached as one.
        """
        ring = self._ring
        keyset = self._keyset
        if keyset is not None and keyset.version != ring.version:
            ring = self._renew(keyset)
        try:
            claims, _ = self._signed_claims(ring, raw, self._logout_audience)
            header = _header(raw[: raw.index(".")])  # its shape was checked: it parses as before
        except (TokenError, KeysMissing):
            raise
        except Exception as exc:  # whatever else a hostile token makes json raise (SPEC section 6)
            raise MalformedToken() from exc
        return claims, header

    def _remember(self, cache: OrderedDict[str, _Verified], raw: str, known: _Verified) -> None:
        cache[raw] = known
        while len(cache) > self._cache_size:
            try:
                cache.popitem(last=False)
            except KeyError:
                break

    def _signed_claims(self, ring: _Keyring, raw: str, audience: Audience) -> tuple[dict[str, Any], str | None]:
        """The claims of a token whose signature verifies, and the kind its header names."""
        if len(raw) > self._max_chars or _SHAPE.fullmatch(raw) is None:
            raise MalformedToken()
        head = raw[: raw.index(".")]
        # An issuer signs every token with the same few headers: what one of
        # them decides (algorithm, candidate keys) is worked out once.
        plans = ring.plans
        plan = plans.get(head)
        if plan is None:
            plan = self._plan(ring, head)
            if len(plans) >= _MAX_PLANS:  # a flood of made-up headers cannot grow it
                plans.clear()
            plans[head] = plan
        try:
            return self._decode(raw, plan[0], plan[1], audience), plan[2]
        except BadSignature:
            if plan[3]:  # no candidate verified, and the key set may hold the right key after a fetch
                raise self._missing(ring) from None
            raise

    def _plan(self, ring: _Keyring, head: str) -> _Plan:
        """The algorithm, the keys to try and the kind a JOSE header names, or the ``TokenError`` it deserves."""
        header = _header(head)
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self._algorithms:
            raise DisallowedAlgorithm()
        kid = header.get("kid")
        candidates = tuple(
            k for k in ring.keys if alg in k.algorithms and (k.kid is None or kid is None or k.kid == kid)
        )
        misses = self._keyset is not None and ring.misses(kid)
        if not candidates:
            if misses:
                raise self._missing(ring)
            raise BadSignature()
        if "crit" in header or header.get("b64", True) is not True:
            # No JWS extension is understood here, so none may be critical (RFC 7515 4.1.11).
            raise MalformedToken("Token uses an unsupported JWS extension")
        if "kid" in header and not isinstance(kid, str):
            raise MalformedToken()
        return alg, candidates, kinds.header_kind(header), misses

    def _missing(self, ring: _Keyring) -> Exception:
        """What a token whose key ``ring`` lacks gets: a fetch when allowed, else a final answer."""
        keyset = self._keyset
        assert keyset is not None
        # A fetch that ended after this ring was taken may hold the key: one more try with
        # the new keys, though the rate limit now forbids a fetch of its own. The version is
        # read after may_fetch: a fetch that is no longer under way has bumped it already.
        if not _FETCHED.get() and (keyset.may_fetch() or keyset.version != ring.version):
            return KeysNeeded()
        if not keyset.ready:
            return keyset.unavailable()
        return UnknownKey()

    def _decode(self, raw: str, alg: str, candidates: Sequence[VerificationKey], audience: Audience) -> dict[str, Any]:
        """Check the signature with PyJWT's algorithm objects and the keys prepared at construction.

        ``jwt.decode`` would re-run ``prepare_key`` and a per-character base64
        check on every call (~20 us of ~60 for HS256) and parse the header again;
        the steps it takes are done here once, in the same order (RFC 7515 5.2):
        segments, header, signature over the exact signing input, then the payload.
        """
        signing_input, _, signature_segment = raw.rpartition(".")
        payload_segment = signing_input.partition(".")[2]
        try:
            signature = _b64decode(signature_segment)
            payload = _b64decode(payload_segment)
        except (ValueError, binascii.Error) as exc:
            raise MalformedToken() from exc
        algorithm = self._algorithm_objects[alg]
        message = signing_input.encode("ascii")
        for candidate in candidates:
            if _verifies(algorithm, message, candidate.key, signature):
                break
        else:
            raise BadSignature()
        try:
            claims = json.loads(payload.decode("utf-8"))  # JSON in a JWT is UTF-8 (RFC 7519 section 7)
        except (ValueError, RecursionError) as exc:
            raise MalformedToken() from exc
        if not isinstance(claims, dict):
            raise MalformedToken()
        self._check_audience_and_issuer(claims, audience)
        return claims

    def _check_audience_and_issuer(self, claims: Mapping[str, Any], audience: Audience) -> None:
        """RFC 7519 4.1.1 and 4.1.3, as PyJWT checks them.

        With no ``audience``, a token that names one is refused, as PyJWT refuses it
        (RFC 7519 4.1.3: a recipient not identified by ``aud`` must reject the token):
        a token minted for another service is not one of ours. An empty or null
        ``aud`` names no audience, and PyJWT lets it pass; so does this.
        """
        if audience is None:
            if claims.get("aud"):
                raise InvalidClaim("aud", "names an audience, and no audience is configured")
        else:
            if "aud" not in claims:
                raise InvalidClaim("aud", "is missing")
            aud = claims["aud"]
            presented = [aud] if isinstance(aud, str) else aud
            if not isinstance(presented, list) or not all(isinstance(a, str) for a in presented):
                raise InvalidClaim("aud")
            wanted = {audience} if isinstance(audience, str) else set(audience)
            if wanted.isdisjoint(presented):
                raise InvalidClaim("aud")
        if self._issuer is not None:
            if "iss" not in claims:
                raise InvalidClaim("iss", "is missing")
            iss = claims["iss"]
            allowed = (self._issuer,) if isinstance(self._issuer, str) else tuple(self._issuer)
            if not isinstance(iss, str) or iss not in allowed:
                raise InvalidClaim("iss")

    def _parse(self, claims: dict[str, Any], header_kind: str | None) -> _Verified:
        """Claim types and the checks that do not depend on the time."""
        for claim in ("exp", *self._required):
            # exp is always required: a token without one would outlive any
            # revocation, which lives max_token_lifetime at most.
            if claims.get(claim) is None:
                raise InvalidClaim(claim, "is missing")
        exp, iat = number(claims, "exp"), number(claims, "iat")
        assert exp is not None  # required just above
        if iat is not None and exp - iat > self.max_lifetime + self.leeway:
            raise InvalidClaim("exp", "is further from iat than max_token_lifetime")
        sid, jti = string(claims, "sid"), string(claims, "jti")
        if self._require_revocable and sid is None and jti is None:
            raise UnrevocableToken()
        return _Verified(
            claims=claims,
            iss=string(claims, "iss") or "",
            sub=user_of(claims, self.user_claim),
            sid=sid,
            jti=jti,
            iat=iat,
            nbf=number(claims, "nbf"),
            exp=exp,
            kind=kinds.kind_of(header_kind, claims),
        )

    def _timely(self, known: _Verified, now: float) -> None:
        """Judge the time claims against ``now``."""
        error = self._untimely(known, now)
        if error is not None:
            raise error

    def _untimely(self, known: _Verified, now: float) -> TokenError | None:
        """What is wrong with the time claims at ``now``, if anything."""
        leeway = self.leeway
        exp = known.exp
        if now > exp + leeway:
            return ExpiredToken()
        if exp - now > self.max_lifetime + leeway:
            # Session and user revocations live max_token_lifetime; a token that
            # outlives them would come back to life, so it is refused instead.
            return InvalidClaim("exp", "is further away than max_token_lifetime")
        if known.nbf is not None and now + leeway < known.nbf:
            return ImmatureToken()
        if known.iat is not None and known.iat > now + leeway:
            return ImmatureToken("Token was issued in the future")
        return None

    @property
    def caches(self) -> bool:
        """Whether verified tokens are remembered at all (``verified_cache_size`` > 0)."""
        return self._cache_size > 0

    def cached(self, raw: str, now: float) -> _Verified | None:
        """The cache entry of a token seen before and timely at ``now``; ``None`` for anything else.

        The guard's quick path (``Engine.quick``) asks this first: ``None`` sends
        it the long way (``verify``), which verifies, or says what is wrong.
        """
        if not self._cache_size:
            return None
        ring = self._ring
        keyset = self._keyset
        if keyset is not None and keyset.version != ring.version:
            ring = self._renew(keyset)
        known = ring.cache.get(raw)
        if known is None or self._untimely(known, now) is not None:
            return None
        try:  # noqa: SIM105 - contextlib.suppress costs more on the hot path
            ring.cache.move_to_end(raw)
        except KeyError:  # evicted by another thread meanwhile (WSGI)
            pass
        return known


def _b64decode(segment: str) -> bytes:
    # _SHAPE let through only the base64url alphabet, so the lenient C decoder
    # reads exactly what base64.urlsafe_b64decode would, minus its Python layers.
    return binascii.a2b_base64(segment.encode("ascii").translate(_URLSAFE) + b"=" * (-len(segment) % 4))


def _verifies(algorithm: Any, message: bytes, key: Any, signature: bytes) -> bool:
    try:
        return bool(algorithm.verify(message, key, signature))
    except Exception:
        # A signature of the wrong length or shape is simply not a valid one.
        return False


def _header(segment: str) -> dict[str, Any]:
    """The JOSE header, read only to pick the algorithm and keys (never trusted for more).

    Decoded here rather than with ``jwt.get_unverified_header``, which in
    PyJWT 2.14+ parses and re-encodes all three segments (~28 us per call).
    """
    try:
        header = json.loads(_b64decode(segment).decode("utf-8"))
    except (ValueError, binascii.Error, RecursionError) as exc:  # RecursionError: "[[[[..." 5,000 deep
        raise MalformedToken() from exc
    if not isinstance(header, dict):
        raise MalformedToken()
    return header
