"""Helpers more than one test module uses.

Fixtures live in ``conftest.py``, the wrapped apps in ``apps.py``, real servers in
``framework_helpers.py``, and tokens shaped as their issuers mint them in ``issuers.py``.
"""

from __future__ import annotations

import base64
import io
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from signout import SignOutMiddleware, SignOutWSGIMiddleware
from signout.cli import main

from .apps import starlette_app, wsgi_app
from .conftest import SECRET, PEP3333Transport

ADAPTERS = ("asgi", "wsgi")
#: The secret of the revocation endpoint's client ``billing``.
CLIENT_SECRET = "billing-secret-0123456789"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def earlier(seconds: int = 5) -> int:
    return int(time.time()) - seconds


def basic(client_id: str = "billing", secret: str = CLIENT_SECRET) -> dict[str, str]:
    """HTTP Basic credentials of a client of the revocation endpoint."""
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


# ---- the test app behind either adapter --------------------------------------------------------


def middleware(adapter: str, **kwargs: Any) -> Any:
    kwargs.setdefault("key", SECRET)
    if adapter == "asgi":
        return SignOutMiddleware(starlette_app(), **kwargs)
    return SignOutWSGIMiddleware(wsgi_app(), **kwargs)


def http_client(adapter: str, app: Any, base_url: str = "https://app.test") -> Any:
    if adapter == "asgi":
        return TestClient(app, base_url=base_url)
    return httpx.Client(transport=PEP3333Transport(app), base_url=base_url)  # type: ignore[arg-type]


@contextmanager
def one_loop(adapter: str, app: Any) -> Iterator[Any]:
    """A client whose requests share one event loop (ASGI), so the store's connections last."""
    if adapter == "asgi":
        with TestClient(app, base_url="https://app.test") as client:
            yield client
    else:
        yield http_client(adapter, app)


def signout_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "signout"]


# ---- the command line ----------------------------------------------------------------------------

# The console script pip installs next to the interpreter; `python -m signout` where there is none.
_SCRIPT = Path(sys.executable).with_name("signout")
SIGNOUT = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "signout"]
REVOKED_LINE = r"revoked: {what}; kept until \d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\dZ in key signout:\{{[0-9a-f]{{4}}\}}"


def cli(*args: str, url: str | None, stdin: str = "", **env: str) -> subprocess.CompletedProcess[str]:
    """The installed ``signout`` script, run with ``REDIS_URL=url`` (unset for ``None``) and ``env``."""
    environ = {"PATH": os.environ.get("PATH", ""), **env}
    if url is not None:
        environ["REDIS_URL"] = url
    return subprocess.run(
        [*SIGNOUT, *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=environ,
        timeout=60,
        check=False,
    )


def in_process(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *argv: str, stdin: str = ""
) -> tuple[int, str, str]:
    """``signout.cli.main(argv)`` in this process: its exit code, stdout and stderr."""
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


async def asgi_status(app: Any, token: str, path: str = "/me", method: str = "GET") -> int:
    """One request with ``token`` as its Bearer straight into the ASGI ``app``, in this event loop
    (as a server hands it over, nothing in between); the status it answered."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "https",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"app.test"), (b"authorization", f"Bearer {token}".encode())],
        "client": ("127.0.0.1", 50000),
        "server": ("app.test", 443),
    }
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    await app(scope, receive, send)
    return statuses[0]


class Clock:
    """Monotonic seconds that move only when told (a ``KeySet``'s clock in tests)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
