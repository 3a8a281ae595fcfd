"""``SyncReader``: the guard's reads for the WSGI twin, on one blocking socket per thread.

``store_timeout`` is its connect and read timeout: a WSGI worker has nothing
else to bound the wait.
"""

from __future__ import annotations

import os
import socket
import threading
import weakref
from collections.abc import Sequence

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

_RECV_SIZE = 65536


class Link:
    """One thread's socket and the unread bytes after its last reply."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.pid = os.getpid()
        self.replies = Replies()

    def usable(self) -> bool:
        # A forked child must not share its parent's socket: replies would cross.
        return self.pid == os.getpid() and self.sock.fileno() != -1

    def exchange(self, payload: bytes, count: int) -> list[Reply]:
        """Send ``payload`` (``count`` commands) and read their replies."""
        self.sock.sendall(payload)
        got: list[Reply] = []
        replies = self.replies
        while len(got) < count:
            reply = replies.next()
            if reply is INCOMPLETE:
                chunk = self.sock.recv(_RECV_SIZE)
                if not chunk:
                    raise ConnectionResetError("closed by the server")
                replies.feed(chunk)
                continue
            got.append(reply)  # type: ignore[arg-type]  # INCOMPLETE ruled out above
        if replies.pending():
            raise ProtocolError("more replies than commands")
        return got

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
        self._links: weakref.WeakSet[Link] = weakref.WeakSet()
        self._lock = threading.Lock()

    def hmget(self, key: str, fields: Sequence[bytes]) -> Row:
        return to_row(self.call(encode_hmget(key, fields), 1)[0])

    def hmget_many(self, requests: Sequence[Request]) -> list[Row]:
        payload = b"".join([encode_hmget(key, fields) for key, fields in requests])
        return [to_row(reply) for reply in self.call(payload, len(requests))]

    def call(self, payload: bytes, count: int) -> list[Reply]:
        """Send ``count`` commands in one write; their replies in order."""
        link: Link | None = getattr(self._local, "link", None)
        if link is not None and link.usable():
            try:
                return self._exchange(link, payload, count)
            except TimeoutError as exc:  # a retry would double the wait on a slow server
                raise StoreError(f"redis read failed: {describe(exc)}") from None
            except (OSError, ProtocolError):
                pass  # most likely stale (the server restarted since): one try on a fresh socket
        link = self._open()
        try:
            return self._exchange(link, payload, count)
        except (OSError, ProtocolError) as exc:
            raise StoreError(f"redis read failed: {describe(exc)}") from None

    def _exchange(self, link: Link, payload: bytes, count: int) -> list[Reply]:
        try:
            return link.exchange(payload, count)
        except BaseException:
            # Whatever interrupted the exchange (a socket error, but also a
            # gevent.Timeout, a signal-raised request timeout, KeyboardInterrupt)
            # may have left a reply unread: the next command on this socket would
            # read it as its own. Such a socket is never used again.
            self._drop(link)
            raise

    def _open(self) -> Link:
        link = connect(self._address, self._timeout)
        self._local.link = link
        with self._lock:
            self._links.add(link)
        return link

    def _drop(self, link: Link) -> None:
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


def connect(address: Address, timeout: float) -> Link:
    """A blocking socket to ``address``, authenticated and on its database; ``timeout`` bounds each step."""
    try:
        if address.path is not None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            try:
                sock.connect(address.path)
            except BaseException:
                sock.close()
                raise
        else:
            sock = socket.create_connection((address.host, address.port), timeout=timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError as exc:
        raise StoreError(f"redis connect failed: {describe(exc)}") from None
    link = Link(sock)
    steps = address.handshake()
    if steps:
        try:
            replies = link.exchange(b"".join(payload for _, payload in steps), len(steps))
            check_handshake(steps, replies)
        except (OSError, ProtocolError) as exc:
            link.close()
            raise StoreError(f"redis connect failed: {describe(exc)}") from None
        except BaseException:  # StoreError from the check, or an interruption: never reuse it
            link.close()
            raise
    return link
