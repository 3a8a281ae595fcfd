"""OIDC RP-Initiated Logout 1.0 (``upstream.RPInitiated``, ``signout.rp_logout``; SPEC section 10).

The whole round trip through the real OpenID Provider of ``tests/oidc_provider.py``, as a
browser makes it, through both adapters over Redis: the local logout first, the 303 to the
OP's end-session endpoint, the OP's own logout page and confirmation, the way back with the
``state`` signed here, and on to ``return_to``. Then what must not work: a state not signed
here, tampered with, expired, or naming a place no logout allowed; the other answers of a
logout (refused, a store failure) never send the browser to the OP; the config errors.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
import pytest
from starlette.testclient import TestClient

from signout import AuditEvent, ConfigError, MemoryStore, SignOutMiddleware, SignOutWSGIMiddleware
from signout.rp_logout import RPLogout
from signout.upstream import RPInitiated

from .apps import starlette_app, wsgi_app
from .conftest import SECRET, PEP3333Transport, TokenFactory
from .helpers import ADAPTERS, bearer
from .oidc_provider import POST_LOGOUT_REDIRECT_URI, OIDCProvider, oidc_provider_fixture  # noqa: F401

APP = "https://app.test"
BACK = f"{APP}/auth/logged-out"
BYE = f"{APP}/bye"
STATE_SECRET = "a-state-secret-of-at-least-32-bytes!"
END_SESSION = "https://op.example/session/end"


def rp(
    end_session: str = END_SESSION, client_id: str = "shop", secret: str = STATE_SECRET, **kwargs: Any
) -> RPInitiated:
    kwargs.setdefault("id_token_cookie", "id_token")
    return RPInitiated(end_session, client_id, BACK, secret, **kwargs)


def app_with(adapter: str, preset: RPInitiated, events: list[AuditEvent] | None = None, **kwargs: Any) -> Any:
    kwargs.setdefault("key", SECRET)
    kwargs.setdefault("store", MemoryStore(warn=False))
    if events is not None:
        kwargs["on_event"] = events.append
    options = {"upstream_logout": preset, "allowed_redirects": [BYE], **kwargs}
    if adapter == "asgi":
        return SignOutMiddleware(starlette_app(), **options)
    return SignOutWSGIMiddleware(wsgi_app(), **options)


def client(adapter: str, app: Any) -> Any:
    """The browser's side of the app: redirects are looked at, never followed."""
    if adapter == "asgi":
        return TestClient(app, base_url=APP, follow_redirects=False)
    return httpx.Client(transport=PEP3333Transport(app), base_url=APP)  # type: ignore[arg-type]


def query(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query)


def back_from_op(url: str) -> str:
    """The path and query of the OP's redirect to ``post_logout_redirect_uri`` (the app's side)."""
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == BACK, url
    return f"{parts.path}?{parts.query}"


# ---- through the real OpenID Provider ---------------------------------------------------------


@pytest.fixture
def op(oidc_provider: OIDCProvider) -> Any:
    oidc_provider.reset()
    oidc_provider.configure(post_logout_redirect_uris=[BACK])
    yield oidc_provider
    oidc_provider.configure(post_logout_redirect_uris=[POST_LOGOUT_REDIRECT_URI])


