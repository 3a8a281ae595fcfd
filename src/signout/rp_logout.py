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

from collections.abc import Callable
from urllib.parse import urlencode, urlsplit

from itsdangerous import BadData, URLSafeSerializer

from .tokens import looks_like_jwt
from .upstream import RPInitiated
from .web import Headers, cookies

Clock = Callable[[], float]

# Signatures made for this use only: a value signed with the same secret for anything
# else (a session cookie of the app, say) is not a state here.
_SALT = "signout.rp-initiated-logout"
# A state of ours is its target (an allowed redirect, or landing) plus ~60 characters.
_MAX_STATE = 8192


class RPLogout:
    """The redirect to the OP and the check of its way back, for one ``RPInitiated``."""

    def __init__(self, preset: RPInitiated, max_token_chars: int, clock: Clock, leeway: float) -> None:
        self.preset = preset
        #: The path signout answers: ``post_logout_redirect_uri``'s.
        self.path = urlsplit(preset.post_logout_redirect_uri).path
        # Untimed: the state carries its own expiry, judged with the engine's clock and leeway,
        # so an instance whose clock runs a little behind the one that signed still accepts it.
        self._signer = URLSafeSerializer(preset.secret, salt=_SALT)
        self._max_token_chars = max_token_chars
        self._clock = clock
        self._leeway = leeway

    def location(self, target: str | None, headers: Headers) -> str:
        """Where the logout answer sends the browser: the OP's end-session endpoint, with a
        ``state`` that brings it back to ``target`` (else ``landing``) within ``max_age``."""
        p = self.preset
        params = [("client_id", p.client_id)]
        hint = self._id_token(headers)
        if hint is not None:
            params.insert(0, ("id_token_hint", hint))
        expires = int(self._clock()) + p.max_age
        params += [
            ("post_logout_redirect_uri", p.post_logout_redirect_uri),
            ("state", self._signer.dumps([target or p.landing, expires])),
        ]
        joiner = "&" if "?" in p.end_session_endpoint else "?"  # the OP's own query stays first
        return f"{p.end_session_endpoint}{joiner}{urlencode(params)}"

    def target(self, state: str) -> str | None:
        """Where a browser back from the OP goes: the target a ``state`` signed here names,
        or ``None`` when it was not signed here, was tampered with, or has expired (``max_age``,
        give or take ``leeway``)."""
        if len(state) > _MAX_STATE:
            return None
        try:
            signed = self._signer.loads(state)
        except BadData:
            return None
        if not (isinstance(signed, list) and len(signed) == 2 and isinstance(signed[0], str)):
            return None
        target: str = signed[0]
        expires = signed[1]
        if isinstance(expires, bool) or not isinstance(expires, int):
            return None
        now = self._clock()
        # Expired, or signed for further ahead than max_age allows (another key's state, a forgery).
        if now > expires + self._leeway or expires - now > self.preset.max_age + self._leeway:
            return None
        return target

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
