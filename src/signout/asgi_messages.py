"""ASGI messages for ``SignOutMiddleware``: reading a request body it judges (and handing the
app the same messages), and sending signout's own answers over http and websocket."""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .steps import Unread
from .web import Answer

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


async def read_body(receive: Receive, limit: int, held: list[Message]) -> bytes | Unread:
    """The request body, or ``Unread.TOO_LARGE`` once it passes ``limit`` (read no further); every
    message received is kept in ``held``, so the app can be handed them as they came (``replay``)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        held.append(message)
        if message["type"] != "http.request":  # http.disconnect
            return b"".join(chunks)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return Unread.TOO_LARGE
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def replay(held: list[Message], receive: Receive) -> Receive:
    """``receive`` that first hands back what signout read, message by message, then the rest."""
    queue = deque(held)

    async def replaying() -> Message:
        if queue:
            return queue.popleft()
        return await receive()

    return replaying


async def send_http(answer: Answer, send: Send) -> None:
    await send({"type": "http.response.start", "status": answer.status, "headers": list(answer.headers)})
    await send({"type": "http.response.body", "body": answer.body})


async def refuse_websocket(answer: Answer, scope: Scope, send: Send) -> None:
    # Refuse before accept. With the ASGI "websocket.http.response" extension
    # the client gets our real 401/503; without it the server answers 403.
    if "websocket.http.response" in (scope.get("extensions") or {}):
        await send({"type": "websocket.http.response.start", "status": answer.status, "headers": list(answer.headers)})
        await send({"type": "websocket.http.response.body", "body": answer.body})
    else:
        await send({"type": "websocket.close", "code": 1008 if answer.status == 401 else 1011})
