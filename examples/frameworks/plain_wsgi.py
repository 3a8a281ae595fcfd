"""A plain WSGI app (no framework) + signout: wrap the callable, read the claims from the environ.

Run:  python examples/frameworks/plain_wsgi.py      (wsgiref on http://127.0.0.1:8000)
(SIGNOUT_KEY=... for the HS256 secret; REDIS_URL=redis://... for Redis, else the embedded store)
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

from signout import CLAIMS_KEY, SignOutWSGIMiddleware

KEY = os.environ.get("SIGNOUT_KEY", "signout-demo-key-change-me-0123456789abcdef")
REDIS_URL = os.environ.get("REDIS_URL") or None


def inner(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    claims = environ.get(CLAIMS_KEY)  # verified, not revoked; absent without a token
    if environ["PATH_INFO"] != "/me":
        status, body = "404 Not Found", {"message": "Not Found"}
    elif claims is None:
        status, body = "401 Unauthorized", {"message": "Unauthenticated."}
    else:
        status, body = "200 OK", {"sub": claims["sub"]}
    data = json.dumps(body).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]


def create_app(key: str = KEY, redis_url: str | None = REDIS_URL) -> SignOutWSGIMiddleware:
    return SignOutWSGIMiddleware(inner, key=key, redis_url=redis_url)


app = create_app()

if __name__ == "__main__":
    from wsgiref.simple_server import make_server

    with make_server("127.0.0.1", 8000, app) as server:
        server.serve_forever()
