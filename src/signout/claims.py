"""Reading claims: their types, the user a token names, and copies the app may edit."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .errors import InvalidClaim


def user_of(claims: Mapping[str, Any], claim: str) -> str | None:
    """The user a token names in ``claim`` (``user_claim``), as a string; ``None`` if it names none.

    ``sub`` is a string (RFC 7519 4.1.2). Other claims are the issuer's own, and
    some are integers (djangorestframework-simplejwt's ``user_id``): an integer
    is its decimal string, so ``user_id: 42`` and a CLI's ``revoke-user 42`` meet.
    """
    value = claims.get(claim)
    if claim != "sub" and type(value) is int:
        return str(value)
    if value is None or (isinstance(value, str) and value):
        return value
    raise InvalidClaim(claim, "must be a non-empty string" if claim == "sub" else "must be a string or an integer")


def copy_claims(claims: Mapping[str, Any]) -> dict[str, Any]:
    """A copy deep enough that editing it (``claims["roles"].append(...)``) leaves the cache alone."""
    return {k: copy_value(v) for k, v in claims.items()}


def copy_value(value: Any) -> Any:
    if type(value) is dict:
        return {k: copy_value(v) for k, v in value.items()}
    if type(value) is list:
        return [copy_value(v) for v in value]
    return value  # str, int, float, bool, None: immutable


def number(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    # bool is an int in Python, but ``"exp": true`` is not a NumericDate (RFC 7519 section 2).
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidClaim(name, "must be a number")
    return float(value)


def string(claims: Mapping[str, Any], name: str) -> str | None:
    value = claims.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise InvalidClaim(name, "must be a non-empty string")
    return value
