"""Tokens shaped as their issuers mint them: Keycloak, Casdoor, flask-jwt-extended (minted by the library
itself), djangorestframework-simplejwt; HS256 with the tests' ``SECRET``."""

from __future__ import annotations

import time
import uuid
from typing import Any

import jwt

from .conftest import SECRET

KC = "https://sso.example/realms/acme"  # a Keycloak realm
NOT_REFRESH = "Token is not a refresh token"


def sign(claims: dict[str, Any], headers: dict[str, Any] | None = None) -> str:
    return jwt.encode(claims, SECRET, algorithm="HS256", headers=headers)


def base(**more: Any) -> dict[str, Any]:
    now = int(time.time()) - 2
    claims: dict[str, Any] = {"iat": now, "exp": now + 600, "jti": str(uuid.uuid4())}
    claims.update(more)
    return {k: v for k, v in claims.items() if v is not None}


def keycloak(typ: str, **more: Any) -> str:
    """Keycloak's access (Bearer), ID, Refresh and Offline tokens share a shape; typ tells them apart."""
    aud = {"Bearer": "account", "ID": "web-app"}.get(typ, KC)
    claims = base(iss=KC, sub="f1b2c3d4-user", typ=typ, azp="web-app", sid="kc-session-1", aud=aud)
    claims.update(more)
    return sign({k: v for k, v in claims.items() if v is not None}, {"kid": "hs-1"})


def simplejwt(kind: str, user_id: object = 42, **more: Any) -> str:
    return sign(base(token_type=kind, user_id=user_id, **more))


def casdoor(kind: str, **more: Any) -> str:
    return sign(base(iss="https://door.example", sub="org/alice", aud=["app-id"], tokenType=kind, **more))


def flask_jwt_extended(kind: str, identity: str = "alice") -> str:
    """A token minted by flask-jwt-extended itself (``type`` claim, ``fresh``, ``csrf`` off)."""
    from flask import Flask
    from flask_jwt_extended import JWTManager, create_access_token, create_refresh_token

    app = Flask(__name__)
    app.config["JWT_SECRET_KEY"] = SECRET
    JWTManager(app)
    with app.app_context():
        make = create_refresh_token if kind == "refresh" else create_access_token
        return str(make(identity=identity))


def refused(response: Any, message: str) -> bool:
    """signout's own 401 (so the app never saw the request), with this message."""
    return bool(response.status_code == 401 and response.json() == {"error": "invalid_token", "message": message})
