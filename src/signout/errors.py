"""One exception root for signout; every error carries the facts it is about.

PyJWT and redis-py errors never leave the package raw: they are translated at
the boundary (``raise ... from exc``) so callers catch ``SignOutError`` or one
of its branches.
"""

from __future__ import annotations


class SignOutError(Exception):
    """Root of every exception signout raises."""


class ConfigError(SignOutError, ValueError):
    """A constructor kwarg is wrong. ``kwarg`` names it."""

    def __init__(self, kwarg: str, message: str) -> None:
        super().__init__(f"{kwarg}: {message}")
        self.kwarg = kwarg
        self.reason = message


class TokenError(SignOutError):
    """A token failed verification.

    ``description`` is safe to show a client (RFC 6750 ``error_description``):
    it never contains the token or any of its claims.
    """

    description = "Token is invalid"

    def __init__(self, description: str | None = None) -> None:
        if description is not None:
            self.description = description
        super().__init__(self.description)


class MalformedToken(TokenError):
    description = "Token is malformed"


class BadSignature(TokenError):
    description = "Token signature is invalid"


class DisallowedAlgorithm(TokenError):
    description = "Token algorithm is not allowed"


class ExpiredToken(TokenError):
    description = "Token has expired"


class ImmatureToken(TokenError):
    description = "Token is not yet valid"


class InvalidClaim(TokenError):
    """A claim is missing, of the wrong type or has the wrong value."""

    def __init__(self, claim: str, problem: str = "is invalid") -> None:
        self.claim = claim
        super().__init__(f"Token claim '{claim}' {problem}")


class WrongTokenKind(TokenError):
    """A token of one kind presented where another belongs (SPEC section 8, RFC 8725 section 3.11)."""

    description = "Token is not an access token"


class UnrevocableToken(TokenError):
    """A token that carries neither ``jti`` nor ``sid``: no local logout could end it."""

    description = "Token carries neither jti nor sid, so no logout could revoke it"


class StoreError(SignOutError):
    """The revocation store could not answer (down, slow, refused)."""
