"""One exception root for signout; every error carries the facts it is about.

PyJWT and redis-py errors never leave the package raw: they are translated at
the boundary (``raise ... from exc``) so callers catch ``SignOutError`` or one
of its branches.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable


class SignOutError(Exception):
    """Root of every exception signout raises."""


class ConfigError(SignOutError, ValueError):
    """A constructor kwarg is wrong. ``kwarg`` names it."""

    def __init__(self, kwarg: str, message: str) -> None:
        super().__init__(f"{kwarg}: {message}")
        self.kwarg = kwarg
        self.reason = message


def unknown_option(name: str, known: Iterable[str]) -> str:
    """Why ``name`` was refused, with the closest known option when one is close enough."""
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    if not close:  # a case slip ("Redis_URL") is still a slip
        close = [k for k in known if k.lower() == name.lower()]
    hint = f"; did you mean {close[0]!r}?" if close else "; the README's Options section lists them all"
    return f"is not a signout option{hint}"


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


class UnknownKey(BadSignature):
    """The token names a ``kid`` that the JWK Set at ``jwks_url`` does not hold, even after a refresh."""

    description = "Token signing key is unknown"


class KeysMissing(SignOutError):
    """A token's key is not at hand: the key set from ``jwks_url`` lacks it. Not a ``TokenError``:
    the token may be fine, and the answer depends on what a fetch of the key set finds."""


class KeysNeeded(KeysMissing):
    """A fetch of the key set may find the token's key (its ``kid`` is unknown, or no set was
    fetched yet) and the rate limit allows one: fetch, then verify again (``tokens.after_fetch``).

    It never leaves signout: the engine turns it into a ``Keys`` step for its adapter, and the
    ``Revoker`` fetches itself.
    """


class KeysUnavailable(KeysMissing):
    """No usable key set: no fetch of ``jwks_url`` has succeeded yet, or the last good one is older
    than the bound it is kept for. The guard answers 503 with ``Retry-After`` (fail closed); the
    ``Revoker`` raises it for a token string. ``url``: the JWKS URL (credentials masked)."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"the signing keys from {url} are unavailable: {reason}")
        self.url = url
        self.reason = reason


class StoreError(SignOutError):
    """The revocation store could not answer (down, slow, refused).

    ``where``: the store's address (``redis://host:port/db``, a socket path;
    never a password), when the store knows it. ``unsure``: a write that may
    have reached the store before it failed (a timeout, a connection lost after
    sending), so it may still be applied: "may not have been recorded", where a
    refusal is "was not recorded".
    """

    def __init__(self, message: str, *, where: str | None = None, unsure: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.where = where
        self.unsure = unsure

    def __str__(self) -> str:
        return f"{self.message} [store {self.where}]" if self.where else self.message


# "redis://user:secret@host" in an exception's text: the part a log line may not show.
_CREDENTIALS = re.compile(r"(?<=//)[^@/\s]*@")


def masked(text: str) -> str:
    """``text`` (a URL, an exception's message) as a log line may show it: credentials in a URL hidden."""
    return _CREDENTIALS.sub("***@", text)


def describe(exc: BaseException) -> str:
    """An exception as a log line may show it: its type and text, credentials in a URL masked."""
    text = masked(str(exc)).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
