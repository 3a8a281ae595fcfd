"""Where revocations live: key names, field names and field values.

One Redis hash (a *bucket*) per user: ``<prefix>:{<tag>}``. The tag is a
digest of (kind, iss, id), so it is cluster-safe by construction: every key a
token needs sits in one hash slot and one ``HMGET`` answers the guard (SPEC
section 5). Ids are data, never key syntax: no brace, ``*``, CR/LF or NUL in an
id reaches the key name, and a 64 KB id yields the same 22-character tag.

Fields of a bucket:

* ``u``          the user-wide cutoff: ``"<cutoff>:<expires>"``
* ``s<sid>``     a revoked session: ``"<expires>"``
* ``j<jti>``     a revoked token: ``"<expires>"``

An id longer than ``_MAX_RAW_ID`` bytes is stored as its digest under the
upper-case kind letter, so fields stay small and the two forms never collide.
Expiry is in every value because a hash field has no TTL of its own before
Redis 7.4: writers prune expired fields, readers ignore them, and the key's
own TTL is the latest expiry of its fields.
"""

from __future__ import annotations

import base64
import functools
import hashlib
from dataclasses import dataclass

USER_FIELD = b"u"
_MAX_RAW_ID = 64


@dataclass(frozen=True, slots=True)
class Lookup:
    """Read these fields of one bucket."""

    key: str
    fields: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Write:
    """Merge these values into one bucket (see ``merge``)."""

    key: str
    fields: tuple[tuple[bytes, bytes], ...]


def _digest(*parts: str) -> str:
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        data = part.encode("utf-8", "surrogatepass")
        # Length-prefix every part: ("a:b", "c") and ("a", "b:c") must differ.
        h.update(len(data).to_bytes(4, "big"))
        h.update(data)
    return base64.urlsafe_b64encode(h.digest()).rstrip(b"=").decode("ascii")


@functools.lru_cache(maxsize=8192)  # the guard asks again for every request of a user
def bucket_key(prefix: str, iss: str, sub: str | None, sid: str | None, jti: str | None) -> str | None:
    """The bucket of a token: its user's, else its session's, else its own."""
    if sub is not None:
        tag = _digest("u", iss, sub)
    elif sid is not None:
        tag = _digest("s", iss, sid)
    elif jti is not None:
        tag = _digest("j", iss, jti)
    else:
        return None
    return f"{prefix}:{{{tag}}}"


@functools.lru_cache(maxsize=8192)
def _id_field(kind: bytes, value: str) -> bytes:
    data = value.encode("utf-8", "surrogatepass")
    if len(data) <= _MAX_RAW_ID:
        return kind + data
    return kind.upper() + _digest(value).encode("ascii")


def session_field(sid: str) -> bytes:
    return _id_field(b"s", sid)


def token_field(jti: str) -> bytes:
    return _id_field(b"j", jti)


def expiry_value(expires: int) -> bytes:
    return str(expires).encode("ascii")


def cutoff_value(cutoff: int, expires: int) -> bytes:
    return f"{cutoff}:{expires}".encode("ascii")


def parse(value: bytes | str | None) -> tuple[int, int] | None:
    """``(first, expires)`` of a stored value; ``None`` for absent or garbage."""
    if value is None:
        return None
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
    head, _, tail = text.partition(":")
    try:
        return (int(head), int(tail or head))
    except ValueError:
        return None


def merge(old: bytes | None, new: bytes) -> bytes:
    """Combine two values of one field: the later cutoff, the later expiry.

    Mirrors ``MERGE_SCRIPT`` in the Redis store; both must agree.
    """
    was, now = parse(old), parse(new)
    if was is None or now is None:
        return new
    if b":" in new:
        return cutoff_value(max(was[0], now[0]), max(was[1], now[1]))
    return expiry_value(max(was[1], now[1]))
