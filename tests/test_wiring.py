"""What both adapters share (``signout.wiring``): what a failed store write means, in the answer and the
log line ("not" against "may not have been" recorded), with the store's address and never its password."""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Iterator

import pytest

from .conftest import PASSWORD, RedisServer, TokenFactory
from .helpers import ADAPTERS, bearer, http_client, middleware, one_loop, signout_lines


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_a_refused_logout_says_not_recorded_with_the_address(
    adapter: str, dead_url: str, make_token: TokenFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "signout")
    client = http_client(adapter, middleware(adapter, redis_url=dead_url))
    r = client.post("/auth/logout", headers=bearer(make_token()))
    assert r.status_code == 503
    assert "the revocation was not recorded" in r.json()["message"]
    assert "set-cookie" in r.headers  # the browser's side of the logout still happens
    (line,) = [x for x in signout_lines(caplog) if "revocation" in x]
    assert line.startswith("signout: revocation NOT recorded: redis write failed: ConnectionError: Error 111")
    assert "[store redis://127.0.0.1:" in line
    assert PASSWORD not in caplog.text


@pytest.fixture
def pausable() -> Iterator[RedisServer]:
    """A redis-server of this test's own, to stop (SIGSTOP) and resume."""
    server = RedisServer().start()
    assert server.process is not None
    try:
        yield server
    finally:
        os.kill(server.process.pid, signal.SIGCONT)
        server.stop()


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_a_logout_during_a_pause_may_not_have_been_recorded_and_then_is(
    adapter: str, pausable: RedisServer, make_token: TokenFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """The issue's case: Redis paused, the write queued in its socket, the answer "not recorded",
    and the token revoked a moment later. The answer must say "may not have been"."""
    assert pausable.process is not None
    caplog.set_level(logging.WARNING, "signout")
    app = middleware(adapter, redis_url=pausable.url, store_timeout=0.3)
    token = make_token(jti="paused")
    with one_loop(adapter, app) as client:
        # Connections made first: the pause must meet the write itself, not a connection's handshake.
        assert client.post("/auth/logout", headers=bearer(make_token(jti="warm", sid="warm"))).status_code == 200
        assert client.get("/me", headers=bearer(token)).status_code == 200
        os.kill(pausable.process.pid, signal.SIGSTOP)
        try:
            r = client.post("/auth/logout", headers=bearer(token))
        finally:
            os.kill(pausable.process.pid, signal.SIGCONT)
        assert r.status_code == 503
        assert "it may not have been recorded" in r.json()["message"]
        assert r.headers["retry-after"] == "5"
        deadline = time.monotonic() + 5
        while client.get("/me", headers=bearer(token)).status_code != 401:
            assert time.monotonic() < deadline, "Redis never applied the write it had queued"
            time.sleep(0.05)
    (line,) = [x for x in signout_lines(caplog) if "recorded" in x]
    assert line.startswith("signout: revocation may NOT have been recorded (the store may still apply it): ")
    assert f"127.0.0.1:{pausable.port}" in line
