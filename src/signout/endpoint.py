"""The client-credential revocation endpoint (RFC 7009, and CentralAuth's text/plain form).

``POST revoke_path``, the client authenticated by HTTP Basic (RFC 6749 section
2.3.1, form-urlencoded or raw as curl's ``-u``, requests and Authlib send it)
or by ``client_id`` and ``client_secret`` in a form body (client_secret_post),
never both; and either an RFC 7009 form body (``token``, ``token_type_hint``)
or the token alone as ``text/plain``. ``revoke=token|session|user`` (form field
or query parameter; CentralAuth's ``logoutSessionWide=true`` means ``session``)
picks what dies: the token, every token of its login, or every token of its user.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping
from urllib.parse import unquote_to_bytes

from . import kinds, rules
from .context import Context
from .errors import TokenError
from .layout import Write
from .steps import Commit, Read, Respond, Step, Unread, Written
from .tokens import Source, Token
from .web import Headers, Request, basic_credentials, content_type, form, header_values, query_param

_SCOPES = ("token", "session", "user")
_FORM = "application/x-www-form-urlencoded"
Fields = dict[str, list[str]]
Credentials = tuple[bytes, bytes]  # (client id, secret)


class BadClientAuth(Exception):
    """Client credentials that cannot be judged (400 ``invalid_request``); the message says why."""


# ---- client authentication -------------------------------------------------------


def authenticate(clients: Mapping[str, bytes], headers: Headers, fields: Fields | None = None) -> str | None:
    """The client the request authenticates as, or ``None``.

    ``fields``: the form body, when there is one (client_secret_post's credentials are
    in it). Raises ``BadClientAuth`` when the request uses Basic and client_secret_post
    at once (RFC 6749 section 2.3: one method per request) or repeats a credential field.
    """
    return _match(clients, _readings(headers, fields))


def _readings(headers: Headers, fields: Fields | None) -> list[Credentials]:
    """Every way the presented credentials can be read; empty when none were presented."""
    posted = _posted(fields)
    try:
        basic = basic_credentials(headers)
    except ValueError:
        # An unreadable Basic header is still an attempt at Basic: it counts as a method, and fails.
        if posted is not None:
            raise BadClientAuth(_BOTH) from None
        return []
    if basic is None:
        return [] if posted is None else [posted]
    if posted is not None:
        raise BadClientAuth(_BOTH)
    client_id, secret = basic
    return [(read(client_id), read(secret)) for read in _BASIC_READINGS]


_BOTH = "authenticate the client with HTTP Basic or with client_id and client_secret in the body, not both"


def _posted(fields: Fields | None) -> Credentials | None:
    """client_secret_post's ``(client_id, client_secret)``; ``None`` when the body carries no secret."""
    if fields is None:
        return None
    ids, secrets = fields.get("client_id", []), fields.get("client_secret", [])
    if len(ids) > 1 or len(secrets) > 1:
        # Two values: a proxy and this endpoint could each pick a different one.
        raise BadClientAuth("client_id and client_secret may each appear only once")
    if not secrets:
        return None  # a lone client_id identifies (RFC 6749 section 3.2.1); it does not authenticate
    # Without client_id: the empty id, which no client has (config refuses it), so it fails like any other.
    return (ids[0] if ids else "").encode("utf-8"), secrets[0].encode("utf-8")


def _raw(value: bytes) -> bytes:
    # curl -u, httpx: the bytes as given (UTF-8 from a UTF-8 terminal or str).
    return value


def _latin1(value: bytes) -> bytes:
    # requests and Authlib encode a str id and secret as latin-1: "é" arrives as one byte, 0xE9.
    return value.decode("latin-1").encode("utf-8")


def _form_decoded(value: bytes) -> bytes:
    # RFC 6749 section 2.3.1 / Appendix B: form-urlencoded UTF-8, "+" for a space.
    return unquote_to_bytes(value.replace(b"+", b" "))


# Every Basic credential is read all three ways, always, whichever matches: the time taken
# says nothing about which reading (if any) was right.
_BASIC_READINGS: tuple[Callable[[bytes], bytes], ...] = (_raw, _latin1, _form_decoded)


def _match(clients: Mapping[str, bytes], readings: list[Credentials]) -> str | None:
    """The one client whose id and secret some reading presents, compared in constant time.

    Every reading is compared with every client, id and secret, with no early exit and no
    dict lookup: the time depends on the number of clients and readings and on the
    lengths of what was presented, never on whether the id exists, how much of the
    secret was right, or which reading matched. Both sides are hashed first so each
    comparison is of two 32-byte digests, and not even a secret's length shows.
    """
    presented = [(_digest(client_id), _digest(secret)) for client_id, secret in readings]
    matched: set[str] = set()
    for client_id, secret in clients.items():
        wanted_id, wanted_secret = _digest(client_id.encode("utf-8")), _digest(secret)
        for given_id, given_secret in presented:
            # "&", not "and": the secret is compared whether or not the id matched.
            if hmac.compare_digest(wanted_id, given_id) & hmac.compare_digest(wanted_secret, given_secret):
                matched.add(client_id)
    # Two clients matched by different readings of one credential: ambiguous, so neither.
    return next(iter(matched)) if len(matched) == 1 else None


