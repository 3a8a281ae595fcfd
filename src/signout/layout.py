"""Where revocations live: key names, field names and field values.

Revocations live in a fixed set of ``SHARDS`` Redis hashes (*buckets*),
``<prefix>:{<4 hex digits>}``. Each id owns a 16-byte BLAKE2b digest of
(kind, iss, id), and the digest picks a shard. A token's *owner* is its user
if it has a ``sub``, else its session, else itself; its *owner bucket* (the
shard of its owner) holds its user's cutoff and its own ``jti`` fields. A
session's revocation lives in the *session bucket*, the shard of (iss, sid),
always, whether or not the tokens carry a ``sub``: so a session is revoked by
(iss, sid) alone (a back-channel logout token with a ``sid`` and no ``sub``
reaches every token of the session). A token with both ``sub`` and ``sid`` is
judged by two lookups, its owner bucket and its session bucket, which the
store answers in one round trip (SPEC section 5); one lookup when they are the
same key, and for every token without a ``sub`` (its owner is its session).
Ids are data, never key syntax: whatever an id holds (braces, ``*``, CR/LF,
NUL, 64 KB), it reaches Redis only as digest bytes.

Transition: before this layout, a session revoked for tokens carrying a
``sub`` was written in the *owner* bucket. Readers still read the ``s`` field
in the owner bucket too (the owner lookup asks for it), so those revocations
keep counting; writers write only the session bucket. That extra read can go
once ``max_token_lifetime`` (plus twice ``leeway``) has passed since every
instance was upgraded: every revocation written by the previous version has
expired by then.

Fields of a bucket, each a kind letter and 12 bytes of the id's digest:

* ``u<digest(iss, sub)>``  the user-wide cutoff: ``"<cutoff>:<expires>"`` (owner bucket)
* ``s<digest(iss, sid)>``  a revoked session: ``"<expires>"`` (session bucket)
* ``j<digest(iss, jti)>``  a revoked token: ``"<expires>"`` (owner bucket)
* ``r<digest(iss, jti)>``  a refresh token's first use (``refresh_rotation``):
  ``"<first use, ms>:<expires>"``, written only by a *claim*: a value
  ``"=<value>"`` sets a field that is absent and leaves one that is there alone
  (the first use stays the first; ``merge``) (owner bucket)
* ``l<digest(iss, jti)>``  a back-channel logout token received (``backchannel_logout_path``):
  ``"<received, ms>:<expires>"``, written by a claim as ``r`` is (replay protection),
  in the bucket of the logout token's own ``jti``

Why shared buckets: a Redis key costs ~100 bytes before it holds anything,
so a bucket per user costs ~250 bytes for the usual one revoked token per
user; 65,536 shared buckets hold a million revoked tokens at ~30 fields
each, a compact listpack of ~21 bytes per field (measured: ``bench_store.py
--parts memory``). A bucket stays a listpack up to Redis's
``hash-max-listpack-entries`` (128 by default), i.e. ~8 million live fields.
96 bits of digest per field make a collision (which would revoke an
innocent token, never spare a revoked one) practically impossible.

Expiry is in every value because a hash field has no TTL of its own before
Redis 7.4: writers prune expired fields, readers ignore them, and the key's
own TTL is the latest expiry of its fields.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from typing import NamedTuple

#: Buckets per prefix; the tag is the digest's shard as 4 hex digits.
SHARDS = 1 << 16
#: Bytes of an id's digest in its field name (after the kind letter).
FIELD_DIGEST = 12
#: Length of a bucket key's tag: ``{`` + 4 hex digits + ``}``.
TAG_CHARS = 6


class Lookup(NamedTuple):
    """Read these fields of one bucket (a tuple: the wire layer sends it as ``(key, fields)``)."""

    key: str
    fields: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Write:
    """Merge these values into one bucket (see ``merge``)."""

    key: str
    fields: tuple[tuple[bytes, bytes], ...]


@functools.lru_cache(maxsize=16384)  # the guard and every write ask again for the same ids
def _digest(kind: bytes, iss: str, value: str) -> bytes:
    h = hashlib.blake2b(kind, digest_size=16)
    for part in (iss, value):
        data = part.encode("utf-8", "surrogatepass")
        # Length-prefix every part: ("a:b", "c") and ("a", "b:c") must differ.
        h.update(len(data).to_bytes(4, "big"))
        h.update(data)
    return h.digest()


def _owner(iss: str, sub: str | None, sid: str | None, jti: str | None) -> bytes | None:
    if sub is not None:
        return _digest(b"u", iss, sub)
    if sid is not None:
        return _digest(b"s", iss, sid)
    if jti is not None:
        return _digest(b"j", iss, jti)
    return None


def _key(prefix: str, digest: bytes) -> str:
    shard = int.from_bytes(digest[FIELD_DIGEST : FIELD_DIGEST + 2], "big") % SHARDS
    return f"{prefix}:{{{shard:04x}}}"


def bucket_key(prefix: str, iss: str, sub: str | None, sid: str | None, jti: str | None) -> str | None:
    """The owner bucket of a token: the shard of its user, else of its session, else of itself."""
    owner = _owner(iss, sub, sid, jti)
    return None if owner is None else _key(prefix, owner)


def session_key(prefix: str, iss: str, sid: str) -> str:
    """The session bucket: where the revocation of session (iss, sid) lives, whatever its tokens carry."""
    return _key(prefix, _digest(b"s", iss, sid))


def user_field(iss: str, sub: str) -> bytes:
    return b"u" + _digest(b"u", iss, sub)[:FIELD_DIGEST]


def session_field(iss: str, sid: str) -> bytes:
    return b"s" + _digest(b"s", iss, sid)[:FIELD_DIGEST]


def token_field(iss: str, jti: str) -> bytes:
    return b"j" + _digest(b"j", iss, jti)[:FIELD_DIGEST]


def used_field(iss: str, jti: str) -> bytes:
    return b"r" + _digest(b"r", iss, jti)[:FIELD_DIGEST]


def logout_field(iss: str, jti: str) -> bytes:
    return b"l" + _digest(b"l", iss, jti)[:FIELD_DIGEST]


def claim_value(first_ms: int, expires: int) -> bytes:
    """A value that sets its field only if the field is absent (see ``merge``)."""
    return f"={first_ms}:{expires}".encode("ascii")


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

    Mirrors ``MERGE_SCRIPT`` in the Redis store; both must agree. A claim
    (``claim_value``) keeps what is there and otherwise stores its value.
    """
    if new[:1] == b"=":
        return new[1:] if old is None else old
    was, now = parse(old), parse(new)
    if was is None or now is None:
        return new
    if b":" in new:
        return cutoff_value(max(was[0], now[0]), max(was[1], now[1]))
    return expiry_value(max(was[1], now[1]))
