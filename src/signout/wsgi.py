"""``SignOutWSGIMiddleware``: signout for WSGI apps (Flask, Django, Falcon), same kwargs and core.

Only the I/O differs from the ASGI adapter: headers come from the environ,
the body from ``wsgi.input``, and the store is called synchronously (redis-py's
sync client, whose socket timeout is ``store_timeout``).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Iterator
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from .errors import StoreError
from .options import Options
from .steps import Claim, Fetch, Keys, Pass, Read, Respond, Step, Unread, Upstream, Written
from .upstream import outcome_sync
from .web import READ_HEADERS, Answer, Request
from .wiring import CLAIMS_KEY, REVOKER_KEY, Adapter

if TYPE_CHECKING:
    from typing_extensions import Unpack

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]

# The environ keys of the headers signout reads (``web.READ_HEADERS``), and
# their ASGI names. Building only these, not all of them, is most of what a
# guarded WSGI request costs signout besides the token and the store.
_ENVIRON_HEADERS = tuple(
    ("CONTENT_TYPE" if name == b"content-type" else "HTTP_" + name.decode().upper().replace("-", "_"), name)
    for name in READ_HEADERS
)


class SignOutWSGIMiddleware(Adapter):
    """Logout routes and a revocation guard for a WSGI app; the same kwargs as ``SignOutMiddleware``."""

    def __init__(self, app: WSGIApp, **kwargs: Unpack[Options]) -> None:
        super().__init__(app, dict(kwargs), mode="sync", kind="a WSGI app")
        self.app: WSGIApp = app

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        keyset = self.keyset
        if keyset is not None and keyset.due <= keyset.clock():
            keyset.refresh_soon()  # in a thread; this request goes on with the keys held
        step = self._drive(self.engine.start(_request(environ)), environ)
        if isinstance(step, Pass):
            environ[REVOKER_KEY] = self.revoker
            if step.token is not None:
                environ[CLAIMS_KEY] = step.token.app_claims()
            if step.after is not None:
                return self._after(step.after, environ, start_response)
            return self.app(environ, start_response)
        _start(step.answer, start_response)
        return [step.answer.body]

    def _after(self, after: Callable[[], Step], environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        """Run the app; when it answers with a 2xx, drive ``after`` first, and send the answer
        it ends in instead of the app's (refresh rotation: only on refresh requests)."""
        swap = _Swapped()

        def starting(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], Any]:
            # Decided once: an app calling again with exc_info (PEP 3333) must not record a second use.
            if not swap.decided:
                swap.decided = True
                step = self._drive(after(), environ) if status[:1] == "2" else None
                if isinstance(step, Respond):
                    swap.answer = step.answer
            if swap.answer is not None:
                _start(swap.answer, start_response, exc_info)
                return _discard
            return start_response(status, headers, exc_info)  # type: ignore[no-any-return]

        swap.result = self.app(environ, starting)
        return swap

    def _drive(self, step: Step, environ: Environ) -> Pass | Respond:
        """Do the I/O each step asks for; every decision is the engine's."""
        while not isinstance(step, (Pass, Respond)):
            if isinstance(step, Read):
                step = step.resume(_read_body(environ, step.limit))
                continue
            if isinstance(step, Keys):
                step.keyset.refresh_sync()  # in this thread; other threads needing it wait for this fetch
                step = step.resume()
                continue
            if isinstance(step, Upstream):
                # Waited for at most step.timeout (in a worker thread: a stuck socket cannot hold us).
                step = step.resume(outcome_sync(step.call, step.timeout))
                continue
            pending = step
            try:
                # redis-py's socket timeout (store_timeout) bounds each sync call.
                if isinstance(step, Fetch):
                    step = step.resume(self.store.fetch_sync(step.lookups, step.now))
                elif isinstance(step, Claim):
                    step = step.resume(self.store.claim_sync(step.write, step.now), False)
                else:
                    self.store.write_sync(step.writes, step.now)
                    step = step.resume(Written.YES)
            except StoreError as exc:
                step = self.failed(pending, exc)
        return step


def _request(environ: Environ) -> Request:
    headers = [
        (name, str(value).encode("latin-1", "replace"))
        for key, name in _ENVIRON_HEADERS
        if (value := environ.get(key)) is not None
    ]
    # PEP 3333 hands the path over as latin-1 decoded bytes; ASGI as UTF-8. Match ASGI.
    raw_path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
    path = raw_path.encode("latin-1", "replace").decode("utf-8", "replace")
    return Request(  # positional: see the ASGI adapter
        "http",
        environ.get("REQUEST_METHOD", "GET"),
        path,
        environ.get("QUERY_STRING", "").encode("latin-1", "replace"),
        headers,
        (environ.get("REMOTE_ADDR"), environ.get("REMOTE_PORT")),
        environ.get("wsgi.url_scheme", "http"),
    )


def _start(answer: Answer, start_response: StartResponse, exc_info: Any = None) -> None:
    status = f"{answer.status} {HTTPStatus(answer.status).phrase}"
    start_response(status, [(k.decode("latin-1"), v.decode("latin-1")) for k, v in answer.headers], exc_info)


def _discard(data: bytes) -> None:
    """The ``write`` of an answer signout replaced: the app's bytes go nowhere."""


class _Swapped:
    """The app's body, or signout's answer in its place once ``answer`` is set (refresh rotation).

    ``close`` closes the app's iterable exactly once, whether or not the server
    iterated (PEP 3333: the server calls it on what it was handed, which is this).
    """

    def __init__(self) -> None:
        self.decided = False
        self.answer: Answer | None = None
        self.result: Iterable[bytes] = ()

    def __iter__(self) -> Iterator[bytes]:
        if self.answer is None:
            for chunk in self.result:
                if self.answer is not None:  # start_response was called while iterating
                    break
                yield chunk
        if self.answer is not None:
            yield self.answer.body

    def close(self) -> None:
        result, self.result = self.result, ()
        close = getattr(result, "close", None)
        if close is not None:
            close()


def _read_body(environ: Environ, limit: int) -> bytes | Unread:
    """At most ``limit`` bytes of body, or why it was not read whole.

    What is read is put back as ``wsgi.input`` (with a true ``CONTENT_LENGTH``),
    so an app handed the request reads the same bytes."""
    try:
        data = _take_body(environ, limit)
    except Exception:
        # A stream the server cannot read (a malformed chunked body) is the client's fault,
        # never a 500; the app, handed it, would fail the same way.
        return Unread.BROKEN
    if data:
        environ["wsgi.input"] = io.BytesIO(data)
        environ["CONTENT_LENGTH"] = str(len(data))
    return Unread.TOO_LARGE if data is None else data


def _take_body(environ: Environ, limit: int) -> bytes | None:
    """The body, or ``None`` when it is longer than ``limit`` (read no further)."""
    stream = environ.get("wsgi.input")
    if stream is None:
        return b""
    try:
        length = int(environ.get("CONTENT_LENGTH") or -1)
    except ValueError:
        length = -1
    if length > limit:
        return None
    if length < 0:
        # No length: reading is only safe where the server marks the stream terminated.
        if not environ.get("wsgi.input_terminated"):
            return b""
        data: bytes = stream.read(limit + 1)
        return None if len(data) > limit else data
    body: bytes = stream.read(length)
    return body
