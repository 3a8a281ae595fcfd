"""Refresh token rotation and reuse (``signout.rotation``; RFC 9700 section 4.14.2, SPEC section 8).

A rotated-out refresh token used again past the grace kills its login; a refresh the app refused
is no use; two instances racing one token let one through. Through both adapters over the real
Redis. (Refresh tokens in bodies under rotation, through real servers: ``test_bodies.py``.)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from signout import AuditEvent, RedisStore, SignOutMiddleware

from .conftest import SECRET, Backend, make_client
from .helpers import bearer
from .issuers import keycloak, refused, simplejwt

Client = Callable[..., Any]
REFRESH_PATH = "/api/token/refresh/"


class Clock:
    """Time for the middleware, moved by the test (tokens are minted against the real clock)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def test_a_rotated_out_refresh_token_reused_past_the_grace_kills_its_login(real_client: Client) -> None:
    clock = Clock()
    events: list[AuditEvent] = []
    c = real_client(refresh_rotation=True, refresh_reuse_grace=10, clock=clock, on_event=events.append)
    old = keycloak("Refresh", aud=None)
    login_access = keycloak("Bearer", aud=None)  # same sid: the same login
    cookie = {"Cookie": f"refresh_token={old}"}
    assert c.post("/auth/refresh", headers=cookie).status_code == 200  # the rotation
    clock.now += 5
    assert c.post("/auth/refresh", headers=cookie).status_code == 200  # a second tab, within the grace
    clock.now += 6
    r = c.post("/auth/refresh", headers=cookie)
    assert refused(r, "Refresh token was already used; its login has been revoked")
    assert r.headers["set-cookie"].startswith('refresh_token=""; Path=/auth/refresh;')
    assert refused(c.get("/me", headers=bearer(login_access)), "Token has been revoked")
    assert [(e.event, e.outcome, e.sid) for e in events if e.event == "refresh_reuse"] == [
        ("refresh_reuse", "revoked", "kc-session-1")
    ]


def test_reuse_of_a_token_without_sid_revokes_its_user(real_client: Client) -> None:
    clock = Clock()
    c = real_client(
        user_claim="user_id", refresh_paths=[REFRESH_PATH], refresh_rotation=True, refresh_reuse_grace=0, clock=clock
    )
    old, rotated_into = simplejwt("refresh"), simplejwt("refresh")
    assert c.post(REFRESH_PATH, json={"refresh": old}).status_code == 200
    assert refused(
        c.post(REFRESH_PATH, json={"refresh": old}), "Refresh token was already used; its login has been revoked"
    )
    assert refused(c.post(REFRESH_PATH, json={"refresh": rotated_into}), "Token has been revoked")


def test_a_refresh_the_app_refused_is_not_a_use(real_client: Client) -> None:
    c = real_client(refresh_paths=[REFRESH_PATH], refresh_rotation=True, refresh_reuse_grace=0)
    token = simplejwt("refresh")
    assert c.post(REFRESH_PATH + "?status=400", json={"refresh": token}).status_code == 400
    assert c.post(REFRESH_PATH, json={"refresh": token}).status_code == 200
    assert c.post(REFRESH_PATH, json={"refresh": token}).status_code == 401


def test_rotation_refuses_a_refresh_token_without_jti(real_client: Client) -> None:
    r = real_client(refresh_rotation=True).post(
        "/auth/refresh", headers={"Cookie": f"refresh_token={keycloak('Refresh', jti=None, aud=None)}"}
    )
    assert r.status_code == 401 and "jti" in r.json()["message"]


def test_a_get_under_a_broad_refresh_cookie_path_is_not_a_use(real_client: Client) -> None:
    """A refresh cookie on Path=/ rides along with GET /me too; only a refresh (a POST) uses the token."""
    clock = Clock()
    c = real_client(refresh_cookie_path="/", refresh_rotation=True, refresh_reuse_grace=0, clock=clock)
    cookie = {"Cookie": f"refresh_token={keycloak('Refresh', aud=None)}"}
    assert c.get("/me", headers=cookie).status_code == 200
    assert c.get("/me", headers=cookie).status_code == 200
    assert c.post("/auth/refresh", headers=cookie).status_code == 200
    clock.now += 1
    assert refused(
        c.post("/auth/refresh", headers=cookie), "Refresh token was already used; its login has been revoked"
    )


# ---- two instances, one refresh token ----------------------------------------------------------------


def test_two_instances_racing_one_refresh_token_let_one_through(redis_url: str) -> None:
    """The use is claimed atomically in Redis: of two instances that both let the token
    reach their app at once, the second to record it sees the first's use, and refuses."""
    import asyncio

    import httpx

    async def race() -> list[httpx.Response]:
        arrived = asyncio.Event()
        waiting = 0

        async def slow_refresh(scope: Any, receive: Any, send: Any) -> None:
            nonlocal waiting
            waiting += 1
            if waiting == 2:
                arrived.set()
            await asyncio.wait_for(arrived.wait(), 5)  # both requests passed both guards
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"new tokens"})

        options: dict[str, Any] = {"key": SECRET, "redis_url": redis_url, "refresh_rotation": True}
        instances = [SignOutMiddleware(slow_refresh, refresh_reuse_grace=0, **options) for _ in range(2)]
        cookie = {"Cookie": f"refresh_token={token}"}
        clients = [
            httpx.AsyncClient(transport=httpx.ASGITransport(app=m), base_url="https://app.test") for m in instances
        ]
        try:
            return list(await asyncio.gather(*(c.post("/auth/refresh", headers=cookie) for c in clients)))
        finally:
            for c in clients:
                await c.aclose()

    token = keycloak("Refresh", aud=None)
    answers = asyncio.run(race())
    assert sorted(a.status_code for a in answers) == [200, 401]
    assert [a.text for a in answers if a.status_code == 200] == ["new tokens"]
    # The loser revoked the login, so the winner's new tokens (same sid) die with it.
    check = make_client("wsgi", Backend("redis", lambda: RedisStore(redis_url), lambda: 0, list), "https://app.test")
    assert refused(check().get("/me", headers=bearer(keycloak("Bearer", aud=None))), "Token has been revoked")


def test_two_wsgi_instances_racing_one_refresh_token_let_one_through(redis_url: str) -> None:
    import threading

    from signout import SignOutWSGIMiddleware

    barrier = threading.Barrier(2, timeout=5)

    def slow_refresh(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        barrier.wait()  # both requests passed both guards
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"new tokens"]

    token = keycloak("Refresh", aud=None)
    instances = [
        SignOutWSGIMiddleware(
            slow_refresh, key=SECRET, redis_url=redis_url, refresh_rotation=True, refresh_reuse_grace=0
        )
        for _ in range(2)
    ]
    statuses: list[str] = []
    bodies: list[bytes] = []

    def call(app: Any) -> None:
        environ = {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": "/auth/refresh",
            "HTTP_COOKIE": f"refresh_token={token}",
            "wsgi.input": None,
        }
        bodies.append(b"".join(app(environ, lambda status, headers, exc_info=None: statuses.append(status))))

    threads = [threading.Thread(target=call, args=(app,)) for app in instances]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(s.split()[0] for s in statuses) == ["200", "401"]
    assert b"new tokens" in bodies and sum(b"already used" in b for b in bodies) == 1
