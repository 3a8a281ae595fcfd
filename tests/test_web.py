"""HTTP parsing (``signout.web``): tables of headers and what is read from them; then garbage and odd
spellings end to end, through both adapters on every store: never a 500, never a revocation, and
never a revoked token missed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from starlette.testclient import TestClient

from signout.web import BadAuthorization, bearer_token, cookies, deletion_cookie, origin_of, path_matches

from .conftest import SECRET, Backend, TokenFactory

Client = Callable[..., TestClient]


BEARERS: list[tuple[list[tuple[bytes, bytes]], str | type[Exception] | None]] = [
    ([], None),
    ([(b"authorization", b"Bearer abc")], "abc"),
    ([(b"authorization", b"bearer   abc  ")], "abc"),
    ([(b"authorization", b"Basic abc")], None),
    ([(b"authorization", b"")], None),
    ([(b"authorization", b"Bearer")], Exception),
    ([(b"authorization", b"Bearer a b")], Exception),
    ([(b"authorization", b"Bearer \xff\xfe")], "\xff\xfe"),
]


@pytest.mark.parametrize(("headers", "expected"), BEARERS)
def test_bearer_token_table(headers: list[tuple[bytes, bytes]], expected: Any) -> None:
    if expected is Exception:
        with pytest.raises(BadAuthorization):
            bearer_token(headers)
    else:
        assert bearer_token(headers) == expected


def test_cookies_keep_duplicates_and_survive_garbage() -> None:
    headers = [
        (b"cookie", b'a=1; refresh_token=x; refresh_token="y"; =;;; refresh_token'),
        (b"cookie", b"refresh_token=\xff"),
    ]
    assert cookies(headers, "refresh_token") == ["x", "y", "\xff"]
    assert cookies([(b"cookie", b"refresh_tokenx=1")], "refresh_token") == []


@pytest.mark.parametrize(
    ("path", "prefix", "matches"),
    [("/a", "/a", True), ("/a/b", "/a", True), ("/ab", "/a", False), ("/a/b", "/a/", True), ("/", "/a", False)],
)
def test_path_match(path: str, prefix: str, matches: bool) -> None:
    assert path_matches(path, prefix) is matches


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("https://App.Example/x", "https://app.example"),
        ("https://a.example:8443", "https://a.example:8443"),
        ("//evil.example", None),
        ("javascript:x", None),
        ("https://a@b.example", None),
        ("https://a.example\\@b", None),
        ("https://a.example/\r\n", None),
        ("https://[::1", None),
    ],
)
def test_origin_of(url: str, origin: str | None) -> None:
    assert origin_of(url) == origin


def test_deletion_cookie_is_exactly_the_spec_string() -> None:
    assert deletion_cookie("refresh_token", path="/auth/refresh", domain=None, secure=True, samesite="strict") == (
        b'refresh_token=""; Path=/auth/refresh; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT; '
        b"HttpOnly; Secure; SameSite=Strict"
    )


def test_every_header_signout_reads_is_in_read_headers() -> None:
    # The WSGI adapter builds only READ_HEADERS from the environ; a header read
    # anywhere else would be silently absent under WSGI.
    import pathlib

    from signout import web

    source = "\n".join(p.read_text() for p in pathlib.Path(web.__file__).parent.rglob("*.py"))
    read = set(re.findall(r'header_values\([^,]+, b"([a-z-]+)"\)', source))
    read |= set(re.findall(r'if k == b"([a-z-]+)"', source))
    assert read, "the pattern no longer finds the reads: update this test"
    assert read <= {name.decode() for name in web.READ_HEADERS}


# ---- end to end: garbage never a 500, odd spellings never a miss -------------------------------------


def _non_utf8_token() -> str:
    import base64
    import hashlib
    import hmac

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header, payload = b64(b'{"alg":"HS256","typ":"JWT"}'), b64(b"\xff\xfe\xfd")
    signing_input = f"{header}.{payload}"
    return f"{signing_input}.{b64(hmac.new(SECRET.encode(), signing_input.encode(), hashlib.sha256).digest())}"


GARBAGE_AUTHORIZATION: list[bytes] = [
    b"",
    b"Bearer",
    b"Bearer ",
    b"Bearer a.b",
    b"Bearer ..",
    b"Bearer a..b",
    b"Bearer " + b"A" * 65536,
    b"Bearer " + b"a." * 20000,
    b"Bearer \xff\xfe.\x00.\r",
    b"Bearer " + _non_utf8_token().encode(),
    b"Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJhIn0.",
    b"\xff\xff\xff",
    b"Basic dXNlcjpwYXNz",
]


GARBAGE_COOKIES: list[bytes] = [
    b"refresh_token",
    b"refresh_token=",
    b"=;;;=",
    b"refresh_token=\xff\xfe",
    b'refresh_token="',
    b"refresh_token=a.b.c; refresh_token=; refresh_token=" + b"x" * 70000,
    b"access_token=\x00; refresh_token=\r\n",
]


@pytest.mark.parametrize("value", GARBAGE_AUTHORIZATION, ids=[repr(v)[:24] for v in GARBAGE_AUTHORIZATION])
@pytest.mark.parametrize(("method", "path"), [("GET", "/me"), ("POST", "/auth/logout"), ("POST", "/auth/refresh")])
def test_garbage_authorization_never_500_and_revokes_nothing(
    client: Client, backend: Backend, value: bytes, method: str, path: str
) -> None:
    c = client(access_cookie="access_token")
    r = c.request(method, path, headers=[(b"authorization", value)])
    assert r.status_code < 500
    if r.status_code >= 400:
        assert r.headers["content-type"] == "application/json"
        assert r.json()["error"] == "invalid_token"
    assert backend.count() == 0


@pytest.mark.parametrize("value", GARBAGE_COOKIES, ids=[repr(v)[:24] for v in GARBAGE_COOKIES])
@pytest.mark.parametrize(("method", "path"), [("GET", "/me"), ("POST", "/auth/logout"), ("POST", "/auth/refresh")])
def test_garbage_cookies_never_500_and_revoke_nothing(
    client: Client, backend: Backend, value: bytes, method: str, path: str
) -> None:
    c = client(access_cookie="access_token")
    r = c.request(method, path, headers=[(b"cookie", value)])
    assert r.status_code < 500
    if r.status_code >= 400:
        assert r.json()["error"] == "invalid_token"
    assert backend.count() == 0


def test_two_authorization_headers_are_refused(client: Client, make_token: TokenFactory) -> None:
    token = make_token()
    r = client().get("/me", headers=[("authorization", f"Bearer {token}"), ("authorization", f"Bearer {token}")])
    assert r.status_code == 401
    assert r.json()["message"] == "Authorization header is malformed"


@pytest.mark.parametrize("form", ["Bearer\t{t}", "Bearer   {t}", "Basic Zm9vOmJhcg==, Bearer {t}", "bearer {t}"])
def test_a_revoked_token_is_found_however_the_header_spells_bearer(
    client: Any, make_token: TokenFactory, form: str
) -> None:
    c = client()
    token = make_token()
    assert c.post("/auth/logout", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert c.get("/me", headers={"Authorization": form.format(t=token)}).status_code == 401


def test_two_bearer_credentials_in_one_header_are_refused(client: Any, make_token: TokenFactory) -> None:
    r = client().get("/me", headers={"Authorization": f"Bearer {make_token()}, Bearer {make_token(jti='x')}"})
    assert r.status_code == 401


def test_a_revoked_token_hidden_in_a_quoted_escaped_cookie_is_refused(client: Any, make_token: TokenFactory) -> None:
    c = client(access_cookie="access_token", on_invalid_token="pass")
    token = make_token()
    assert c.post("/auth/logout", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    hidden = '"' + token.replace(".", "\\056") + '"'
    assert c.get("/me", headers={"Cookie": f"access_token={hidden}"}).status_code == 401
