"""Token kinds: what a token says it is, and where each kind may be used (SPEC section 8).

RFC 8725 section 3.11: a token meant for one use must not be accepted for
another ("token confusion"). Issuers mark the kind in different places, so
each is read: the JOSE header ``typ`` (``at+jwt``, RFC 9068; ``logout+jwt``,
OIDC Back-Channel Logout 1.0 section 2.4), the back-channel ``events`` claim,
and the claims that issuers use to name it (Keycloak ``typ``, Cognito
``token_use``, djangorestframework-simplejwt ``token_type``, flask-jwt-extended
``type``, Casdoor ``tokenType``). A token that says nothing is *unknown*, and
unknown tokens are accepted wherever tokens are.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

ACCESS = "access"
REFRESH = "refresh"
ID = "id"
LOGOUT = "logout"
UNKNOWN = "unknown"

BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"

#: Kinds accepted where a request presents an access token (Authorization header, access cookie).
AS_ACCESS = frozenset({ACCESS, UNKNOWN})
#: Kinds accepted where a refresh token is presented (the refresh cookie, a refresh body).
AS_REFRESH = frozenset({REFRESH, UNKNOWN})
#: Kinds a logout route revokes; ID and logout tokens name a login, they are not one.
REVOCABLE = frozenset({ACCESS, REFRESH, UNKNOWN})

# The claims issuers name the kind in, and the words they use (lower case, "_" as "-",
# without a "-token" suffix): Keycloak "ID", "Refresh", "Offline", "Bearer", "Logout";
# Cognito "id", "access"; simplejwt "access", "refresh"; Casdoor "access-token", "refresh-token".
_CLAIMS = ("typ", "token_use", "token_type", "type", "tokenType")
_WORDS = {
    "id": ID,
    "refresh": REFRESH,
    "offline": REFRESH,
    "access": ACCESS,
    "bearer": ACCESS,
    "logout": LOGOUT,
}
# When claims disagree, the kind allowed in the fewest places wins: a token that
# says both "refresh" and "access" is not let in where only access tokens belong.
_PRECEDENCE = (LOGOUT, ID, REFRESH, ACCESS)


def header_kind(header: Mapping[str, Any]) -> str | None:
    """The kind the JOSE header ``typ`` names, if any (media types compare case-insensitively, RFC 7515 4.1.9)."""
    typ = header.get("typ")
    if not isinstance(typ, str):
        return None
    typ = typ.lower().removeprefix("application/")
    if typ == "logout+jwt":
        return LOGOUT
    if typ == "at+jwt":
        return ACCESS
    return None


def kind_of(header: str | None, claims: Mapping[str, Any]) -> str:
    """The kind of a token from its header's kind (``header_kind``) and its claims."""
    events = claims.get("events")
    if header == LOGOUT or (isinstance(events, dict) and BACKCHANNEL_EVENT in events):
        return LOGOUT
    said = {header} if header is not None else set()
    for name in _CLAIMS:
        value = claims.get(name)
        if isinstance(value, str):
            word = value.strip().lower().replace("_", "-").removesuffix("-token")
            kind = _WORDS.get(word)
            if kind is not None:
                said.add(kind)
    for kind in _PRECEDENCE:
        if kind in said:
            return kind
    return UNKNOWN


def refusal(wanted: frozenset[str]) -> str:
    """What to tell a client whose token was presented where only ``wanted`` kinds belong."""
    return "Token is not a refresh token" if wanted is AS_REFRESH else "Token is not an access token"
