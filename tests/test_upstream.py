"""Upstream logout (``upstream_logout``, ``signout.upstream``; SPEC section 10).

Each preset against a small server on 127.0.0.1 that implements its provider's logout
endpoint as the provider documents it (``../shared/seeds/``), failure answers included,
through both adapters; a provider that never answers; the event loop left free meanwhile;
RFC 7009 against the real OpenID Provider of ``tests/oidc_provider.py``; the config errors.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest

from signout import AuditEvent, ConfigError, MemoryStore
from signout.upstream import RFC7009, Call, Casdoor, CentralAuth, MubarokahID, Preset

from .conftest import TokenFactory
from .helpers import ADAPTERS, bearer, http_client, middleware
from .oidc_provider import OIDCProvider, oidc_provider_fixture  # noqa: F401  (the fixture "oidc_provider")

CLIENT_ID = "shop"
CLIENT_SECRET = "shop-secret-0123456789"
LOGGED_OUT = "Logged out successfully"
REVOKED = "Token has been revoked"


@dataclass
class Seen:
    """One request the provider received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Provider:
    """A logout endpoint as one seed documents it. ``valid``: the tokens it knows (a logout
    ends them, so a second one gets the documented refusal); ``mode``: ``normal``, ``hang``
    (never answers), ``redirect`` (302 elsewhere) or ``refuse`` (Casdoor's 200 with status error)."""

    name: str
    server: ThreadingHTTPServer
    seen: list[Seen] = field(default_factory=list)
    valid: set[str] = field(default_factory=set)
    mode: str = "normal"
    release: threading.Event = field(default_factory=threading.Event)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def preset(self) -> Preset:
        if self.name == "casdoor":
            return Casdoor(self.base)
        if self.name == "mubarokah":
            return MubarokahID(self.base)
        if self.name == "centralauth":
            return CentralAuth(CLIENT_ID, CLIENT_SECRET, base_url=self.base)
        auth = "client_secret_post" if self.name == "rfc7009_post" else "client_secret_basic"
        return RFC7009(f"{self.base}/oauth/revoke", CLIENT_ID, CLIENT_SECRET, auth=auth)  # type: ignore[arg-type]


def basic_ok(headers: dict[str, str]) -> bool:
    expected = "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
    return headers.get("authorization") == expected


def bearer_of(headers: dict[str, str]) -> str | None:
    auth = headers.get("authorization", "")
    return auth[7:] if auth.startswith("Bearer ") else None


def answer_as_documented(p: Provider, seen: Seen) -> tuple[int, dict[str, str], bytes]:
    """What the provider answers, as its seed says (status, headers, body)."""
    as_json = {"Content-Type": "application/json"}
    if p.name == "casdoor":  # 002: POST /api/sso-logout, Bearer; {"status","msg","data"}; 401 for a bad token
        if seen.method not in ("GET", "POST") or seen.path != "/api/sso-logout":
            return 404, as_json, b'{"status":"error","msg":"not found","data":""}'
        token = bearer_of(seen.headers)
        if token not in p.valid:
            return 401, as_json, b'{"status":"error","msg":"Unauthorized operation","data":""}'
        if p.mode == "refuse":
            return 200, as_json, b'{"status":"error","msg":"the user is not allowed to log out","data":""}'
        p.valid.discard(token)
        return 200, as_json, b'{"status":"ok","msg":"","data":""}'
    if p.name == "mubarokah":  # 000: GET /api/logout-sso, Bearer; 200 message; 401 Unauthenticated.
        if seen.method != "GET" or seen.path != "/api/logout-sso":
            return 405, as_json, b'{"message":"Method not allowed."}'
        token = bearer_of(seen.headers)
        if token not in p.valid:
            return 401, as_json, b'{"message":"Unauthenticated."}'
        p.valid.discard(token)
        return 200, as_json, b'{"message":"Successfully logged out from SSO session"}'
    if p.name == "centralauth":  # 001: POST /api/v1/logout, Basic client creds, text/plain token body; 200 empty
        if seen.method != "POST" or seen.path != "/api/v1/logout":
            return 404, {"Content-Type": "text/plain"}, b"Not found"
        if not basic_ok(seen.headers):
            return 401, {"Content-Type": "text/plain"}, b"Invalid client credentials"
        token = seen.body.decode()
        if seen.headers.get("content-type") != "text/plain" or token not in p.valid:
            return 400, {"Content-Type": "text/plain"}, b"Invalid access token"
        p.valid.discard(token)
        return 200, {}, b""
    # RFC 7009 section 2.1 (form, client authentication) and 2.2 (200 also for unknown tokens)
    form = {k: v[0] for k, v in parse_qs(seen.body.decode()).items()}
    if seen.method != "POST" or seen.path != "/oauth/revoke":
        return 405, as_json, b'{"error":"invalid_request"}'
    if p.name == "rfc7009_post":
        client_ok = form.get("client_id") == CLIENT_ID and form.get("client_secret") == CLIENT_SECRET
    else:
        client_ok = basic_ok(seen.headers)
    if not client_ok:
        return 401, as_json, b'{"error":"invalid_client"}'
    if "token" not in form:
        return 400, as_json, b'{"error":"invalid_request"}'
    if form["token"] not in p.valid:
        return 400, as_json, b'{"error":"unsupported_token_type"}'
    p.valid.discard(form["token"])
    return 200, {}, b""


