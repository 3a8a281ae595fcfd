"""The client-credential revocation endpoint (RFC 7009, and CentralAuth's text/plain form).

``POST revoke_path`` with ``Authorization: Basic base64(client_id:secret)``
and either an RFC 7009 form body (``token``, ``token_type_hint``) or the token
alone as ``text/plain``. ``revoke=token|session|user`` (form field or query
parameter; CentralAuth's ``logoutSessionWide=true`` means ``session``) picks
what dies: the token, every token of its login, or every token of its user.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING

from . import kinds, rules
from .errors import TokenError
from .http import Request, basic_credentials, content_type, form, query_param
from .layout import Write
from .steps import Commit, Read, Respond, Step, Unread
from .tokens import Source, Token

if TYPE_CHECKING:
    from .core import Engine

_SCOPES = ("token", "session", "user")
# Compared against when the client id is unknown, so a wrong id costs the same time as a wrong secret.
_DUMMY = b"signout-no-such-client-secret-00"


def authenticate(clients: dict[str, bytes], request: Request) -> str | None:
    """The client id whose secret matches, in constant time per client; else ``None``."""
    credentials = basic_credentials(request.headers)
    if credentials is None:
        return None
    client_id, secret = credentials
    expected = clients.get(client_id)
    ok = hmac.compare_digest(secret.encode("utf-8"), expected if expected is not None else _DUMMY)
    return client_id if ok and expected is not None else None


def revocation_endpoint(engine: Engine, request: Request) -> Step:
    s = engine.settings
    a = engine.answers
    if request.method != "POST":
        return Respond(a.revoke_method)
    client_id = authenticate(s.clients, request)
    if client_id is None:
        engine.event(request, "revocation", "invalid_client")
        return Respond(a.invalid_client)

    def parse(body: bytes | Unread) -> Step:
        if body is Unread.TOO_LARGE:
            return Respond(a.too_large)
        if isinstance(body, Unread):
            return Respond(a.bad_revoke_request("the request body could not be read"))
        kind = content_type(request.headers)
        flags = {
            "revoke": query_param(request.query, "revoke"),
            "wide": query_param(request.query, "logoutSessionWide"),
        }
        if kind == "application/x-www-form-urlencoded":
            fields = form(body)
            if fields is None or len(fields.get("token", [])) != 1:
                return Respond(a.bad_revoke_request("the form needs exactly one 'token' field"))
            raw = fields["token"][0]
            # token_type_hint is only a hint (RFC 7009 section 2.1): any value is accepted.
            flags["revoke"] += fields.get("revoke", [])
            flags["wide"] += fields.get("logoutSessionWide", [])
        elif kind in ("text/plain", ""):
            try:
                raw = body.decode("ascii").strip()
            except UnicodeDecodeError:
                raw = ""
        else:
            return Respond(a.bad_revoke_request("send application/x-www-form-urlencoded or text/plain"))
        scope = _scope(flags["revoke"], flags["wide"])
        if scope is None:
            return Respond(a.bad_revoke_request("revoke must be one of token, session, user"))
        return _revoke(engine, request, client_id, raw, scope)

    return Read(limit=s.max_body_bytes, resume=parse)


def _scope(revoke: list[str], wide: list[str]) -> str | None:
    if len(revoke) > 1 or len(wide) > 1 or (revoke and revoke[0] not in _SCOPES):
        return None
    if revoke:
        return revoke[0]
    return "session" if wide and wide[0].lower() in ("true", "1", "yes") else "token"


def _revoke(engine: Engine, request: Request, client_id: str, raw: str, scope: str) -> Step:
    s = engine.settings
    a = engine.answers
    now = s.clock()
    try:
        token = s.verifier.verify(raw, Source.HEADER, now)
    except TokenError as error:
        # RFC 7009 section 2.2: an invalid token is not an error for the client.
        engine.event(request, "revocation", "invalid_token", client_id=client_id, reason=error.description)
        return Respond(a.revocation_done(None))
    owner = token.claims.get("azp", token.claims.get("client_id"))
    if isinstance(owner, str) and owner != client_id:
        engine.event(request, "revocation", "refused", token, client_id=client_id, reason="token of another client")
        return Respond(a.bad_revoke_request("the token was issued to another client", "unauthorized_client"))
    if s.check_token_type and token.kind not in kinds.REVOCABLE:
        engine.event(request, "revocation", "refused", token, client_id=client_id, reason=f"{token.kind} token")
        return Respond(a.bad_revoke_request("ID and logout tokens are not revoked here", "unsupported_token_type"))
    if (scope == "user" and token.sub is None) or (scope == "session" and token.sid is None):
        # Nothing reaches what revoke= names: say so, never a quiet {"revoked": false}.
        claim = s.user_claim if scope == "user" else "sid"
        engine.event(request, "revocation", "nothing_revoked", token, client_id=client_id, scope=scope)
        return Respond(a.bad_revoke_request(f"revoke={scope} needs the token's '{claim}' claim, and it has none"))
    writes = _writes(engine, token, scope, now)
    if not writes:
        engine.event(request, "revocation", "nothing_revoked", token, client_id=client_id, scope=scope)
        return Respond(a.revocation_done(None))

    def done(ok: bool) -> Step:
        engine.event(request, "revocation", "revoked" if ok else "store_error", token, client_id=client_id, scope=scope)
        return Respond(a.revocation_done(scope) if ok else a.revoke_unavailable)

    return Commit(writes=writes, now=now, resume=done)


def _writes(engine: Engine, token: Token, scope: str, now: float) -> tuple[Write, ...]:
    policy = engine.policy
    if scope == "user" and token.sub is not None:
        return (rules.user_write(policy, iss=token.iss, sub=token.sub, now=now),)
    if scope == "session" and token.sid is not None:
        return (rules.session_write(policy, iss=token.iss, sid=token.sid, sub=token.sub, now=now),)
    return rules.token_writes(policy, (token,), now, session=False)
