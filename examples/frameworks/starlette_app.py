"""Starlette + signout: the middleware in ``Starlette(middleware=[...])``, claims in ``request.scope``.

Run:  python examples/frameworks/starlette_app.py
 or:  uvicorn starlette_app:app --app-dir examples/frameworks
(SIGNOUT_KEY=... for the HS256 secret; REDIS_URL=redis://... for Redis, else the embedded store)
"""

from __future__ import annotations

import os

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from signout import CLAIMS_KEY, SignOutMiddleware

KEY = os.environ.get("SIGNOUT_KEY", "signout-demo-key-change-me-0123456789abcdef")
REDIS_URL = os.environ.get("REDIS_URL") or None


async def me(request: Request) -> JSONResponse:
    claims = request.scope.get(CLAIMS_KEY)  # verified, not revoked; None without a token
    if claims is None:
        return JSONResponse({"message": "Unauthenticated."}, status_code=401)
    return JSONResponse({"sub": claims["sub"]})


async def ws(websocket: WebSocket) -> None:
    # A revoked or invalid token never gets here: signout refuses the handshake.
    claims = websocket.scope.get(CLAIMS_KEY)
    if claims is None:
        await websocket.close(code=1008)  # no token at all
        return
    await websocket.accept()
    await websocket.send_json({"sub": claims["sub"]})
    await websocket.close()


def create_app(key: str = KEY, redis_url: str | None = REDIS_URL) -> Starlette:
    return Starlette(
        routes=[Route("/me", me), WebSocketRoute("/ws", ws)],
        middleware=[Middleware(SignOutMiddleware, key=key, redis_url=redis_url)],
    )


app = create_app()

if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=8000)