def html_value(page: str, marker: str) -> str:
    start = page.index(marker) + len(marker)
    return page[start : page.index('"', start)]


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_the_round_trip_through_the_real_op(op: OIDCProvider, adapter: str, redis_url: str) -> None:
    events: list[AuditEvent] = []
    preset = rp(op.end_session_endpoint, op.client_id)
    app = app_with(
        adapter,
        preset,
        events,
        key=None,
        store=None,
        jwks_url=op.jwks_uri,
        issuer=op.issuer,
        audience=[op.resource, op.client_id],
        redis_url=redis_url,
    )
    c = client(adapter, app)
    alice = op.login("alice")  # alice.browser holds her session at the OP
    assert c.get("/me", headers=bearer(alice.access_token)).status_code == 200

    r = c.post(
        "/auth/logout",
        params={"return_to": BYE},
        headers={**bearer(alice.access_token), "Cookie": f"id_token={alice.id_token}"},
    )

    assert r.status_code == 303
    location = r.headers["location"]
    assert location.startswith(op.end_session_endpoint + "?")
    sent = query(location)
    assert sent["id_token_hint"] == [alice.id_token] and sent["client_id"] == [op.client_id]
    assert sent["post_logout_redirect_uri"] == [BACK] and len(sent["state"]) == 1
    assert r.json() == {"message": "Logged out successfully", "upstream": "redirected", "location": location}
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["set-cookie"].startswith('refresh_token=""; Path=/auth/refresh;')
    # The local logout came first: the token is dead before the browser reaches the OP.
    assert c.get("/me", headers=bearer(alice.access_token)).status_code == 401
    assert [(e.event, e.outcome, e.upstream) for e in events if e.event == "logout"] == [
        ("logout", "revoked", "redirected")
    ]

    # The browser at the OP: its logout page, confirmed (every client of the session logged out).
    page = alice.browser.get(location)
    assert page.status_code == 200, page.text[:300]
    action = urljoin(str(page.url), html_value(page.text, 'method="post" action="'))
    done = alice.browser.post(action, data={"xsrf": html_value(page.text, 'name="xsrf" value="'), "logout": "yes"})
    assert done.status_code == 303
    back = done.headers["location"]
    assert query(back)["state"] == sent["state"]  # handed back as it was given
    (received,) = op.recorder.requests  # the OP ended alice's session there, and says so
    assert received.logout_token

    # And back at the app: on to where the logout asked.
    home = c.get(back_from_op(back))
    assert home.status_code == 303 and home.headers["location"] == BYE
    assert home.headers["cache-control"] == "no-store"
    # A bare redirect: anyone can send a browser here with a state of an anonymous logout.
    assert "set-cookie" not in home.headers and "clear-site-data" not in home.headers
    assert [(e.event, e.outcome) for e in events][-1] == ("upstream_logout", "returned")


# ---- the way back: only a state signed here, in time, to an allowed place -----------------------


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_the_way_back_refuses_states_not_signed_here(adapter: str, make_token: TokenFactory) -> None:
    events: list[AuditEvent] = []
    app = app_with(adapter, rp(), events)
    c = client(adapter, app)
    r = c.post("/auth/logout", headers=bearer(make_token()))
    assert r.status_code == 303
    state = query(r.headers["location"])["state"][0]
    assert c.get("/auth/logged-out", params={"state": state}).headers["location"] == "/"  # landing: no return_to

    foreign = RPLogout(rp(secret="another-secret-of-at-least-32-bytes!!"), 16384, time.time, 30)
    forged = query(foreign.location(BYE, ()))["state"][0]
    for bad in ({"state": state[:-2] + ("AA" if not state.endswith("AA") else "BB")}, {"state": forged}, {}):
        answer = c.get("/auth/logged-out", params=bad)
        assert answer.status_code == 400 and "location" not in answer.headers, bad
        assert answer.json() == {
            "error": "invalid_request",
            "message": "The logout's state is missing, invalid or expired",
        }
    two = c.get(f"/auth/logged-out?state={state}&state={state}")
    assert two.status_code == 400  # one state, not a choice between two
    assert c.post("/auth/logged-out", params={"state": state}).status_code == 405
    refused = [e for e in events if e.event == "upstream_logout" and e.outcome == "refused"]
    assert len(refused) == 4


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_a_signed_state_naming_a_place_no_logout_allowed_is_refused(adapter: str) -> None:
    # Defense in depth: the secret signs nothing else, but a target is checked again on the way back.
    c = client(adapter, app_with(adapter, rp()))
    state = query(RPLogout(rp(), 16384, time.time, 30).location("https://evil.example/", ()))["state"][0]
    r = c.get("/auth/logged-out", params={"state": state})
    assert r.status_code == 400 and "location" not in r.headers