def start_provider(name: str) -> Provider:
    holder: list[Provider] = []

    class Handler(BaseHTTPRequestHandler):
        def handle_one(self) -> None:
            p = holder[0]
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            seen = Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            p.seen.append(seen)
            if p.mode == "hang":
                p.release.wait(10)
                return
            if p.mode == "redirect":
                status, headers, out = 302, {"Location": f"{p.base}/elsewhere"}, b""
            else:
                status, headers, out = answer_as_documented(p, seen)
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        do_GET = do_POST = handle_one

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    holder.append(Provider(name, server))
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    return holder[0]


PROVIDERS = ("casdoor", "mubarokah", "centralauth", "rfc7009_basic", "rfc7009_post")


@pytest.fixture(params=PROVIDERS)
def provider(request: pytest.FixtureRequest) -> Iterator[Provider]:
    p = start_provider(request.param)
    yield p
    p.release.set()
    p.server.shutdown()
    p.server.server_close()


@pytest.fixture
def casdoor() -> Iterator[Provider]:
    p = start_provider("casdoor")
    yield p
    p.release.set()
    p.server.shutdown()
    p.server.server_close()


def app_for(adapter: str, preset: Preset, events: list[AuditEvent] | None = None, **kwargs: Any) -> Any:
    if events is not None:
        kwargs["on_event"] = events.append
    return middleware(adapter, store=MemoryStore(warn=False), upstream_logout=preset, **kwargs)


def expected_request(p: Provider, raw: str) -> tuple[str, str, dict[str, str], bytes]:
    """Method, path, the headers that matter and the body, as each seed documents them."""
    basic = "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
    if p.name == "casdoor":  # curl -X POST .../api/sso-logout -H "Authorization: Bearer YOUR_ACCESS_TOKEN"
        return "POST", "/api/sso-logout", {"authorization": f"Bearer {raw}"}, b""
    if p.name == "mubarokah":  # GET .../api/logout-sso; Authorization: Bearer ...; Accept: application/json
        return "GET", "/api/logout-sso", {"authorization": f"Bearer {raw}", "accept": "application/json"}, b""
    if p.name == "centralauth":  # curl -X POST .../api/v1/logout -H "Authorization: Basic ..." text/plain -d TOKEN
        return "POST", "/api/v1/logout", {"authorization": basic, "content-type": "text/plain"}, raw.encode()
    form = "application/x-www-form-urlencoded"
    if p.name == "rfc7009_post":
        body = f"token={raw}&token_type_hint=access_token&client_id={CLIENT_ID}&client_secret={CLIENT_SECRET}"
        return "POST", "/oauth/revoke", {"content-type": form}, body.encode()
    body = f"token={raw}&token_type_hint=access_token"
    return "POST", "/oauth/revoke", {"authorization": basic, "content-type": form}, body.encode()


