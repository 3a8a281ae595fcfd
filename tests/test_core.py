"""The sans-IO core, with tables of cases: no event loop, no socket, no store."""

from __future__ import annotations

import re
from typing import Any

import jwt
import pytest

from signout import layout
from signout.config import build_settings
from signout.core import Engine
from signout.rules import revoked
from signout.steps import Commit, Fetch, Pass, Respond, Step, Written
from signout.stores.memory import MemoryStore
from signout.tokens import Source, Token
from signout.web import BadAuthorization, Request, bearer_token, cookies, deletion_cookie, origin_of, path_matches

from .conftest import ISS, NOW, SECRET


def engine(**kwargs: Any) -> Engine:
    return Engine(build_settings(key=SECRET, clock=lambda: NOW, **kwargs))


def token(**overrides: Any) -> str:
    claims: dict[str, Any] = {
        "iss": ISS,
        "sub": "alice",
        "sid": "s",
        "jti": "j",
        "iat": int(NOW),
        "exp": int(NOW) + 600,
    }
    claims.update(overrides)
    return jwt.encode({k: v for k, v in claims.items() if v is not None}, SECRET, algorithm="HS256")


def request(path: str = "/me", method: str = "GET", headers: list[tuple[bytes, bytes]] | None = None) -> Request:
    return Request(kind="http", method=method, path=path, query=b"", headers=headers or [])


def auth(raw: str) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", f"Bearer {raw}".encode())]


# ---- routing: which step a request leads to --------------------------------

ROUTES: list[tuple[str, Request, type[Step]]] = [
    ("no token", request(), Pass),
    ("valid bearer", request(headers=auth(token())), Fetch),
    ("bad bearer", request(headers=auth("x.y.z")), Respond),
    ("basic auth is not ours", request(headers=[(b"authorization", b"Basic YTpi")]), Pass),
    ("bearer without token", request(headers=[(b"authorization", b"Bearer")]), Respond),
    ("two authorization headers", request(headers=auth(token()) + auth(token())), Respond),
    ("logout with a token", request("/auth/logout", "POST", auth(token())), Commit),
    ("logout without a token", request("/auth/logout", "POST"), Respond),
    ("logout with a bad token", request("/auth/logout", "POST", auth("x.y.z")), Respond),
    ("GET logout", request("/auth/logout", "GET"), Respond),
    ("OPTIONS logout goes to the guard", request("/auth/logout", "OPTIONS"), Pass),
    (
        "refresh cookie on its path",
        request("/auth/refresh", "POST", [(b"cookie", f"refresh_token={token()}".encode())]),
        Fetch,
    ),
    ("refresh cookie elsewhere", request("/me", headers=[(b"cookie", f"refresh_token={token()}".encode())]), Pass),
    ("refresh cookie on a look-alike path", request("/auth/refreshx", headers=[(b"cookie", b"refresh_token=x")]), Pass),
]


@pytest.mark.parametrize(("name", "req", "kind"), ROUTES, ids=[r[0] for r in ROUTES])
def test_routing_table(name: str, req: Request, kind: type[Step]) -> None:
    assert type(engine().start(req)) is kind


def test_guard_answers_from_store_rows() -> None:
    step = engine().start(request(headers=auth(token())))
    assert isinstance(step, Fetch)
    (lookup,) = step.lookups
    assert lookup.fields == (U, S, J)
    assert isinstance(step.resume([[None, None, None]]), Pass)
    dead = step.resume([[None, None, layout.expiry_value(int(NOW) + 10)]])
    assert isinstance(dead, Respond) and dead.answer.status == 401
    stale = step.resume([[None, None, layout.expiry_value(int(NOW) - 10)]])
    assert isinstance(stale, Pass)


@pytest.mark.parametrize(("mode", "status"), [("reject", 503), ("allow", 200)])
def test_store_failure_follows_on_store_error(mode: str, status: int) -> None:
    step = engine(on_store_error=mode).start(request(headers=auth(token())))
    assert isinstance(step, Fetch)
    after = step.resume(None)
    if status == 503:
        assert isinstance(after, Respond)
        assert after.answer.status == 503
        assert (b"retry-after", b"5") in after.answer.headers
    else:
        assert isinstance(after, Pass)


