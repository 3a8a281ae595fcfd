"""The engine (``signout.core``): which step a request leads to, the guard, logout, logout
everywhere, ``return_to``, the quick path.

First the sans-IO engine, with tables of cases (no event loop, no socket, no store); then the
same rules end to end, through both adapters on every store (memory, fakeredis, real Redis).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from starlette.testclient import TestClient

from signout import SignOutMiddleware, layout
from signout.config import build_settings
from signout.core import Engine
from signout.errors import TokenError
from signout.steps import Commit, Fetch, Pass, Respond, Step, Written
from signout.stores.memory import MemoryStore
from signout.web import Request

from .apps import starlette_app
from .conftest import ISS, NOW, SECRET, Backend, TokenFactory
from .framework_helpers import DELETED_REFRESH_COOKIE
from .helpers import bearer, earlier

Client = Callable[..., TestClient]


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


# The fields of token()'s ids (sub "alice", sid "s", jti "j", all of ISS).
U, S, J = layout.user_field(ISS, "alice"), layout.session_field(ISS, "s"), layout.token_field(ISS, "j")


# ---- routing: which step a request leads to ----------------------------------------------------------


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
    # Two lookups, one round trip: the owner bucket (its user's: u, the old place of s, j)
    # and the session bucket (s).
    owner, session = step.lookups
    assert owner.fields == (U, S, J) and session.fields == (S,)
    assert owner.key != session.key
    assert isinstance(step.resume([[None, None, None], [None]]), Pass)
    dead = step.resume([[None, None, layout.expiry_value(int(NOW) + 10)], [None]])
    assert isinstance(dead, Respond) and dead.answer.status == 401
    stale = step.resume([[None, None, layout.expiry_value(int(NOW) - 10)], [None]])
    assert isinstance(stale, Pass)
    ended = step.resume([[None, None, None], [layout.expiry_value(int(NOW) + 10)]])
    assert isinstance(ended, Respond) and ended.answer.status == 401
    # The transition read: a session revoked by the previous layout, in the owner bucket.
    before = step.resume([[None, layout.expiry_value(int(NOW) + 10), None], [None]])
    assert isinstance(before, Respond) and before.answer.status == 401
    both_stale = step.resume([[None, layout.expiry_value(int(NOW) - 10), None], [layout.expiry_value(int(NOW) - 5)]])
    assert isinstance(both_stale, Pass)


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
    # The jti in the owner bucket (the user's), the sid in the session's own bucket.
    owner, session = step.writes
    assert dict(owner.fields) == {J: layout.expiry_value(int(NOW) + 600 + 30)}
    assert dict(session.fields) == {S: layout.expiry_value(int(NOW) + 3600 + 2 * 30)}
    assert owner.key != session.key


# ---- the quick path: only ever the same verdict as start ---------------------------------------------


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
        if isinstance(quick, TokenError):  # refused without start: start would answer the same
            assert isinstance(general, Respond) and e.refused(req, quick) == general
        elif quick is not None:
            assert isinstance(general, Pass) and general.token is quick
    # Taken where it should be (not dead code), and nowhere else.
    assert (quick is not None and not isinstance(quick, TokenError)) is taken


@pytest.mark.parametrize(("name", "req", "taken"), QUICK_CASES, ids=[c[0] for c in QUICK_CASES])
def test_usual_with_clean_rows_passes_only_what_start_passes(name: str, req: Request, taken: bool) -> None:
    # The ASGI adapter's path for a store read over the network: usual, one read, clean.
    store = MemoryStore(warn=False)
    e = Engine(build_settings(key=SECRET, clock=lambda: NOW, exclude_paths=["/health"]))  # every read a Fetch
    assert e.usual_ready and not e.quick_ready
    local = store.fetch_local
    for step in (
        Engine(build_settings(key=SECRET, clock=lambda: NOW), fetch_local=local).start(
            request("/auth/logout", "POST", auth(LOGGED_OUT))
        ),
        Engine(build_settings(key=SECRET, clock=lambda: NOW - 100), fetch_local=local).start(
            request("/auth/logout-all", "POST", auth(token(sub="carol", sid="c0", jti="c0", iat=int(NOW) - 150)))
        ),
    ):
        assert isinstance(step, Commit)
        store.write_sync(step.writes, step.now)

    def general() -> Step:
        step = e.start(req)
        return step.resume(store.fetch_sync(step.lookups, step.now)) if isinstance(step, Fetch) else step

    passed = None
    for _ in range(2):  # the second time, everything start caches is cached
        started = general()
        usual = e.usual(req.path, req.headers)
        passed = None
        if isinstance(usual, TokenError):  # refused without start: start would answer the same
            assert isinstance(started, Respond) and e.refused(req, usual) == started
        elif usual is not None:
            token_, found, now = usual
            step = e.start(req)
            assert isinstance(step, Fetch) and step.lookups is found  # the adapter hands start the rows read
            if not found or e.clean(token_, found, store.fetch_sync(found, now), now):
                passed = token_
                assert isinstance(started, Pass) and started.token is token_
    assert (passed is not None) is taken


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
    expired = e.quick(req.path, req.headers)  # expired since: what start would say
    late = seen(e, req)
    assert isinstance(late, Respond) and late.answer.status == 401
    assert isinstance(expired, TokenError) and e.refused(req, expired) == late


# ---- end to end: the guard and logout, through both adapters on every store --------------------------


def test_no_token_passes_through_untouched(client: Client) -> None:
    r = client().get("/me")
    assert r.status_code == 200
    assert r.json() == {"claims": None, "saw_authorization": False}


def test_valid_token_passes_with_verified_claims_in_scope(client: Client, make_token: TokenFactory) -> None:
    r = client().get("/me", headers=bearer(make_token(sub="alice")))
    assert r.status_code == 200
    assert r.json()["claims"]["sub"] == "alice"


def test_logout_answers_200_clears_the_refresh_cookie_and_revokes(
    client: Client, backend: Backend, make_token: TokenFactory
) -> None:
    c = client()
    token = make_token()
    r = c.post("/auth/logout", headers=bearer(token))
    assert r.status_code == 200
    assert r.json() == {"message": "Logged out successfully"}
    assert r.headers.get_list("set-cookie") == [DELETED_REFRESH_COOKIE]
    assert r.headers["cache-control"] == "no-store"
    assert backend.count() == 2  # the jti and the sid
    after = c.get("/me", headers=bearer(token))
    assert after.status_code == 401
    assert after.json() == {"error": "invalid_token", "message": "Token has been revoked"}
    assert (
        after.headers["www-authenticate"] == 'Bearer error="invalid_token", error_description="Token has been revoked"'
    )
    assert after.headers["cache-control"] == "no-store"


def test_logout_kills_the_refresh_token_of_the_same_session(client: Client, make_token: TokenFactory) -> None:
    c = client()
    access, refresh = make_token(jti="a-1", sid="s-9"), make_token(jti="r-1", sid="s-9")
    assert c.post("/auth/refresh", headers={"Cookie": f"refresh_token={refresh}"}).status_code == 200
    assert c.post("/auth/logout", headers=bearer(access)).status_code == 200
    r = c.post("/auth/refresh", headers={"Cookie": f"refresh_token={refresh}"})
    assert r.status_code == 401
    assert r.json()["message"] == "Token has been revoked"
    assert DELETED_REFRESH_COOKIE in r.headers.get_list("set-cookie")


def test_logout_leaves_other_sessions_and_users_alone(client: Client, make_token: TokenFactory) -> None:
    c = client()
    mine, my_other_login, someone_else = (
        make_token(),
        make_token(jti="j-2", sid="s-2"),
        make_token(sub="bob", jti="j-3", sid="s-3"),  # a session is (iss, sid): another login has another sid
    )
    assert c.post("/auth/logout", headers=bearer(mine)).status_code == 200
    assert c.get("/me", headers=bearer(my_other_login)).status_code == 200
    assert c.get("/me", headers=bearer(someone_else)).status_code == 200


def test_logout_without_a_token_still_clears_cookies_and_revokes_nothing(client: Client, backend: Backend) -> None:
    r = client().post("/auth/logout")
    assert r.status_code == 200
    assert r.headers.get_list("set-cookie") == [DELETED_REFRESH_COOKIE]
    assert backend.count() == 0


def test_logout_never_revokes_on_the_word_of_an_unverified_token(
    client: Client, backend: Backend, make_token: TokenFactory
) -> None:
    forged = make_token(key="another-secret-that-is-32-bytes-long!!")
    r = client().post("/auth/logout", headers=bearer(forged))
    assert r.status_code == 200
    assert backend.count() == 0


def test_logout_revokes_every_presented_token_including_duplicate_cookies(
    client: Client, backend: Backend, make_token: TokenFactory
) -> None:
    c = client(access_cookie="access_token")
    header, cookie = make_token(jti="h", sid="s-h"), make_token(jti="c", sid="s-c")
    refresh_a, refresh_b = make_token(jti="ra", sid="s-ra"), make_token(jti="rb", sid="s-rb")
    cookies = f"access_token={cookie}; refresh_token={refresh_a}; refresh_token={refresh_b}"
    r = c.post("/auth/logout", headers={**bearer(header), "Cookie": cookies})
    assert r.status_code == 200
    assert backend.count() == 8
    deletions = r.headers.get_list("set-cookie")
    assert DELETED_REFRESH_COOKIE in deletions
    assert any(d.startswith('access_token=""; Path=/;') for d in deletions)
    for token in (header, cookie):
        assert c.get("/me", headers=bearer(token)).status_code == 401


def test_guard_checks_every_refresh_cookie_of_the_same_name(client: Client, make_token: TokenFactory) -> None:
    c = client()
    dead, alive = make_token(jti="dead", sid="s-dead"), make_token(jti="alive", sid="s-alive")
    assert c.post("/auth/logout", headers=bearer(dead)).status_code == 200
    r = c.post("/auth/refresh", headers={"Cookie": f"refresh_token={alive}; refresh_token={dead}"})
    assert r.status_code == 401
    assert c.post("/auth/refresh", headers={"Cookie": f"refresh_token={alive}"}).status_code == 200


def test_refresh_cookie_is_only_checked_under_its_path(client: Client, make_token: TokenFactory) -> None:
    c = client()
    dead = make_token()
    assert c.post("/auth/logout", headers=bearer(dead)).status_code == 200
    # A browser would not send it to /me; if something does, the guard does not judge it.
    assert c.get("/me", headers={"Cookie": f"refresh_token={dead}"}).status_code == 200
    assert c.post("/auth/refresh/", headers={"Cookie": f"refresh_token={dead}"}).status_code == 401


@pytest.mark.parametrize(
    ("target", "status"),
    [
        ("https://app.example/bye", 303),
        ("https://app.example/other/page?x=1", 303),
        ("https://exact.example/signed-out", 303),
        ("https://exact.example/elsewhere", 400),
        ("https://evil.example/", 400),
        ("//evil.example/", 400),
        ("/relative", 400),
        ("javascript:alert(1)", 400),
        ("https://app.example@evil.example/", 400),
        ("https://app.example\\@evil.example/", 400),
        ("http://app.example/", 400),
    ],
)
def test_return_to_redirects_only_to_allowed_targets(client: Client, target: str, status: int) -> None:
    c = client(allowed_redirects=["https://app.example", "https://exact.example/signed-out"])
    r = c.post("/auth/logout", params={"return_to": target}, follow_redirects=False)
    assert r.status_code == status
    assert DELETED_REFRESH_COOKIE in r.headers.get_list("set-cookie")
    if status == 303:
        assert r.headers["location"] == target
    else:
        assert "location" not in r.headers
        assert r.json()["error"] == "invalid_request"


@pytest.mark.parametrize("target", ["https://app.example/\x0b", "https://app.example/\x7f", "https://app.example/ x"])
def test_return_to_with_a_control_character_is_refused(client: Any, target: str) -> None:
    c = client(allowed_redirects=["https://app.example"])
    r = c.post("/auth/logout", params={"return_to": target}, follow_redirects=False)
    assert r.status_code == 400
    assert "location" not in r.headers


def test_clear_site_data_header_on_logout(client: Client) -> None:
    r = client(clear_site_data=("cookies", "storage")).post("/auth/logout")
    assert r.headers["clear-site-data"] == '"cookies", "storage"'


def test_cookie_domain_goes_on_the_deletion_cookie(client: Client) -> None:
    r = client(cookie_domain="example.com").post("/auth/logout")
    assert r.headers["set-cookie"].startswith('refresh_token=""; Domain=example.com; Path=/auth/refresh;')


def test_logout_route_answers_405_to_other_methods_and_lets_options_through(client: Client) -> None:
    c = client()
    r = c.get("/auth/logout")
    assert r.status_code == 405
    assert r.headers["allow"] == "POST"
    assert r.json()["error"] == "method_not_allowed"
    assert c.options("/auth/logout").status_code == 200


def test_logout_path_none_disables_the_route(client: Client, make_token: TokenFactory) -> None:
    r = client(logout_path=None).post("/auth/logout", headers=bearer(make_token()))
    assert r.json() == {"ok": True}  # the app's own handler answered


def test_exclude_paths_are_never_checked(client: Client, make_token: TokenFactory) -> None:
    c = client(exclude_paths=["/health"])
    assert c.get("/health", headers=bearer("garbage")).status_code == 200
    assert c.get("/me", headers=bearer("garbage")).status_code == 401


def test_on_invalid_token_pass_hands_the_request_to_the_app(client: Client) -> None:
    r = client(on_invalid_token="pass").get("/me", headers=bearer("not.a.token"))
    assert r.status_code == 200
    assert r.json() == {"claims": None, "saw_authorization": True}


def test_invalid_token_is_rejected_with_a_bearer_challenge(client: Client, make_token: TokenFactory) -> None:
    r = client().get("/me", headers=bearer(make_token(exp=1_000_000_000, iat=999_999_000)))
    assert r.status_code == 401
    assert r.json() == {"error": "invalid_token", "message": "Token has expired"}
    assert r.headers["www-authenticate"] == 'Bearer error="invalid_token", error_description="Token has expired"'


def test_an_invalid_refresh_cookie_is_rejected_and_cleared(client: Client, make_token: TokenFactory) -> None:
    r = client(access_cookie="access_token").post(
        "/auth/refresh", headers={"Cookie": f"access_token={make_token()}; refresh_token=garbage"}
    )
    assert r.status_code == 401
    assert r.headers.get_list("set-cookie") == [DELETED_REFRESH_COOKIE]  # the valid access cookie stays


def test_a_revoked_access_cookie_is_cleared(client: Client, make_token: TokenFactory) -> None:
    c = client(access_cookie="access_token")
    token = make_token()
    assert c.post("/auth/logout", headers=bearer(token)).status_code == 200
    r = c.get("/me", headers={"Cookie": f"access_token={token}"})
    assert r.status_code == 401
    assert r.headers["set-cookie"].startswith('access_token=""; Path=/; Max-Age=0;')


# ---- end to end: logout everywhere (single sign-out) -------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_logout_all_kills_every_session_of_the_user(
    client: Client, backend: Backend, make_token: TokenFactory, method: str
) -> None:
    c = client()
    laptop = make_token(sid="laptop", jti="l1", iat=earlier())
    phone = make_token(sid="phone", jti="p1", iat=earlier())
    phone_refresh = make_token(sid="phone", jti="p2", iat=earlier())
    bob = make_token(sub="bob", sid="b", jti="b1", iat=earlier())
    r = c.request(method, "/auth/logout-all", headers=bearer(laptop))
    assert r.status_code == 200
    assert r.json() == {"message": "Successfully logged out from SSO session"}
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["set-cookie"].startswith('refresh_token=""; Path=/auth/refresh;')
    for token in (laptop, phone):
        assert c.get("/me", headers=bearer(token)).status_code == 401
    assert c.post("/auth/refresh", headers={"Cookie": f"refresh_token={phone_refresh}"}).status_code == 401
    assert c.get("/me", headers=bearer(bob)).status_code == 200


def test_a_token_issued_after_the_cutoff_works(client: Client, make_token: TokenFactory) -> None:
    c = client()
    # Until one logout falls within one clock second: that second is the cutoff. Each try
    # is another user's, since a try's cutoff revokes the next try's (older) token.
    for attempt in range(5):
        sub = f"alice-{attempt}"
        second = int(time.time())
        assert c.post("/auth/logout-all", headers=bearer(make_token(sub=sub, iat=earlier()))).status_code == 200
        if int(time.time()) == second:
            break
    else:
        pytest.fail("no logout-all within one clock second")
    later = make_token(sub=sub, sid="new", jti="n1", iat=second + 2)
    assert c.get("/me", headers=bearer(later)).status_code == 200
    same_second = make_token(sub=sub, sid="new2", jti="n2", iat=second)
    assert c.get("/me", headers=bearer(same_second)).status_code == 401  # iat equal to the cutoff second


def test_a_token_without_iat_dies_by_any_user_wide_logout(client: Client, make_token: TokenFactory) -> None:
    c = client()
    assert c.post("/auth/logout-all", headers=bearer(make_token(iat=earlier()))).status_code == 200
    assert c.get("/me", headers=bearer(make_token(sid="x", jti="x", iat=None))).status_code == 401


def test_same_sub_under_another_issuer_is_untouched(client: Client, make_token: TokenFactory) -> None:
    c = client()
    assert c.post("/auth/logout-all", headers=bearer(make_token(iat=earlier()))).status_code == 200
    other = make_token(iss="https://other.test", sid="o", jti="o", iat=earlier())
    assert c.get("/me", headers=bearer(other)).status_code == 200


@pytest.mark.parametrize("case", ["no token", "bad signature", "expired", "revoked", "garbage"])
def test_logout_all_needs_a_valid_unrevoked_token(
    client: Client, backend: Backend, make_token: TokenFactory, case: str
) -> None:
    c = client()
    headers: dict[str, str] = {}
    if case == "bad signature":
        headers = bearer(make_token(key="another-secret-that-is-32-bytes-long!!"))
    elif case == "expired":
        headers = bearer(make_token(exp=earlier(600), iat=earlier(1200)))
    elif case == "revoked":
        token = make_token()
        assert c.post("/auth/logout", headers=bearer(token)).status_code == 200
        headers = bearer(token)
    elif case == "garbage":
        headers = {"Authorization": "Bearer \x01"}
    before = backend.count()
    r = c.post("/auth/logout-all", headers=headers)
    assert r.status_code == 401
    assert r.json() == {"message": "Unauthenticated."}
    assert backend.count() == before


def test_logout_all_answers_405_to_other_methods(client: Client) -> None:
    r = client().delete("/auth/logout-all")
    assert r.status_code == 405
    assert r.headers["allow"] == "GET, POST"


def test_logout_all_with_a_token_without_sub_is_400(client: Client, backend: Backend, make_token: TokenFactory) -> None:
    r = client().post("/auth/logout-all", headers=bearer(make_token(sub=None)))
    assert r.status_code == 400
    assert backend.count() == 0


def test_two_apps_on_one_redis_single_sign_out(redis_url: str, make_token: TokenFactory) -> None:
    shop = TestClient(SignOutMiddleware(starlette_app(), key=SECRET, redis_url=redis_url), base_url="https://shop.test")
    blog = TestClient(SignOutMiddleware(starlette_app(), key=SECRET, redis_url=redis_url), base_url="https://blog.test")
    at_shop = make_token(sid="shop", jti="s1", iat=earlier())
    at_blog = make_token(sid="blog", jti="b1", iat=earlier())
    carol = make_token(sub="carol", sid="c", jti="c1", iat=earlier())
    assert blog.get("/me", headers=bearer(at_blog)).status_code == 200
    assert shop.get("/auth/logout-all", headers=bearer(at_shop)).status_code == 200
    for app in (shop, blog):
        assert app.get("/me", headers=bearer(at_blog)).status_code == 401
        assert app.get("/me", headers=bearer(at_shop)).status_code == 401
        assert app.get("/me", headers=bearer(carol)).status_code == 200
    fresh = make_token(sid="again", jti="a1", iat=int(time.time()) + 2)
    assert blog.get("/me", headers=bearer(fresh)).status_code == 200


def test_logout_everywhere_with_nothing_to_look_up_is_a_400_not_a_500(redis_url: str, make_token: TokenFactory) -> None:
    """require_revocable=False lets a token with no sub, sid or jti through; logout-all then has
    no store lookup to make, and must answer, over a warm connection too (the reader got an
    empty read once, and raised IndexError: a 500)."""
    from starlette.testclient import TestClient

    from signout import SignOutMiddleware

    from .apps import starlette_app

    app = SignOutMiddleware(starlette_app(), key=SECRET, redis_url=redis_url, require_revocable=False)
    with TestClient(app, base_url="https://app.test") as c:  # one loop: the connection stays warm
        assert c.get("/me", headers=bearer(make_token())).status_code == 200
        r = c.get("/auth/logout-all", headers=bearer(make_token(sub=None, sid=None, jti=None)))
        assert r.status_code == 400 and r.json()["error"] == "invalid_request"
