"""Reading claims (``signout.claims``): the user a token names (``user_claim``: simplejwt's integer
``user_id``), and the copies of claims the app may edit.

The ``user_claim`` cases run through both adapters over the real Redis.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from signout import Revoker
from signout.config import build_settings
from signout.tokens import Source

from .conftest import NOW, SECRET
from .helpers import bearer
from .issuers import base, refused, sign, simplejwt

Client = Callable[..., Any]


def test_editing_nested_claims_does_not_edit_the_cache() -> None:
    import jwt

    verifier = build_settings(key=SECRET, clock=lambda: NOW).verifier
    claims = {"sub": "a", "jti": "j", "roles": ["user"], "org": {"teams": ["x"]}, "exp": int(NOW) + 60}
    token = jwt.encode(claims, SECRET, algorithm="HS256")
    given = verifier.verify(token, Source.HEADER, NOW).app_claims()  # what the app gets
    given["roles"].append("admin")
    given["org"]["teams"].append("y")
    again = verifier.verify(token, Source.HEADER, NOW)
    assert again.claims == claims and again.app_claims() == claims


# ---- user_claim: the user a token names --------------------------------------------------------------


def test_logout_all_of_a_simplejwt_user_names_them_by_user_id(real_client: Client) -> None:
    c = real_client(user_claim="user_id")
    laptop, phone, other = simplejwt("access"), simplejwt("refresh"), simplejwt("access", user_id=43)
    r = c.post("/auth/logout-all", headers=bearer(laptop))
    assert r.status_code == 200 and r.json() == {"message": "Successfully logged out from SSO session"}
    assert refused(c.get("/me", headers=bearer(laptop)), "Token has been revoked")
    assert refused(c.post("/auth/refresh", headers={"Cookie": f"refresh_token={phone}"}), "Token has been revoked")
    assert c.get("/me", headers=bearer(other)).status_code == 200


def test_without_user_claim_logout_all_says_which_claim_is_missing(
    real_client: Client, store_keys: Callable[[], list[bytes]]
) -> None:
    r = real_client().post("/auth/logout-all", headers=bearer(simplejwt("access")))
    assert r.status_code == 400
    assert r.json()["message"] == "Token has no 'sub' claim naming its user; cannot log out everywhere"
    assert store_keys() == []


def test_revoke_user_at_the_endpoint_reaches_an_integer_user_id(real_client: Client) -> None:
    secret = "billing-secret-0123456789"
    c = real_client(user_claim="user_id", clients={"billing": secret})
    victim, sibling = simplejwt("access"), simplejwt("refresh")
    r = c.post("/auth/revoke", data={"token": victim, "revoke": "user"}, auth=("billing", secret))
    assert r.status_code == 200 and r.json() == {"revoked": True, "scope": "user"}
    assert refused(c.post("/auth/refresh", headers={"Cookie": f"refresh_token={sibling}"}), "Token has been revoked")


def test_revoke_user_without_the_user_claim_is_a_400_not_a_quiet_no(
    real_client: Client, store_keys: Callable[[], list[bytes]]
) -> None:
    secret = "billing-secret-0123456789"
    c = real_client(clients={"billing": secret})
    r = c.post("/auth/revoke", data={"token": simplejwt("access"), "revoke": "user"}, auth=("billing", secret))
    assert r.status_code == 400 and "'sub'" in r.json()["error_description"]
    r = c.post("/auth/revoke", data={"token": simplejwt("access"), "revoke": "session"}, auth=("billing", secret))
    assert r.status_code == 400 and "'sid'" in r.json()["error_description"]
    assert store_keys() == []


def test_a_revoker_and_the_middleware_meet_on_the_decimal_string(real_client: Client, redis_url: str) -> None:
    c = real_client(user_claim="user_id")
    token = simplejwt("access")
    Revoker(redis_url=redis_url).revoke_user_sync(sub="42")
    assert refused(c.get("/me", headers=bearer(token)), "Token has been revoked")


@pytest.mark.parametrize("value", [4.2, True, ["42"], ""])
def test_a_user_claim_of_another_type_is_an_invalid_token(real_client: Client, value: object) -> None:
    r = real_client(user_claim="user_id").get("/me", headers=bearer(simplejwt("access", user_id=value)))
    assert r.status_code == 401 and "user_id" in r.json()["message"]


def test_an_integer_sub_stays_invalid(real_client: Client) -> None:
    r = real_client().get("/me", headers=bearer(sign(base(sub=42))))
    assert refused(r, "Token claim 'sub' must be a non-empty string")
