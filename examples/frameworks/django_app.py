"""Django + signout in one module: settings, a view, and signout around both ASGI and WSGI.

Run:  python examples/frameworks/django_app.py          (ASGI, uvicorn on http://127.0.0.1:8000)
      python examples/frameworks/django_app.py wsgi     (WSGI, wsgiref on http://127.0.0.1:8000)
 or:  uvicorn django_app:application --app-dir examples/frameworks
(SIGNOUT_KEY=... for the HS256 secret; REDIS_URL=redis://... for Redis, else the embedded store)

In a project, ``SIGNOUT`` goes in settings.py and the wrapping in asgi.py / wsgi.py:
``application = SignOutMiddleware(get_asgi_application(), **settings.SIGNOUT)``.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import django  # type: ignore[import-untyped]
from django.conf import settings  # type: ignore[import-untyped]
from django.core.asgi import get_asgi_application  # type: ignore[import-untyped]
from django.core.wsgi import get_wsgi_application  # type: ignore[import-untyped]
from django.http import HttpRequest, JsonResponse  # type: ignore[import-untyped]
from django.urls import path  # type: ignore[import-untyped]

from signout import CLAIMS_KEY, SignOutMiddleware, SignOutWSGIMiddleware

if not settings.configured:  # the settings.py of a real project
    settings.configure(
        ROOT_URLCONF=__name__,
        ALLOWED_HOSTS=["localhost", "127.0.0.1", "[::1]"],
        SECRET_KEY=os.environ.get("DJANGO_SECRET_KEY", "django-demo-secret-change-me"),
        SIGNOUT={
            "key": os.environ.get("SIGNOUT_KEY", "signout-demo-key-change-me-0123456789abcdef"),
            "redis_url": os.environ.get("REDIS_URL") or None,
        },
    )
    django.setup()


def me(request: HttpRequest) -> JsonResponse:
    # Under WSGI request.META is the environ; under ASGI request.scope is the scope.
    claims = getattr(request, "scope", request.META).get(CLAIMS_KEY)
    if claims is None:
        return JsonResponse({"message": "Unauthenticated."}, status=401)
    return JsonResponse({"sub": claims["sub"]})


urlpatterns = [path("me", me)]


def asgi_app(**overrides: Any) -> SignOutMiddleware:
    """The project's asgi.py; ``overrides`` (key=..., redis_url=...) win over ``settings.SIGNOUT``."""
    return SignOutMiddleware(get_asgi_application(), **{**settings.SIGNOUT, **overrides})


def wsgi_app(**overrides: Any) -> SignOutWSGIMiddleware:
    """The project's wsgi.py; ``overrides`` (key=..., redis_url=...) win over ``settings.SIGNOUT``."""
    return SignOutWSGIMiddleware(get_wsgi_application(), **{**settings.SIGNOUT, **overrides})


application = asgi_app()

if __name__ == "__main__":
    if sys.argv[1:] == ["wsgi"]:
        from wsgiref.simple_server import make_server

        with make_server("127.0.0.1", 8000, wsgi_app()) as server:
            server.serve_forever()
    else:
        import uvicorn

        uvicorn.run(application, host="127.0.0.1", port=8000)
