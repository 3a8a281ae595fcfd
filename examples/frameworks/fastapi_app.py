"""FastAPI + signout: ``app.add_middleware(SignOutMiddleware, ...)``, claims through a dependency.

Run:  python examples/frameworks/fastapi_app.py
 or:  uvicorn fastapi_app:app --app-dir examples/frameworks
(SIGNOUT_KEY=... for the HS256 secret; REDIS_URL=redis://... for Redis, else the embedded store)
"""

from __future__ import annotations

import os
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request

from signout import CLAIMS_KEY, SignOutMiddleware

KEY = os.environ.get("SIGNOUT_KEY", "signout-demo-key-change-me-0123456789abcdef")
REDIS_URL = os.environ.get("REDIS_URL") or None


def current_claims(request: Request) -> dict[str, Any]:
    """The verified, unrevoked claims of the request's token (signout put them in the scope)."""
    claims: dict[str, Any] | None = request.scope.get(CLAIMS_KEY)
    if claims is None:
        raise HTTPException(401, "Unauthenticated.", headers={"WWW-Authenticate": "Bearer"})
    return claims


Claims = Annotated[dict[str, Any], Depends(current_claims)]


def create_app(key: str = KEY, redis_url: str | None = REDIS_URL) -> FastAPI:
    app = FastAPI()
    app.add_middleware(SignOutMiddleware, key=key, redis_url=redis_url)

    @app.get("/me")
    async def me(claims: Claims) -> dict[str, Any]:
        return {"sub": claims["sub"]}

    return app


app = create_app()

if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=8000)
