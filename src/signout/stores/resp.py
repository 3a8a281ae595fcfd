"""A lean RESP2 client for the guard's one read: ``HMGET``, async and sync.

Every guarded request costs one ``HMGET``. Through redis-py's asyncio client
that round trip costs 2-3 times what the socket does (connection pool, retry
wrapper, command packer, response callbacks), so a ``redis://`` or ``unix://``
store reads through this module instead; writes, TLS and cluster/sentinel
clients stay on redis-py (``stores.redis``).

``AsyncReader``: one connection per event loop, pipelined. Replies come back in
the order commands were sent, so a FIFO of futures pairs them up. Commands
started while others are in flight are buffered and written once per loop tick
(concurrent guard checks share one write); a command sent on an idle
connection goes at once (the sequential case pays no extra loop iteration).

``SyncReader``: one blocking socket per thread, ``store_timeout`` as its
connect and read timeout (a WSGI worker has nothing else to bound the wait).

Neither ever puts a password, key or value in an exception message.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import socket
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypeAlias

from redis.connection import parse_url

from ..errors import ConfigError, StoreError


class ErrorReply:
    """A RESP error reply (``-WRONGTYPE ...``): a value, so it fails only its own command."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message

    @property
    def kind(self) -> str:
        """The error's type (``WRONGTYPE``, ``NOAUTH``...): safe to show, unlike the rest of the line."""
        return self.message.split(" ", 1)[0][:32] or "ERR"


Reply: TypeAlias = "bytes | str | int | list[Reply] | ErrorReply | None"
Row = list[bytes | None]
Request = tuple[str, Sequence[bytes]]

_CRLF = b"\r\n"
_RECV_SIZE = 65536


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


def parse(buf: bytes | bytearray, pos: int) -> tuple[Reply, int] | None:
    """The reply starting at ``pos`` and the position after it; ``None`` while it is incomplete.

    An incomplete reply is parsed again from its start when more data comes:
    only headers are re-read (a bulk string's length says whether its body is
    all there), so a large value split over many reads costs little.
    """
    end = buf.find(_CRLF, pos)
    if end < 0:
        return None
    kind = buf[pos]
    if kind == 36:  # "$" bulk string, "$-1" nil
        size = _int(buf, pos, end)
        if size < 0:
            return None, end + 2
        start = end + 2
        stop = start + size
        if stop + 2 > len(buf):
            return None
        return bytes(buf[start:stop]), stop + 2
    if kind == 42:  # "*" array, "*-1" nil
        return _parse_array(buf, _int(buf, pos, end), end + 2)
    if kind == 43:  # "+" simple string
        return buf[pos + 1 : end].decode("utf-8", "replace"), end + 2
    if kind == 45:  # "-" error
        return ErrorReply(buf[pos + 1 : end].decode("utf-8", "replace")), end + 2
    if kind == 58:  # ":" integer
        return _int(buf, pos, end), end + 2
    raise ProtocolError(f"unexpected RESP type byte {kind!r}")


def _parse_array(buf: bytes | bytearray, count: int, pos: int) -> tuple[Reply, int] | None:
    if count < 0:
        return None, pos
    items: list[Reply] = []
    for _ in range(count):
        got = parse(buf, pos)
        if got is None:
            return None
        item, pos = got
        items.append(item)
    return items, pos


def _int(buf: bytes | bytearray, pos: int, end: int) -> int:
    try:
        return int(buf[pos + 1 : end])
    except ValueError:
        raise ProtocolError("malformed RESP length or integer") from None


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


def _check_handshake(steps: Sequence[tuple[str, bytes]], replies: Sequence[Reply]) -> None:
    for (name, _), reply in zip(steps, replies, strict=True):
        if reply != "OK":
            # Only the command's name and the error type: AUTH's arguments are credentials.
            kind = reply.kind if isinstance(reply, ErrorReply) else "unexpected reply"
            raise StoreError(f"redis {name} failed: {kind}")


# ---- asyncio -------------------------------------------------------------------------------


class _Lost:
    """The result of a command whose connection went away before its reply: safe to send again."""


class _TimedOut:
    """The result of a command still unanswered at its deadline: the store failed this read."""


LOST = _Lost()
TIMED_OUT = _TimedOut()
Outcome: TypeAlias = "Reply | _Lost | _TimedOut"


