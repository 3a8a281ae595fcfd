"""A raw ASGI app (no framework) + signout: wrap the callable, read the claims from the scope.

Run:  python examples/frameworks/raw_asgi.py
 or:  uvicorn raw_asgi:app --app-dir examples/frameworks
(SIGNOUT_KEY=... for the HS256 secret; REDIS_URL=redis://... for Redis, else the embedded store)
"""

from __future__ import annotations

import json
import os

from signout import CLAIMS_KEY, SignOutMiddleware
from signout.asgi import Receive, Scope, Send

KEY = os.environ.get("SIGNOUT_KEY", "signout-demo-key-change-me-0123456789abcdef")
REDIS_URL = os.environ.get("REDIS_URL") or None


async def inner(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":  # signout passes lifespan through untouched
        await receive()  # lifespan.startup
        await send({"type": "lifespan.startup.complete"})
        await receive()  # lifespan.shutdown
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["type"] != "http":
        return
    claims = scope.get(CLAIMS_KEY)  # verified, not revoked; absent without a token
    if scope["path"] != "/me":
        status, body = 404, {"message": "Not Found"}
    elif claims is None:
        status, body = 401, {"message": "Unauthenticated."}
    else:
        status, body = 200, {"sub": claims["sub"]}
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": json.dumps(body).encode()})


def create_app(key: str = KEY, redis_url: str | None = REDIS_URL) -> SignOutMiddleware:
    return SignOutMiddleware(inner, key=key, redis_url=redis_url)


app = create_app()

if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=8000)
