"""Refresh tokens in request bodies (SPEC section 8): found however the app may read them.

djangorestframework-simplejwt's clients post ``{"refresh": "<jwt>"}`` to
``/api/token/refresh/`` and to their logout route; other apps take a form.
An app may read a body by its declared type or by its shape (Flask's
``get_json(force=True)``, Starlette's ``request.json()``), and decode it by the
declared charset, so signout reads every body every way: as JSON and as a
form, as UTF-8 and in each declared charset. Every value of every configured
field any reading finds is a presented token, so whichever the app takes (the
first of a repeated field, the last, the JSON or the form) is checked. A
multipart body, which signout does not read and an app might, is refused
instead of let through unchecked.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from urllib.parse import parse_qsl

from .web import Headers, header_values


class UnreadableBody(Exception):
    """A body that may hold a refresh token signout cannot look for (multipart)."""


def media_types(headers: Headers) -> list[tuple[str, str | None]]:
    """Each ``Content-Type`` of a request: its media type (lower case) and its charset, if any."""
    out: list[tuple[str, str | None]] = []
    for value in header_values(headers, b"content-type"):
        kind, *params = value.decode("latin-1").split(";")
        charset = None
        for param in params:
            name, _, given = param.partition("=")
            if name.strip().lower() == "charset":
                charset = given.strip().strip('"') or None
        out.append((kind.strip().lower(), charset))
    return out


def has_body_type(headers: Headers) -> bool:
    """Whether the request declares a body type at all (a logout reads only such bodies)."""
    return bool(header_values(headers, b"content-type"))


def refresh_tokens(headers: Headers, body: bytes, fields: Sequence[str]) -> list[str]:
    """Every string value of ``fields`` that any reading of the body finds, without surrounding space
    (a form field or a serializer's CharField trims it)."""
    if not body.strip():
        return []
    types = media_types(headers)
    if any(kind.startswith("multipart/") for kind, _ in types):
        raise UnreadableBody()
    found: dict[str, None] = {}
    for value in _readings(body, {charset for _, charset in types if charset}, fields):
        token = value.strip()
        if token:
            found[token] = None
    return list(found)


def _readings(body: bytes, charsets: set[str], fields: Sequence[str]) -> Iterator[str]:
    texts = {body.decode("utf-8", "replace"): None}
    for charset in sorted(charsets):
        try:
            texts[body.decode(charset, "replace")] = None
        except Exception:  # noqa: S112 - an unknown or non-text codec is simply not a reading
            continue
    # JSON from the bytes (UTF-8, -16 or -32, as RFC 8259 readers detect them) and from each text.
    sources: list[str | bytes] = [body, *texts]
    for source in sources:
        try:
            data = json.loads(source)
        except (ValueError, RecursionError):
            continue
        if isinstance(data, dict):
            yield from (v for f in fields if isinstance(v := data.get(f), str))
    # A form, from each text (Django and Werkzeug decode a bad byte as U+FFFD rather than refuse it).
    for text in texts:
        yield from (v for k, v in parse_qsl(text, keep_blank_values=True) if k in fields)
