"""What only the WSGI adapter (``signout.wsgi``) does: headers read from the environ, and the app's
iterable when a refresh token's use is recorded (``refresh_rotation``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from signout import SignOutWSGIMiddleware

from .apps import wsgi_app
from .conftest import SECRET, TokenFactory
from .issuers import keycloak


def test_a_wsgi_header_beyond_latin1_is_not_a_crash(make_token: TokenFactory) -> None:
    app = SignOutWSGIMiddleware(wsgi_app(), key=SECRET)
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/me", "HTTP_X_NAME": "€", "wsgi.input": None}
    seen: list[str] = []
    body = app(environ, lambda status, headers, exc_info=None: seen.append(status))
    assert seen == ["200 OK"] and b"claims" in b"".join(body)


# ---- the app's iterable under refresh_rotation -------------------------------------------------------


def wsgi_rotating(app: Any, redis_url: str) -> Any:
    from signout import SignOutWSGIMiddleware

    return SignOutWSGIMiddleware(app, key=SECRET, redis_url=redis_url, refresh_rotation=True, refresh_reuse_grace=0)


def refresh_environ() -> dict[str, Any]:
    cookie = f"refresh_token={keycloak('Refresh', aud=None)}"
    return {"REQUEST_METHOD": "POST", "PATH_INFO": "/auth/refresh", "HTTP_COOKIE": cookie, "wsgi.input": None}


def test_wsgi_the_apps_iterable_is_closed_once_even_when_never_iterated(redis_url: str) -> None:
    closed: list[bool] = []

    class Body:
        def __iter__(self) -> Iterator[bytes]:
            yield b"new tokens"

        def close(self) -> None:
            closed.append(True)

    def app(environ: dict[str, Any], start_response: Any) -> Body:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Body()

    result: Any = wsgi_rotating(app, redis_url)(refresh_environ(), lambda *a: None)
    result.close()  # a server whose client went away closes without iterating
    result.close()
    assert closed == [True]


def test_wsgi_a_second_start_response_with_exc_info_records_no_second_use(redis_url: str) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            raise RuntimeError("the app failed after starting")
        except RuntimeError:
            import sys

            start_response("200 OK", [("Content-Type", "text/plain")], sys.exc_info())  # PEP 3333 allows it
        return [b"new tokens"]

    statuses: list[str] = []
    body = b"".join(wsgi_rotating(app, redis_url)(refresh_environ(), lambda s, h, e=None: statuses.append(s)))
    assert statuses == ["200 OK", "200 OK"] and body == b"new tokens"
