"""Small apps that signout wraps in the end-to-end tests."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from signout import CLAIMS_KEY


async def me(request: Request) -> JSONResponse:
    claims = request.scope.get(CLAIMS_KEY)
    auth = request.headers.get("authorization")
    return JSONResponse({"claims": claims, "saw_authorization": auth is not None})


async def token_refresh(request: Request) -> JSONResponse:
    """A refresh endpoint in simplejwt's place: echoes the body it got; ``?status=`` picks its answer."""
    body = await request.body()
    status = int(request.query_params.get("status", "200"))
    return JSONResponse({"claims": request.scope.get(CLAIMS_KEY), "body": body.decode("latin-1")}, status_code=status)


async def ok(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


async def ws(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_json({"claims": websocket.scope.get(CLAIMS_KEY)})
    await websocket.close()


def starlette_app() -> Starlette:
    return Starlette(
        routes=[
            Route("/me", me, methods=["GET", "POST"]),
            Route("/health", ok),
            Route("/auth/refresh", me, methods=["POST"]),
            Route("/api/token/refresh/", token_refresh, methods=["POST"]),
            Route("/auth/logout", ok, methods=["GET", "POST", "OPTIONS"]),
            WebSocketRoute("/ws", ws),
        ]
    )


class RawApp:
    """A raw ASGI app: records the scopes it saw, answers 200."""

    def __init__(self) -> None:
        self.scopes: list[MutableMapping[str, Any]] = []

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        self.scopes.append(scope)
        if scope["type"] == "lifespan":
            message = await receive()
            await send({"type": "lifespan.startup.complete"})
            del message
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"raw ok"})


def wsgi_app() -> Any:
    """The same routes as ``starlette_app``, as a plain WSGI callable."""
    import json

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        path, method = environ.get("PATH_INFO", ""), environ["REQUEST_METHOD"]
        body: object
        status = "200 OK"
        if path == "/api/token/refresh/" and method == "POST":
            length = int(environ.get("CONTENT_LENGTH") or 0)
            got = environ["wsgi.input"].read(length) if length else b""
            body = {"claims": environ.get(CLAIMS_KEY), "body": got.decode("latin-1")}
            wanted = environ.get("QUERY_STRING", "").partition("status=")[2]
            status = f"{wanted} Chosen" if wanted else status
        elif path in ("/me", "/auth/refresh") and method in ("GET", "POST"):
            body = {"claims": environ.get(CLAIMS_KEY), "saw_authorization": "HTTP_AUTHORIZATION" in environ}
        elif path in ("/health", "/auth/logout"):
            body = {"ok": True}
        else:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"Not Found"]
        data = json.dumps(body).encode()
        start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
        return [data]

    return app