# ---- each preset, through both adapters --------------------------------------------------------------


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_each_preset_sends_its_documented_request_after_the_local_logout(
    adapter: str, provider: Provider, make_token: TokenFactory
) -> None:
    raw = make_token()
    provider.valid.add(raw)
    events: list[AuditEvent] = []
    client = http_client(adapter, app_for(adapter, provider.preset(), events))
    r = client.post("/auth/logout", headers=bearer(raw))
    assert r.status_code == 200, r.text
    assert r.json() == {"message": LOGGED_OUT, "upstream": "ok"}
    assert "refresh_token=" in r.headers["set-cookie"]
    [seen] = provider.seen
    method, path, headers, body = expected_request(provider, raw)
    assert (seen.method, seen.path, seen.body) == (method, path, body)
    assert {k: seen.headers.get(k) for k in headers} == headers
    if provider.name in ("casdoor", "mubarokah"):
        assert "content-type" not in seen.headers  # no body, none declared
    if provider.name == "rfc7009_post":
        assert "authorization" not in seen.headers
    assert raw not in provider.valid  # the provider ended it
    # The local logout was recorded: the token is dead here too.
    again = client.get("/me", headers=bearer(raw))
    assert again.status_code == 401 and again.json()["message"] == REVOKED
    event = events[0]  # then the guard's "rejected"
    assert (event.event, event.outcome, event.upstream, event.jti) == ("logout", "revoked", "ok", "j-1")


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_a_provider_refusing_the_token_is_failed_and_the_local_logout_stands(
    adapter: str, provider: Provider, make_token: TokenFactory, caplog: pytest.LogCaptureFixture
) -> None:
    raw = make_token()  # not among the provider's tokens: its documented refusal (401, 400)
    events: list[AuditEvent] = []
    client = http_client(adapter, app_for(adapter, provider.preset(), events))
    r = client.post("/auth/logout", headers=bearer(raw))
    assert r.status_code == 200, r.text
    assert r.json() == {"message": LOGGED_OUT, "upstream": "failed"}
    assert len(provider.seen) == 1
    assert client.get("/me", headers=bearer(raw)).status_code == 401
    assert (events[0].outcome, events[0].upstream) == ("revoked", "failed")
    warnings = [rec.getMessage() for rec in caplog.records if "upstream logout" in rec.getMessage()]
    assert warnings and "answered HTTP 40" in warnings[0]
    assert all(raw not in rec.getMessage() for rec in caplog.records)  # the token is never logged


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_an_invalid_token_revokes_nothing_and_skips_the_provider(
    adapter: str, provider: Provider, make_token: TokenFactory
) -> None:
    raw = make_token(key="not-the-secret-0123456789abcdef-0123456789")
    events: list[AuditEvent] = []
    client = http_client(adapter, app_for(adapter, provider.preset(), events))
    r = client.post("/auth/logout", headers=bearer(raw))
    assert r.status_code == 200
    assert r.json() == {"message": LOGGED_OUT, "upstream": "skipped"}
    assert provider.seen == []
    assert (events[0].outcome, events[0].upstream) == ("nothing_revoked", "skipped")


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_logout_all_tells_the_provider_once_the_user_is_revoked(
    adapter: str, casdoor: Provider, make_token: TokenFactory
) -> None:
    raw, other = make_token(), make_token(jti="j-2", sid="s-2")
    casdoor.valid.add(raw)
    events: list[AuditEvent] = []
    client = http_client(adapter, app_for(adapter, casdoor.preset(), events))
    r = client.post("/auth/logout-all", headers=bearer(raw))
    assert r.status_code == 200
    assert r.json() == {"message": "Successfully logged out from SSO session", "upstream": "ok"}
    assert client.get("/me", headers=bearer(other)).status_code == 401
    assert (events[0].event, events[0].upstream) == ("logout_all", "ok")
    # Already logged out: refused here, and the provider is not asked again.
    r = client.post("/auth/logout-all", headers=bearer(raw))
    assert r.status_code == 401 and r.json() == {"message": "Unauthenticated.", "upstream": "skipped"}
    assert len(casdoor.seen) == 1


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_casdoor_answering_status_error_is_failed(adapter: str, casdoor: Provider, make_token: TokenFactory) -> None:
    raw = make_token()
    casdoor.valid.add(raw)
    casdoor.mode = "refuse"
    client = http_client(adapter, app_for(adapter, casdoor.preset()))
    assert client.post("/auth/logout", headers=bearer(raw)).json()["upstream"] == "failed"
    assert client.get("/me", headers=bearer(raw)).status_code == 401


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_a_redirect_from_the_provider_is_not_followed(
    adapter: str, casdoor: Provider, make_token: TokenFactory
) -> None:
    raw = make_token()
    casdoor.mode = "redirect"
    client = http_client(adapter, app_for(adapter, casdoor.preset()))
    assert client.post("/auth/logout", headers=bearer(raw)).json()["upstream"] == "failed"
    assert [s.path for s in casdoor.seen] == ["/api/sso-logout"]


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_a_provider_that_is_down_is_failed(adapter: str, make_token: TokenFactory) -> None:
    from .conftest import free_port

    raw = make_token()
    client = http_client(adapter, app_for(adapter, MubarokahID(f"http://127.0.0.1:{free_port()}")))
    r = client.post("/auth/logout", headers=bearer(raw))
    assert r.status_code == 200 and r.json()["upstream"] == "failed"
    assert client.get("/me", headers=bearer(raw)).status_code == 401


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_a_provider_that_never_answers_costs_at_most_upstream_timeout(
    adapter: str, casdoor: Provider, make_token: TokenFactory
) -> None:
    raw = make_token()
    casdoor.mode = "hang"
    client = http_client(adapter, app_for(adapter, casdoor.preset(), upstream_timeout=0.5))
    started = time.monotonic()
    r = client.post("/auth/logout", headers=bearer(raw))
    elapsed = time.monotonic() - started
    assert r.status_code == 200 and r.json()["upstream"] == "failed"
    assert 0.45 <= elapsed < 1.0, elapsed
    assert len(casdoor.seen) == 1
    assert client.get("/me", headers=bearer(raw)).status_code == 401


