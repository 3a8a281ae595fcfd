"""Litestar + signout: ``middleware=[DefineMiddleware(SignOutMiddleware, ...)]``, claims in ``request.scope``.

Run:  python examples/frameworks/litestar_app.py
 or:  uvicorn litestar_app:app --app-dir examples/frameworks
(SIGNOUT_KEY=... for the HS256 secret; REDIS_URL=redis://... for Redis, else the embedded store)

Litestar builds its middleware once per route, and runs it only for routes it
has. So the middlewares share one store, and the logout paths get a route
(that never runs: signout answers them). Or wrap the whole app instead:
``app = SignOutMiddleware(Litestar([me]), key=KEY, redis_url=REDIS_URL)``.
"""

from __future__ import annotations

import os
from typing import Any

from litestar import Litestar, Request, get, route
from litestar.exceptions import NotAuthorizedException
from litestar.middleware import DefineMiddleware

from signout import CLAIMS_KEY, MemoryStore, RedisStore, SignOutMiddleware

KEY = os.environ.get("SIGNOUT_KEY", "signout-demo-key-change-me-0123456789abcdef")
REDIS_URL = os.environ.get("REDIS_URL") or None


@get("/me")
async def me(request: Request[Any, Any, Any]) -> dict[str, Any]:
    claims = request.scope.get(CLAIMS_KEY)  # verified, not revoked; None without a token
    if not isinstance(claims, dict):
        raise NotAuthorizedException("Unauthenticated.")
    return {"sub": claims["sub"]}


@route(["/auth/logout", "/auth/logout-all"], http_method=["GET", "POST"])
async def answered_by_signout() -> None:
    """Never runs: signout answers these paths before the handler."""


def create_app(key: str = KEY, redis_url: str | None = REDIS_URL) -> Litestar:
    store = RedisStore(redis_url) if redis_url else MemoryStore()  # one store for every route's middleware
    return Litestar(
        [me, answered_by_signout],
        middleware=[DefineMiddleware(SignOutMiddleware, key=key, store=store)],  # type: ignore[arg-type]
    )


app = create_app()

if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=8000)
