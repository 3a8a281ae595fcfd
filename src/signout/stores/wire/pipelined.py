"""``AsyncReader``: the guard's reads on one pipelined asyncio connection per event loop.

Replies come back in the order commands were sent, so a FIFO of futures pairs
them up. Commands started while others are in flight are buffered and written
once per loop tick (concurrent guard checks share one write); a command sent on
an idle connection goes at once.

The deadline (``store_timeout``) counts time waiting for Redis: from the moment
a command is written, not from when its request began (a burst keeps the loop
busy long before it writes). One watchdog timer per connection watches the
oldest deadline. When it passes, the connection first reads what has already
arrived (the loop may simply not have had a turn), and only a read still
unanswered then fails. A connection stays open while Redis keeps answering (a
failed read's reply is dropped in its turn); one that answered nothing for a
whole ``store_timeout`` is dropped, and the reads still in time retry on a new one.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
from collections.abc import Sequence
from typing import TypeAlias

from ...errors import StoreError, describe
from .resp import (
    INCOMPLETE,
    Address,
    ProtocolError,
    Replies,
    Reply,
    Request,
    Row,
    check_handshake,
    encode_hmget,
    to_row,
)


class _Lost:
    """The result of a command whose connection went away before its reply: safe to send again."""


class _TimedOut:
    """The result of a command still unanswered at its deadline: the store failed this read."""


LOST = _Lost()
TIMED_OUT = _TimedOut()
Outcome: TypeAlias = "Reply | _Lost | _TimedOut"
#: What several commands written together come to: their replies in order, or why there are none.
Outcomes: TypeAlias = "list[Reply] | _Lost | _TimedOut"
_NEVER = float("inf")
#: Encoded reads kept per reader: a reused token's lookups are encoded once, not per request.
_PAYLOADS = 4096


class _Batch:
    """The waiter of several commands written together: one future for all of them, resolved
    with their replies once the last has come, or with ``LOST``/``TIMED_OUT`` at the first
    failure (the replies after it are dropped in their turn).

    It stands in the FIFO once per command, and answers the two calls the FIFO makes of a
    future (``done``, ``set_result``): a pipelined read of N lookups waits on one future, not N.
    """

    __slots__ = ("count", "future", "replies")

    def __init__(self, future: asyncio.Future[Outcomes], count: int) -> None:
        self.future = future
        self.count = count
        self.replies: list[Reply] = []

    def done(self) -> bool:
        return self.future.done()

    def set_result(self, outcome: Outcome) -> None:
        if outcome is LOST or outcome is TIMED_OUT:
            self.future.set_result(outcome)
            return
        replies = self.replies
        replies.append(outcome)  # type: ignore[arg-type]  # a Reply: LOST and TIMED_OUT ruled out
        if len(replies) == self.count:
            self.future.set_result(replies)


_Waiter: TypeAlias = "asyncio.Future[Outcome] | _Batch"


class _Connection(asyncio.Protocol):
    """One pipelined connection: commands go out in order, replies resolve a FIFO of futures."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float, coalesce: bool) -> None:
        self._loop = loop
        self._timeout = timeout
        self._coalesce = coalesce
        self._transport: asyncio.Transport | None = None
        self._waiters: collections.deque[_Waiter] = collections.deque()
        # Each waiter's deadline, in a box shared by the commands written together (the buffered
        # ones learn theirs when written); one timer watches the oldest.
        self._deadlines: collections.deque[list[float]] = collections.deque()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._unsent: list[bytes] = []
        self._unsent_box: list[float] = [_NEVER]
        self._replies = Replies()
        self._answered = 0  # replies received so far: the judge's measure of progress
        self._answered_at = 0.0  # when the last one came (loop time)
        self.closed = False

    # asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._answered_at = self._loop.time()
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # asyncio sets it too; say it here: a small request must never wait for Nagle.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        replies = self._replies
        waiters = self._waiters
        deadlines = self._deadlines
        count = 0
        try:
            replies.feed(data)
            while (reply := replies.next()) is not INCOMPLETE:
                if not waiters:
                    raise ProtocolError("a reply nobody asked for")
                waiter = waiters.popleft()
                deadlines.popleft()
                count += 1
                if not waiter.done():  # a timed-out or cancelled waiter's reply is dropped here, in its turn
                    waiter.set_result(reply)  # type: ignore[arg-type]  # INCOMPLETE ruled out above
        except ProtocolError:
            self.abandon()
            return
        if count:
            self._answered += count
            self._answered_at = self._loop.time()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail_all()

    # requests

    def send(self, payload: bytes, count: int) -> asyncio.Future[Outcomes]:
        """Queue ``count`` commands (``payload``), answered within ``timeout`` of being written;
        the future of their replies (``TIMED_OUT`` or ``LOST`` if any failed)."""
        box = self._enqueue(payload)
        future: asyncio.Future[Outcomes] = self._loop.create_future()
        batch = _Batch(future, count)
        self._waiters.extend([batch] * count)
        self._deadlines.extend([box] * count)
        return future

    def send_one(self, payload: bytes) -> asyncio.Future[Outcome]:
        """``send`` for the usual single command: one future, no lists."""
        box = self._enqueue(payload)
        future: asyncio.Future[Outcome] = self._loop.create_future()
        self._waiters.append(future)
        self._deadlines.append(box)
        return future

    def _enqueue(self, payload: bytes) -> list[float]:
        """Write ``payload`` now, or with the rest of this tick; the box its deadline goes in."""
        transport = self._transport
        if self.closed or transport is None:
            raise ConnectionError("connection closed")
        if not self._waiters or not self._coalesce:
            # Nothing in flight, so nothing buffered either (buffered commands
            # always have waiters): writing now keeps the order.
            transport.write(payload)
            box = [self._loop.time() + self._timeout]
            if self._timer is None:
                self._arm(box[0])
            return box
        if not self._unsent:
            self._loop.call_soon(self._flush)
            self._unsent_box = [_NEVER]
        self._unsent.append(payload)
        return self._unsent_box

    def _flush(self) -> None:
        # Every command started in this tick, in one write; their time starts now.
        unsent, self._unsent = self._unsent, []
        if unsent and not self.closed and self._transport is not None:
            self._transport.write(b"".join(unsent))
            self._unsent_box[0] = self._loop.time() + self._timeout
            if self._timer is None:
                self._arm(self._unsent_box[0])

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_at(when, self._watch)
        self._timer_at = when

    def _watch(self) -> None:
        """The deadline check: one timer per connection, not one per read (an ``asyncio.timeout``
        per read would cost ~5 us, a tenth of a round trip)."""
        self._timer = None
        if self.closed or not self._deadlines:
            return
        now = self._loop.time()
        earliest = min(box[0] for box in self._deadlines)
        if earliest > now:
            if earliest != _NEVER:
                self._arm(earliest)
            return
        # Past a deadline, by the clock. Let the loop read what already arrived first
        # (two turns: I/O callbacks run after a turn's own callbacks), then judge.
        self._loop.call_soon(self._loop.call_soon, self._judge, now, self._answered)

    def _judge(self, at: float, answered: int) -> None:
        if self.closed or not self._deadlines:
            return
        if self._answered != answered:  # replies kept coming in that turn: there may be more to read
            self._loop.call_soon(self._loop.call_soon, self._judge, at, self._answered)
            return
        # Nothing more arrived: what was due by ``at`` really is late.
        for waiter, box in zip(self._waiters, self._deadlines, strict=True):
            if box[0] <= at and not waiter.done():
                waiter.set_result(TIMED_OUT)
        if self._loop.time() - self._answered_at >= self._timeout:
            # Silent for a whole timeout (paused, hung): drop it; reads still in time retry.
            self.abandon()
            return
        self._rearm()

    def _rearm(self) -> None:
        pending = [box[0] for box, waiter in zip(self._deadlines, self._waiters, strict=True) if not waiter.done()]
        if pending and min(pending) != _NEVER:
            self._arm(min(pending))

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
    (``store_timeout``) bounds connecting, and each read from the moment it is
    written, so callers need no deadline of their own: a read still unanswered
    then raises ``StoreError``.

    A cancelled read (its client went away) leaves the connection alone: its
    reply is dropped in its turn. A read whose connection was lost (a restart,
    a hung server dropped by the watchdog) is sent once more on a fresh one:
    reads are idempotent.
    """

    def __init__(self, address: Address, *, timeout: float, coalesce: bool = True, where: str | None = None) -> None:
        self._address = address
        self._where = where  # the store's address, put on every error hmget_many raises
        self._timeout = timeout
        self._coalesce = coalesce
        self._conn: _Connection | None = None
        self._connecting: asyncio.Task[_Connection] | None = None
        self._payloads: dict[tuple[Request, ...], bytes] = {}

    async def hmget(self, key: str, fields: Sequence[bytes]) -> Row:
        """One ``HMGET``: ``hmget_many`` for a single key."""
        return (await self.hmget_many(((key, fields),)))[0]

    async def hmget_many(self, requests: Sequence[Request]) -> list[Row]:
        """``HMGET`` each (key, fields), pipelined; the rows in order.

        The guard's read: in this one coroutine when the connection is up. Each frame
        and list alive while a read waits is one more object for the garbage collector
        to walk (and, with a request's own, to count towards its next collection); under
        load those collections are what the latency tail is made of.
        """
        count = len(requests)
        if count == 0:
            return []
        payload = self._encoded(requests)
        try:
            conn = self._conn
            if conn is None or conn.closed:
                return [to_row(reply) for reply in await self.call(payload, count)]
            try:
                waiter = conn.send_one(payload) if count == 1 else conn.send(payload, count)
            except ConnectionError:
                return [to_row(reply) for reply in await self.call(payload, count)]
            outcome = await waiter  # cancelled with its caller: the replies are dropped in their turn
            if outcome is TIMED_OUT:
                raise self._late()
            if outcome is LOST:
                # The connection went away before answering: one more try on a fresh one, as ``call`` does.
                replies = await self._attempt(payload, count)
                if replies is None:
                    raise StoreError("redis read failed: connection lost")
                return [to_row(reply) for reply in replies]
            if count == 1:
                return [to_row(outcome)]  # type: ignore[arg-type]  # anything but LOST/TIMED_OUT is a Reply
            return [to_row(reply) for reply in outcome]  # type: ignore[union-attr]  # the batch's replies
        except StoreError as exc:  # an error reply (NOAUTH, ...) or a lost connection: name the store
            if exc.where is not None or self._where is None:
                raise
            raise StoreError(exc.message, where=self._where, unsure=exc.unsure) from exc.__cause__
        except (OSError, RuntimeError) as exc:  # these would be a bug, never a 500
            raise StoreError(f"redis read failed: {describe(exc)}", where=self._where) from exc

    def _encoded(self, requests: Sequence[Request]) -> bytes:
        """The ``HMGET``s of ``requests``, encoded once per distinct tuple of lookups (the guard
        hands a reused token's memoized tuple): encoding is most of a read's own cost."""
        try:
            payload: bytes | None = self._payloads.get(requests)  # type: ignore[call-overload]  # unhashable: TypeError
        except TypeError:  # a list, or fields in a list: encoded each time
            return b"".join([encode_hmget(key, fields) for key, fields in requests])
        if payload is None:
            payload = b"".join([encode_hmget(key, fields) for key, fields in requests])
            if len(self._payloads) >= _PAYLOADS:  # a flood of fresh tokens cannot grow it
                self._payloads.clear()
            self._payloads[requests] = payload  # type: ignore[index]  # hashable: get took it
        return payload

    async def call(self, payload: bytes, count: int) -> list[Reply]:
        """Send ``count`` pipelined commands; their replies, error replies included, in order."""
        replies = await self._attempt(payload, count)
        if replies is None:
            # The connection went away before answering (a restart, a dropped
            # socket, a hung server): one more try on a fresh one, never a loop.
            replies = await self._attempt(payload, count)
            if replies is None:
                raise StoreError("redis read failed: connection lost")
        return replies

    async def _attempt(self, payload: bytes, count: int) -> list[Reply] | None:
        conn = self._conn
        if conn is None or conn.closed:
            conn = await self._connect()
        try:
            waiter = conn.send(payload, count)
        except ConnectionError:
            return None
        outcome = await waiter  # cancelled with its caller: the replies are dropped in their turn
        if outcome is LOST:
            return None
        if outcome is TIMED_OUT:
            raise self._late()
        return outcome  # type: ignore[return-value]  # the replies: LOST and TIMED_OUT ruled out

    def _late(self) -> StoreError:
        return StoreError(f"redis read failed: no answer within store_timeout={self._timeout:g} s")

    async def _connect(self) -> _Connection:
        # Everyone who finds the connection gone shares one attempt: one connection, not N.
        loop = asyncio.get_running_loop()
        task = self._connecting
        if task is None:
            task = self._connecting = loop.create_task(self._open())
            task.add_done_callback(self._opened)
        # Shielded: one caller's cancellation must not cancel the others' connection. No
        # deadline per caller: _open keeps one from when it starts, not from when each caller
        # began (in a burst, long before the loop gets to connecting).
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
            raise StoreError(f"redis connect failed: {describe(exc)}") from None

    async def _open_now(self) -> _Connection:
        loop = asyncio.get_running_loop()
        address = self._address
        made: _Connection | None = None

        def factory() -> _Connection:
            nonlocal made
            made = _Connection(loop, self._timeout, self._coalesce)
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
                outcome = await conn.send(b"".join(payload for _, payload in steps), len(steps))
                if outcome is LOST or outcome is TIMED_OUT:
                    raise ConnectionError("connection lost during the handshake")
                check_handshake(steps, outcome)  # type: ignore[arg-type]  # the replies: LOST and TIMED_OUT ruled out
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
