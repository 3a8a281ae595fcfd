"""HTTP facts in, HTTP answers out: parsing and building, no I/O.

Everything here takes raw bytes as an ASGI server or a WSGI environ gives
them and never raises on bad input: a header that cannot be read is treated
as absent or as an invalid token, never as a crash.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TypeGuard
from urllib.parse import parse_qsl, urlsplit

from .errors import ConfigError

Headers = Sequence[tuple[bytes, bytes]]

#: Every request header signout reads (lower case). The WSGI adapter builds
#: only these from the environ; a test keeps the list complete.
READ_HEADERS = (b"authorization", b"cookie", b"host", b"origin", b"sec-fetch-site", b"content-type")

_JSON = (b"content-type", b"application/json")
_NO_STORE = (b"cache-control", b"no-store")


@dataclass(slots=True)  # not frozen: built on every request, and frozen init costs 4x
class Request:
    """The facts about one request that signout decides on (never edited once built)."""

    kind: str  # "http" or "websocket"
    method: str
    path: str
    query: bytes
    headers: Headers
    # The peer as the server gave it: ASGI's (host, port), WSGI's (REMOTE_ADDR, REMOTE_PORT).
    # Formatted only when an audit record needs it (``peer``), not on every request.
    client: Sequence[object] | None = None
    # "http" or "https" as the server reports it (behind a TLS-terminating proxy, servers set it
    # from X-Forwarded-Proto when told to trust the proxy); the CSRF check compares Origin's to it.
    scheme: str = "http"


@dataclass(frozen=True, slots=True)
class Answer:
    """A complete HTTP answer, ready to send."""

    status: int
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes = b""
    data: dict[str, object] = field(default_factory=dict, compare=False)


def answer(status: int, data: dict[str, object], *extra: tuple[bytes, bytes]) -> Answer:
    body = json.dumps(data, separators=(",", ":")).encode()
    headers = (_JSON, (b"content-length", str(len(body)).encode()), _NO_STORE, *extra)
    return Answer(status=status, headers=headers, body=body, data=data)


def with_headers(base: Answer, extra: Iterable[tuple[bytes, bytes]]) -> Answer:
    more = tuple(extra)
    if not more:
        return base
    return Answer(status=base.status, headers=base.headers + more, body=base.body, data=base.data)


def peer(client: Sequence[object] | None) -> str | None:
    """``host:port`` of a request's peer, for audit records."""
    if client is None or len(client) != 2 or not client[0]:
        return None
    return f"{client[0]}:{client[1]}" if client[1] not in (None, "") else str(client[0])


def header_values(headers: Headers, name: bytes) -> list[bytes]:
    """All values of one header; ``name`` in lower case (ASGI lower-cases names)."""
    return [v for k, v in headers if k == name]


class BadAuthorization(Exception):
    """The Authorization header claims to be Bearer but is not usable."""


def bearer_token(headers: Headers) -> str | None:
    """The token of an ``Authorization: Bearer`` credential (RFC 6750 section 2.1).

    ``None`` when no credential uses the Bearer scheme (Basic is not ours to
    judge). Reads the header the way the loosest app might: any whitespace
    after the scheme, and several credentials joined by commas (a WSGI server
    joins repeated headers so). Raises ``BadAuthorization`` for a Bearer
    credential without a usable token, or for more than one Bearer
    credential, which a proxy and an app might pick differently.
    """
    value = None
    for k, v in headers:  # a loop, not a list: this runs on every guarded request
        if k == b"authorization":
            if value is not None:
                return _bearer_of_many([v for k, v in headers if k == b"authorization"])
            value = v
    if value is None:
        return None
    if b"," in value:
        return _bearer_of_many([value])
    # The usual header: one credential, so no list to split.
    parts = value.split()
    if not parts or parts[0].lower() != b"bearer":
        return None
    if len(parts) != 2:
        raise BadAuthorization()
    return parts[1].decode("latin-1")


def _bearer_of_many(values: list[bytes]) -> str | None:
    """``bearer_token`` for several headers, or credentials joined by commas."""
    found: list[bytes] = []
    malformed = False
    for value in values:
        for credential in value.split(b","):
            parts = credential.split()
            if not parts or parts[0].lower() != b"bearer":
                continue
            if len(parts) != 2:
                malformed = True
            else:
                found.append(parts[1])
    if malformed or len(found) > 1:
        raise BadAuthorization()
    return found[0].decode("latin-1") if found else None


def cookies(headers: Headers, name: str) -> list[str]:
    """Every value of cookie ``name``, duplicates included, in header order.

    Browsers send one cookie per (name, domain, path) they hold, so a name can
    appear several times (RFC 6265 section 5.4); each one must be checked.
    """
    wanted = name.encode("latin-1")
    found: list[str] = []
    for value in header_values(headers, b"cookie"):
        if wanted not in value:
            continue
        for pair in value.split(b";"):
            key, sep, val = pair.partition(b"=")
            if sep and key.strip() == wanted:
                found.append(_unquote(val.strip().decode("latin-1")))
    return found


_ESCAPE = re.compile(r"\\(?:([0-3][0-7][0-7])|(.))")


def _unquote(value: str) -> str:
    """Read a cookie value as Python's ``http.cookies`` (and so Starlette, Werkzeug) do.

    A quoted value may hide ``\\056`` escapes; reading it any other way would let
    a token the app decodes slip past the guard as "malformed".
    """
    if len(value) < 2 or value[0] != '"' or value[-1] != '"':
        return value
    inner = value[1:-1]
    if "\\" not in inner:
        return inner
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 8)) if m.group(1) else m.group(2), inner)


