"""Clients and real servers for the framework tests: in-process clients, uvicorn, hypercorn, wsgiref.

Every server runs in a background thread on a free loopback port and is
stopped (and its thread joined) when its ``with`` block ends.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import httpx
import uvicorn
from hypercorn.asyncio import serve
from hypercorn.config import Config
from starlette.testclient import TestClient
from werkzeug.serving import WSGIRequestHandler as WerkzeugHandler
from werkzeug.serving import make_server as make_werkzeug_server

from .conftest import free_port

BASE_URL = "http://localhost"  # Django's ALLOWED_HOSTS has it; Starlette's default "testserver" is not
DELETED_REFRESH_COOKIE = (
    'refresh_token=""; Path=/auth/refresh; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT; '
    "HttpOnly; Secure; SameSite=Strict"
)
REVOKED = {"error": "invalid_token", "message": "Token has been revoked"}


def check_logout_flow(client: httpx.Client, token: str) -> None:
    """/me works with the token, /auth/logout revokes it and clears the refresh cookie, /me refuses it."""
    auth = {"Authorization": f"Bearer {token}"}
    assert client.get("/me").status_code == 401  # no token: the app's own answer
    me = client.get("/me", headers=auth)
    assert (me.status_code, me.json()) == (200, {"sub": "alice"})
    out = client.post("/auth/logout", headers=auth)
    assert (out.status_code, out.json()) == (200, {"message": "Logged out successfully"})
    assert out.headers.get_list("set-cookie") == [DELETED_REFRESH_COOKIE]
    again = client.get("/me", headers=auth)
    assert (again.status_code, again.json()) == (401, REVOKED)


def status_of(client: httpx.Client, token: str) -> int:
    return client.get("/me", headers={"Authorization": f"Bearer {token}"}).status_code


@contextmanager
def asgi_client(app: Any, *, lifespan: bool = True) -> Iterator[httpx.Client]:
    """Starlette's TestClient; ``lifespan=False`` for apps that refuse the lifespan scope (Django)."""
    client = TestClient(app, base_url=BASE_URL)
    if lifespan:
        with client:
            yield client
    else:
        try:
            yield client
        finally:
            client.close()


@contextmanager
def wsgi_client(app: Any) -> Iterator[httpx.Client]:
    with httpx.Client(transport=httpx.WSGITransport(app=app), base_url=BASE_URL) as client:
        yield client


def _wait_until(ready: Callable[[], bool], what: str, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not ready():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start")
        time.sleep(0.01)


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
    except OSError:
        return False
    return True


@contextmanager
def uvicorn_server(app: Any, **options: Any) -> Iterator[str]:
    """``host:port`` of ``app`` served by uvicorn in a background thread; ``options``: more
    ``uvicorn.Config`` kwargs (``proxy_headers=False``...)."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **options))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        _wait_until(lambda: server.started or not thread.is_alive(), "uvicorn")
        assert server.started, "uvicorn exited during startup"
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        assert not thread.is_alive(), "uvicorn did not stop"


@contextmanager
def hypercorn_server(app: Any) -> Iterator[str]:
    """``host:port`` of ``app`` served by hypercorn's asyncio ``serve`` in a thread with its own loop."""
    port = free_port()
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.loglevel = "WARNING"
    config.graceful_timeout = 1
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    def run() -> None:
        try:
            loop.run_until_complete(serve(app, config, shutdown_trigger=stop.wait, mode="asgi"))
        finally:
            loop.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        _wait_until(lambda: _accepts(port) or not thread.is_alive(), "hypercorn")
        assert thread.is_alive(), "hypercorn exited during startup"
        yield f"127.0.0.1:{port}"
    finally:
        if not loop.is_closed():
            loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        assert not thread.is_alive(), "hypercorn did not stop"


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def wsgiref_server(app: Any) -> Iterator[str]:
    """``host:port`` of ``app`` served by ``wsgiref.simple_server`` in a background thread."""
    with _in_thread(make_server("127.0.0.1", 0, app, handler_class=_QuietHandler), "wsgiref") as address:
        yield address


class _QuietWerkzeugHandler(WerkzeugHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


@contextmanager
def werkzeug_server(app: Any) -> Iterator[str]:
    """``host:port`` of ``app`` served by werkzeug's threaded server (HTTP/1.1, chunked bodies)."""
    server = make_werkzeug_server("127.0.0.1", 0, app, threaded=True, request_handler=_QuietWerkzeugHandler)
    with _in_thread(server, "werkzeug") as address:
        yield address


@contextmanager
def _in_thread(server: Any, name: str) -> Iterator[str]:
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
        assert not thread.is_alive(), f"{name} did not stop"
