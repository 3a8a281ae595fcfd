"""Every example in examples/frameworks/, end to end: in process, under real servers, across adapters; and
examples/walkthrough.py, the README's tour, against the real Redis."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from .conftest import SECRET, TokenFactory
from .framework_helpers import (
    asgi_client,
    check_logout_flow,
    hypercorn_server,
    status_of,
    uvicorn_server,
    wsgi_client,
    wsgiref_server,
)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples" / "frameworks"))
import django_app  # configures Django's settings once, guarded by settings.configured
import fastapi_app
import flask_app
import litestar_app
import plain_wsgi
import raw_asgi
import starlette_app

pytestmark = pytest.mark.redis

Factory = Callable[[str, str], Any]  # (key, redis_url) -> app

ASGI: dict[str, Factory] = {
    "starlette": starlette_app.create_app,
    "fastapi": fastapi_app.create_app,
    "litestar": litestar_app.create_app,
    "raw_asgi": raw_asgi.create_app,
    "django_asgi": lambda key, redis_url: django_app.asgi_app(key=key, redis_url=redis_url),
}
WSGI: dict[str, Factory] = {
    "flask": flask_app.create_app,
    "django_wsgi": lambda key, redis_url: django_app.wsgi_app(key=key, redis_url=redis_url),
    "plain_wsgi": plain_wsgi.create_app,
}
NO_LIFESPAN = {"django_asgi"}  # Django's ASGIHandler raises on the lifespan scope


@pytest.mark.parametrize("name", ASGI)
def test_asgi_example_in_process(name: str, redis_url: str, make_token: TokenFactory) -> None:
    with asgi_client(ASGI[name](SECRET, redis_url), lifespan=name not in NO_LIFESPAN) as client:
        check_logout_flow(client, make_token())


@pytest.mark.parametrize("name", WSGI)
def test_wsgi_example_in_process(name: str, redis_url: str, make_token: TokenFactory) -> None:
    with wsgi_client(WSGI[name](SECRET, redis_url)) as client:
        check_logout_flow(client, make_token())


Server = Callable[[Any], AbstractContextManager[str]]
REAL = [(uvicorn_server, name) for name in ASGI] + [(hypercorn_server, name) for name in ASGI]


@pytest.mark.parametrize(("server", "name"), REAL, ids=[f"{s.__name__}-{n}" for s, n in REAL])
def test_asgi_example_served(server: Server, name: str, redis_url: str, make_token: TokenFactory) -> None:
    with server(ASGI[name](SECRET, redis_url)) as address, httpx.Client(base_url=f"http://{address}") as client:
        check_logout_flow(client, make_token())


@pytest.mark.parametrize("name", WSGI)
def test_wsgi_example_served_by_wsgiref(name: str, redis_url: str, make_token: TokenFactory) -> None:
    with wsgiref_server(WSGI[name](SECRET, redis_url)) as address, httpx.Client(base_url=f"http://{address}") as client:
        check_logout_flow(client, make_token())


@pytest.fixture
def starlette_served(redis_url: str) -> Iterator[str]:
    with uvicorn_server(starlette_app.create_app(SECRET, redis_url)) as address:
        yield address


def test_websocket_through_uvicorn(starlette_served: str, make_token: TokenFactory) -> None:
    revoked, valid = make_token(), make_token(jti="j-2", sid="s-2")
    with httpx.Client(base_url=f"http://{starlette_served}") as client:
        assert client.post("/auth/logout", headers={"Authorization": f"Bearer {revoked}"}).status_code == 200
    url = f"ws://{starlette_served}/ws"
    with connect(url, additional_headers={"Authorization": f"Bearer {valid}"}, open_timeout=5) as ws:
        assert json.loads(ws.recv(timeout=5)) == {"sub": "alice"}
    with pytest.raises(InvalidStatus) as refused:
        connect(url, additional_headers={"Authorization": f"Bearer {revoked}"}, open_timeout=5)
    # uvicorn offers the ASGI denial-response extension: signout's own 401, before accept.
    assert refused.value.response.status_code == 401
    assert json.loads(refused.value.response.body or b"{}") == {
        "error": "invalid_token",
        "message": "Token has been revoked",
    }


def test_revocations_cross_adapters(redis_url: str, make_token: TokenFactory) -> None:
    """Flask (WSGI) and FastAPI (ASGI) on one Redis: a logout through either is honoured by the other."""
    first, first_refresh = make_token(jti="j-1", sid="s-1"), make_token(jti="j-1r", sid="s-1")
    second = make_token(jti="j-2", sid="s-2")
    flask = flask_app.create_app(SECRET, redis_url)
    fastapi = fastapi_app.create_app(SECRET, redis_url)
    with wsgi_client(flask) as wsgi, asgi_client(fastapi) as asgi:
        for client in (wsgi, asgi):
            assert [status_of(client, t) for t in (first, first_refresh, second)] == [200, 200, 200]

        assert wsgi.post("/auth/logout", headers={"Authorization": f"Bearer {first}"}).status_code == 200
        # The token and its session (the refresh token of the same login) die for the ASGI app too.
        assert [status_of(asgi, t) for t in (first, first_refresh, second)] == [401, 401, 200]

        assert asgi.post("/auth/logout", headers={"Authorization": f"Bearer {second}"}).status_code == 200
        assert [status_of(wsgi, t) for t in (first, first_refresh, second)] == [401, 401, 401]


def test_walkthrough_runs_against_redis(redis_url: str, root: Any) -> None:
    result = subprocess.run(
        [sys.executable, str(root / "examples" / "walkthrough.py")],
        env={"REDIS_URL": redis_url, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    steps = [line for line in result.stdout.splitlines() if re.match(r"^\d+\. ", line)]
    assert [line.split("->")[1].split()[:2] for line in steps] == [
        ["200", "ok"],
        ["200", "ok"],
        ["200", "ok"],
        ["401", "ok"],
        ["401", "ok"],
        ["200", "ok"],
        ["200", "ok"],
        ["200", "ok"],
        ["200", "ok"],
        ["401", "ok"],
        ["401", "ok"],
    ]
    assert "eyJ" not in result.stdout  # no token printed