@pytest.mark.parametrize(
    ("written", "says"),
    [(Written.NO, "the revocation was not recorded"), (Written.UNSURE, "it may not have been recorded")],
)
def test_logout_write_failure_is_503_with_cookies_cleared(written: Written, says: str) -> None:
    step = engine().start(request("/auth/logout", "POST", auth(token())))
    assert isinstance(step, Commit)
    failed = step.resume(written)
    assert isinstance(failed, Respond)
    assert failed.answer.status == 503
    assert says in str(failed.answer.data["message"])
    assert any(k == b"set-cookie" for k, _ in failed.answer.headers)
    done = step.resume(Written.YES)
    assert isinstance(done, Respond) and done.answer.status == 200


def test_logout_writes_jti_until_exp_plus_leeway_and_sid_for_the_max_lifetime_plus_two_leeways() -> None:
    step = engine(max_token_lifetime=3600, leeway=30).start(request("/auth/logout", "POST", auth(token())))
    assert isinstance(step, Commit)
    (write,) = step.writes
    assert dict(write.fields) == {
        J: layout.expiry_value(int(NOW) + 600 + 30),
        S: layout.expiry_value(int(NOW) + 3600 + 2 * 30),
    }


# ---- revoked(): the rule of SPEC section 3 ----------------------------------


def t(iat: float | None = NOW, sub: str | None = "alice", sid: str | None = "s", jti: str | None = "j") -> Token:
    return Token(Source.HEADER, {}, ISS, sub, sid, jti, iat, NOW + 600)


FAR = int(NOW) + 10_000
# The fields of t()'s ids (sub "alice", sid "s", jti "j", all of ISS).
U, S, J = layout.user_field(ISS, "alice"), layout.session_field(ISS, "s"), layout.token_field(ISS, "j")
REVOKED: list[tuple[str, Token, dict[bytes, bytes], bool]] = [
    ("nothing stored", t(), {}, False),
    ("jti denylisted", t(), {J: layout.expiry_value(FAR)}, True),
    ("jti entry expired", t(), {J: layout.expiry_value(int(NOW) - 1)}, False),
    ("other jti", t(jti="k"), {J: layout.expiry_value(FAR)}, False),
    ("sid logged out", t(), {S: layout.expiry_value(FAR)}, True),
    ("user cutoff after iat", t(iat=NOW - 5), {U: layout.cutoff_value(int(NOW), FAR)}, True),
    ("user cutoff equal to iat", t(iat=NOW), {U: layout.cutoff_value(int(NOW), FAR)}, True),
    ("user cutoff before iat", t(iat=NOW + 1), {U: layout.cutoff_value(int(NOW), FAR)}, False),
    ("no iat, any cutoff", t(iat=None), {U: layout.cutoff_value(0, FAR)}, True),
    ("cutoff record expired", t(iat=NOW - 5), {U: layout.cutoff_value(int(NOW), int(NOW) - 1)}, False),
    ("no sub: cutoff ignored", t(sub=None), {U: layout.cutoff_value(int(NOW), FAR)}, False),
    ("garbage value", t(), {J: b"not-a-number"}, False),
]


@pytest.mark.parametrize(("name", "tok", "values", "expected"), REVOKED, ids=[r[0] for r in REVOKED])
def test_revoked_table(name: str, tok: Token, values: dict[bytes, bytes], expected: bool) -> None:
    assert revoked(tok, values, NOW) is expected


# ---- key layout: ids are data, never key syntax -----------------------------

NASTY = ["*", "{", "}", "{alice}", "a}b{c", "\r\n", "\x00", "x" * 5000, "x" * 65536, "é", "\ud800", ""]
KEY = re.compile(r"^signout:\{[0-9a-f]{4}\}$")