def test_the_event_loop_is_not_blocked_while_the_provider_is_slow(casdoor: Provider, make_token: TokenFactory) -> None:
    raw = make_token()
    casdoor.mode = "hang"
    app = app_for("asgi", casdoor.preset(), upstream_timeout=1.0)

    async def scenario() -> tuple[float, float, httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="https://app.test") as client:
            started = time.monotonic()
            logout = asyncio.ensure_future(client.post("/auth/logout", headers=bearer(raw)))
            while not casdoor.seen:  # noqa: ASYNC110 - set by the provider's thread: the call is under way
                await asyncio.sleep(0.01)
            health = await client.get("/health")
            assert health.status_code == 200
            answered = time.monotonic() - started
            out = await logout
            return answered, time.monotonic() - started, out

    answered, finished, out = asyncio.run(scenario())
    assert answered < 0.5 and finished >= 0.95, (answered, finished)
    assert out.json()["upstream"] == "failed"


def test_no_upstream_logout_no_upstream_member(make_token: TokenFactory) -> None:
    client = http_client("asgi", middleware("asgi", store=MemoryStore(warn=False)))
    assert client.post("/auth/logout", headers=bearer(make_token())).json() == {"message": LOGGED_OUT}


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_a_return_to_redirect_is_unchanged_and_the_audit_event_has_the_outcome(
    adapter: str, casdoor: Provider, make_token: TokenFactory
) -> None:
    raw = make_token()
    casdoor.valid.add(raw)
    events: list[AuditEvent] = []
    app = app_for(adapter, casdoor.preset(), events, allowed_redirects=["https://app.test"])
    r = http_client(adapter, app).post(
        "/auth/logout?return_to=https://app.test/bye", headers=bearer(raw), follow_redirects=False
    )
    assert r.status_code == 303 and r.headers["location"] == "https://app.test/bye" and r.content == b""
    assert events[0].upstream == "ok"