class _Connection(asyncio.Protocol):
    """One pipelined connection: commands go out in order, replies resolve a FIFO of futures."""

    def __init__(self, loop: asyncio.AbstractEventLoop, coalesce: bool) -> None:
        self._loop = loop
        self._coalesce = coalesce
        self._transport: asyncio.Transport | None = None
        self._waiters: collections.deque[asyncio.Future[Outcome]] = collections.deque()
        # Each waiter's deadline (loop time), in the same order; one timer watches the oldest.
        self._deadlines: collections.deque[float] = collections.deque()
        self._timer: asyncio.TimerHandle | None = None
        self._unsent: list[bytes] = []
        self._buffer = bytearray()
        self.closed = False

    # asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # asyncio sets it too; say it here: a small request must never wait for Nagle.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        buf: bytes | bytearray = data
        if self._buffer:  # the rest of a reply that began in an earlier read
            self._buffer += data
            buf = self._buffer
        pos = 0
        waiters = self._waiters
        deadlines = self._deadlines
        try:
            while True:
                got = parse(buf, pos)
                if got is None:
                    break
                reply, pos = got
                if not waiters:
                    raise ProtocolError("a reply nobody asked for")
                waiter = waiters.popleft()
                deadlines.popleft()
                if not waiter.done():  # a cancelled waiter's reply is dropped here, in its turn
                    waiter.set_result(reply)
        except ProtocolError:
            self.abandon()
            return
        if buf is self._buffer:
            if pos == len(buf):
                self._buffer = bytearray()  # let a large reply's memory go
            else:
                del self._buffer[:pos]
        elif pos < len(data):
            self._buffer = bytearray(data[pos:])

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail_all()

    # requests

    def send(self, payload: bytes, count: int, deadline: float) -> list[asyncio.Future[Outcome]]:
        """Queue ``count`` commands (``payload``), answered by ``deadline`` or ``TIMED_OUT``; their futures."""
        transport = self._transport
        if self.closed or transport is None:
            raise ConnectionError("connection closed")
        if not self._waiters or not self._coalesce:
            # Nothing in flight, so nothing buffered either (buffered commands
            # always have waiters): writing now keeps the order.
            transport.write(payload)
        else:
            if not self._unsent:
                self._loop.call_soon(self._flush)
            self._unsent.append(payload)
        futures = [self._loop.create_future() for _ in range(count)]
        self._waiters.extend(futures)
        self._deadlines.extend([deadline] * count)
        if self._timer is None:
            self._timer = self._loop.call_at(deadline, self._watch)
        return futures

    def _watch(self) -> None:
        """The deadline check: one timer per connection, not one per read.

        An ``asyncio.timeout`` around each read costs ~5 us (a timer armed and
        cancelled per request, a tenth of a round trip); this one is armed
        once per ``timeout`` when reads keep coming. It looks at the oldest
        command only (deadlines grow with the queue, except for a retried
        read, which may so wait up to one more timeout).
        """
        self._timer = None
        if self.closed or not self._deadlines:
            return
        now = self._loop.time()
        if self._deadlines[0] > now:
            self._timer = self._loop.call_at(self._deadlines[0], self._watch)
            return
        # The server is paused, hung or too slow: drop the connection (its queue
        # would only grow); reads past their deadline fail, the rest retry.
        self.closed = True
        if self._transport is not None:
            self._transport.abort()
        waiters, deadlines = self._waiters, self._deadlines
        self._waiters, self._deadlines = collections.deque(), collections.deque()
        for waiter, deadline in zip(waiters, deadlines, strict=True):
            if not waiter.done():
                waiter.set_result(TIMED_OUT if deadline <= now else LOST)
        self._fail_all()

    def _flush(self) -> None:
        # Every command started in this tick, in one write.
        unsent, self._unsent = self._unsent, []
        if unsent and not self.closed and self._transport is not None:
            self._transport.write(b"".join(unsent))

    def shut_down(self) -> None:
        """Tell the server we are gone, without the loop (it is closed): nothing else can."""
        sock = self._transport.get_extra_info("socket") if self._transport is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):  # already gone
                sock.shutdown(socket.SHUT_RDWR)

    def abandon(self) -> None:
        """Drop the connection now; every waiter gets ``LOST`` (and may retry on a fresh one)."""
        self.closed = True
        if self._transport is not None:
            self._transport.abort()
        self._fail_all()

    def _fail_all(self) -> None:
        self._unsent.clear()
        self._buffer.clear()
        self._deadlines.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        waiters, self._waiters = self._waiters, collections.deque()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(LOST)


