"""Flask + signout: an app factory wrapping ``app.wsgi_app``, settings in ``app.config["SIGNOUT"]``.

Run:  python examples/frameworks/flask_app.py       (wsgiref on http://127.0.0.1:8000)
 or:  flask --app examples/frameworks/flask_app run
(SIGNOUT_KEY=... for the HS256 secret; REDIS_URL=redis://... for Redis, else the embedded store)
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask, request

from signout import CLAIMS_KEY, SignOutWSGIMiddleware

KEY = os.environ.get("SIGNOUT_KEY", "signout-demo-key-change-me-0123456789abcdef")
REDIS_URL = os.environ.get("REDIS_URL") or None


def create_app(key: str = KEY, redis_url: str | None = REDIS_URL) -> Flask:
    app = Flask(__name__)
    app.config["SIGNOUT"] = {"key": key, "redis_url": redis_url}  # any signout kwargs
    app.wsgi_app = SignOutWSGIMiddleware(app.wsgi_app, **app.config["SIGNOUT"])  # type: ignore[method-assign]

    @app.get("/me")
    def me() -> tuple[dict[str, Any], int]:
        claims = request.environ.get(CLAIMS_KEY)  # verified, not revoked; None without a token
        if claims is None:
            return {"message": "Unauthenticated."}, 401
        return {"sub": claims["sub"]}, 200

    return app


if __name__ == "__main__":
    from wsgiref.simple_server import make_server

    with make_server("127.0.0.1", 8000, create_app()) as server:
        server.serve_forever()
