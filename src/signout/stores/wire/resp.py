"""RESP2 for the guard's one read (``HMGET``): encoding, parsing, where to connect.

Every guarded request costs one ``HMGET``. Through redis-py's asyncio client
that round trip costs 2-3 times what the socket does (connection pool, retry
wrapper, command packer, response callbacks), so a ``redis://`` or ``unix://``
store reads through ``pipelined`` (one pipelined connection per event loop)
and ``blocking`` (one socket per thread), both built on this module; writes,
TLS and cluster/sentinel clients stay on redis-py (``stores.redis``). Replies
are parsed by hiredis. Nothing here ever puts a password, key or value in an
exception message.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypeAlias

import hiredis
from redis.connection import parse_url

from ...errors import ConfigError, StoreError


class ErrorReply(Exception):
    """A RESP error reply (``-WRONGTYPE ...``): a value (never raised), so it fails only its own command."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def kind(self) -> str:
        """The error's type (``WRONGTYPE``, ``NOAUTH``...): safe to show, unlike the rest of the line."""
        return self.message.split(" ", 1)[0][:32] or "ERR"


# A simple string (+OK) arrives as bytes, as a bulk string does.
Reply: TypeAlias = "bytes | int | list[Reply] | ErrorReply | None"


class Incomplete:
    """What ``Replies.next`` returns while a reply is not all there."""


INCOMPLETE = Incomplete()
Row = list[bytes | None]
Request = tuple[str, Sequence[bytes]]


class ProtocolError(ValueError):
    """The server sent something that is not RESP2: the connection cannot be trusted any more."""


# ---- encoding and parsing ------------------------------------------------------------------


def encode(*parts: str | bytes) -> bytes:
    """One command as a RESP array of bulk strings (``str`` parts are UTF-8)."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        out.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(out)


def encode_hmget(key: str, fields: Sequence[bytes]) -> bytes:
    """``HMGET key field...``; the hot path, so the fixed prefix is written by hand."""
    name = key.encode()
    head = b"*%d\r\n$5\r\nHMGET\r\n$%d\r\n%b\r\n" % (len(fields) + 2, len(name), name)
    return head + b"".join([b"$%d\r\n%b\r\n" % (len(f), f) for f in fields])


class Replies:
    """The replies in the bytes a connection receives, parsed by hiredis (the ``redis`` extra's parser).

    ``feed`` what arrived; ``next`` gives one complete reply at a time, ``INCOMPLETE``
    while the rest of it has not arrived. Error replies are ``ErrorReply`` values;
    bytes that are not RESP raise ``ProtocolError``.
    """

    __slots__ = ("_reader",)

    def __init__(self) -> None:
        self._reader = hiredis.Reader(protocolError=ProtocolError, replyError=ErrorReply, notEnoughData=INCOMPLETE)

    def feed(self, data: bytes) -> None:
        self._reader.feed(data)

    def next(self) -> Reply | Incomplete:
        return self._reader.gets()  # type: ignore[no-any-return]

    def pending(self) -> bool:
        """Whether bytes were received that are not a whole reply yet (or not read out)."""
        return bool(self._reader.has_data())


def to_row(reply: Reply) -> Row:
    """An ``HMGET`` reply as a row, or ``StoreError`` naming the server's error type (never its data)."""
    if type(reply) is list:
        return reply  # type: ignore[return-value]  # HMGET answers an array of bulk strings and nils
    if isinstance(reply, ErrorReply):
        raise StoreError(f"redis read failed: {reply.kind}")
    raise StoreError(f"redis read failed: unexpected {type(reply).__name__} reply")


# ---- where to connect ----------------------------------------------------------------------


@dataclass(frozen=True)
class Address:
    """Where and as whom to connect, read from a URL by redis-py's own parser (same meaning as there)."""

    host: str = "localhost"
    port: int = 6379
    path: str | None = None  # a unix socket
    db: int = 0
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)

    @classmethod
    def from_url(cls, url: str) -> Address:
        try:
            options = parse_url(url)  # type: ignore[no-untyped-call]
        except ValueError:
            # redis-py's message may quote a piece of the URL, and a URL may hold a password.
            raise ConfigError("redis_url", "is not a valid Redis URL") from None
        if url.startswith("unix://") and not options.get("path"):
            raise ConfigError("redis_url", "a unix:// URL needs the socket's path")
        return cls(
            host=options.get("host") or "localhost",
            port=int(options.get("port") or 6379),
            path=options.get("path"),
            db=int(options.get("db") or 0),
            username=options.get("username"),
            password=options.get("password"),
        )

    def handshake(self) -> list[tuple[str, bytes]]:
        """The commands a new connection sends first, each to be answered ``+OK``."""
        steps: list[tuple[str, bytes]] = []
        if self.username or self.password:
            credentials = (self.username, self.password or "") if self.username else (self.password or "",)
            steps.append(("AUTH", encode("AUTH", *credentials)))
        if self.db:
            steps.append(("SELECT", encode("SELECT", str(self.db))))
        return steps


def check_handshake(steps: Sequence[tuple[str, bytes]], replies: Sequence[Reply]) -> None:
    for (name, _), reply in zip(steps, replies, strict=True):
        if reply != b"OK":
            # Only the command's name and the error type: AUTH's arguments are credentials.
            kind = reply.kind if isinstance(reply, ErrorReply) else "unexpected reply"
            raise StoreError(f"redis {name} failed: {kind}")