def query_param(query: bytes, name: str) -> list[str]:
    try:
        pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True, max_num_fields=64)
    except ValueError:
        return []
    return [v for k, v in pairs if k == name]


def path_matches(path: str, prefix: str) -> bool:
    """RFC 6265 section 5.1.4 path-match: ``/a`` covers ``/a`` and ``/a/b``, not ``/ab``."""
    if path == prefix:
        return True
    if not path.startswith(prefix):
        return False
    return prefix.endswith("/") or path[len(prefix)] == "/"


def basic_credentials(headers: Headers) -> tuple[bytes, bytes] | None:
    """The ``(user-id, password)`` bytes of an ``Authorization: Basic`` header; ``None`` without one.

    Left undecoded, because senders disagree: RFC 6749 section 2.3.1 form-urlencodes both
    before base64, curl's ``-u``, requests and Authlib do not (so a secret's ``+`` or ``%``
    arrives as is), and requests and Authlib encode a str as latin-1 where curl sends the
    bytes it was given. Only the caller, comparing every reading, can tell. The password
    is everything after the first ``:`` (RFC 7617 section 2), so it may hold ``:`` itself.

    Raises ``ValueError`` when a Basic credential is there but unreadable (not base64, no
    ``:``, or beside another Authorization header): a failed attempt, not the absence of one.
    """
    values = header_values(headers, b"authorization")
    if not any(value.strip().partition(b" ")[0].lower() == b"basic" for value in values):
        return None
    if len(values) != 1:
        raise ValueError("more than one Authorization header")
    encoded = values[0].strip().partition(b" ")[2].strip()
    user_id, sep, password = base64.b64decode(encoded, validate=True).partition(b":")
    if not sep:
        raise ValueError("a Basic credential without ':'")
    return user_id, password


def content_type(headers: Headers) -> str:
    values = header_values(headers, b"content-type")
    if len(values) != 1:
        return ""
    return values[0].decode("latin-1").partition(";")[0].strip().lower()


def form(body: bytes) -> dict[str, list[str]] | None:
    """An ``application/x-www-form-urlencoded`` body; ``None`` when it is not one."""
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False, max_num_fields=32)
    except (ValueError, UnicodeDecodeError):
        return None
    out: dict[str, list[str]] = {}
    for k, v in pairs:
        out.setdefault(k, []).append(v)
    return out


def deletion_cookie(name: str, *, path: str, domain: str | None, secure: bool, samesite: str) -> bytes:
    """A ``Set-Cookie`` that deletes a cookie: same name, path and domain (RFC 6265 section 5.3 step 11)."""
    parts = [f'{name}=""']
    if domain is not None:
        parts.append(f"Domain={domain}")
    parts += [f"Path={path}", "Max-Age=0", "Expires=Thu, 01 Jan 1970 00:00:00 GMT", "HttpOnly"]
    if secure:
        parts.append("Secure")
    parts.append(f"SameSite={samesite.capitalize()}")
    return "; ".join(parts).encode("latin-1")


def origin_of(url: str) -> str | None:
    """``scheme://host[:port]`` of an absolute http(s) URL, lower-cased; else ``None``.

    URLs with credentials, backslashes or control characters have no origin
    here: browsers and servers disagree on how to read them (open redirects).
    """
    if "\\" in url or any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.netloc or "@" in parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}".lower()


# RFC 6265 section 4.1.1: a cookie name is an RFC 2616 token.
_COOKIE_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# What no URL or path in a setting may hold: browsers drop tabs and newlines, and a space or a
# control character in a Location header is refused by servers (h11) or read differently.
_SPACE_OR_CONTROL = re.compile(r"[\x00-\x20\x7f]")


def is_cookie_name(value: object) -> TypeGuard[str]:
    """Whether ``value`` may name a cookie (RFC 6265 section 4.1.1)."""
    return isinstance(value, str) and _COOKIE_NAME.fullmatch(value) is not None


def holds_space_or_control(value: str) -> bool:
    """Whether ``value`` holds a space or a control character (a URL or path setting may not)."""
    return _SPACE_OR_CONTROL.search(value) is not None


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a URL's hostname) is this machine: plain http:// is allowed only there."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def https_url(kwarg: str, value: object, *, usage: str, clear: str, bare: bool = False) -> str:
    """``value`` if it is an https URL (plain http only to a loopback host), else ``ConfigError``
    naming ``kwarg``: ``usage`` says what is expected, ``clear`` why plain http:// elsewhere is
    refused. ``bare``: no query, fragment or credentials either (``usage`` then says so)."""
    if not isinstance(value, str):
        raise ConfigError(kwarg, f"{usage}, not {value!r}")
    if holds_space_or_control(value):
        raise ConfigError(kwarg, f"{usage}; it may not hold spaces or control characters, not {value!r}")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as exc:
        raise ConfigError(kwarg, f"{usage}; {value!r} does not parse ({exc})") from exc
    host = parts.hostname or ""
    extras = bare and bool(parts.query or parts.fragment or parts.username)
    if parts.scheme not in ("https", "http") or not host or extras:
        raise ConfigError(kwarg, f"{usage}, not {value!r}")
    if parts.scheme == "http" and not is_loopback(host):
        raise ConfigError(kwarg, clear)
    return value
