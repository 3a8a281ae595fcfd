"""Django REST framework + djangorestframework-simplejwt + signout (WSGI), in simplejwt's usual shape.

    POST /api/token/           {"username", "password"} -> {"access", "refresh"}   (simplejwt)
    POST /api/token/refresh/   {"refresh"} -> {"access", "refresh"}, rotated          (simplejwt)
    GET  /api/me/              Authorization: Bearer <access> -> {"user_id"}         (simplejwt's JWTAuthentication)
    POST /api/logout/          Authorization: Bearer <access>, {"refresh"}          (signout)

simplejwt alone cannot log out: without its blacklist app a refresh token keeps minting access
tokens until it expires, and even with it an access token lives until its exp. signout, in front,
revokes both tokens on /api/logout/, and notices a rotated-out refresh token coming back
(``refresh_rotation``): that is theft or a replay, so the whole login dies. simplejwt tokens
carry no ``sid``, so "the whole login" is every token of the user issued until then.

Run:  python examples/frameworks/simplejwt_app.py [--port 8000]   (werkzeug, HTTP/1.1, threaded)
(SIGNOUT_KEY=... for the HS256 signing key simplejwt and signout share; REDIS_URL=redis://...
for Redis, else the embedded store; DEMO_USERNAME / DEMO_PASSWORD for the user created at start)

Django's settings are process-wide and configured once, so this module wants a process of its
own: importing it where another module already configured Django raises instead of serving
with someone else's settings.
"""

from __future__ import annotations

import argparse
import os
import sys

import django  # type: ignore[import-untyped]
from django.conf import settings  # type: ignore[import-untyped]
from django.urls import path  # type: ignore[import-untyped]

from signout import SignOutWSGIMiddleware

# simplejwt signs with it and signout verifies with it: HS256 wants at least 32 bytes.
SIGNING_KEY = os.environ.get("SIGNOUT_KEY", "signout-demo-key-change-me-0123456789abcdef")
USERNAME = os.environ.get("DEMO_USERNAME", "alice")
PASSWORD = os.environ.get("DEMO_PASSWORD", "alice-demo-password-change-me")
REDIS_URL = os.environ.get("REDIS_URL") or None

if not settings.configured:  # the settings.py of a real project
    settings.configure(
        ROOT_URLCONF=__name__,
        ALLOWED_HOSTS=["localhost", "127.0.0.1", "[::1]"],
        SECRET_KEY=os.environ.get("DJANGO_SECRET_KEY", "django-demo-secret-change-me"),
        INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth"],
        # Shared cache: every request thread sees the one in-memory database (plain ":memory:"
        # would give each thread's connection an empty one).
        DATABASES={
            "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": "file:simplejwt_app?mode=memory&cache=shared"}
        },
        USE_TZ=True,
        REST_FRAMEWORK={
            "DEFAULT_AUTHENTICATION_CLASSES": ["rest_framework_simplejwt.authentication.JWTAuthentication"],
            "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
            "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
        },
        SIMPLE_JWT={
            "ALGORITHM": "HS256",
            "SIGNING_KEY": SIGNING_KEY,
            "ROTATE_REFRESH_TOKENS": True,
            # No blacklist app: signout is what makes the rotated-out refresh token die.
            "BLACKLIST_AFTER_ROTATION": False,
        },
    )
    django.setup()
elif __name__ != settings.ROOT_URLCONF:
    raise RuntimeError("simplejwt_app needs a process of its own: Django was already configured elsewhere")

# DRF and simplejwt read Django's settings when imported, so they come after setup.
from rest_framework.decorators import api_view  # type: ignore[import-untyped]  # noqa: E402
from rest_framework.request import Request  # type: ignore[import-untyped]  # noqa: E402
from rest_framework.response import Response  # type: ignore[import-untyped]  # noqa: E402
from rest_framework_simplejwt.views import TokenObtainPairView, TokenRefreshView  # noqa: E402


@api_view(["GET"])  # type: ignore[untyped-decorator]  # DRF ships no types
def me(request: Request) -> Response:
    # JWTAuthentication (the default above) authenticated the user; signout had already
    # refused the token had it been revoked, so a logged-out token never gets here.
    return Response({"user_id": request.user.id})


urlpatterns = [
    path("api/token/", TokenObtainPairView.as_view()),
    path("api/token/refresh/", TokenRefreshView.as_view()),
    path("api/me/", me),
]


def create_app(redis_url: str | None = REDIS_URL, *, refresh_reuse_grace: float = 10) -> SignOutWSGIMiddleware:
    """The project's wsgi.py, plus the start-up a demo needs: the schema and one user.

    ``refresh_reuse_grace``: seconds a rotated-out refresh token may come back before it
    counts as reuse (two tabs refreshing at once); 0 makes any second use reuse.
    """
    from django.contrib.auth import get_user_model  # type: ignore[import-untyped]
    from django.core.management import call_command  # type: ignore[import-untyped]
    from django.core.wsgi import get_wsgi_application  # type: ignore[import-untyped]

    call_command("migrate", verbosity=0, interactive=False)
    user, _ = get_user_model().objects.get_or_create(username=USERNAME)
    user.set_password(PASSWORD)
    user.save()

    return SignOutWSGIMiddleware(
        get_wsgi_application(),
        key=SIGNING_KEY,
        redis_url=redis_url,
        user_claim="user_id",  # simplejwt names the user in user_id, not sub
        logout_path="/api/logout/",
        refresh_paths=["/api/token/refresh/"],  # simplejwt posts {"refresh": ...} here
        refresh_rotation=True,  # ROTATE_REFRESH_TOKENS: a used refresh token must not come back
        refresh_reuse_grace=refresh_reuse_grace,
    )


def main(argv: list[str] | None = None) -> None:
    from werkzeug.serving import make_server

    parser = argparse.ArgumentParser(description="simplejwt + signout, served by werkzeug")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0: any free port (the line printed names it)")
    parser.add_argument("--refresh-reuse-grace", type=float, default=10, metavar="SECONDS")
    args = parser.parse_args(argv)

    # threaded: werkzeug then speaks HTTP/1.1 (keep-alive), one thread per connection.
    server = make_server(args.host, args.port, create_app(refresh_reuse_grace=args.refresh_reuse_grace), threaded=True)
    print(f"Serving on http://{args.host}:{server.server_port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main(sys.argv[1:])
