"""Upstream logout: telling the identity provider, after the local logout (SPEC section 10).

A preset names the provider and builds the one HTTP request its documentation
gives for ending the user's session there, from the token being logged out
(``Call``), and judges the reply. The request is sent by ``send``: blocking
``urllib`` in a worker thread, bounded by ``upstream_timeout``; the ASGI adapter
awaits the thread's future (``outcome_async``), the WSGI adapter waits for it
(``outcome_sync``), so neither ever waits longer than the bound and the event
loop is never blocked. ``send`` never raises: whatever goes wrong is ``"failed"``.

The presets follow the providers' own documents (``../shared/seeds/``):

- ``Casdoor``: ``POST {base_url}/api/sso-logout`` with ``Authorization: Bearer
  <access token>``; ok when the answer is 200 with ``{"status": "ok"}``
  (Casdoor answers ``{"status": "error", "msg": ...}`` when it refused).
- ``MubarokahID``: ``GET {base_url}/api/logout-sso`` with ``Authorization: Bearer
  <access token>`` and ``Accept: application/json``; ok on 200 (401
  ``{"message": "Unauthenticated."}`` for an invalid or revoked token).
- ``CentralAuth``: ``POST {base_url}/api/v1/logout`` with ``Authorization: Basic
  base64(client_id:client_secret)``, ``Content-Type: text/plain`` and the access
  token as the body; ok on 200 (an empty answer).
- ``RFC7009``: ``POST revocation_endpoint``, a form ``token=...&token_type_hint=...``,
  the client authenticated with ``client_secret_basic`` or ``client_secret_post``
  (RFC 6749 section 2.3.1); ok on 200 (RFC 7009 section 2.2).
- ``RPInitiated``: no call; the browser is sent to the OP (``signout.rp_logout``).

Every provider advises clearing the local session even when its call fails; the
local logout is therefore recorded first, and nothing here can fail or undo it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote_plus, urlencode, urlsplit

from .errors import ConfigError, describe
from .web import holds_space_or_control, https_url, is_cookie_name

log = logging.getLogger("signout")

#: The default bound on the whole call (Casdoor's advice: "const timeout = 5000; // 5 seconds").
DEFAULT_TIMEOUT = 5.0
#: The most of an answer read; a logout answer is a few bytes of JSON or nothing.
MAX_ANSWER_BYTES = 65536
#: Calls running at once; more wait their turn, and fail if their bound passes first.
MAX_CALLS = 8

Outcome = Literal["ok", "failed", "skipped"]
TokenKind = Literal["access", "refresh"]
_KWARG = "upstream_logout"


@dataclass(frozen=True, slots=True)
class Call:
    """One HTTP request to the provider, and how to judge its answer."""

    method: str
    url: str
    headers: tuple[tuple[str, str], ...]
    body: bytes | None
    provider: str
    #: Casdoor answers 200 for refusals too: only its JSON ``status`` says ok.
    json_status_ok: bool = False

    def judge(self, status: int, body: bytes) -> str | None:
        """``None`` when the provider says the logout happened, else why not (for a log line)."""
        if status != 200:
            return f"answered HTTP {status}"
        if not self.json_status_ok:
            return None
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):
            return "answered 200 with a body that is not JSON"
        if isinstance(data, dict) and data.get("status") == "ok":
            return None
        msg = data.get("msg") if isinstance(data, dict) else None
        return f"answered status {data.get('status') if isinstance(data, dict) else None!r}: {msg!r}"


def _url(preset: str, name: str, value: object, *, query: bool = False) -> str:
    """An https URL; plain http only to a loopback host (the token would travel in the clear).
    No fragment or credentials; a query only where ``query`` says the provider's URL may hold one."""
    usage = f"{preset} {name} must be an https:// URL"
    url = https_url(
        _KWARG,
        value,
        usage=f"{usage} without {'' if query else 'query, '}fragment or credentials",
        clear=f"{usage} (plain http:// only to a loopback host such as 127.0.0.1): tokens would travel in clear",
        bare=not query,
    )
    parts = urlsplit(url)
    if parts.fragment or parts.username or parts.password:
        raise ConfigError(_KWARG, f"{usage} without fragment or credentials, not {url!r}")
    return url


def _credential(preset: str, name: str, value: object) -> str:
    if not isinstance(value, str) or not value or any(c in value for c in "\r\n\0"):
        raise ConfigError(_KWARG, f"{preset} {name} must be a non-empty string")
    return value


