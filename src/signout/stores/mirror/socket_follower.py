"""The follower on a socket of its own, in a thread (``redis://``, ``unix://``): every check reads it first.

A follower thread has to win the GIL before it can apply what arrived, and
in a busy process it waits: a WSGI server's request threads, or an event
loop kept busy without pause, hold the GIL for its whole switch interval
(5 ms) at a time, and a follower that needs it several times per message
lags by hundreds of milliseconds. So this follower's subscription is a plain
socket, and the thread that is about to answer a check from the copy looks
first (one ``poll`` with no timeout): if anything arrived, it reads and
applies it itself, under the follower's lock, before answering. A check
never answers from a copy older than what its instance has received.

The thread still does the rest: connect, subscribe, copy every bucket, wait
for messages when no check comes, PING, and re-read the buckets an unreadable
message names (redis-py's sync client, as the full copy). Until
such a bucket is re-read, checks that need it ask Redis: the copy is known to
be behind there. Re-reads are merged into the copy rather than replacing the
bucket: a check may have applied a newer message meanwhile, and values only
ever grow (the merge script's rule), so the order of the two does not matter.

Whatever interrupts a check while it applies what it read (an error, but also
a ``gevent.Timeout`` or a signal-raised request timeout) puts the copy out of
sync: the bytes it took are gone from the socket, so only a full copy makes up
for them. Nothing a check does here raises into the request but such an
interruption itself.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from ...drive import run_sync
from ...errors import StoreError
from ...layout import Lookup, Write
from ..base import Value
from ..wire.blocking import Link, connect
from ..wire.resp import INCOMPLETE, Address, ErrorReply, ProtocolError, Replies, encode
from .follower import Follower, Setup, Source, Watchdog, call, chunks, hgetall_each

_RECV_SIZE = 65536
_PING = encode("PING")


class _Subscription:
    """The subscribed socket (non-blocking once subscribed) and the bytes read but not yet parsed."""

    def __init__(self, link: Link, channel: str) -> None:
        self.link = link
        self.sock = link.sock
        self.replies = Replies()
        try:
            # SUBSCRIBE's reply is the first frame; anything after it is kept for the follower.
            self.sock.sendall(encode("SUBSCRIBE", channel))
            while (reply := self.replies.next()) is INCOMPLETE:
                self._recv_blocking()
            if not (isinstance(reply, list) and reply[:1] == [b"subscribe"]):
                kind = reply.kind if isinstance(reply, ErrorReply) else "unexpected reply"
                raise StoreError(f"redis SUBSCRIBE failed: {kind}")
            self.sock.setblocking(False)
        except BaseException:
            link.close()
            raise
        # poll, not select: any file descriptor number. One poll object per thread: CPython
        # refuses a second poll() on one object while another thread's is running.
        self._pollers = threading.local()

    def _recv_blocking(self) -> None:
        chunk = self.sock.recv(_RECV_SIZE)
        if not chunk:
            raise ConnectionResetError("closed by the server")
        self.replies.feed(chunk)

    def pending(self) -> bool:
        """Whether bytes arrived (or the connection ended): one ``poll`` with no timeout."""
        if self.replies.pending():
            return True
        poller = getattr(self._pollers, "poller", None)
        if poller is None:
            poller = self._pollers.poller = select.poll()
            poller.register(self.sock, select.POLLIN)
        return bool(poller.poll(0))

    def frames(self) -> list[Any]:
        """Every complete frame received so far (reads without blocking); a partial one stays buffered."""
        while True:
            try:
                chunk = self.sock.recv(_RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                break
            if not chunk:
                raise ConnectionResetError("closed by the server")
            self.replies.feed(chunk)
            if len(chunk) < _RECV_SIZE:
                break  # most likely all there is: spare the call that would say so
        out: list[Any] = []
        while (frame := self.replies.next()) is not INCOMPLETE:
            out.append(frame)
        return out

    def ping(self) -> None:
        # 14 bytes fit any send buffer a live connection has; a part sent would garble the stream.
        if self.sock.send(_PING) != len(_PING):
            raise StoreError("a PING only partly sent")

    def close(self) -> None:
        self.link.close()


class SocketFollower(Follower):
    """A daemon thread that keeps the copy; every in-sync check first takes what arrived (see the module)."""

    kind = "socket"

    def __init__(self, setup: Setup, address: Address, client_of: Callable[[], Any]) -> None:
        super().__init__(setup)
        self._address = address
        self._client_of = client_of
        self._stop = threading.Event()
        #: Held while reading the socket and applying what was read: by the thread or by a check.
        self._lock = threading.Lock()
        self._sub: _Subscription | None = None
        self._watchdog = Watchdog(setup.ping_every, time.monotonic())
        #: Buckets to re-read (the thread's to do), and those not yet re-read (checks ask Redis).
        self._rereads: dict[str, None] = {}
        self._unsure: set[str] = set()
        self._failure: Exception | None = None
        # A check that leaves work for the thread (a re-read, a failure) wakes it through this pair.
        self._wake_in, self._wake_out = socket.socketpair()
        self._wake_in.setblocking(False)
        self._wake_out.setblocking(False)
        self.thread = threading.Thread(target=self._run, name="signout-mirror", daemon=True)
        self.thread.start()

    def in_sync(self) -> bool:
        if not super().in_sync():
            return False
        sub = self._sub
        # Locked: the thread is reading or applying, and may hold a message it took from the
        # socket but had to wait for the GIL to apply. Waiting on the lock hands it the GIL.
        if sub is not None and (sub.pending() or self._lock.locked()):
            self._take_pending()
        return self.ready.is_set()

    def answer(self, lookups: Sequence[Lookup], now: float) -> list[list[Value]] | None:
        if not self.in_sync():
            return None
        unsure = self._unsure
        if unsure and any(lookup.key in unsure for lookup in lookups):
            return None  # heard of, not yet re-read: Redis knows better than the copy
        return self.local.fetch_sync(lookups, now)

    def alive(self) -> bool:
        return not self._stop.is_set() and self.thread.is_alive()

    def stop(self) -> None:
        """The thread ends at once (it is woken), its socket closed."""
        self._stop.set()
        self.ready.clear()
        self._wake()

    # ---- shared by the checks and the thread -----------------------------------------------------

    def _take_pending(self) -> None:
        """A check: read and apply what arrived; a failure puts the copy out of sync and wakes the thread."""
        with self._lock:
            sub = self._sub  # the current one, whichever the caller peeked at
            if sub is None or self._failure is not None:
                return  # between subscriptions, or failing: the thread is on it
            try:
                self._read(sub)
            except BaseException as exc:
                # The thread reports it and resyncs; the check stops trusting the copy at once.
                self._failure = exc if isinstance(exc, Exception) else StoreError(f"interrupted: {type(exc).__name__}")
                self.ready.clear()
                self._wake()
                if not isinstance(exc, Exception):
                    raise
                return
            if self._rereads:
                self._wake()

    def _read(self, sub: _Subscription) -> None:
        """Apply every frame received on ``sub``; under the lock."""
        rereads = self._rereads
        for frame in sub.frames():
            self._frame(frame, rereads)
        if rereads:
            self._unsure.update(rereads)

    def _frame(self, frame: Any, rereads: dict[str, None]) -> None:
        if isinstance(frame, ErrorReply):
            raise StoreError(f"redis pub/sub error: {frame.kind}")
        if not isinstance(frame, list) or not frame:
            raise ProtocolError("a pub/sub frame that is not an array")
        kind = frame[0]
        if kind == b"message" and len(frame) == 3 and isinstance(frame[2], bytes):
            self._heard(frame[2], rereads)
        elif kind == b"pong":
            self._watchdog.pong(time.monotonic())
        # Anything else ("subscribe" confirmations) says nothing about the denylist.

    def _wake(self) -> None:
        # Full (a wake is pending anyway) or closed (the thread has ended): nothing to do.
        with contextlib.suppress(OSError):
            self._wake_in.send(b"!")

    # ---- the thread ------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    self._follow()
                except Exception as exc:  # survive everything: a dead thread is restarted at request rate
                    if self._stop.is_set():
                        break
                    self._stop.wait(self._lost(exc))
        finally:
            self._wake_in.close()
            self._wake_out.close()

    def _follow(self) -> None:
        # Subscribe before copying, so no change between the two is missed.
        sub = _Subscription(connect(self._address, 2 * self.setup.ping_every), self.setup.channel)
        try:
            client = self._client_of()
            run_sync(self._copying(Source.single(client)), call)
            with self._lock:
                self._sub, self._failure, self._rereads, self._unsure = sub, None, {}, set()
                self._watchdog = Watchdog(self.setup.ping_every, time.monotonic())
            self._synced()
            waiting = select.poll()
            waiting.register(sub.sock, select.POLLIN)
            waiting.register(self._wake_out, select.POLLIN)
            wake = self._wake_out.fileno()
            while not self._stop.is_set():
                events = waiting.poll(self._watchdog.wait * 1000)
                if any(fd == wake for fd, _ in events):
                    self._drain_wakes()
                with self._lock:
                    if self._failure is not None:
                        raise self._failure
                    self._read(sub)
                    rereads, self._rereads = list(self._rereads), {}
                if rereads:
                    self._reread(client, rereads)
                if self._watchdog.ping_due(time.monotonic()):
                    sub.ping()
        finally:
            self.ready.clear()
            with self._lock:
                self._sub = None
            sub.close()

    def _drain_wakes(self) -> None:
        try:
            while self._wake_out.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def _reread(self, client: Any, keys: Sequence[str]) -> None:
        for chunk in chunks(keys):
            replies = hgetall_each(client.pipeline(transaction=False), chunk).execute()
            # Merged, not replaced: a check may have applied a newer message to these buckets meanwhile.
            merged = [Write(key, tuple(fields.items())) for key, fields in zip(chunk, replies, strict=True)]
            self.local.write_sync(merged, time.time())
            with self._lock:  # sure again, unless heard of again meanwhile (the next re-read's)
                self._unsure.difference_update(k for k in chunk if k not in self._rereads)
