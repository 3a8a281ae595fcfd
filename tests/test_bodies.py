"""Refresh tokens in request bodies (``signout.bodies``, SPEC section 8), end to end through real servers.

Every case runs under uvicorn and hypercorn (ASGI) and werkzeug's threaded server
(WSGI, which dechunks ``Transfer-Encoding: chunked`` bodies and marks them with
``wsgi.input_terminated``). The wrapped app echoes the SHA-256 and length of the body
it read and the verified claims signout handed it, so each test can tell that the
exact bytes sent reached the app, and counts its calls, so a refusal can be told
from an app that answered. Raw sockets send what httpx would not: chunked bodies
split into many pieces, a body past ``max_body_bytes`` streamed without a length.

The last section runs the same rules in process, through both adapters over the real Redis,
with tokens shaped as simplejwt and Keycloak mint them.
"""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import inspect
import itertools
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator, MutableMapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import redis

from signout import CLAIMS_KEY, SignOutMiddleware, SignOutWSGIMiddleware
from signout.config import build_settings

from .conftest import SECRET, RedisServer, TokenFactory
from .framework_helpers import (
    DELETED_REFRESH_COOKIE,
    REVOKED,
    hypercorn_server,
    uvicorn_server,
    werkzeug_server,
    wsgiref_server,
)
from .helpers import bearer
from .issuers import NOT_REFRESH, keycloak, refused, simplejwt

pytestmark = pytest.mark.redis