def _basic(client_id: str, client_secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{client_secret}".encode()).decode("ascii")


@dataclass(frozen=True, slots=True)
class Casdoor:
    """Casdoor's single sign-out: every session and access token of the user at Casdoor ends.

    ``base_url``: your Casdoor server, e.g. ``"https://door.casdoor.com"``.
    """

    base_url: str
    token: TokenKind = field(default="access", init=False)

    def __post_init__(self) -> None:
        _url("Casdoor", "base_url", self.base_url)

    def call(self, raw: str) -> Call:
        return Call(
            "POST",
            self.base_url.rstrip("/") + "/api/sso-logout",
            (("Authorization", f"Bearer {raw}"),),
            None,
            "Casdoor",
            json_status_ok=True,
        )


@dataclass(frozen=True, slots=True)
class MubarokahID:
    """Mubarokah ID's global SSO logout: revokes the token and ends the user's central session."""

    base_url: str = "https://accounts.mubarokah.com"
    token: TokenKind = field(default="access", init=False)

    def __post_init__(self) -> None:
        _url("MubarokahID", "base_url", self.base_url)

    def call(self, raw: str) -> Call:
        return Call(
            "GET",
            self.base_url.rstrip("/") + "/api/logout-sso",
            (("Authorization", f"Bearer {raw}"), ("Accept", "application/json")),
            None,
            "Mubarokah ID",
        )


@dataclass(frozen=True, slots=True)
class CentralAuth:
    """CentralAuth's session-wide logout (with its ``autologin`` option): the user leaves every app.

    ``client_id`` and ``client_secret``: from the integration page of the CentralAuth dashboard.
    """

    client_id: str
    client_secret: str = field(repr=False)
    base_url: str = "https://centralauth.com"
    token: TokenKind = field(default="access", init=False)

    def __post_init__(self) -> None:
        _url("CentralAuth", "base_url", self.base_url)
        _credential("CentralAuth", "client_id", self.client_id)
        _credential("CentralAuth", "client_secret", self.client_secret)
        if ":" in self.client_id:
            raise ConfigError(_KWARG, "CentralAuth client_id may not hold ':' (HTTP Basic splits on it)")

    def call(self, raw: str) -> Call:
        return Call(
            "POST",
            self.base_url.rstrip("/") + "/api/v1/logout",
            (("Authorization", _basic(self.client_id, self.client_secret)), ("Content-Type", "text/plain")),
            raw.encode("ascii"),
            "CentralAuth",
        )


@dataclass(frozen=True, slots=True)
class RFC7009:
    """Token revocation (RFC 7009) at any OAuth 2.0 / OpenID provider that offers it.

    ``revocation_endpoint``: the OP's ``revocation_endpoint`` (its discovery document names it).
    ``auth``: how the client authenticates (RFC 6749 section 2.3.1), ``client_secret_basic``
    (HTTP Basic with the form-encoded id and secret) or ``client_secret_post`` (both in the body).
    ``token``: which token is revoked there, the access token presented to the logout route
    or the refresh token (cookie or body); many OPs revoke only refresh tokens (an access
    token then answers 400 ``unsupported_token_type``, and the outcome is ``failed``).
    """

    revocation_endpoint: str
    client_id: str
    client_secret: str = field(repr=False)
    auth: Literal["client_secret_basic", "client_secret_post"] = "client_secret_basic"
    token: TokenKind = "access"

    def __post_init__(self) -> None:
        _url("RFC7009", "revocation_endpoint", self.revocation_endpoint)
        _credential("RFC7009", "client_id", self.client_id)
        _credential("RFC7009", "client_secret", self.client_secret)
        if self.auth not in ("client_secret_basic", "client_secret_post"):
            raise ConfigError(
                _KWARG,
                f"RFC7009 auth must be 'client_secret_basic' or 'client_secret_post', not {self.auth!r}",
            )
        if self.token not in ("access", "refresh"):
            raise ConfigError(_KWARG, f"RFC7009 token must be 'access' or 'refresh', not {self.token!r}")

    def call(self, raw: str) -> Call:
        form = [("token", raw), ("token_type_hint", f"{self.token}_token")]
        headers = [("Content-Type", "application/x-www-form-urlencoded")]
        if self.auth == "client_secret_basic":
            # RFC 6749 section 2.3.1: id and secret are form-encoded before they are joined.
            basic = _basic(quote_plus(self.client_id, safe=""), quote_plus(self.client_secret, safe=""))
            headers.append(("Authorization", basic))
        else:
            form += [("client_id", self.client_id), ("client_secret", self.client_secret)]
        return Call("POST", self.revocation_endpoint, tuple(headers), urlencode(form).encode("ascii"), "RFC 7009")


@dataclass(frozen=True, slots=True)
class RPInitiated:
    """OpenID Connect RP-Initiated Logout 1.0: after the local logout, the browser is sent to
    the OP's ``end_session_endpoint`` (with ``id_token_hint``, ``client_id``,
    ``post_logout_redirect_uri`` and a ``state`` signed with itsdangerous), and comes back to
    ``post_logout_redirect_uri``, a route signout answers (``signout.rp_logout``): the ``state``
    is checked there, and the browser goes on to the logout's ``return_to``, else ``landing``.

    ``end_session_endpoint``: the OP's (its discovery document names it).
    ``client_id``: this app's client id at the OP.
    ``post_logout_redirect_uri``: an https URL of this app, registered at the OP; signout
    answers its path (``GET``), so the app must not route it.
    ``secret``: at least 32 bytes; signs the ``state`` (keep it out of source control).
    ``id_token_cookie``: the cookie holding the user's ID token, sent as ``id_token_hint``;
    without it the OP asks the user to confirm the logout.
    ``landing``: a path of this app, where the browser ends when the logout named no ``return_to``.
    ``max_age``: seconds the round trip through the OP may take (the ``state`` expires then).
    """

    end_session_endpoint: str
    client_id: str
    post_logout_redirect_uri: str
    secret: str | bytes = field(repr=False)
    id_token_cookie: str | None = None
    landing: str = "/"
    max_age: int = 600

    def __post_init__(self) -> None:
        name = "RPInitiated"
        # A query is the OP's own (Azure AD B2C names its policy there: "?p=B2C_1_signin").
        _url(name, "end_session_endpoint", self.end_session_endpoint, query=True)
        _credential(name, "client_id", self.client_id)
        back = _url(name, "post_logout_redirect_uri", self.post_logout_redirect_uri)
        path = urlsplit(back).path
        if path in ("", "/"):
            raise ConfigError(_KWARG, f"{name} post_logout_redirect_uri needs a path of its own: signout answers it")
        if "%" in path:
            raise ConfigError(_KWARG, f"{name} post_logout_redirect_uri's path may not be percent-encoded")
        secret = self.secret.encode() if isinstance(self.secret, str) else self.secret
        if not isinstance(secret, bytes) or len(secret) < 32:
            raise ConfigError(_KWARG, f"{name} secret must be at least 32 bytes: it signs the logout's state")
        if self.id_token_cookie is not None and not is_cookie_name(self.id_token_cookie):
            raise ConfigError(_KWARG, f"{name} id_token_cookie must be a cookie name")
        landing = self.landing
        if (
            not isinstance(landing, str)
            or not landing.startswith("/")
            or landing.startswith("//")
            or "\\" in landing
            # Browsers drop tabs and newlines: "/\t/evil.example" would go to //evil.example.
            or holds_space_or_control(landing)
        ):
            raise ConfigError(_KWARG, f"{name} landing must be a path of this app, such as '/'")
        if isinstance(self.max_age, bool) or not isinstance(self.max_age, int) or not 10 <= self.max_age <= 3600:
            raise ConfigError(_KWARG, f"{name} max_age must be a whole number of seconds from 10 to 3600")


Preset = Casdoor | MubarokahID | CentralAuth | RFC7009 | RPInitiated
PRESETS = (Casdoor, MubarokahID, CentralAuth, RFC7009, RPInitiated)


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        # Not followed: the token would go wherever the answer points (maybe over http).
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def send(call: Call, timeout: float) -> str | None:
    """Make ``call``: ``None`` when the provider said ok, else why not. Never raises; never logs the token."""
    # S310: only http(s) URLs get here (_url checks the scheme).
    request = urllib.request.Request(  # noqa: S310
        call.url, data=call.body, method=call.method, headers={"User-Agent": "signout", **dict(call.headers)}
    )
    deadline = time.monotonic() + timeout
    try:
        try:
            response = _OPENER.open(request, timeout=timeout)
        except urllib.error.HTTPError as error:  # 4xx and 5xx (and a 3xx not followed)
            error.close()
            return f"answered HTTP {error.code}"
        with response:
            chunks: list[bytes] = []
            size = 0
            while True:
                if time.monotonic() > deadline:
                    return f"took longer than {timeout:g} s"
                chunk = response.read1(MAX_ANSWER_BYTES)
                if not chunk:
                    break
                size += len(chunk)
                if size > MAX_ANSWER_BYTES:
                    return f"answered more than {MAX_ANSWER_BYTES} bytes"
                chunks.append(chunk)
            return call.judge(response.status, b"".join(chunks))
    except Exception as exc:  # refused, timed out, reset, a TLS failure
        return describe(exc)


def submit(call: Call, timeout: float) -> Future[str | None]:
    """``send`` in a worker thread (at most ``MAX_CALLS`` at once)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=MAX_CALLS, thread_name_prefix="signout-upstream")
        return _pool.submit(send, call, timeout)


def _outcome(call: Call, why: str | None) -> Outcome:
    if why is None:
        return "ok"
    log.warning("signout: upstream logout at %s (%s) failed: %s; the local logout stands", call.provider, call.url, why)
    return "failed"


def outcome_sync(call: Call, timeout: float) -> Outcome:
    """Make ``call`` and wait for it, never longer than ``timeout`` (the WSGI adapter)."""
    future = submit(call, timeout)
    try:
        why = future.result(timeout=timeout)
    except FutureTimeout:
        future.cancel()  # still queued: never sent
        why = f"took longer than {timeout:g} s"
    return _outcome(call, why)


async def outcome_async(call: Call, timeout: float) -> Outcome:
    """Make ``call`` in a worker thread and await it, never longer than ``timeout`` (the ASGI adapter)."""
    try:
        # wrap_future: cancelled on timeout, which cancels a call still queued.
        why = await asyncio.wait_for(asyncio.wrap_future(submit(call, timeout)), timeout)
    except asyncio.TimeoutError:
        why = f"took longer than {timeout:g} s"
    return _outcome(call, why)
