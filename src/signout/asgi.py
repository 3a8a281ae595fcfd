"""``SignOutMiddleware``: signout for ASGI apps (Starlette, FastAPI, Litestar, Django).

Pure ASGI: no Request or Response objects on the hot path; the guard reads
``scope["headers"]`` and passes the untouched ``receive``/``send`` to the app.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, cast

# The ASGI types are signout.asgi's too (the examples type their apps with them).
from .asgi_messages import Message as Message
from .asgi_messages import Receive as Receive
from .asgi_messages import Scope as Scope
from .asgi_messages import Send as Send
from .asgi_messages import read_body, refuse_websocket, replay, send_http
from .errors import StoreError, TokenError
from .layout import Lookup
from .options import Options
from .steps import Claim, Fetch, Keys, Pass, Read, Respond, Row, Step, Upstream, Written
from .upstream import outcome_async
from .web import Request
from .wiring import CLAIMS_KEY, REVOKER_KEY, Adapter

if TYPE_CHECKING:
    from typing_extensions import Unpack

ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("signout")


class SignOutMiddleware(Adapter):
    """Logout routes and a revocation guard for an ASGI app; kwargs in SPEC section 2."""

    def __init__(self, app: ASGIApp, **kwargs: Unpack[Options]) -> None:
        super().__init__(app, dict(kwargs), mode="async", kind="an ASGI app")
        self.app: ASGIApp = app
        # The usual request, judged in one call (see Engine.quick); None: every request takes start.
        self._quick = self.engine.quick if self.engine.quick_ready else None
        # Else, with a store that answers over the network, the usual request known in one call
        # (Engine.usual) and its rows read with one await: none of start's objects (a Request, a
        # step, its closure, the coroutine that drives it) is alive while the read waits. Under
        # load, fewer live objects per request in flight mean fewer collections that walk the heap.
        self._usual = self.engine.usual if self._quick is None and self.engine.usual_ready else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        keyset = self.keyset
        if keyset is not None and keyset.due <= keyset.clock():
            keyset.refresh_soon()  # in a thread; this request goes on with the keys held
        kind = scope["type"]
        read: tuple[tuple[Lookup, ...], Sequence[Row] | StoreError] | None = None
        refusal: TokenError | None = None
        if kind == "http" and self._quick is not None:
            token = self._quick(scope.get("path", ""), scope.get("headers", ()))
            if isinstance(token, TokenError):
                refusal = token
            elif token is not None:
                scope[CLAIMS_KEY] = token.app_claims()
                scope[REVOKER_KEY] = self.revoker
                await self.app(scope, receive, send)
                return
        elif kind == "http" and self._usual is not None:
            usual = self._usual(scope.get("path", ""), scope.get("headers", ()))
            if usual is None or isinstance(usual, TokenError):
                refusal = usual  # None: ask start
            else:
                token, found, now = usual
                del usual  # one object less alive while the read waits
                if found:
                    try:  # within store_timeout (stores.base)
                        rows = await self.store.fetch(found, now)
                    except StoreError as exc:
                        read = (found, exc)
                    else:
                        if not self.engine.clean(token, found, rows, now):
                            read = (found, rows)
                if read is None:
                    scope[CLAIMS_KEY] = token.app_claims()
                    scope[REVOKER_KEY] = self.revoker
                    await self.app(scope, receive, send)
                    return
                # Revoked, or the store failed: start says so, with the answer already read.
        elif kind != "http" and kind != "websocket":
            await self.app(scope, receive, self._closing(send) if kind == "lifespan" else send)
            return
        # Positional: keyword arguments make this call cost 2.5x (0.5 -> 1.3 us).
        request = Request(
            kind,
            scope.get("method", "GET"),
            scope.get("path", ""),
            scope.get("query_string", b""),
            scope.get("headers", ()),
            scope.get("client"),
            scope.get("scheme", "http"),
        )
        step = self.engine.start(request) if refusal is None else self.engine.refused(request, refusal)
        if read is not None and type(step) is Fetch and step.lookups == read[0]:
            answer = read[1]
            step = self.failed(step, answer) if isinstance(answer, StoreError) else step.resume(answer)
        held: list[Message] = []  # what a Read took from receive, to hand the app unchanged
        if type(step) is not Pass and type(step) is not Respond:
            step = await self._drive(step, receive, held)
        if type(step) is Pass:
            scope[REVOKER_KEY] = self.revoker
            if step.token is not None:
                scope[CLAIMS_KEY] = step.token.app_claims()
            if held:
                receive = replay(held, receive)
            if step.after is not None:
                send = self._after(step.after, send)
            await self.app(scope, receive, send)
        elif kind == "http":
            await send_http(cast(Respond, step).answer, send)
        else:
            await refuse_websocket(cast(Respond, step).answer, scope, send)

    def _closing(self, send: Send) -> Send:
        """``send`` that asks the store once when the app has started (a store that cannot answer
        is logged before the first request meets it), and closes its connections once the app has
        shut down."""

        async def closing(message: Message) -> None:
            kind = message.get("type")
            if kind == "lifespan.startup.complete":
                await self.check_store()
                if self.keyset is not None:
                    # Fetched once before the first request (bounded by its timeout); a failure
                    # is logged with the URL and startup goes on: tokens get 503 until a fetch works.
                    await self.keyset.refresh()
            elif kind == "lifespan.shutdown.complete":
                await self.aclose()
            await send(message)

        return closing

    async def check_store(self) -> bool:
        """Ask the store one read, bounded by ``store_timeout``; log a WARNING naming its address when
        it cannot answer (startup goes on: the guard fails closed until it does). Whether it answered."""
        probe = Lookup(f"{self.settings.key_prefix}:{{signout-startup-check}}", (b"u",))
        started = time.perf_counter()
        try:
            await self.store.fetch((probe,), time.time())
        except StoreError as exc:
            log.warning(
                "signout: the revocation store did not answer at startup: %s; startup goes on, and %s",
                self.reason(exc),
                self._outage.effect,
            )
            return False
        elapsed = (time.perf_counter() - started) * 1e3
        log.info("signout: the revocation store %s answered in %.1f ms", self.store.where, elapsed)
        return True

    async def aclose(self) -> None:
        """Close the connections signout opened (called on lifespan shutdown)."""
        await self.store.aclose()

    async def _drive(self, step: Step, receive: Receive | None, held: list[Message]) -> Pass | Respond:
        """Do the I/O each step asks for; every decision is the engine's. ``held``: what a Read received."""
        while not isinstance(step, (Pass, Respond)):
            if isinstance(step, Read):
                assert receive is not None  # the engine reads bodies only while judging a request
                step = step.resume(await read_body(receive, step.limit, held))
                continue
            if isinstance(step, Keys):
                await step.keyset.refresh()  # off the loop; never raises; bounded by the fetch's timeout
                step = step.resume()
                continue
            if isinstance(step, Upstream):
                # In a worker thread, awaited at most step.timeout; never raises.
                step = step.resume(await outcome_async(step.call, step.timeout))
                continue
            pending = step
            try:  # every store call ends within store_timeout (stores.base)
                if isinstance(step, Fetch):
                    step = step.resume(await self.store.fetch(step.lookups, step.now))
                elif isinstance(step, Claim):
                    step = step.resume(await self.store.claim(step.write, step.now), False)
                else:
                    await self.store.write(step.writes, step.now)
                    step = step.resume(Written.YES)
            except StoreError as exc:
                step = self.failed(pending, exc)
        return step

    def _after(self, after: Callable[[], Step], send: Send) -> Send:
        """``send`` that, when the app answers with a 2xx, drives ``after`` first, and sends
        the answer it ends in instead of the app's (refresh rotation: only on refresh requests)."""
        replaced = False

        async def sending(message: Message) -> None:
            nonlocal replaced
            if replaced:  # the rest of an answer we replaced
                return
            if message["type"] == "http.response.start" and 200 <= message.get("status", 0) < 300:
                step = await self._drive(after(), None, [])
                if isinstance(step, Respond):
                    replaced = True
                    await send_http(step.answer, send)
                    return
            await send(message)

        return sending
