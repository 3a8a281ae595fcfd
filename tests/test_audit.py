"""Audit records and outage reports (``signout.audit``).

Every kind of event, never a token, and a failing sink never breaks a logout (``AuditEvent``,
``Auditor``); a failing store check logged with where and why, then once per period with a count
(``OutageLog``). ``test_audit_servers.py``: the records under real servers, as the README sets them up.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable

import pytest
from starlette.testclient import TestClient

from signout import AuditEvent

from .conftest import ISS, PASSWORD, TokenFactory, free_port
from .helpers import ADAPTERS, CLIENT_SECRET, basic, bearer, earlier, http_client, middleware, signout_lines

Client = Callable[..., TestClient]


def test_audit_records_every_kind_of_event_and_never_a_token(
    client: Client, make_token: TokenFactory, caplog: pytest.LogCaptureFixture
) -> None:
    events: list[AuditEvent] = []
    c = client(on_event=events.append, access_cookie="access_token", clients={"billing": CLIENT_SECRET})
    tokens = [make_token(jti=f"j{i}", sid=f"s{i}", iat=earlier()) for i in range(4)]
    with caplog.at_level(logging.INFO, logger="signout.audit"):
        c.post("/auth/logout", headers=bearer(tokens[0]))
        c.get("/me", headers=bearer(tokens[0]))
        c.get("/me", headers=bearer("x.y.z"))
        c.post("/auth/logout-all", headers={"Cookie": f"access_token={tokens[1]}", "Sec-Fetch-Site": "cross-site"})
        c.post("/auth/revoke", headers=basic(), data={"token": tokens[2]})
        c.post("/auth/revoke", headers=basic(secret="nope-nope-nope-nope"), data={"token": tokens[2]})
        c.post("/auth/logout-all", headers=bearer(tokens[3]))
    seen = [(e.event, e.outcome) for e in events]
    assert seen == [
        ("logout", "revoked"),
        ("rejected", "revoked"),
        ("rejected", "invalid_token"),
        ("csrf_refused", "refused"),
        ("revocation", "revoked"),
        ("revocation", "invalid_client"),
        ("logout_all", "revoked"),
    ]
    first = events[0]
    assert (first.iss, first.sub, first.sid, first.jti, first.path) == (ISS, "alice", "s0", "j0", "/auth/logout")
    assert first.client is not None
    assert events[4].client_id == "billing" and events[4].scope == "token"
    records = [json.loads(r.getMessage()) for r in caplog.records if r.name == "signout.audit"]
    assert [(r["event"], r["outcome"]) for r in records] == seen
    text = caplog.text + repr(events)
    for token in tokens:
        assert token not in text
        assert token.split(".")[2] not in text


def test_a_failing_audit_callback_never_breaks_a_logout(client: Client, make_token: TokenFactory) -> None:
    def explode(event: AuditEvent) -> None:
        raise RuntimeError("sink down")

    assert client(on_event=explode).post("/auth/logout", headers=bearer(make_token())).status_code == 200


# ---- a failing store check: where, why, how often ----------------------------------------------------


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_a_failed_check_names_the_address_and_cause_never_the_password(
    adapter: str, dead_url: str, make_token: TokenFactory, caplog: pytest.LogCaptureFixture
) -> None:
    port = dead_url.rsplit(":", 1)[1].split("/")[0]
    caplog.set_level(logging.WARNING, "signout")
    client = http_client(adapter, middleware(adapter, redis_url=dead_url))
    for _ in range(3):
        assert client.get("/me", headers=bearer(make_token())).status_code == 503
    lines = signout_lines(caplog)
    assert len(lines) == 1, lines  # one report, then quiet for 10 s
    line = lines[0]
    assert f"127.0.0.1:{port}" in line
    assert "ConnectionRefusedError" in line or "Connection refused" in line
    assert "more failed" not in line  # the first report counts nothing
    assert "requests with a token get 503 until it answers" in line
    assert PASSWORD not in caplog.text


def test_later_reports_count_the_failures_between(make_token: TokenFactory, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "signout")
    app = middleware("wsgi", redis_url=f"redis://127.0.0.1:{free_port()}/0", on_store_error="allow")
    app._outage._every = 0.2  # the 10 s of production, shortened for the test
    client = http_client("wsgi", app)
    for _ in range(4):
        assert client.get("/me", headers=bearer(make_token())).status_code == 200
    time.sleep(0.25)
    assert client.get("/me", headers=bearer(make_token())).status_code == 200
    first, second = signout_lines(caplog)
    assert first.endswith("requests are let through unchecked (on_store_error='allow')")
    assert "; 3 more failed since the last report; requests are let through" in second