# ---- RFC 7009 at a real OpenID Provider ----------------------------------------------------------------


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_rfc7009_at_the_op_refuses_a_jwt_access_token_and_the_local_logout_stands(
    adapter: str, oidc_provider: OIDCProvider
) -> None:
    op = oidc_provider
    op.reset()
    login = op.login("alice")
    preset = RFC7009(op.revocation_endpoint, op.client_id, op.client_secret)
    app = middleware(
        adapter,
        key=None,
        jwks_url=op.jwks_uri,
        issuer=op.issuer,
        audience=op.resource,
        store=MemoryStore(warn=False),
        upstream_logout=preset,
    )
    client = http_client(adapter, app)
    assert client.get("/me", headers=bearer(login.access_token)).status_code == 200
    r = client.post("/auth/logout", headers=bearer(login.access_token))
    # oidc-provider revokes opaque tokens only: a JWT access token gets 400 unsupported_token_type.
    assert r.status_code == 200 and r.json()["upstream"] == "failed"
    assert client.get("/me", headers=bearer(login.access_token)).status_code == 401
    # The preset's request is one the OP accepts: its own client authentication passes.
    assert login.refresh_token is not None
    call = RFC7009(op.revocation_endpoint, op.client_id, op.client_secret, token="refresh").call(login.refresh_token)
    from signout.upstream import send

    assert send(call, 5.0) is None
    assert op.introspect(login.refresh_token)["active"] is False


@pytest.mark.parametrize("carried", ["cookie", "body", "cookie, no access token"])
@pytest.mark.parametrize("adapter", ADAPTERS)
def test_rfc7009_revokes_the_ops_opaque_refresh_token_there(
    adapter: str, carried: str, oidc_provider: OIDCProvider
) -> None:
    op = oidc_provider
    op.reset()
    login = op.login("alice")
    refresh = login.refresh_token
    assert refresh is not None and refresh.count(".") != 2  # opaque: only the OP can judge it
    preset = RFC7009(op.revocation_endpoint, op.client_id, op.client_secret, token="refresh")
    app = middleware(
        adapter,
        key=None,
        jwks_url=op.jwks_uri,
        issuer=op.issuer,
        audience=op.resource,
        store=MemoryStore(warn=False),
        upstream_logout=preset,
        refresh_cookie_path="/auth",  # the cookie reaches /auth/logout too
    )
    client = http_client(adapter, app)
    headers = {} if carried == "cookie, no access token" else bearer(login.access_token)
    if carried == "body":
        r = client.post("/auth/logout", headers=headers, json={"refresh": refresh})
    else:
        r = client.post("/auth/logout", headers={**headers, "Cookie": f"refresh_token={refresh}"})
    if not headers:
        # No token that verified beside it: signout sends the OP nothing on an unknown string's word.
        assert r.status_code == 200 and r.json()["upstream"] == "skipped", r.text
        assert op.introspect(refresh)["active"] is True
        return
    assert r.status_code == 200 and r.json()["upstream"] == "ok", r.text
    assert op.introspect(refresh)["active"] is False
    assert client.get("/me", headers=bearer(login.access_token)).status_code == 401  # and here


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_an_opaque_refresh_token_with_odd_bytes_is_never_sent(
    adapter: str, make_token: TokenFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Call] = []

    def record(call: Call, timeout: float) -> str | None:
        calls.append(call)
        return None

    monkeypatch.setattr("signout.upstream.send", record)
    preset = RFC7009("https://op.example/revoke", CLIENT_ID, CLIENT_SECRET, token="refresh")
    app = middleware(adapter, store=MemoryStore(warn=False), upstream_logout=preset, refresh_cookie_path="/auth")
    client = http_client(adapter, app)
    for cookie in ('refresh_token="a b"', "refresh_token=" + "x" * 20000, "refresh_token=a.b.c=", "refresh_token=x.y"):
        r = client.post("/auth/logout", headers={**bearer(make_token()), "Cookie": cookie})
        assert r.status_code == 200 and r.json()["upstream"] == "skipped", cookie
    r = client.post("/auth/logout", headers={**bearer(make_token()), "Cookie": "refresh_token=opaque-1"})
    assert r.json()["upstream"] == "ok"
    assert [c.body for c in calls] == [b"token=opaque-1&token_type_hint=refresh_token"]


