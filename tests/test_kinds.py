"""Token kinds (``signout.kinds``, SPEC section 8): what a token says it is, and where each kind may
be used; with tokens shaped as their issuers mint them, through both adapters over the real Redis."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jwt
import pytest

from .helpers import bearer
from .issuers import KC, NOT_REFRESH, base, casdoor, flask_jwt_extended, keycloak, refused, sign, simplejwt

Client = Callable[..., Any]
NOT_ACCESS = "Token is not an access token"

LOGOUT_EVENT: dict[str, dict[str, str]] = {"http://schemas.openid.net/event/backchannel-logout": {}}


NOT_FOR_BEARER: dict[str, Callable[[], str]] = {
    "flask-jwt-extended refresh": lambda: flask_jwt_extended("refresh"),
    "simplejwt refresh": lambda: simplejwt("refresh"),
    "Casdoor refresh-token": lambda: casdoor("refresh-token"),
    "Keycloak Refresh": lambda: keycloak("Refresh"),
    "Keycloak Offline": lambda: keycloak("Offline"),
    "Keycloak ID token": lambda: keycloak("ID"),
    "Cognito ID token": lambda: sign(base(sub="c", token_use="id", iss="https://cognito.example")),
    "logout token by its header": lambda: sign(base(iss=KC, sid="s"), {"typ": "logout+jwt"}),
    "logout token by its events claim": lambda: sign(base(iss=KC, sid="s", events=LOGOUT_EVENT)),
    "access claim beside a refresh claim": lambda: sign(base(sub="a", type="access", token_type="refresh")),
}


FOR_BEARER: dict[str, Callable[[], str]] = {
    "flask-jwt-extended access": lambda: flask_jwt_extended("access"),
    "simplejwt access": lambda: simplejwt("access"),
    "Casdoor access-token": lambda: casdoor("access-token"),
    "Keycloak Bearer": lambda: keycloak("Bearer"),
    "RFC 9068 at+jwt header": lambda: sign(base(sub="a"), {"typ": "at+jwt"}),
    "no kind at all": lambda: sign(base(sub="a")),
}


ANY_AUDIENCE = ["account", "web-app", KC, "app-id"]


def audience_of(token: str) -> dict[str, Any]:
    """The ``audience`` kwarg that lets a token's own aud through (none when it names none)."""
    named = jwt.decode(token, options={"verify_signature": False}).get("aud")
    return {"audience": ANY_AUDIENCE} if named else {}


@pytest.mark.parametrize("name", sorted(NOT_FOR_BEARER))
def test_a_token_of_another_kind_is_refused_as_a_bearer_token(real_client: Client, name: str) -> None:
    token = NOT_FOR_BEARER[name]()
    assert refused(real_client(**audience_of(token)).get("/me", headers=bearer(token)), NOT_ACCESS)


@pytest.mark.parametrize("name", sorted(FOR_BEARER))
def test_an_access_token_or_one_of_no_kind_passes_as_a_bearer_token(real_client: Client, name: str) -> None:
    token = FOR_BEARER[name]()
    r = real_client(**audience_of(token)).get("/me", headers=bearer(token))
    assert r.status_code == 200 and r.json()["claims"] is not None


def test_the_refresh_cookie_takes_refresh_tokens_and_refuses_access_tokens(real_client: Client) -> None:
    c = real_client()
    refresh, access = flask_jwt_extended("refresh"), flask_jwt_extended("access")
    ok = c.post("/auth/refresh", headers={"Cookie": f"refresh_token={refresh}"})
    assert ok.status_code == 200 and ok.json()["claims"]["type"] == "refresh"
    wrong = c.post("/auth/refresh", headers={"Cookie": f"refresh_token={access}"})
    assert refused(wrong, NOT_REFRESH)
    assert wrong.headers["set-cookie"].startswith('refresh_token=""; Path=/auth/refresh;')


def test_with_check_token_type_off_kinds_are_not_looked_at(real_client: Client) -> None:
    r = real_client(check_token_type=False).get("/me", headers=bearer(flask_jwt_extended("refresh")))
    assert r.status_code == 200 and r.json()["claims"]["type"] == "refresh"


def test_a_logout_never_acts_on_an_id_token(real_client: Client, store_keys: Callable[[], list[bytes]]) -> None:
    c = real_client(audience=ANY_AUDIENCE)
    r = c.post("/auth/logout", headers=bearer(keycloak("ID")))
    assert r.status_code == 200 and store_keys() == []
    # The login it names is alive: its access token still works.
    assert c.get("/me", headers=bearer(keycloak("Bearer"))).status_code == 200


def test_a_logout_revokes_a_refresh_token_presented_as_bearer(real_client: Client) -> None:
    c = real_client()
    refresh = flask_jwt_extended("refresh")
    assert c.post("/auth/logout", headers=bearer(refresh)).status_code == 200
    assert refused(c.post("/auth/refresh", headers={"Cookie": f"refresh_token={refresh}"}), "Token has been revoked")


def test_the_revocation_endpoint_refuses_id_tokens_as_unsupported(
    real_client: Client, store_keys: Callable[[], list[bytes]]
) -> None:
    c = real_client(audience=ANY_AUDIENCE, clients={"web-app": "web-app-secret-0123456789"})
    r = c.post("/auth/revoke", data={"token": keycloak("ID")}, auth=("web-app", "web-app-secret-0123456789"))
    assert r.status_code == 400 and r.json()["error"] == "unsupported_token_type"
    assert store_keys() == []
