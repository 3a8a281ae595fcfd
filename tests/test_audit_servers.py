"""The README's way to see ``signout.audit`` records under real servers: uvicorn, gunicorn with
uvicorn workers, gunicorn with sync workers, each started as an operator would, with
``examples/logging.json``. Without it, the same servers show none."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from .conftest import SECRET, TokenFactory, free_port

APP = textwrap.dedent(
    """
    import os

    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from signout import SignOutMiddleware, SignOutWSGIMiddleware

    options = {"key": os.environ["SIGNOUT_TEST_KEY"], "redis_url": os.environ["REDIS_URL"]}


    async def hello(request):
        return PlainTextResponse("hello")


    asgi = SignOutMiddleware(Starlette(routes=[Route("/", hello)]), **options)


    def _plain(environ, start_response):
        start_response("200 OK", [("content-type", "text/plain")])
        return [b"hello"]


    wsgi = SignOutWSGIMiddleware(_plain, **options)
    """
)

BIN = Path(sys.executable).parent
COMMANDS = {
    "uvicorn": [str(BIN / "uvicorn"), "app:asgi", "--log-config", "{config}", "--port", "{port}"],
    "gunicorn-uvicorn-worker": [
        str(BIN / "gunicorn"), "app:asgi", "-k", "uvicorn.workers.UvicornWorker",
        "--log-config-json", "{config}", "-b", "127.0.0.1:{port}",
    ],
    "gunicorn-sync": [str(BIN / "gunicorn"), "app:wsgi", "--log-config-json", "{config}", "-b", "127.0.0.1:{port}"],
}  # fmt: skip


def serve_and_log_out(
    name: str, config: Path | None, tmp_path: Path, redis_url: str, make_token: TokenFactory
) -> list[dict[str, object]]:
    """Start the server, log a token out, stop it; the audit records it printed."""
    (tmp_path / "app.py").write_text(APP)
    port = free_port()
    command = [part.format(config=config, port=port) for part in COMMANDS[name]]
    if config is None:
        at = command.index("--log-config" if name == "uvicorn" else "--log-config-json")
        del command[at : at + 2]
    env = {"SIGNOUT_TEST_KEY": SECRET, "REDIS_URL": redis_url, "PATH": str(BIN), "PYTHONPATH": str(tmp_path)}
    log = tmp_path / "stderr.txt"
    with log.open("wb") as err:
        process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=err)
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    answer = httpx.post(
                        f"http://127.0.0.1:{port}/auth/logout", headers={"Authorization": f"Bearer {make_token()}"}
                    )
                    break
                except httpx.TransportError:
                    assert process.poll() is None, log.read_text()
                    assert time.monotonic() < deadline, f"{name} did not start"
                    time.sleep(0.1)
            assert answer.status_code == 200, answer.text
        finally:
            process.terminate()
            process.wait(20)
    records = []
    for line in log.read_text().splitlines():
        if " signout.audit " in line:
            records.append(json.loads(line.partition(" signout.audit ")[2]))
    return records


@pytest.mark.parametrize("name", COMMANDS)
def test_the_readme_logging_config_shows_audit_records(
    name: str, root: Path, tmp_path: Path, redis_url: str, make_token: TokenFactory
) -> None:
    records = serve_and_log_out(name, root / "examples" / "logging.json", tmp_path, redis_url, make_token)
    assert [(r["event"], r["outcome"], r["sub"]) for r in records] == [("logout", "revoked", "alice")]
    assert all(SECRET not in json.dumps(r) for r in records)


@pytest.mark.parametrize("name", ["uvicorn", "gunicorn-sync"])
def test_without_it_the_servers_show_none(name: str, tmp_path: Path, redis_url: str, make_token: TokenFactory) -> None:
    # Why the README section exists: the default configs drop another library's INFO records.
    assert serve_and_log_out(name, None, tmp_path, redis_url, make_token) == []