# ---- the presets, sans I/O -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "why"),
    [
        (200, b'{"status":"ok","msg":"","data":""}', None),
        (200, b'{"status":"error","msg":"nope","data":""}', "answered status 'error': 'nope'"),
        (200, b"<html>", "answered 200 with a body that is not JSON"),
        (401, b'{"status":"error"}', "answered HTTP 401"),
    ],
)
def test_casdoor_is_ok_only_with_status_ok(status: int, body: bytes, why: str | None) -> None:
    assert Casdoor("https://door.casdoor.com").call("t").judge(status, body) == why


def test_every_preset_builds_its_call() -> None:
    calls: list[Call] = [
        Casdoor("https://door.casdoor.com/").call("T"),
        MubarokahID().call("T"),
        CentralAuth("id", "s3cret").call("T"),
        RFC7009("https://op.example/revoke", "a b", "p:w", token="refresh").call("T"),
    ]
    assert [(c.method, c.url) for c in calls] == [
        ("POST", "https://door.casdoor.com/api/sso-logout"),
        ("GET", "https://accounts.mubarokah.com/api/logout-sso"),
        ("POST", "https://centralauth.com/api/v1/logout"),
        ("POST", "https://op.example/revoke"),
    ]
    # RFC 6749 section 2.3.1: id and secret form-encoded, then joined for Basic.
    assert dict(calls[3].headers)["Authorization"] == "Basic " + base64.b64encode(b"a+b:p%3Aw").decode()
    assert calls[3].body == b"token=T&token_type_hint=refresh_token"
    assert "s3cret" not in repr(CentralAuth("id", "s3cret"))


Bad = Callable[[], object]


@pytest.mark.parametrize(
    ("build", "kwarg", "says"),
    [
        (lambda: Casdoor("http://door.example"), "upstream_logout", "loopback"),
        (lambda: Casdoor("ftp://door.example"), "upstream_logout", "https://"),
        (lambda: Casdoor("https://user:pw@door.example"), "upstream_logout", "credentials"),
        (lambda: MubarokahID("https://x.example:port"), "upstream_logout", "does not parse"),
        (lambda: CentralAuth("", "secret"), "upstream_logout", "client_id"),
        (lambda: CentralAuth("a:b", "secret"), "upstream_logout", "':'"),
        (lambda: RFC7009("https://op.example/r", "id", "s", auth="none"), "upstream_logout", "auth"),  # type: ignore[arg-type]
        (lambda: RFC7009("https://op.example/r", "id", "s", token="id"), "upstream_logout", "token"),  # type: ignore[arg-type]
    ],
)
def test_a_bad_preset_is_a_config_error(build: Bad, kwarg: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build()
    assert caught.value.kwarg == kwarg and says in str(caught.value)


@pytest.mark.parametrize(
    ("kwargs", "kwarg"),
    [
        ({"upstream_logout": "casdoor"}, "upstream_logout"),
        ({"upstream_logout": {"base_url": "https://door.example"}}, "upstream_logout"),
        ({"upstream_timeout": 0}, "upstream_timeout"),
        ({"upstream_timeout": 31}, "upstream_timeout"),
        ({"upstream_timeout": "5"}, "upstream_timeout"),
        ({"upstream_timeout": float("nan")}, "upstream_timeout"),
    ],
)
@pytest.mark.parametrize("adapter", ADAPTERS)
def test_bad_upstream_kwargs_are_config_errors(adapter: str, kwargs: dict[str, Any], kwarg: str) -> None:
    with pytest.raises(ConfigError) as caught:
        middleware(adapter, store=MemoryStore(warn=False), **kwargs)
    assert caught.value.kwarg == kwarg


def test_the_audit_record_carries_the_outcome_not_the_token(
    casdoor: Provider, make_token: TokenFactory, caplog: pytest.LogCaptureFixture
) -> None:
    raw = make_token()
    casdoor.valid.add(raw)
    with caplog.at_level("INFO", logger="signout.audit"):
        http_client("asgi", app_for("asgi", casdoor.preset())).post("/auth/logout", headers=bearer(raw))
    [line] = [json.loads(r.getMessage()) for r in caplog.records if r.name == "signout.audit"]
    assert line["upstream"] == "ok" and line["outcome"] == "revoked"
    assert raw not in caplog.text
