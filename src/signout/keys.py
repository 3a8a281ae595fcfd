"""Verification keys and pinned algorithms, checked once at construction.

RFC 8725 section 3.1 ("perform algorithm verification") and 3.2 ("use
appropriate algorithms") are why the algorithms are pinned by the caller,
``none`` is refused in any capitalisation, and HMAC and asymmetric algorithms
may not be mixed: a verifier that accepts both can be fed an HS256 token signed
with the RSA *public* key as the HMAC secret.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import jwt
from jwt.algorithms import get_default_algorithms

from .errors import ConfigError

HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
_HMAC = HMAC_ALGORITHMS
_SUPPORTED = frozenset(get_default_algorithms()) - {"none"}
# RFC 7518 section 3.2: an HMAC key must be at least as long as the hash output.
_HMAC_MIN_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """A prepared key: parsed once, reused for every token."""

    key: Any
    algorithms: frozenset[str]
    kid: str | None = None


def parse_algorithms(value: object) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ConfigError("algorithms", "must be a list of algorithm names, e.g. ['HS256']")
    algorithms = tuple(value)
    if not algorithms:
        raise ConfigError("algorithms", "must name at least one algorithm")
    for name in algorithms:
        if not isinstance(name, str):
            raise ConfigError("algorithms", f"{name!r} is not an algorithm name")
        if name.lower() == "none":
            raise ConfigError("algorithms", "'none' is never allowed (RFC 8725 section 3.1)")
        if name not in _SUPPORTED:
            raise ConfigError("algorithms", f"{name!r} is not supported; use one of {sorted(_SUPPORTED)}")
    hmac = {a for a in algorithms if a in _HMAC}
    if hmac and len(hmac) != len(set(algorithms)):
        raise ConfigError("algorithms", "HMAC (HS*) and asymmetric algorithms may not be mixed (RFC 8725 section 3.1)")
    return algorithms


def parse_keys(value: object, algorithms: Sequence[str]) -> tuple[VerificationKey, ...]:
    raw: list[object] = list(value) if isinstance(value, (list, tuple)) else [value]
    if not raw:
        raise ConfigError("key", "must be a key or a non-empty list of keys")
    return tuple(_prepare(item, algorithms) for item in raw)


def _looks_asymmetric(text: bytes) -> bool:
    stripped = text.strip()
    return stripped.startswith((b"-----BEGIN", b"ssh-", b"ecdsa-")) or stripped.startswith(b"{")


def _prepare(item: object, algorithms: Sequence[str]) -> VerificationKey:
    if item is None or item == "" or item == b"":
        raise ConfigError("key", "is required and may not be empty")
    if isinstance(item, jwt.PyJWK):
        return _prepare_jwk(item, algorithms)
    hmac = algorithms[0] in _HMAC
    if hmac:
        if not isinstance(item, (str, bytes)):
            raise ConfigError("key", "an HMAC secret must be str or bytes")
        secret = item.encode() if isinstance(item, str) else item
        if _looks_asymmetric(secret):
            raise ConfigError("key", "is a public key or JWK, but the algorithms are HMAC")
        shortest = max(_HMAC_MIN_BYTES[a] for a in algorithms)
        if len(secret) < shortest:
            raise ConfigError(
                "key",
                f"an HMAC secret for {'/'.join(algorithms)} needs at least {shortest} bytes (RFC 7518 section 3.2)",
            )
        return VerificationKey(key=secret, algorithms=frozenset(algorithms))
    if isinstance(item, str):
        item = item.encode()
    usable: set[str] = set()
    prepared: Any = None
    for name in algorithms:
        algorithm = get_default_algorithms()[name]
        try:
            candidate = algorithm.prepare_key(item)
        except (jwt.InvalidKeyError, ValueError, TypeError) as exc:
            del exc
            continue
        # A private key verifies nothing by itself; keep its public half only.
        public = getattr(candidate, "public_key", None)
        if callable(public) and not hasattr(candidate, "verify"):
            candidate = public()
        prepared = candidate
        usable.add(name)
    if prepared is None:
        raise ConfigError("key", f"is not a public key usable with {', '.join(algorithms)}")
    return VerificationKey(key=prepared, algorithms=frozenset(usable))


def _prepare_jwk(item: jwt.PyJWK, algorithms: Sequence[str]) -> VerificationKey:
    name = item.algorithm_name
    if name not in algorithms:
        raise ConfigError("key", f"a PyJWK for {name!r} is not among algorithms {list(algorithms)}")
    kid = item.key_id if isinstance(item.key_id, str) else None
    return VerificationKey(key=item.key, algorithms=frozenset({name}), kid=kid)