def test_a_state_expires_after_max_age_give_or_take_leeway() -> None:
    now = [1_800_000_000.0]
    signing = RPLogout(rp(max_age=60), 16384, lambda: now[0], 30)
    state = query(signing.location(BYE, ()))["state"][0]
    # Another instance, its clock 20 s behind the one that signed: within leeway, accepted.
    behind = RPLogout(rp(max_age=60), 16384, lambda: now[0] - 20, 30)
    assert behind.target(state) == BYE
    now[0] += 60 + 30  # max_age + leeway: still in time
    assert signing.target(state) == BYE
    now[0] += 1
    assert signing.target(state) is None
    assert signing.target("x" * 9000) is None
    # Signed for further ahead than max_age allows (a state of a longer-lived configuration).
    longer = RPLogout(rp(max_age=3600), 16384, lambda: now[0], 30)
    assert signing.target(query(longer.location(BYE, ()))["state"][0]) is None


# ---- what the logout sends (or not) ---------------------------------------------------------------


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_without_an_id_token_the_op_gets_the_client_id(adapter: str, make_token: TokenFactory) -> None:
    c = client(adapter, app_with(adapter, rp()))
    for cookie in ({}, {"Cookie": "id_token=not-a-jwt"}, {"Cookie": "other=a.b.c"}):
        r = c.post("/auth/logout", headers={**bearer(make_token()), **cookie})
        sent = query(r.headers["location"])
        assert r.status_code == 303 and "id_token_hint" not in sent and sent["client_id"] == ["shop"], cookie
    # No token at all: nothing to revoke here, and the OP's session may still be alive: go there.
    r = c.post("/auth/logout")
    assert r.status_code == 303 and r.headers["location"].startswith(END_SESSION + "?")


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_an_end_session_endpoint_with_a_query_of_its_own_keeps_it(adapter: str, make_token: TokenFactory) -> None:
    b2c = "https://tenant.b2clogin.com/tenant.onmicrosoft.com/oauth2/v2.0/logout?p=B2C_1_signin"
    c = client(adapter, app_with(adapter, rp(b2c)))
    r = c.post("/auth/logout", headers=bearer(make_token()))
    assert r.status_code == 303 and r.headers["location"].startswith(b2c + "&")
    sent = query(r.headers["location"])
    assert sent["p"] == ["B2C_1_signin"] and sent["client_id"] == ["shop"] and len(sent["state"]) == 1


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_logout_everywhere_goes_to_the_op_once_done(adapter: str, make_token: TokenFactory) -> None:
    events: list[AuditEvent] = []
    c = client(adapter, app_with(adapter, rp(), events))
    token = make_token()
    r = c.get("/auth/logout-all", headers=bearer(token))
    assert r.status_code == 303 and r.headers["location"].startswith(END_SESSION + "?")
    assert r.json()["message"] == "Successfully logged out from SSO session"
    # Refused (the token is dead now): the usual answer stands, and the browser stays here.
    r = c.get("/auth/logout-all", headers=bearer(token))
    assert r.status_code == 401 and "location" not in r.headers and r.json()["upstream"] == "skipped"
    assert [(e.outcome, e.upstream) for e in events if e.event == "logout_all"] == [
        ("revoked", "redirected"),
        ("unauthenticated", "skipped"),
    ]


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_a_logout_the_store_did_not_record_is_not_sent_to_the_op(
    adapter: str, dead_url: str, make_token: TokenFactory
) -> None:
    c = client(adapter, app_with(adapter, rp(), store=None, redis_url=dead_url, store_timeout=0.2))
    r = c.post("/auth/logout", headers=bearer(make_token()))
    # The 503 must be seen: a redirect would hide that the revocation was not recorded.
    assert r.status_code == 503 and "location" not in r.headers
    assert r.json()["upstream"] == "skipped" and "not" in r.json()["message"]
    assert r.headers["set-cookie"].startswith('refresh_token=""')


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_a_return_to_not_allowed_keeps_its_400(adapter: str, make_token: TokenFactory) -> None:
    c = client(adapter, app_with(adapter, rp()))
    r = c.post("/auth/logout", params={"return_to": "https://evil.example/"}, headers=bearer(make_token()))
    assert r.status_code == 400 and "location" not in r.headers


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_the_way_back_is_signouts_even_with_a_token(adapter: str, make_token: TokenFactory) -> None:
    c = client(adapter, app_with(adapter, rp()))
    r = c.get("/auth/logged-out", headers=bearer(make_token()))  # never the app's route
    assert r.status_code == 400


