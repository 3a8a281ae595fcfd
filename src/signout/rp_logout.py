"""OIDC RP-Initiated Logout 1.0 (``upstream.RPInitiated``): the way to the OP, and the way back.

After the local logout, the answer sends the browser (``303``) to the OP's
``end_session_endpoint`` with ``client_id``, ``post_logout_redirect_uri``, the
user's ID token as ``id_token_hint`` when a cookie holds one, and a ``state``
signed here: where the browser goes once it is back (the logout's ``return_to``,
already checked against ``allowed_redirects``, else ``landing``). The OP ends its
session and sends the browser to ``post_logout_redirect_uri?state=...``; signout
answers that path, and only a ``state`` it signed, within ``max_age``, sends the
browser on (no open redirect through the way back).
"""

from __future__ import annotations

from urllib.parse import urlencode, urlsplit

from itsdangerous import BadData, URLSafeTimedSerializer

from .tokens import looks_like_jwt
from .upstream import RPInitiated
from .web import Headers, cookies

# Signatures made for this use only: a value signed with the same secret for anything
# else (a session cookie of the app, say) is not a state here.
_SALT = "signout.rp-initiated-logout"


class RPLogout:
    """The redirect to the OP and the check of its way back, for one ``RPInitiated``."""

    def __init__(self, preset: RPInitiated, max_token_chars: int) -> None:
        self.preset = preset
        #: The path signout answers: ``post_logout_redirect_uri``'s.
        self.path = urlsplit(preset.post_logout_redirect_uri).path
        self._signer = URLSafeTimedSerializer(preset.secret, salt=_SALT)
        self._max_token_chars = max_token_chars

    def location(self, target: str | None, headers: Headers) -> str:
        """Where the logout answer sends the browser: the OP's end-session endpoint, with a
        ``state`` that brings it back to ``target`` (else ``landing``)."""
        p = self.preset
        params = [("client_id", p.client_id)]
        hint = self._id_token(headers)
        if hint is not None:
            params.insert(0, ("id_token_hint", hint))
        params += [
            ("post_logout_redirect_uri", p.post_logout_redirect_uri),
            ("state", self._signer.dumps(target or p.landing)),
        ]
        return f"{p.end_session_endpoint}?{urlencode(params)}"

    def target(self, state: str) -> str | None:
        """Where a browser back from the OP goes: the target a ``state`` signed here names,
        or ``None`` when it was not signed here, was tampered with, or is older than ``max_age``."""
        if len(state) > 4096:  # a state of ours is ~100 characters plus its target
            return None
        try:
            target = self._signer.loads(state, max_age=self.preset.max_age)
        except BadData:
            return None
        return target if isinstance(target, str) else None

    def _id_token(self, headers: Headers) -> str | None:
        """The ID token for ``id_token_hint``: the first value of ``id_token_cookie`` that is
        shaped like a JWT (the OP verifies it; nothing here trusts it)."""
        name = self.preset.id_token_cookie
        if name is None:
            return None
        for value in cookies(headers, name):
            if len(value) <= self._max_token_chars and looks_like_jwt(value):
                return value
        return None
