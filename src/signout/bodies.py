"""Refresh tokens in request bodies (SPEC section 8): found as the app would find them.

djangorestframework-simplejwt's clients post ``{"refresh": "<jwt>"}`` to
``/api/token/refresh/`` and to their logout route; other apps take a form.
Every value of every configured field is a presented token, so an app that
reads the first value and one that reads the last are both covered. A body
signout cannot read but the app might (multipart) is refused on refresh
paths rather than let through unchecked.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from urllib.parse import parse_qsl

from .http import Headers, header_values


class UnreadableBody(Exception):
    """A body that may hold a refresh token signout cannot look for: multipart, or two
    ``Content-Type`` headers that disagree (an app may read either)."""


def body_type(headers: Headers) -> str:
    """The media type of the body, lower case, without parameters; ``""`` when none is given.

    Repeated ``Content-Type`` headers that say the same are one (a server may read
    the first, another the last); ones that differ raise ``UnreadableBody``.
    """
    kinds = {v.decode("latin-1").partition(";")[0].strip().lower() for v in header_values(headers, b"content-type")}
    if len(kinds) > 1:
        raise UnreadableBody()
    return kinds.pop() if kinds else ""


def carries_fields(headers: Headers) -> bool:
    """Whether the body may hold named fields: a JSON object or a form (by any of its types)."""
    kinds = {v.decode("latin-1").partition(";")[0].strip().lower() for v in header_values(headers, b"content-type")}
    return any(k in ("application/json", "application/x-www-form-urlencoded") or k.endswith("+json") for k in kinds)


def refresh_tokens(headers: Headers, body: bytes, fields: Sequence[str]) -> list[str]:
    """Every non-empty string value of ``fields`` in a JSON object or a form body."""
    if not body.strip():
        return []
    kind = body_type(headers)
    if kind == "application/x-www-form-urlencoded":
        # Django and Werkzeug decode a bad byte as U+FFFD rather than refuse the form.
        pairs = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
        return [v for k, v in pairs if k in fields and v]
    if kind.startswith("multipart/"):
        raise UnreadableBody()
    # JSON by its type, or by its shape: Flask's get_json(force=True) reads any type.
    try:
        data = json.loads(body)  # bytes: UTF-8, -16 or -32, as RFC 8259 readers detect
    except (ValueError, RecursionError):
        return []  # the app cannot read a token from it either, and answers it itself
    if not isinstance(data, dict):
        return []
    return [v for f in fields if isinstance(v := data.get(f), str) and v]