# ---- configuration --------------------------------------------------------------------------------


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_a_logout_that_could_not_revoke_says_so_on_the_way_to_the_op(adapter: str, make_token: TokenFactory) -> None:
    c = client(adapter, app_with(adapter, rp(), require_revocable=False))
    r = c.post("/auth/logout", headers=bearer(make_token(sid=None, jti=None)))  # nothing can end it
    assert r.status_code == 303 and r.json()["revoked"] is False  # SPEC section 8, kept in the redirect


@pytest.mark.parametrize(
    ("preset", "options"),
    [
        (RPInitiated(END_SESSION, "shop", f"{APP}/auth/refresh", STATE_SECRET), {}),  # the refresh cookie's path
        (RPInitiated(END_SESSION, "shop", BACK, STATE_SECRET, id_token_cookie="refresh_token"), {}),
        (RPInitiated(END_SESSION, "shop", BACK, STATE_SECRET, id_token_cookie="at"), {"access_cookie": "at"}),
    ],
    ids=["refresh path", "refresh cookie", "access cookie"],
)
def test_the_way_back_and_the_id_token_cookie_stay_clear_of_signouts_own(
    preset: RPInitiated, options: dict[str, Any]
) -> None:
    with pytest.raises(ConfigError) as error:
        app_with("asgi", preset, **options)
    assert error.value.kwarg == "upstream_logout"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"end_session": "http://op.example/session/end"}, "end_session_endpoint must be an https:// URL"),
        ({"end_session": "https://op.example/session/end#x"}, "without fragment or credentials"),
        ({"end_session": "https://u:p@op.example/session/end"}, "without fragment or credentials"),
        ({"end_session": "https://op.example/session/\x0bend"}, "may not hold spaces or control characters"),
        ({"landing": "/\t/evil.example"}, "landing must be a path of this app"),
        ({"landing": "/\\evil.example"}, "landing must be a path of this app"),
        ({"client_id": ""}, "client_id must be a non-empty string"),
        ({"secret": "short"}, "secret must be at least 32 bytes"),
        ({"landing": "//evil.example/"}, "landing must be a path of this app"),
        ({"landing": "https://evil.example/"}, "landing must be a path of this app"),
        ({"id_token_cookie": "id token"}, "id_token_cookie must be a cookie name"),
        ({"max_age": 5}, "max_age must be a whole number of seconds from 10 to 3600"),
        ({"max_age": 60.5}, "max_age must be a whole number of seconds from 10 to 3600"),
    ],
)
def test_config_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match="upstream_logout") as error:
        rp(**kwargs)
    assert message in str(error.value)


def test_the_way_back_needs_a_path_of_its_own() -> None:
    with pytest.raises(ConfigError, match="post_logout_redirect_uri needs a path of its own"):
        RPInitiated(END_SESSION, "shop", APP + "/", STATE_SECRET)
    with pytest.raises(ConfigError, match="may not be percent-encoded"):
        RPInitiated(END_SESSION, "shop", APP + "/auth/logged%2Dout", STATE_SECRET)
    with pytest.raises(ConfigError, match="post_logout_redirect_uri must be an https:// URL"):
        RPInitiated(END_SESSION, "shop", "http://app.example/auth/logged-out", STATE_SECRET)


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_the_way_back_may_not_be_one_of_signouts_routes(adapter: str) -> None:
    taken = RPInitiated(END_SESSION, "shop", f"{APP}/auth/logout", STATE_SECRET)
    with pytest.raises(ConfigError, match="post_logout_redirect_uri's path '/auth/logout' is already") as error:
        app_with(adapter, taken)
    assert error.value.kwarg == "upstream_logout"