class AsyncReader:
    """Reads on one pipelined connection, opened on first use and reopened after a loss.

    Belongs to one event loop (``RedisStore`` keeps one per loop). ``timeout``
    (``store_timeout``) bounds connecting, and each read from its start, so
    callers need no deadline of their own: a read still unanswered then
    raises ``StoreError`` (and its connection is dropped).

    Cancellation (the caller's timeout) aborts the connection when the
    cancelled command is still unanswered: a paused or hung server then costs
    one connection per timeout instead of an ever longer queue of commands
    nobody waits for. The other commands in flight on it are sent once more
    on a fresh connection, as after a connection loss: reads are idempotent.
    """

    def __init__(self, address: Address, *, timeout: float, coalesce: bool = True) -> None:
        self._address = address
        self._timeout = timeout
        self._coalesce = coalesce
        self._conn: _Connection | None = None
        self._connecting: asyncio.Task[_Connection] | None = None

    async def hmget(self, key: str, fields: Sequence[bytes]) -> Row:
        return to_row((await self.call(encode_hmget(key, fields), 1))[0])

    async def hmget_many(self, requests: Sequence[Request]) -> list[Row]:
        payload = b"".join([encode_hmget(key, fields) for key, fields in requests])
        return [to_row(reply) for reply in await self.call(payload, len(requests))]

    async def call(self, payload: bytes, count: int) -> list[Reply]:
        """Send ``count`` pipelined commands; their replies, error replies included, in order."""
        deadline = asyncio.get_running_loop().time() + self._timeout
        replies = await self._attempt(payload, count, deadline)
        if replies is None:
            # The connection went away before answering (a restart, a dropped
            # socket, a neighbour's timeout): one more try on a fresh one, never a loop.
            replies = await self._attempt(payload, count, deadline)
            if replies is None:
                raise StoreError("redis read failed: connection lost")
        return replies

    async def _attempt(self, payload: bytes, count: int, deadline: float) -> list[Reply] | None:
        conn = self._conn
        if conn is None or conn.closed:
            conn = await self._connect()
            if asyncio.get_running_loop().time() >= deadline:  # connecting took the time
                raise StoreError("redis read timed out")
        try:
            futures = conn.send(payload, count, deadline)
        except ConnectionError:
            return None
        replies: list[Reply] = []
        try:
            for future in futures:
                outcome = await future
                if outcome is LOST:
                    return None
                if outcome is TIMED_OUT:
                    raise StoreError("redis read timed out")
                replies.append(outcome)  # type: ignore[arg-type]  # anything but LOST/TIMED_OUT is a Reply
        except asyncio.CancelledError:
            if any(f.cancelled() or not f.done() for f in futures):
                conn.abandon()
            raise
        return replies

    async def _connect(self) -> _Connection:
        # Everyone who finds the connection gone shares one attempt: one connection, not N.
        task = self._connecting
        if task is None:
            task = self._connecting = asyncio.get_running_loop().create_task(self._open())
            task.add_done_callback(self._opened)
        # Shielded: a caller's timeout must not cancel the others' connection.
        return await asyncio.shield(task)

    def _opened(self, task: asyncio.Task[_Connection]) -> None:
        self._connecting = None
        # Runs before the waiters resume (first done callback), and retrieves a
        # failure nobody may be left to await.
        if not task.cancelled() and task.exception() is None:
            self._conn = task.result()

    async def _open(self) -> _Connection:
        try:
            return await asyncio.wait_for(self._open_now(), self._timeout)
        except (OSError, asyncio.TimeoutError) as exc:
            raise StoreError(f"redis connect failed: {type(exc).__name__}") from None

    async def _open_now(self) -> _Connection:
        loop = asyncio.get_running_loop()
        address = self._address
        made: _Connection | None = None

        def factory() -> _Connection:
            nonlocal made
            made = _Connection(loop, self._coalesce)
            return made

        try:
            if address.path is not None:
                await loop.create_unix_connection(factory, address.path)
            else:
                await loop.create_connection(factory, address.host, address.port)
            assert made is not None
            conn = made
            steps = address.handshake()
            if steps:
                # Bounded by _open's wait_for; the watchdog's deadline is only a backstop here.
                deadline = loop.time() + self._timeout
                futures = conn.send(b"".join(payload for _, payload in steps), len(steps), deadline)
                outcomes = [await f for f in futures]
                if LOST in outcomes or TIMED_OUT in outcomes:
                    raise ConnectionError("connection lost during the handshake")
                _check_handshake(steps, outcomes)  # type: ignore[arg-type]  # LOST ruled out above
            return conn
        except BaseException:  # timed out, refused by the server, cancelled: leave no socket behind
            if made is not None:
                made.abandon()
            raise

    def discard(self) -> None:
        """Let go of the connection of a loop that was closed without ``aclose``.

        Its transport can no longer be closed (that needs the loop), so the
        socket would stay open, and counted by Redis, until the garbage
        collector finds it; shutting it down ends the server's side now.
        """
        if self._conn is not None:
            self._conn.shut_down()
            self._conn = None

    async def aclose(self) -> None:
        """Close the connection (a later call opens a new one)."""
        # A connection still being opened is left to finish: cancelling it
        # would hand its waiters a CancelledError that is not theirs.
        if self._conn is not None:
            self._conn.abandon()
            self._conn = None


