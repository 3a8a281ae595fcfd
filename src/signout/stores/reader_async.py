"""``AsyncReader``: the guard's reads on one pipelined asyncio connection per event loop.

Replies come back in the order commands were sent, so a FIFO of futures pairs
them up. Commands started while others are in flight are buffered and written
once per loop tick (concurrent guard checks share one write); a command sent on
an idle connection goes at once (the sequential case pays no extra loop
iteration). Each read is bounded by ``store_timeout`` from its start by one
watchdog timer per connection, so the ASGI adapter arms no deadline per check.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
from collections.abc import Sequence
from typing import TypeAlias

from ..errors import StoreError, describe
from .resp import Address, ProtocolError, Reply, Request, Row, check_handshake, encode_hmget, parse, to_row


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
        self._timer_at = 0.0
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
        if self._timer is None or deadline < self._timer_at:
            # A retried read keeps its first deadline, which may come before the timer's.
            self._arm(deadline)
        return futures

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_at(when, self._watch)
        self._timer_at = when

    def _watch(self) -> None:
        """The deadline check: one timer per connection, not one per read.

        An ``asyncio.timeout`` around each read costs ~5 us (a timer armed and
        cancelled per request, a tenth of a round trip); this one is armed
        once per ``timeout`` when reads keep coming (and scans the queue then:
        a retried read keeps its first deadline, so the oldest is not always first).
        """
        self._timer = None
        if self.closed or not self._deadlines:
            return
        now = self._loop.time()
        earliest = min(self._deadlines)
        if earliest > now:
            self._arm(earliest)
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

    A cancelled read (its client went away, an outer timeout) leaves the
    connection alone: its reply is dropped in its turn. Aborting would send
    every other read in flight to retry, and a client cancelling in a loop
    could so turn other users' checks into 503s. A paused or hung server is
    the watchdog's business: past the oldest deadline the connection is
    dropped (the reads past their deadline fail, the rest retry once on a
    fresh connection: reads are idempotent).
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
            conn = await self._connect(deadline)
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
            # The rest of this call's replies are dropped in their turn, unread.
            for future in futures:
                future.cancel()
            raise
        return replies

    async def _connect(self, deadline: float) -> _Connection:
        # Everyone who finds the connection gone shares one attempt: one connection, not N.
        loop = asyncio.get_running_loop()
        task = self._connecting
        if task is None:
            task = self._connecting = loop.create_task(self._open())
            task.add_done_callback(self._opened)
        # Shielded: one caller's deadline must not cancel the others' connection.
        # Bounded by this read's deadline (a retry has less than a full timeout left).
        try:
            return await asyncio.wait_for(asyncio.shield(task), max(0.0, deadline - loop.time()))
        except asyncio.TimeoutError:
            raise StoreError("redis read timed out") from None

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
            raise StoreError(f"redis connect failed: {describe(exc)}") from None

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
                check_handshake(steps, outcomes)  # type: ignore[arg-type]  # LOST ruled out above
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