REFRESH_PATH = "/api/token/refresh/"
#: The default max_body_bytes: the largest body signout reads.
LIMIT = inspect.signature(build_settings).parameters["max_body_bytes"].default
JSON = {"Content-Type": "application/json"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
SERVERS = ["uvicorn", "hypercorn", "werkzeug"]

Scope = MutableMapping[str, Any]
Client = Callable[..., Any]
Message = MutableMapping[str, Any]


# ---- the wrapped apps: echo what reached them ---------------------------------


def _echo(body: bytes, claims: object, messages: int, content_type: str | None) -> bytes:
    digest = hashlib.sha256(body).hexdigest()
    echo = {"sha256": digest, "length": len(body), "claims": claims, "messages": messages, "content_type": content_type}
    return json.dumps(echo).encode()


class EchoASGI:
    """Reads the whole body as a framework would, answers 200 with what it read."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, scope: Scope, receive: Callable[[], Any], send: Callable[[Message], Any]) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        self.calls += 1
        chunks: list[bytes] = []
        messages = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            messages += 1
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        # Starlette's request.headers["content-type"]: the first of them.
        types = [v.decode("latin-1") for k, v in scope["headers"] if k == b"content-type"]
        data = _echo(b"".join(chunks), scope.get(CLAIMS_KEY), messages, types[0] if types else None)
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": data})


class EchoWSGI:
    """The same for WSGI: reads ``CONTENT_LENGTH`` bytes, or to the end of a terminated stream."""

    def __init__(self) -> None:
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        with self._lock:
            self.calls += 1
        stream = environ["wsgi.input"]
        length = environ.get("CONTENT_LENGTH")
        if length:
            body: bytes = stream.read(int(length))
        elif environ.get("wsgi.input_terminated"):
            body = stream.read()
        else:
            body = b""
        data = _echo(body, environ.get(CLAIMS_KEY), 1, environ.get("CONTENT_TYPE"))
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
        return [data]


@dataclass
class Served:
    server: str
    address: str
    app: EchoASGI | EchoWSGI

    @property
    def base_url(self) -> str:
        return f"http://{self.address}"

    @property
    def asgi(self) -> bool:
        return self.server != "werkzeug"


@contextmanager
def serve(server: str, redis_url: str, **kwargs: Any) -> Iterator[Served]:
    """The echo app behind signout (``refresh_paths=[REFRESH_PATH]`` and ``kwargs``) under ``server``."""
    kwargs = {"key": SECRET, "redis_url": redis_url, "refresh_paths": [REFRESH_PATH], **kwargs}
    app: EchoASGI | EchoWSGI
    running: AbstractContextManager[str]
    if server == "werkzeug":
        app = EchoWSGI()
        running = werkzeug_server(SignOutWSGIMiddleware(app, **kwargs))
    else:
        app = EchoASGI()
        wrapped = SignOutMiddleware(app, **kwargs)
        running = uvicorn_server(wrapped) if server == "uvicorn" else hypercorn_server(wrapped)
    with running as address:
        yield Served(server, address, app)


@pytest.fixture(scope="module", params=SERVERS)
def served(request: pytest.FixtureRequest, redis_server: RedisServer) -> Iterator[Served]:
    """One server per kind for the module, default settings; tests that take ``redis_url`` start on an empty DB."""
    with serve(request.param, redis_server.url) as running:
        yield running


@pytest.fixture
def store(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


# ---- clients -------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def raw_post(
    address: str,
    path: str,
    headers: dict[str, str],
    chunks: list[bytes],
    *,
    chunked: bool,
    pause: float = 0.0,
) -> Reply:
    """POST ``chunks`` exactly as given: as one body with a Content-Length, or one HTTP chunk each.

    A server may answer (413) and close before the whole body is sent: sending stops
    there, and the answer is read all the same.
    """
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        lines = [f"POST {path} HTTP/1.1", f"Host: {address}", "Connection: close"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        lines.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {sum(map(len, chunks))}")
        try:
            sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            for chunk in chunks:
                if pause:
                    time.sleep(pause)
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
            if chunked:
                sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        response = http.client.HTTPResponse(sock)
        response.begin()
        return Reply(response.status, response.headers, response.read())


def post_expecting_continue(address: str, path: str, headers: dict[str, str], body: bytes) -> tuple[bool, Reply]:
    """POST with ``Expect: 100-continue``, the body sent only after the interim answer (or 2 s without one,
    as curl does after 1 s); whether the ``100 Continue`` came, and the final answer."""
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        lines = [f"POST {path} HTTP/1.1", f"Host: {address}", "Connection: close", "Expect: 100-continue"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        lines.append(f"Content-Length: {len(body)}")
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        sock.settimeout(2)
        interim = b""
        try:
            while not interim.endswith(b"\r\n\r\n"):
                byte = sock.recv(1)  # one at a time: nothing past the interim answer is taken
                if not byte:
                    break
                interim += byte
        except TimeoutError:
            pass
        sock.settimeout(10)
        continued = interim.startswith(b"HTTP/1.1 100")
        assert continued or not interim, interim  # a final answer before the body is not expected here
        sock.sendall(body)
        response = http.client.HTTPResponse(sock)
        response.begin()
        return continued, Reply(response.status, response.headers, response.read())


def split(data: bytes, pieces: int) -> list[bytes]:
    """``data`` in ``pieces`` parts of uneven sizes (a 1-byte part first: a boundary inside the first token)."""
    cuts = sorted({1, *(len(data) * i // pieces + (i % 3) for i in range(1, pieces))} - {0, len(data)})
    bounds = [0, *(c for c in cuts if 0 < c < len(data)), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def refresh_json(token: str, **extra: object) -> bytes:
    # Not json.dumps' default layout: odd spacing and raw UTF-8, so only the exact bytes hash the same.
    rest = "".join(f',\n  "{k}" :  {json.dumps(v, ensure_ascii=False)}' for k, v in extra.items())
    return f'{{ "refresh":"{token}"{rest} }}'.encode()


def sha(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def assert_echoed(reply: httpx.Response | Reply, body: bytes) -> dict[str, Any]:
    """The app answered, having read exactly ``body``; its echo."""
    assert status(reply) == 200, (status(reply), reply)
    echo: dict[str, Any] = reply.json()
    assert (echo["sha256"], echo["length"]) == (sha(body), len(body))
    return echo


def status(reply: httpx.Response | Reply) -> int:
    return reply.status_code if isinstance(reply, httpx.Response) else reply.status


def refresh_token(make_token: TokenFactory, n: int = 1, **kw: Any) -> str:
    kw.setdefault("token_type", "refresh")
    return make_token(jti=f"r-{n}", sid=f"s-{n}", **kw)


# ---- 1. the body reaches the app byte for byte -----------------------------------


def test_json_refresh_body_reaches_the_app_byte_for_byte(
    served: Served, redis_url: str, make_token: TokenFactory
) -> None:
    token = refresh_token(make_token)
    body = refresh_json(token, note="café ✓ \u2028", pad="x" * 3000)
    with httpx.Client(base_url=served.base_url) as client:
        echo = assert_echoed(client.post(REFRESH_PATH, content=body, headers=JSON), body)
        assert echo["claims"]["jti"] == "r-1"
        assert echo["claims"]["token_type"] == "refresh"
        # The second field name, and a +json media type, are read the same way.
        other = json.dumps({"refresh_token": token}).encode()
        reply = client.post(REFRESH_PATH, content=other, headers={"Content-Type": "application/vnd.api+json"})
        assert assert_echoed(reply, other)["claims"]["jti"] == "r-1"
        # A GET on the refresh path, with no body at all, passes untouched.
        assert assert_echoed(client.get(REFRESH_PATH), b"")["claims"] is None


@pytest.mark.parametrize("pieces", [2, 40])
def test_chunked_json_body_reaches_the_app_byte_for_byte(
    served: Served, redis_url: str, make_token: TokenFactory, pieces: int
) -> None:
    token = refresh_token(make_token)
    body = refresh_json(token, pad="é" * 1500)
    chunks = split(body, pieces)
    assert len(chunks) >= pieces and b"".join(chunks) == body
    reply = raw_post(served.address, REFRESH_PATH, JSON, chunks, chunked=True, pause=0.002)
    echo = assert_echoed(reply, body)
    assert echo["claims"]["jti"] == "r-1"
    if served.asgi and pieces > 2:
        # The body did arrive in pieces, and the app was handed them as they came (_replay).
        assert echo["messages"] > 1


def test_expect_100_continue(served: Served, redis_url: str, make_token: TokenFactory) -> None:
    """A client that waits for ``100 Continue`` gets it when signout starts reading, and no hang."""
    body = refresh_json(refresh_token(make_token))
    continued, reply = post_expecting_continue(served.address, REFRESH_PATH, JSON, body)
    assert assert_echoed(reply, body)["claims"]["jti"] == "r-1"
    assert continued


def test_wsgiref_server_content_length_bodies(redis_url: str, make_token: TokenFactory) -> None:
    """wsgiref (no chunked bodies): a refresh body is read, handed on byte for byte, and judged."""
    token = refresh_token(make_token)
    body = refresh_json(token, pad="ü" * 2000)
    app = EchoWSGI()
    wrapped = SignOutWSGIMiddleware(app, key=SECRET, redis_url=redis_url, refresh_paths=[REFRESH_PATH])
    with wsgiref_server(wrapped) as address, httpx.Client(base_url=f"http://{address}") as client:
        assert assert_echoed(client.post(REFRESH_PATH, content=body, headers=JSON), body)["claims"]["jti"] == "r-1"
        assert client.post("/auth/logout", content=body, headers=JSON).status_code == 200
        again = client.post(REFRESH_PATH, content=body, headers=JSON)
        assert (again.status_code, again.json()) == (401, REVOKED)
        too_big = client.post(REFRESH_PATH, content=refresh_json(token, pad="x" * LIMIT), headers=JSON)
        assert (too_big.status_code, too_big.json()["error"]) == (413, "invalid_request")
        assert app.calls == 1


# ---- 2. a revoked refresh token in a body is refused ----------------------------


def test_logout_body_revokes_the_refresh_token_and_the_guard_refuses_it(
    served: Served, redis_url: str, store: redis.Redis, make_token: TokenFactory
) -> None:
    token = refresh_token(make_token)
    access = make_token(token_type="access", jti="a-1", sid="s-1")
    other_login = refresh_token(make_token, 2)
    body = refresh_json(token)
    with httpx.Client(base_url=served.base_url) as client:
        assert_echoed(client.post(REFRESH_PATH, content=body, headers=JSON), body)
        calls = served.app.calls

        # simplejwt's client logs out with its refresh token in a JSON body, and nothing else.
        out = client.post("/auth/logout", content=json.dumps({"refresh": token}).encode(), headers=JSON)
        assert (out.status_code, out.json()) == (200, {"message": "Logged out successfully"})
        assert out.headers.get_list("set-cookie") == [DELETED_REFRESH_COOKIE]
        assert store.dbsize() > 0

        again = client.post(REFRESH_PATH, content=body, headers=JSON)
        assert (again.status_code, again.json()) == (401, REVOKED)
        assert again.headers["www-authenticate"].startswith('Bearer error="invalid_token"')
        assert again.headers["cache-control"] == "no-store"
        # Streamed in pieces, as a form, under the other field name, beside a valid access token: refused.
        chunked = raw_post(served.address, REFRESH_PATH, JSON, split(body, 10), chunked=True, pause=0.001)
        assert (chunked.status, chunked.json()) == (401, REVOKED)
        as_form = client.post(REFRESH_PATH, content=urlencode({"refresh": token}).encode(), headers=FORM)
        assert (as_form.status_code, as_form.json()) == (401, REVOKED)
        renamed = client.post(REFRESH_PATH, content=json.dumps({"refresh_token": token}).encode(), headers=JSON)
        assert (renamed.status_code, renamed.json()) == (401, REVOKED)
        beside = client.post(
            REFRESH_PATH,
            content=body,
            headers={**JSON, "Authorization": f"Bearer {refresh_token(make_token, 3, token_type=None)}"},
        )
        assert (beside.status_code, beside.json()) == (401, REVOKED)
        assert served.app.calls == calls  # none of them reached the app

        # Its session died with it (SPEC 4.1): the access token of the same login too.
        me = client.get("/me", headers={"Authorization": f"Bearer {access}"})
        assert (me.status_code, me.json()) == (401, REVOKED)
        # Another login is untouched.
        fine = refresh_json(other_login)
        assert assert_echoed(client.post(REFRESH_PATH, content=fine, headers=JSON), fine)["claims"]["jti"] == "r-2"
        assert served.app.calls == calls + 1


def test_chunked_logout_body_revokes(
    served: Served, redis_url: str, store: redis.Redis, make_token: TokenFactory
) -> None:
    token = refresh_token(make_token)
    body = refresh_json(token)
    out = raw_post(served.address, "/auth/logout", JSON, split(body, 12), chunked=True, pause=0.001)
    assert (out.status, out.json()) == (200, {"message": "Logged out successfully"})
    assert store.dbsize() > 0
    with httpx.Client(base_url=served.base_url) as client:
        again = client.post(REFRESH_PATH, content=body, headers=JSON)
        assert (again.status_code, again.json()) == (401, REVOKED)


# ---- 3. bad input: never a 500, never a revocation --------------------------------


def _multipart(token: str) -> tuple[dict[str, str], bytes]:
    boundary = "----signout-test-boundary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="refresh"\r\n\r\n{token}\r\n--{boundary}--\r\n'
    ).encode()
    return {"Content-Type": f"multipart/form-data; boundary={boundary}"}, body


@dataclass
class Bad:
    """A request to the refresh path (or the logout route), and the answer it must get."""

    headers: dict[str, str]
    chunks: list[bytes]
    expected: int
    chunked: bool = False
    path: str = REFRESH_PATH


def _bad_cases(token: str) -> dict[str, Bad]:
    big = refresh_json(token, pad="x" * 1_000_000)
    over = refresh_json(token, pad="y" * (LIMIT + 1))
    multipart_headers, multipart_body = _multipart(token)
    return {
        "not_json": Bad(JSON, [b'{"refresh": "' + token.encode() + b'"'], 200),
        "json_array": Bad(JSON, [json.dumps([token, {"refresh": token}]).encode()], 200),
        "json_string": Bad(JSON, [json.dumps(token).encode()], 200),
        "refresh_is_a_number": Bad(JSON, [b'{"refresh": 42}'], 200),
        "refresh_is_an_object": Bad(JSON, [json.dumps({"refresh": {"token": token}}).encode()], 200),
        "refresh_is_null": Bad(JSON, [b'{"refresh": null, "refresh_token": ""}'], 200),
        "huge_integer": Bad(JSON, [b'{"refresh": ' + b"7" * 5000 + b"}"], 200),
        "deep_nesting": Bad(JSON, [b"[" * 4000 + b"]" * 4000], 200),
        # Read as U+FFFD, as a lenient reader would: a garbage token, refused (and nothing revoked).
        "invalid_utf8_json": Bad(JSON, [b'{"refresh": "\xff\xfe\xc3("}'], 401),
        "empty_body": Bad(JSON, [b""], 200),
        "whitespace_body": Bad(JSON, [b" \r\n\t "], 200),
        "no_content_type": Bad({}, [b"garbage \x00\xff"], 200),
        "one_megabyte": Bad(JSON, [big[i : i + 65536] for i in range(0, len(big), 65536)], 413),
        "chunked_over_limit": Bad(JSON, split(over, 6), 413, chunked=True),
        "length_over_limit_form": Bad(FORM, [b"refresh=" + token.encode() + b"&pad=" + b"z" * LIMIT], 413),
        "invalid_utf8_form": Bad(FORM, [b"refresh=\xff\xfe%ff%c3%28&other=\x80"], 401),
        "not_a_jwt": Bad(JSON, [b'{"refresh": "not.a.jwt"}'], 401),
        "bad_signature": Bad(JSON, [refresh_json(token[:-4] + ("AAAA" if token[-4:] != "AAAA" else "BBBB"))], 401),
        "nul_and_newlines": Bad(JSON, [json.dumps({"refresh": "a\x00b\r\nc.d.e"}).encode()], 401),
        "multipart": Bad(multipart_headers, [multipart_body], 415),
        "logout_not_json": Bad(JSON, [b"{"], 200, path="/auth/logout"),
        "logout_not_a_jwt": Bad(FORM, [b"refresh=not.a.jwt&refresh_token=%ff"], 200, path="/auth/logout"),
        # Not read: the cookies are cleared, and the answer says a token in the body was not revoked.
        "logout_multipart": Bad(multipart_headers, [multipart_body], 415, path="/auth/logout"),
        "logout_too_large": Bad(JSON, [over], 413, path="/auth/logout"),
        "logout_too_large_chunked": Bad(JSON, split(over, 5), 413, chunked=True, path="/auth/logout"),
    }


BAD = list(_bad_cases("t.t.t"))


@pytest.mark.parametrize("case", BAD)
def test_bad_bodies_never_fail_and_never_revoke(
    served: Served, redis_url: str, store: redis.Redis, make_token: TokenFactory, case: str
) -> None:
    bad = _bad_cases(refresh_token(make_token))[case]
    body = b"".join(bad.chunks)
    calls = served.app.calls
    reply = raw_post(served.address, bad.path, bad.headers, bad.chunks, chunked=bad.chunked)
    assert reply.status < 500, (reply.status, reply.body[:300])
    assert reply.status == bad.expected, (reply.status, reply.body[:300])
    if bad.path == "/auth/logout":
        assert reply.headers.get_all("set-cookie") == [DELETED_REFRESH_COOKIE]
        assert ("error" if reply.status == 413 else "message") in reply.json()
        assert served.app.calls == calls
    elif reply.status == 200:
        # Passed through untouched: the app read every byte, and was handed no claims.
        assert assert_echoed(reply, body)["claims"] is None
        assert served.app.calls == calls + 1
    else:
        assert reply.headers.get_content_type() == "application/json"
        assert reply.json()["error"] in ("invalid_token", "invalid_request")
        assert served.app.calls == calls
    assert store.dbsize() == 0, sorted(store.scan_iter())


def test_wrong_kinds_in_a_refresh_body(
    served: Served, redis_url: str, store: redis.Redis, make_token: TokenFactory
) -> None:
    """Refresh and unknown tokens are accepted in a refresh body; access and ID tokens are not."""
    with httpx.Client(base_url=served.base_url) as client:
        for claims, expected in [
            ({"token_type": "refresh"}, 200),
            ({"typ": "Refresh"}, 200),
            ({}, 200),  # no kind claim: unknown, accepted
            ({"token_type": "access"}, 401),
            ({"typ": "ID"}, 401),
        ]:
            body = refresh_json(make_token(**claims))
            reply = client.post(REFRESH_PATH, content=body, headers=JSON)
            assert reply.status_code == expected, (claims, reply.text)
            if expected == 200:
                assert_echoed(reply, body)
            else:
                assert reply.json()["error"] == "invalid_token"
    assert store.dbsize() == 0


def _exactly(token: str, size: int) -> bytes:
    body = refresh_json(token, pad="")
    return refresh_json(token, pad="x" * (size - len(body)))


@pytest.mark.parametrize("chunked", [False, True], ids=["length", "chunked"])
def test_max_body_bytes_is_the_largest_body_read(
    served: Served, redis_url: str, store: redis.Redis, make_token: TokenFactory, chunked: bool
) -> None:
    token = refresh_token(make_token)
    at_limit, past_limit = _exactly(token, LIMIT), _exactly(token, LIMIT + 1)
    assert (len(at_limit), len(past_limit)) == (LIMIT, LIMIT + 1)
    calls = served.app.calls
    fits = raw_post(served.address, REFRESH_PATH, JSON, split(at_limit, 7), chunked=chunked)
    assert assert_echoed(fits, at_limit)["claims"]["jti"] == "r-1"
    over = raw_post(served.address, REFRESH_PATH, JSON, split(past_limit, 7), chunked=chunked)
    assert (over.status, over.json()["error"]) == (413, "invalid_request")
    assert served.app.calls == calls + 1
    # The logout route reads up to the same limit: at it, the token in the body is revoked.
    out = raw_post(served.address, "/auth/logout", JSON, split(at_limit, 7), chunked=chunked)
    assert (out.status, out.json()) == (200, {"message": "Logged out successfully"})
    again = raw_post(served.address, REFRESH_PATH, JSON, [at_limit], chunked=chunked)
    assert (again.status, again.json()) == (401, REVOKED)


@pytest.mark.parametrize("server", SERVERS)
def test_on_invalid_token_pass(server: str, redis_url: str, store: redis.Redis, make_token: TokenFactory) -> None:
    """With ``on_invalid_token="pass"`` a body token that does not verify reaches the app; a revoked one does not."""
    token = refresh_token(make_token)
    with (
        serve(server, redis_url, on_invalid_token="pass") as running,
        httpx.Client(base_url=running.base_url) as client,
    ):
        for junk in (b'{"refresh": "not.a.jwt"}', refresh_json(make_token(token_type="access"))):
            assert assert_echoed(client.post(REFRESH_PATH, content=junk, headers=JSON), junk)["claims"] is None
        assert store.dbsize() == 0
        assert client.post("/auth/logout", content=refresh_json(token), headers=JSON).status_code == 200
        again = client.post(REFRESH_PATH, content=refresh_json(token), headers=JSON)
        assert (again.status_code, again.json()) == (401, REVOKED)
        assert running.app.calls == 2


def _post_with_two_content_types(
    address: str, path: str, content_type: str, body: bytes, second: str | None = None
) -> Reply:
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        head = f"POST {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n"
        head += f"Content-Type: {content_type}\r\nContent-Type: {second or content_type}\r\n"
        head += f"Content-Length: {len(body)}\r\n\r\n"
        sock.sendall(head.encode() + body)
        response = http.client.HTTPResponse(sock)
        response.begin()
        return Reply(response.status, response.headers, response.read())


@pytest.mark.parametrize("kind", ["form", "multipart", "logout_form"])
def test_two_content_type_headers(served: Served, redis_url: str, make_token: TokenFactory, kind: str) -> None:
    """A form (or multipart) body behind two Content-Type headers is judged as the app will read it.

    WSGI servers keep one CONTENT_TYPE (werkzeug the last), and signout reads that one, as the app
    does; an ASGI app gets every header and Starlette reads the first.
    """
    token = refresh_token(make_token)
    form = urlencode({"refresh": token}).encode()
    with httpx.Client(base_url=served.base_url) as client:
        if kind == "logout_form":
            # simplejwt's clients may log out with a form: the token in it must die.
            out = _post_with_two_content_types(served.address, "/auth/logout", FORM["Content-Type"], form)
            assert (out.status, out.json()) == (200, {"message": "Logged out successfully"})
            again = client.post(REFRESH_PATH, content=form, headers=FORM)
            assert (again.status_code, again.json()) == (401, REVOKED)
            return
        assert client.post("/auth/logout", content=refresh_json(token), headers=JSON).status_code == 200
    if kind == "form":
        content_type, body = FORM["Content-Type"], form
    else:
        multipart, body = _multipart(token)
        content_type = multipart["Content-Type"]
    calls = served.app.calls
    reply = _post_with_two_content_types(served.address, REFRESH_PATH, content_type, body)
    if reply.status == 200:
        # What slipped through: the app, going by its first Content-Type, reads the revoked token.
        assert reply.json()["content_type"] == content_type
    assert (reply.status, served.app.calls) == (401 if kind == "form" else 415, calls), reply.body


def test_two_content_types_that_disagree(served: Served, store: redis.Redis, make_token: TokenFactory) -> None:
    """A form that also says it is JSON: an app may read it either way, so signout reads it both
    ways. A logout revokes the token in it, and the refresh path then refuses it (app not called)."""
    token = refresh_token(make_token)
    form = urlencode({"refresh": token}).encode()
    out = _post_with_two_content_types(served.address, "/auth/logout", FORM["Content-Type"], form, JSON["Content-Type"])
    assert (out.status, out.json()) == (200, {"message": "Logged out successfully"})
    calls = served.app.calls
    for first, second in ((FORM, JSON), (JSON, FORM)):
        reply = _post_with_two_content_types(
            served.address, REFRESH_PATH, first["Content-Type"], form, second["Content-Type"]
        )
        assert (reply.status, reply.json(), served.app.calls) == (401, REVOKED, calls), reply.body


def test_a_body_is_read_as_the_app_may_read_it(served: Served, make_token: TokenFactory) -> None:
    """JSON sent as a form (Flask's get_json(force=True) reads it), a latin-1 charset, a UTF-16
    form, spaces around the token (a serializer's CharField trims them): a revoked token in any
    of them is refused, and a logout in any of them revokes it."""
    bodies: list[tuple[dict[str, str], Callable[[str], bytes]]] = [
        (FORM, lambda t: refresh_json(t)),
        (
            {"Content-Type": "application/json; charset=latin-1"},
            lambda t: f'{{"refresh": "{t}", "by": "José"}}'.encode("latin-1"),
        ),
        (
            {"Content-Type": "application/x-www-form-urlencoded; charset=utf-16"},
            lambda t: f"refresh={t}".encode("utf-16"),
        ),
        (JSON, lambda t: json.dumps({"refresh": f"  {t}\n"}).encode()),
    ]
    with httpx.Client(base_url=served.base_url) as client:
        for i, (headers, shape) in enumerate(bodies):
            token = refresh_token(make_token, 10 + i)
            assert client.post("/auth/logout", content=shape(token), headers=headers).status_code == 200
            calls = served.app.calls
            again = client.post(REFRESH_PATH, content=shape(token), headers=headers)
            assert (again.status_code, again.json(), served.app.calls) == (401, REVOKED, calls), headers


# ---- 4. form bodies work as JSON does -------------------------------------------


def test_form_body_works_like_json(
    served: Served, redis_url: str, store: redis.Redis, make_token: TokenFactory
) -> None:
    token = refresh_token(make_token)
    body = urlencode({"grant": "yes", "refresh": token, "note": "café"}).encode()
    with httpx.Client(base_url=served.base_url) as client:
        assert assert_echoed(client.post(REFRESH_PATH, content=body, headers=FORM), body)["claims"]["jti"] == "r-1"
        chunked = raw_post(served.address, REFRESH_PATH, FORM, split(body, 8), chunked=True, pause=0.001)
        assert assert_echoed(chunked, body)["claims"]["jti"] == "r-1"
        renamed = urlencode({"refresh_token": token}).encode()
        assert_echoed(client.post(REFRESH_PATH, content=renamed, headers=FORM), renamed)
        calls = served.app.calls

        out = client.post("/auth/logout", content=urlencode({"refresh": token}).encode(), headers=FORM)
        assert (out.status_code, out.json()) == (200, {"message": "Logged out successfully"})
        assert store.dbsize() > 0

        for again in (
            client.post(REFRESH_PATH, content=body, headers=FORM),
            client.post(REFRESH_PATH, content=renamed, headers=FORM),
            client.post(REFRESH_PATH, content=refresh_json(token), headers=JSON),
            # Field names are decoded as the app decodes them.
            client.post(REFRESH_PATH, content=b"%72efresh=" + token.encode(), headers=FORM),
            client.post(REFRESH_PATH, content=b'{"\\u0072efresh": "' + token.encode() + b'"}', headers=JSON),
            # Every value counts: a revoked one after a valid one is still seen.
            client.post(
                REFRESH_PATH,
                content=urlencode([("refresh", refresh_token(make_token, 2)), ("refresh", token)]).encode(),
                headers=FORM,
            ),
        ):
            assert (again.status_code, again.json()) == (401, REVOKED)
        assert served.app.calls == calls


# ---- 5. refresh rotation: a second use of the same body is reuse ----------------------


@pytest.mark.parametrize("server", SERVERS)
def test_rotation_refuses_the_same_refresh_body_twice(server: str, redis_url: str, make_token: TokenFactory) -> None:
    token = refresh_token(make_token)
    access = make_token(token_type="access", jti="a-1", sid="s-1")
    body = refresh_json(token)
    with (
        serve(server, redis_url, refresh_rotation=True, refresh_reuse_grace=0) as running,
        httpx.Client(base_url=running.base_url) as client,
    ):
        first = client.post(REFRESH_PATH, content=body, headers=JSON)
        assert assert_echoed(first, body)["claims"]["jti"] == "r-1"
        assert running.app.calls == 1
        second = client.post(REFRESH_PATH, content=body, headers=JSON)
        assert second.status_code == 401
        assert second.json()["error"] == "invalid_token"
        assert "already used" in second.json()["message"]
        assert running.app.calls == 1
        # Reuse revoked the whole login: the access token of the same session is dead too.
        me = client.get("/me", headers={"Authorization": f"Bearer {access}"})
        assert (me.status_code, me.json()) == (401, REVOKED)
        # A chunked third try is refused as well, and a fresh login still works.
        third = raw_post(running.address, REFRESH_PATH, JSON, split(body, 6), chunked=True)
        assert third.status == 401
        fresh = refresh_json(refresh_token(make_token, 2))
        assert_echoed(client.post(REFRESH_PATH, content=fresh, headers=JSON), fresh)
        assert running.app.calls == 2


# ---- 6. a burst: no body goes to the wrong request --------------------------------------

BURST = 520
CONNECTIONS = 16  # httpx's async pool slows down past a few dozen busy connections, so many requests share each


async def _httpx_burst(base_url: str, path: str, bodies: list[bytes]) -> list[httpx.Response]:
    """Every body posted at once from one event loop, over ``CONNECTIONS`` keep-alive connections."""
    limits = httpx.Limits(max_connections=CONNECTIONS, max_keepalive_connections=CONNECTIONS)
    slots = asyncio.Semaphore(CONNECTIONS)  # queue in our loop, not in httpx's pool (quadratic there)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30) as client:

        async def post(body: bytes) -> httpx.Response:
            async with slots:
                return await client.post(path, content=body, headers=JSON)

        return await asyncio.gather(*(post(body) for body in bodies))


async def _socket_burst(address: str, bodies: list[bytes]) -> list[tuple[int, bytes]]:
    """Every body on its own connection, all of them open at once before any request is sent."""
    host, port = address.rsplit(":", 1)
    streams = await asyncio.gather(*(asyncio.open_connection(host, int(port)) for _ in bodies))
    for (_, writer), body in zip(streams, bodies, strict=True):
        head = f"POST {REFRESH_PATH} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n"
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        writer.write(head.encode() + body)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> tuple[int, bytes]:
        data = await reader.read()
        writer.close()
        head, _, payload = data.partition(b"\r\n\r\n")
        return int(head.split(b" ", 2)[1]), payload

    return await asyncio.gather(*(answer(reader, writer) for reader, writer in streams))


def _enough_files(wanted: int) -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(
            resource.RLIMIT_NOFILE, (wanted if hard == resource.RLIM_INFINITY else min(wanted, hard), hard)
        )


def _check_echoes(replies: list[tuple[int, bytes]], bodies: list[bytes], refused: Callable[[int], bool]) -> None:
    for n, ((code, payload), body) in enumerate(zip(replies, bodies, strict=True)):
        if refused(n):
            assert (code, json.loads(payload)) == (401, REVOKED), n
        else:
            echo = json.loads(payload)
            assert (code, echo["sha256"], echo["length"], echo["claims"]["jti"]) == (
                200,
                sha(body),
                len(body),
                f"r-{n}",
            )


@pytest.mark.parametrize("server", ["uvicorn", "hypercorn"])
def test_burst_of_refresh_bodies(server: str, redis_url: str, make_token: TokenFactory) -> None:
    bodies = [refresh_json(refresh_token(make_token, n), n=n, pad="p" * (n * 13 % 4000)) for n in range(BURST)]
    # A store slowed by this very test's load (client and server share a process) is not what is tested here.
    with serve(server, redis_url, store_timeout=5) as running:
        replies = asyncio.run(_httpx_burst(running.base_url, REFRESH_PATH, bodies))
        _check_echoes([(r.status_code, r.content) for r in replies], bodies, lambda n: False)
        assert running.app.calls == BURST

        # Every odd login logs out with its refresh token in the body, all at once ...
        logouts = asyncio.run(_httpx_burst(running.base_url, "/auth/logout", bodies[1::2]))
        assert {r.status_code for r in logouts} == {200}
        # ... and exactly those are refused in the next burst.
        again = asyncio.run(_httpx_burst(running.base_url, REFRESH_PATH, bodies))
        _check_echoes([(r.status_code, r.content) for r in again], bodies, lambda n: n % 2 == 1)
        assert running.app.calls == BURST + BURST // 2


def test_burst_of_simultaneous_connections_through_uvicorn(redis_url: str, make_token: TokenFactory) -> None:
    """520 connections open at once, each with its own body: uvicorn hands them all to signout together."""
    _enough_files(4 * BURST + 256)
    bodies = [refresh_json(refresh_token(make_token, n), n=n, pad="q" * (n * 7 % 3000)) for n in range(BURST)]
    with serve("uvicorn", redis_url, store_timeout=5) as running:
        with httpx.Client(base_url=running.base_url) as client:
            for n in range(0, BURST, 5):  # every fifth login logged out beforehand
                assert client.post("/auth/logout", content=bodies[n], headers=JSON).status_code == 200
        replies = asyncio.run(_socket_burst(running.address, bodies))
        _check_echoes(replies, bodies, lambda n: n % 5 == 0)
        assert running.app.calls == BURST - BURST // 5


def _post_raw(address: str, path: str, head: str, body: bytes) -> Reply:
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n{head}\r\n".encode() + body)
        response = http.client.HTTPResponse(sock)
        response.begin()
        return Reply(response.status, response.headers, response.read())


@pytest.mark.parametrize("path", [REFRESH_PATH, "/auth/logout"])
def test_a_malformed_chunked_body_is_a_400_never_a_500(
    served: Served, store: redis.Redis, make_token: TokenFactory, path: str
) -> None:
    access = make_token(token_type="access", jti="a-9", sid="s-9")
    head = f"Authorization: Bearer {access}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
    reply = _post_raw(served.address, path, head, b"zz\r\n{}\r\n0\r\n\r\n")
    if not served.asgi:  # an ASGI server refuses the framing itself, before signout
        assert reply.status == 400 and reply.json()["error"] == "invalid_request"
        if path == "/auth/logout":
            # The Bearer token still died; the answer says the body was not read.
            # Two buckets: its user's (its jti) and its session's (its sid).
            assert "could not be read (broken)" in reply.json()["message"] and store.dbsize() == 2
    assert reply.status < 500


# ---- 7. in process, through both adapters ------------------------------------------------------------


def test_a_logout_revokes_the_refresh_token_in_its_body_and_the_refresh_path_refuses_it(real_client: Client) -> None:
    c = real_client(user_claim="user_id", refresh_paths=[REFRESH_PATH])
    access, refresh = simplejwt("access"), simplejwt("refresh")
    body = json.dumps({"refresh": refresh})
    ok = c.post(REFRESH_PATH, content=body, headers={"Content-Type": "application/json"})
    assert ok.status_code == 200 and ok.json()["body"] == body and ok.json()["claims"]["token_type"] == "refresh"
    r = c.post("/auth/logout", json={"refresh": refresh}, headers=bearer(access))
    assert r.status_code == 200 and r.json() == {"message": "Logged out successfully"}
    assert refused(
        c.post(REFRESH_PATH, content=body, headers={"Content-Type": "application/json"}), "Token has been revoked"
    )
    assert refused(c.get("/me", headers=bearer(access)), "Token has been revoked")


def test_a_form_body_is_read_as_a_json_one(real_client: Client) -> None:
    c = real_client(refresh_paths=[REFRESH_PATH])
    refresh = simplejwt("refresh")
    assert c.post("/auth/logout", data={"refresh_token": refresh}).status_code == 200
    assert refused(c.post(REFRESH_PATH, data={"refresh_token": refresh}), "Token has been revoked")


def test_an_access_token_in_a_refresh_body_is_refused(real_client: Client) -> None:
    r = real_client(refresh_paths=[REFRESH_PATH]).post(REFRESH_PATH, json={"refresh": simplejwt("access")})
    assert refused(r, NOT_REFRESH)


def test_every_value_of_a_repeated_form_field_is_checked(real_client: Client) -> None:
    c = real_client(refresh_paths=[REFRESH_PATH])
    dead, live = simplejwt("refresh"), simplejwt("refresh")
    c.post("/auth/logout", json={"refresh": dead})
    # An app reading the last value (Django's QueryDict) would take the dead one.
    r = c.post(
        REFRESH_PATH,
        content=f"refresh={live}&refresh={dead}",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert refused(r, "Token has been revoked")


def test_a_multipart_body_on_a_refresh_path_is_refused_not_let_through(real_client: Client) -> None:
    r = real_client(refresh_paths=[REFRESH_PATH]).post(
        REFRESH_PATH, files={"refresh": ("r", simplejwt("refresh").encode())}
    )
    assert r.status_code == 415 and r.json()["error"] == "invalid_request"


def test_a_logout_whose_body_is_too_large_still_revokes_the_bearer_token_and_says_what_it_did_not(
    real_client: Client,
) -> None:
    c = real_client()
    access = keycloak("Bearer", aud=None)
    r = c.post("/auth/logout", headers=bearer(access), json={"refresh": "x", "pad": "y" * 30000})
    assert r.status_code == 413 and "a refresh token in it was not revoked" in r.json()["message"]
    assert r.headers["set-cookie"].startswith('refresh_token=""; Path=/auth/refresh;')
    assert refused(c.get("/me", headers=bearer(access)), "Token has been revoked")