@pytest.mark.parametrize("value", NASTY, ids=[repr(v)[:20] for v in NASTY])
def test_every_id_yields_a_well_formed_key_with_one_tag(value: str) -> None:
    for key in (
        layout.bucket_key("signout", value, value, None, None),
        layout.bucket_key("signout", ISS, None, value, None),
        layout.bucket_key("signout", ISS, None, None, value),
    ):
        assert key is not None and KEY.match(key)
    for field in (layout.user_field(value, value), layout.session_field(ISS, value), layout.token_field(ISS, value)):
        assert len(field) == 1 + layout.FIELD_DIGEST


def test_distinct_ids_never_share_a_field() -> None:
    pairs = [("a:b", "c"), ("a", "b:c"), ("a\x00", "b"), ("a", "\x00b"), (ISS, "x" * 100), (ISS, "x" * 99 + "y")]
    for make in (layout.user_field, layout.session_field, layout.token_field):
        assert len({make(iss, value) for iss, value in pairs}) == len(pairs)
    # One id as a user, a session and a token: three kinds, three fields.
    assert len({layout.user_field(ISS, "x"), layout.session_field(ISS, "x"), layout.token_field(ISS, "x")}) == 3
    # The same jti from two issuers is two tokens.
    assert layout.token_field("https://a", "j") != layout.token_field("https://b", "j")


def test_a_token_is_judged_from_one_bucket_its_owner_picks() -> None:
    # Owner: the user if there is a sub, else the session, else the token itself.
    assert layout.bucket_key("p", ISS, "alice", "s1", "j1") == layout.bucket_key("p", ISS, "alice", None, None)
    assert layout.bucket_key("p", ISS, None, "s1", "j1") == layout.bucket_key("p", ISS, None, "s1", None)
    assert layout.bucket_key("p", ISS, None, None, "j1") is not None
    assert layout.bucket_key("p", ISS, None, None, None) is None


def test_buckets_are_shared_and_spread_evenly() -> None:
    # 65,536 shards: 200,000 users land in about 3 per bucket, none far above.
    keys = [layout.bucket_key("p", ISS, f"user-{i}", None, None) for i in range(200_000)]
    counts: dict[str | None, int] = {}
    for key in keys:
        counts[key] = counts.get(key, 0) + 1
    assert len(counts) > 0.9 * layout.SHARDS
    assert max(counts.values()) < 20


MERGES = [
    (None, b"10", b"10"),
    (b"20", b"10", b"20"),
    (b"10", b"20", b"20"),
    (b"5:20", b"7:10", b"7:20"),
    (b"junk", b"10", b"10"),
]


@pytest.mark.parametrize(("old", "new", "merged"), MERGES)
def test_merge_keeps_the_later_cutoff_and_expiry(old: bytes | None, new: bytes, merged: bytes) -> None:
    assert layout.merge(old, new) == merged


# ---- HTTP parsing never raises ---------------------------------------------

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


# ---- the quick path: only ever the same verdict as start ----------------------------------------


def seen(e: Engine, req: Request) -> Step:
    """``start`` on a request (a fresh token goes into the verified-claims cache)."""
    step = e.start(req)
    assert not isinstance(step, Fetch), "an in-memory store is asked inline, never through a Fetch"
    return step


LOGGED_OUT = token(sub="bob", sid="bob-s", jti="bob-j")

QUICK_CASES: list[tuple[str, Request, bool]] = [
    ("the usual request", request(headers=auth(token())), True),
    ("lower-case scheme, more space", request(headers=[(b"authorization", f"bearer   {token()}".encode())]), True),
    ("any method", request(method="DELETE", headers=auth(token())), True),
    ("no token", request(), False),
    ("basic auth", request(headers=[(b"authorization", b"Basic YTpi")]), False),
    ("bearer without token", request(headers=[(b"authorization", b"Bearer")]), False),
    ("one Bearer of two", request(headers=[(b"authorization", f"Bearer {token()}, Basic YTpi".encode())]), True),
    ("two headers", request(headers=auth(token()) + auth(token())), False),
    ("logout", request("/auth/logout", "POST", auth(token())), False),
    ("logout everywhere", request("/auth/logout-all", "POST", auth(token())), False),
    ("OPTIONS on the logout path", request("/auth/logout", "OPTIONS", auth(token())), False),
    ("under the refresh cookie's path", request("/auth/refresh", headers=auth(token())), False),
    ("excluded", request("/health", headers=auth(token())), False),
    ("expired", request(headers=auth(token(exp=int(NOW) - 120))), False),
    ("not yet valid", request(headers=auth(token(nbf=int(NOW) + 120))), False),
    ("issued in the future", request(headers=auth(token(iat=int(NOW) + 120))), False),
    ("revoked", request(headers=auth(LOGGED_OUT)), False),
    # carol logged out everywhere at NOW - 100: a token issued after the cutoff passes, and quickly
    ("issued after its user's cutoff", request(headers=auth(token(sub="carol", sid="c2", jti="c2"))), True),
    (
        "issued before its user's cutoff",
        request(headers=auth(token(sub="carol", sid="c1", jti="c1", iat=int(NOW) - 200))),
        False,
    ),
    ("bad signature", request(headers=auth(token()[:-2] + "xx")), False),
]