def _digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


# ---- the endpoint ------------------------------------------------------------------


def revocation_endpoint(engine: Context, request: Request) -> Step:
    if request.method != "POST":
        return Respond(engine.answers.revoke_method)
    # The body is read before authenticating: client_secret_post's credentials are in it.
    return Read(limit=engine.settings.max_body_bytes, resume=lambda body: _received(engine, request, body))


def _received(engine: Context, request: Request, body: bytes | Unread) -> Step:
    a = engine.answers
    if isinstance(body, Unread):
        return _unread(engine, request, body)
    fields = form(body) if content_type(request.headers) == _FORM else None
    try:
        client_id = authenticate(engine.settings.clients, request.headers, fields)
    except BadClientAuth as error:
        engine.event(request, "revocation", "invalid_request", reason=str(error))
        return Respond(a.bad_revoke_request(str(error)))
    if client_id is None:
        engine.event(request, "revocation", "invalid_client")
        return Respond(a.invalid_client)
    named = fields.get("client_id", []) if fields is not None else []
    if named and named[0] != client_id:
        # Basic says one client, the body another: the azp check in _revoke must know which one asks.
        engine.event(request, "revocation", "refused", client_id=client_id, reason="client_id of another client")
        return Respond(a.bad_revoke_request("client_id names another client than the credentials"))
    return _parse(engine, request, client_id, body, fields)


def _unread(engine: Context, request: Request, why: Unread) -> Step:
    """A body too large or broken: any credentials in it are lost, only the header can authenticate."""
    a = engine.answers
    sent_header = bool(header_values(request.headers, b"authorization"))
    if sent_header and authenticate(engine.settings.clients, request.headers) is None:
        # Credentials that fail are 401, as they were before the body was read.
        engine.event(request, "revocation", "invalid_client")
        return Respond(a.invalid_client)
    if why is Unread.TOO_LARGE:
        return Respond(a.too_large)
    return Respond(a.bad_revoke_request("the request body could not be read"))


def _parse(engine: Context, request: Request, client_id: str, body: bytes, fields: Fields | None) -> Step:
    a = engine.answers
    kind = content_type(request.headers)
    flags = {
        "revoke": query_param(request.query, "revoke"),
        "wide": query_param(request.query, "logoutSessionWide"),
    }
    if kind == _FORM:
        if fields is None or len(fields.get("token", [])) != 1:
            return Respond(a.bad_revoke_request("the form needs exactly one 'token' field"))
        raw = fields["token"][0]
        # token_type_hint is only a hint (RFC 7009 section 2.1): any value is accepted.
        flags["revoke"] += fields.get("revoke", [])
        flags["wide"] += fields.get("logoutSessionWide", [])
    elif kind in ("text/plain", ""):
        # CentralAuth's form: the token alone. It cannot carry client_secret_post's fields.
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


def _scope(revoke: list[str], wide: list[str]) -> str | None:
    if len(revoke) > 1 or len(wide) > 1 or (revoke and revoke[0] not in _SCOPES):
        return None
    if revoke:
        return revoke[0]
    return "session" if wide and wide[0].lower() in ("true", "1", "yes") else "token"


def _revoke(engine: Context, request: Request, client_id: str, raw: str, scope: str) -> Step:
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

    def done(written: Written) -> Step:
        if written is Written.YES:
            engine.event(request, "revocation", "revoked", token, client_id=client_id, scope=scope)
            return Respond(a.revocation_done(scope))
        engine.event(
            request, "revocation", "store_error", token, client_id=client_id, scope=scope, reason=written.value
        )
        # A write that timed out may still land: "may not have been recorded", never "was not".
        return Respond(a.revoke_unavailable if written is Written.NO else a.revoke_unsure)

    return Commit(writes=writes, now=now, resume=done)


def _writes(engine: Context, token: Token, scope: str, now: float) -> tuple[Write, ...]:
    policy = engine.policy
    if scope == "user" and token.sub is not None:
        return (rules.user_write(policy, iss=token.iss, sub=token.sub, now=now),)
    if scope == "session" and token.sid is not None:
        return (rules.session_write(policy, iss=token.iss, sid=token.sid, now=now),)
    return rules.token_writes(policy, (token,), now, session=False)
