"""``SignOutWSGIMiddleware``: signout for WSGI apps (Flask, Django, Falcon), same kwargs and core.

Only the I/O differs from the ASGI adapter: headers come from the environ,
the body from ``wsgi.input``, and the store is called synchronously (redis-py's
sync client, whose socket timeout is ``store_timeout``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from .errors import StoreError
from .http import READ_HEADERS, Answer, Request
from .options import Options
from .steps import Fetch, Pass, Read, Respond, Step
from .stores.base import SyncStore
from .wiring import CLAIMS_KEY, Adapter

if TYPE_CHECKING:
    from typing_extensions import Unpack

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]

# The environ keys of the headers signout reads (``http.READ_HEADERS``), and
# their ASGI names. Building only these, not all of them, is most of what a
# guarded WSGI request costs signout besides the token and the store.
_ENVIRON_HEADERS = tuple(
    ("CONTENT_TYPE" if name == b"content-type" else "HTTP_" + name.decode().upper().replace("-", "_"), name)
    for name in READ_HEADERS
)


class SignOutWSGIMiddleware(Adapter):
    """Logout routes and a revocation guard for a WSGI app; the same kwargs as ``SignOutMiddleware``."""

    def __init__(self, app: WSGIApp, **kwargs: Unpack[Options]) -> None:
        super().__init__(app, dict(kwargs), protocol=SyncStore, kind="a WSGI app")
        self.app: WSGIApp = app
        self.store: SyncStore = self.raw_store

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        step = self._drive(self.engine.start(_request(environ)), environ)
        if isinstance(step, Pass):
            if step.token is not None:
                environ[CLAIMS_KEY] = step.token.app_claims()
            return self.app(environ, start_response)
        answer: Answer = step.answer
        status = f"{answer.status} {HTTPStatus(answer.status).phrase}"
        start_response(status, [(k.decode("latin-1"), v.decode("latin-1")) for k, v in answer.headers])
        return [answer.body]

    def _drive(self, step: Step, environ: Environ) -> Pass | Respond:
        """Do the I/O each step asks for; every decision is the engine's."""
        while not isinstance(step, (Pass, Respond)):
            if isinstance(step, Read):
                step = step.resume(_read_body(environ, step.limit))
                continue
            pending = step
            try:
                # redis-py's socket timeout (store_timeout) bounds each sync call.
                if isinstance(step, Fetch):
                    step = step.resume(self.store.fetch_sync(step.lookups, step.now))
                else:
                    self.store.write_sync(step.writes, step.now)
                    step = step.resume(True)
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
    )


def _read_body(environ: Environ, limit: int) -> bytes | None:
    """At most ``limit`` bytes of body, or ``None`` when it is longer (read no further)."""
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
