"""The thread follower on a socket of its own (``redis://``, ``unix://``): every check reads it first.

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
for messages when no check comes, PING, and re-read the buckets a bare key or
an unreadable message names (redis-py's sync client, as the full copy). Those
re-reads are merged into the copy rather than replacing the bucket: a check
may have applied a newer message meanwhile, and values only ever grow (the
merge script's rule), so the order of the two does not matter.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import StoreError
from ..layout import Write
from .follow import _SCAN_COUNT, _chunks, _Follower, _hgetall_each, _Setup, _text, _Watchdog
from .reader_sync import _Link, connect
from .resp import Address, ErrorReply, ProtocolError, encode, parse

_RECV_SIZE = 65536
_PING = encode("PING")


class _Subscription:
    """The subscribed socket (non-blocking once subscribed) and the bytes read but not yet parsed."""

    def __init__(self, link: _Link, channel: str) -> None:
        self.link = link
        self.sock = link.sock
        # SUBSCRIBE's reply is the first frame; anything after it is kept for the follower.
        self.sock.sendall(encode("SUBSCRIBE", channel))
        self.buf = bytearray()
        while True:
            got = parse(self.buf, 0)
            if got is not None:
                break
            self._recv_blocking()
        reply, end = got
        if not (isinstance(reply, list) and reply[:1] == [b"subscribe"]):
            raise StoreError("redis SUBSCRIBE failed: " + (reply.kind if isinstance(reply, ErrorReply) else "reply"))
        del self.buf[:end]
        self.sock.setblocking(False)
        self.poller = select.poll()
        self.poller.register(self.sock.fileno(), select.POLLIN)

    def _recv_blocking(self) -> None:
        chunk = self.sock.recv(_RECV_SIZE)
        if not chunk:
            raise ConnectionResetError("closed by the server")
        self.buf += chunk

    def pending(self) -> bool:
        """Whether bytes arrived (or the connection ended): no system call beyond one ``poll``."""
        return bool(self.buf) or bool(self.poller.poll(0))

    def frames(self) -> list[Any]:
        """Every complete frame received so far (reads without blocking); a partial one stays buffered."""
        while True:
            try:
                chunk = self.sock.recv(_RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                break
            if not chunk:
                raise ConnectionResetError("closed by the server")
            self.buf += chunk
            if len(chunk) < _RECV_SIZE:
                break  # most likely all there is: spare the call that would say so
        out: list[Any] = []
        pos = 0
        while True:
            got = parse(self.buf, pos)
            if got is None:
                break
            frame, pos = got
            out.append(frame)
        del self.buf[:pos]
        return out

    def ping(self) -> None:
        self.sock.send(_PING)  # 14 bytes: fits any send buffer a live connection has

    def close(self) -> None:
        self.link.close()


class _SocketFollower(_Follower):
    """A daemon thread that keeps the copy; every in-sync check first takes what arrived (see the module)."""

    kind = "thread"

    def __init__(self, setup: _Setup, address: Address, client_of: Callable[[], Any]) -> None:
        super().__init__(setup)
        self._address = address
        self._client_of = client_of
        self._stop = threading.Event()
        #: Held while reading the socket and applying what was read: by the thread or by a check.
        self._lock = threading.Lock()
        self._sub: _Subscription | None = None
        self._watchdog = _Watchdog(setup.ping_every, time.monotonic())
        self._rereads: dict[str, None] = {}
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
            self._take_pending(sub)
        return self.ready.is_set()

    def alive(self) -> bool:
        return not self._stop.is_set() and self.thread.is_alive()

    def stop(self) -> None:
        """The thread ends at once (it is woken), its socket closed."""
        self._stop.set()
        self.ready.clear()
        self._wake()

    # ---- shared by the checks and the thread -----------------------------------------------------

    def _take_pending(self, sub: _Subscription) -> None:
        """Read and apply what arrived on ``sub``; a failure puts the copy out of sync and wakes the thread."""
        with self._lock:
            if self._sub is not sub or self._failure is not None:
                return  # replaced or failing: the thread is on it
            try:
                rereads = self._rereads
                for frame in sub.frames():
                    self._frame(frame, rereads)
            except Exception as exc:  # the thread reports it; a check just stops trusting the copy
                self._failure = exc
                self.ready.clear()
            else:
                if not rereads:
                    return
        self._wake()

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
        patience = 2 * self.setup.ping_every
        # Subscribe before copying, so no change between the two is missed.
        link = connect(self._address, patience)
        try:
            sub = _Subscription(link, self.setup.channel)
        except BaseException:
            link.close()
            raise
        try:
            client = self._client_of()
            self._copy_all(client)
            with self._lock:
                self._sub, self._failure, self._rereads = sub, None, {}
                self._watchdog = _Watchdog(self.setup.ping_every, time.monotonic())
            self._synced()
            while not self._stop.is_set():
                readable, _, _ = select.select([sub.sock, self._wake_out], [], [], self._watchdog.wait)
                if self._wake_out in readable:
                    self._drain_wakes()
                with self._lock:
                    if self._failure is not None:
                        raise self._failure
                    for frame in sub.frames():
                        self._frame(frame, self._rereads)
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

    def _copy_all(self, client: Any) -> None:
        self.local.clear()
        cursor = 0
        while True:
            cursor, found = client.scan(cursor, match=self.setup.pattern, count=_SCAN_COUNT)
            for chunk in _chunks([_text(k) for k in found]):
                self._apply(chunk, _hgetall_each(client.pipeline(transaction=False), chunk).execute())
            if not cursor:
                return

    def _reread(self, client: Any, keys: Sequence[str]) -> None:
        for chunk in _chunks(keys):
            replies = _hgetall_each(client.pipeline(transaction=False), chunk).execute()
            now = time.time()
            # Merged, not replaced: a check may have applied a newer message to these buckets meanwhile.
            merged = [Write(key, tuple(fields.items())) for key, fields in zip(chunk, replies, strict=True)]
            self.local.write_sync(merged, now)