@pytest.mark.parametrize(("name", "req", "taken"), QUICK_CASES, ids=[c[0] for c in QUICK_CASES])
def test_quick_passes_only_what_start_passes_and_the_same_token(name: str, req: Request, taken: bool) -> None:
    store = MemoryStore(warn=False)
    e = Engine(build_settings(key=SECRET, clock=lambda: NOW, exclude_paths=["/health"]), fetch_local=store.fetch_local)
    assert e.quick_ready
    logout = e.start(request("/auth/logout", "POST", auth(LOGGED_OUT)))
    assert isinstance(logout, Commit)
    store.write_sync(logout.writes, logout.now)
    cutoff = Engine(build_settings(key=SECRET, clock=lambda: NOW - 100), fetch_local=store.fetch_local)
    everywhere = cutoff.start(
        request("/auth/logout-all", "POST", auth(token(sub="carol", sid="c0", jti="c0", iat=int(NOW) - 150)))
    )
    assert isinstance(everywhere, Commit)
    store.write_sync(everywhere.writes, everywhere.now)
    for _ in range(2):  # the second time, everything start caches is cached
        general = seen(e, req)
        quick = e.quick(req.path, req.headers)
        if quick is not None:
            assert isinstance(general, Pass) and general.token is quick
    assert (quick is not None) is taken  # taken where it should be (not dead code), and nowhere else


def test_quick_is_not_ready_beside_an_access_cookie_without_a_cache_or_an_in_memory_store() -> None:
    store = MemoryStore(warn=False)
    assert not engine().quick_ready  # no store answers from memory: every check is a Fetch
    assert not Engine(build_settings(key=SECRET, access_cookie="at"), fetch_local=store.fetch_local).quick_ready
    assert not Engine(build_settings(key=SECRET, verified_cache_size=0), fetch_local=store.fetch_local).quick_ready
    assert Engine(build_settings(key=SECRET), fetch_local=store.fetch_local).quick_ready


def test_quick_refuses_a_lookup_worked_out_under_another_policy() -> None:
    store = MemoryStore(warn=False)
    e = Engine(build_settings(key=SECRET, clock=lambda: NOW), fetch_local=store.fetch_local)
    req = request(headers=auth(token()))
    assert isinstance(seen(e, req), Pass)
    known = e.settings.verifier.cached(token(), NOW)
    assert known is not None and known.memo is not None
    known.memo = (object(), known.memo[1])  # as if another engine's policy had memoised it
    assert e.quick(req.path, req.headers) is None


def test_quick_judges_the_time_of_a_cached_token_on_every_request() -> None:
    store = MemoryStore(warn=False)
    clock = [NOW]
    e = Engine(build_settings(key=SECRET, clock=lambda: clock[0]), fetch_local=store.fetch_local)
    req = request(headers=auth(token(exp=int(NOW) + 60)))
    assert isinstance(seen(e, req), Pass)
    assert e.quick(req.path, req.headers) is not None  # cached and timely
    clock[0] = NOW + 61 + e.settings.leeway
    assert e.quick(req.path, req.headers) is None  # expired since: start says how
    late = seen(e, req)
    assert isinstance(late, Respond) and late.answer.status == 401
