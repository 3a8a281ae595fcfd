"""A small Starlette app wrapped in SignOutMiddleware: login, rotating refresh, /me.

Run it:  uvicorn examples.app:app --port 8000   (REDIS_URL=redis://... to use Redis)
and open http://127.0.0.1:8000/ for a minimal page: login, call /me, refresh, logout.

Login issues a short-lived access token (returned in JSON) and a refresh token
in an HttpOnly cookie on ``Path=/auth/refresh``; both carry the same ``sid``,
so logging out (which never sees the refresh cookie) still kills the refresh
token through its session.
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path
from typing import Any

import jwt
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from signout import CLAIMS_KEY, SignOutMiddleware

DEMO_SECRET = "signout-demo-secret-change-me-0123456789"  # a real app reads this from its secret store
ISSUER = "https://demo.signout.invalid"
ACCESS_SECONDS = 300
REFRESH_SECONDS = 7 * 24 * 3600
STATIC = Path(__file__).resolve().parent / "static"
# The page loads its script and style from /static only: an injected inline
# script could read the in-memory access token, so none is allowed to run.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


def _issue(sub: str, sid: str, kind: str, lifetime: int, secret: str) -> str:
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "sub": sub,
        "sid": sid,
        "jti": secrets.token_urlsafe(16),
        "typ": kind,
        "iat": now,
        "exp": now + lifetime,
    }
    return jwt.encode(claims, secret, algorithm="HS256")


def create_app(*, secret: str = DEMO_SECRET, redis_url: str | None = None, secure_cookies: bool = True) -> Any:
    def pair(sub: str, sid: str) -> JSONResponse:
        response = JSONResponse(
            {
                "access_token": _issue(sub, sid, "access", ACCESS_SECONDS, secret),
                "token_type": "Bearer",
                "expires_in": ACCESS_SECONDS,
            }
        )
        response.set_cookie(
            "refresh_token",
            _issue(sub, sid, "refresh", REFRESH_SECONDS, secret),
            max_age=REFRESH_SECONDS,
            path="/auth/refresh",
            httponly=True,
            secure=secure_cookies,
            samesite="strict",
        )
        return response

    async def login(request: Request) -> JSONResponse:
        body = await request.json()
        user = str(body.get("username", ""))
        if not user or body.get("password") != "demo":  # a demo: any user, password "demo"
            return JSONResponse({"message": "Bad credentials"}, status_code=401)
        return pair(user, secrets.token_urlsafe(12))

    async def refresh(request: Request) -> JSONResponse:
        # The guard already refused a revoked or invalid refresh cookie; the
        # handler still checks it is a refresh token before rotating it.
        raw = request.cookies.get("refresh_token")
        if raw is None:
            return JSONResponse({"message": "No refresh token"}, status_code=401)
        claims = jwt.decode(raw, secret, algorithms=["HS256"], issuer=ISSUER)
        if claims.get("typ") != "refresh":
            return JSONResponse({"message": "Not a refresh token"}, status_code=401)
        # Rotation: the used refresh token dies now; a replay of it gets 401.
        await middleware.revoker.revoke({k: claims[k] for k in ("iss", "sub", "jti", "exp", "iat")})
        return pair(claims["sub"], claims["sid"])

    async def me(request: Request) -> JSONResponse:
        claims = request.scope.get(CLAIMS_KEY)
        if claims is None or claims.get("typ") != "access":
            return JSONResponse(
                {"message": "Unauthenticated."}, status_code=401, headers={"WWW-Authenticate": "Bearer"}
            )
        return JSONResponse({"sub": claims["sub"], "sid": claims["sid"]})

    async def page(request: Request) -> FileResponse:
        return FileResponse(STATIC / "index.html", headers=PAGE_HEADERS)

    inner = Starlette(
        routes=[
            Route("/", page),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
            Route("/auth/login", login, methods=["POST"]),
            Route("/auth/refresh", refresh, methods=["POST"]),
            Route("/me", me),
        ]
    )
    middleware = SignOutMiddleware(
        inner,
        key=secret,
        issuer=ISSUER,
        redis_url=redis_url,
        cookie_secure=secure_cookies,
        max_token_lifetime=REFRESH_SECONDS,
    )
    return middleware


app = create_app(redis_url=os.environ.get("REDIS_URL"))
