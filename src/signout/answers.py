"""Every answer signout sends, built once at construction from the settings."""

from __future__ import annotations

from .config import Settings
from .tokens import Source
from .web import Answer, answer, with_headers

Header = tuple[bytes, bytes]


def challenge(description: str | None) -> Header:
    """RFC 6750 section 3: a Bearer challenge; no error code when no token was sent (3.1)."""
    if description is None:
        return (b"www-authenticate", b"Bearer")
    return (b"www-authenticate", f'Bearer error="invalid_token", error_description="{description}"'.encode())


def with_upstream(base: Answer, outcome: str) -> Answer:
    """``base`` with ``"upstream": outcome`` in its JSON body (``upstream_logout``); a redirect
    (``return_to``) has no body, and goes unchanged: the audit event still says the outcome."""
    if not base.body:
        return base
    data = {**base.data, "upstream": outcome}
    rebuilt = answer(base.status, data)
    rest = tuple(h for h in base.headers if h[0] not in _REBUILT)
    return Answer(base.status, rebuilt.headers + rest, rebuilt.body, data)


# The headers ``answer`` writes itself; every other one of an answer is carried over as it was.
_REBUILT = frozenset((b"content-type", b"content-length", b"cache-control"))


class Answers:
    def __init__(self, s: Settings) -> None:
        retry = (b"retry-after", str(s.retry_after).encode())
        self.delete_refresh: Header = (b"set-cookie", s.delete_refresh)
        self.delete_access: Header | None = None if s.delete_access is None else (b"set-cookie", s.delete_access)
        logout: list[Header] = [self.delete_refresh]
        if self.delete_access is not None:
            logout.append(self.delete_access)
        if s.clear_site_data is not None:
            logout.append((b"clear-site-data", s.clear_site_data))
        #: Headers of every logout answer: cookie deletions, Clear-Site-Data.
        self.logout_headers = tuple(logout)

        self.revoked = answer(
            401, {"error": "invalid_token", "message": "Token has been revoked"}, challenge("Token has been revoked")
        )
        self.unavailable = answer(
            503,
            {"error": "temporarily_unavailable", "message": "The revocation store is unavailable; try again shortly"},
            retry,
        )
        self.logged_out = answer(200, {"message": "Logged out successfully"}, *logout)
        self.logged_out_unrevoked = answer(
            200,
            {
                "message": (
                    "Cookies were cleared, but the token carries neither jti nor sid: "
                    "nothing could revoke it, and it stays valid until it expires"
                ),
                "revoked": False,
            },
            *logout,
        )
        #: A logout whose body could not be read, by the status saying why: 413 too large,
        #: 400 broken, 415 multipart. Everything outside the body was revoked; this says what was not.
        self.logout_body_unread = {
            status: answer(
                status,
                {
                    "error": "invalid_request",
                    "message": (
                        f"Cookies were cleared and the tokens sent outside the body were revoked, but the body "
                        f"could not be read ({why}): a refresh token in it was not revoked"
                    ),
                },
                *logout,
            )
            for status, why in ((413, "too large"), (400, "broken"), (415, "multipart is not read"))
        }
        self.logged_out_everywhere = answer(200, {"message": "Successfully logged out from SSO session"}, *logout)
        self.not_recorded = answer(
            503,
            {
                "error": "temporarily_unavailable",
                "message": (
                    "Cookies were cleared, but the revocation was not recorded; "
                    "the token stays valid until it expires. Try again shortly."
                ),
            },
            retry,
            *logout,
        )
        self.maybe_recorded = answer(
            503,
            {
                "error": "temporarily_unavailable",
                "message": (
                    "Cookies were cleared, but the store did not confirm the revocation in time: it may not "
                    "have been recorded, and then the token stays valid until it expires. Log out again to be sure."
                ),
            },
            retry,
            *logout,
        )
        self.bad_redirect = answer(
            400, {"error": "invalid_request", "message": "return_to is not an allowed redirect"}, *logout
        )
        self.rp_bad_state = answer(
            400, {"error": "invalid_request", "message": "The logout's state is missing, invalid or expired"}
        )
        self.rp_return_method = answer(
            405, {"error": "method_not_allowed", "message": "Use GET"}, (b"allow", b"GET, HEAD")
        )
        self.logout_method = answer(
            405, {"error": "method_not_allowed", "message": "Use POST to log out"}, (b"allow", b"POST")
        )
        self.logout_all_method = answer(
            405, {"error": "method_not_allowed", "message": "Use GET or POST"}, (b"allow", b"GET, POST")
        )
        # Mubarokah's /api/logout-sso answer for a bad or revoked token.
        self.unauthenticated = answer(401, {"message": "Unauthenticated."}, challenge(None))
        self.no_subject = answer(
            400,
            {
                "error": "invalid_request",
                "message": f"Token has no '{s.user_claim}' claim naming its user; cannot log out everywhere",
            },
        )
        self.cross_site = answer(
            403, {"error": "cross_site_request", "message": "Cross-site logout refused; log out from the app itself"}
        )
        # RFC 7009 / RFC 6749 section 5.2 answers of the revocation endpoint.
        self.invalid_client = answer(
            401,
            {"error": "invalid_client", "error_description": "Client authentication failed"},
            (b"www-authenticate", b'Basic realm="signout"'),
        )
        self.revoke_method = answer(
            405, {"error": "invalid_request", "error_description": "Use POST"}, (b"allow", b"POST")
        )
        self.too_large = answer(413, {"error": "invalid_request", "error_description": "Request body too large"})
        self.broken_body = answer(
            400, {"error": "invalid_request", "error_description": "The request body could not be read"}
        )
        self.unreadable_body = answer(
            415,
            {
                "error": "invalid_request",
                "error_description": "Send the refresh token in a JSON object or a form (multipart is not read)",
            },
        )
        self.reused = answer(
            401,
            {"error": "invalid_token", "message": "Refresh token was already used; its login has been revoked"},
            challenge("Refresh token was already used"),
        )
        self.revoke_unavailable = answer(
            503,
            {"error": "temporarily_unavailable", "error_description": "The revocation was not recorded; try again"},
            retry,
        )
        self.revoke_unsure = answer(
            503,
            {
                "error": "temporarily_unavailable",
                "error_description": (
                    "The store did not confirm the revocation in time: it may not have been recorded; try again"
                ),
            },
            retry,
        )
        self._invalid: dict[str, Answer] = {}

    def invalid_token(self, description: str) -> Answer:
        # Descriptions come from a fixed set (TokenError subclasses), so the cache stays small.
        cached = self._invalid.get(description)
        if cached is None:
            cached = answer(401, {"error": "invalid_token", "message": description}, challenge(description))
            if len(self._invalid) < 64:
                self._invalid[description] = cached
        return cached

    def clearing(self, base: Answer, sources: set[Source]) -> Answer:
        """``base`` plus deletions of the cookies among ``sources``."""
        extra = []
        if Source.REFRESH_COOKIE in sources:
            extra.append(self.delete_refresh)
        if Source.ACCESS_COOKIE in sources and self.delete_access is not None:
            extra.append(self.delete_access)
        return with_headers(base, extra)

    @staticmethod
    def to_provider(final: Answer, location: str) -> Answer:
        """``final`` (a logout's answer) as a 303 to the OP's end-session ``location``: its cookie
        deletions kept, its message in a JSON body with ``"upstream": "redirected"`` (for a client
        that reads it rather than follows it)."""
        data = {k: v for k, v in final.data.items() if k != "location"}  # "revoked": false stays
        data.setdefault("message", "Logged out successfully")
        data.update(upstream="redirected", location=location)
        kept = tuple(h for h in final.headers if h[0] not in _REBUILT and h[0] != b"location")
        return answer(303, data, (b"location", location.encode("utf-8")), *kept)

    @staticmethod
    def onward(location: str) -> Answer:
        """A bare 303 (the browser back from the OP): no cookie is cleared and no site data,
        since anyone can send a browser here with a state signed for an anonymous logout."""
        headers = ((b"location", location.encode("utf-8")), (b"cache-control", b"no-store"), (b"content-length", b"0"))
        return Answer(status=303, headers=headers, data={"location": location})

    def redirect(self, location: str) -> Answer:
        return Answer(
            status=303,
            headers=(
                (b"location", location.encode("utf-8")),
                (b"cache-control", b"no-store"),
                (b"content-length", b"0"),
                *self.logout_headers,
            ),
            data={"location": location},
        )

    @staticmethod
    def bad_revoke_request(description: str, error: str = "invalid_request") -> Answer:
        return answer(400, {"error": error, "error_description": description})

    @staticmethod
    def revocation_done(scope: str | None) -> Answer:
        # RFC 7009 section 2.2: 200 whether or not there was anything to revoke;
        # the body says which, so nothing is reported as revoked that was not.
        if scope is None:
            return answer(200, {"revoked": False})
        return answer(200, {"revoked": True, "scope": scope})