# ---- blocking ------------------------------------------------------------------------------


class _Link:
    """One thread's socket and the unread bytes after its last reply."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.pid = os.getpid()

    def usable(self) -> bool:
        # A forked child must not share its parent's socket: replies would cross.
        return self.pid == os.getpid() and self.sock.fileno() != -1

    def exchange(self, payload: bytes, count: int) -> list[Reply]:
        """Send ``payload`` (``count`` commands) and read their replies."""
        self.sock.sendall(payload)
        replies: list[Reply] = []
        buf: bytes | bytearray = b""
        pos = 0
        while len(replies) < count:
            got = parse(buf, pos)
            if got is not None:
                reply, pos = got
                replies.append(reply)
                continue
            chunk = self.sock.recv(_RECV_SIZE)
            if not chunk:
                raise ConnectionResetError("closed by the server")
            if not buf:
                buf = chunk  # the usual case: the whole reply in one read, no copy
            else:
                if isinstance(buf, bytes):
                    buf = bytearray(buf)
                del buf[:pos]
                pos = 0
                buf += chunk
        if pos != len(buf):
            raise ProtocolError("more replies than commands")
        return replies

    def close(self) -> None:
        self.sock.close()

    def __del__(self) -> None:  # a thread that ended takes its socket with it
        self.sock.close()


class SyncReader:
    """Blocking reads, one socket per thread; ``timeout`` bounds connecting and each read."""

    def __init__(self, address: Address, *, timeout: float) -> None:
        self._address = address
        self._timeout = timeout
        self._local = threading.local()
        self._links: weakref.WeakSet[_Link] = weakref.WeakSet()
        self._lock = threading.Lock()

    def hmget(self, key: str, fields: Sequence[bytes]) -> Row:
        return to_row(self.call(encode_hmget(key, fields), 1)[0])

    def hmget_many(self, requests: Sequence[Request]) -> list[Row]:
        payload = b"".join([encode_hmget(key, fields) for key, fields in requests])
        return [to_row(reply) for reply in self.call(payload, len(requests))]

    def call(self, payload: bytes, count: int) -> list[Reply]:
        """Send ``count`` commands in one write; their replies in order."""
        link: _Link | None = getattr(self._local, "link", None)
        if link is not None and link.usable():
            try:
                return link.exchange(payload, count)
            except TimeoutError as exc:  # a retry would double the wait on a slow server
                self._drop(link)
                raise StoreError(f"redis read failed: {type(exc).__name__}") from None
            except (OSError, ProtocolError):
                # Most likely stale (the server restarted since): one try on a fresh socket.
                self._drop(link)
        link = self._open()
        try:
            return link.exchange(payload, count)
        except (OSError, ProtocolError) as exc:
            self._drop(link)
            raise StoreError(f"redis read failed: {type(exc).__name__}") from None

    def _open(self) -> _Link:
        address = self._address
        try:
            if address.path is not None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(self._timeout)
                try:
                    sock.connect(address.path)
                except BaseException:
                    sock.close()
                    raise
            else:
                sock = socket.create_connection((address.host, address.port), timeout=self._timeout)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as exc:
            raise StoreError(f"redis connect failed: {type(exc).__name__}") from None
        link = _Link(sock)
        steps = address.handshake()
        if steps:
            try:
                replies = link.exchange(b"".join(payload for _, payload in steps), len(steps))
                _check_handshake(steps, replies)
            except (OSError, ProtocolError) as exc:
                link.close()
                raise StoreError(f"redis connect failed: {type(exc).__name__}") from None
            except StoreError:
                link.close()
                raise
        self._local.link = link
        with self._lock:
            self._links.add(link)
        return link

    def _drop(self, link: _Link) -> None:
        link.close()
        if getattr(self._local, "link", None) is link:
            del self._local.link

    def close(self) -> None:
        """Close every thread's socket; each thread opens a new one on its next read."""
        with self._lock:
            links = list(self._links)
            self._links.clear()
        for link in links:
            link.close()
