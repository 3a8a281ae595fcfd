"""The test OpenID Provider itself (tests/oidc_provider.py, tests/oidc/provider.mjs): the real
oidc-provider on a loopback port mints what the identity-provider tests rely on, checked here
with PyJWT alone."""

from __future__ import annotations

import shutil
import socket
import time
from typing import Any

import httpx
import jwt
import pytest

from . import oidc_provider as op_module
from .oidc_provider import (
    BACKCHANNEL_LOGOUT_EVENT,
    OIDCProvider,
    oidc_provider_fixture,  # noqa: F401  (the fixture "oidc_provider")
    start_oidc_provider,
)


def verify(op: OIDCProvider, token: str, audience: str, alg: str = "RS256") -> dict[str, Any]:
    """``token`` checked as a relying party does it: the key from ``jwks_uri`` by ``kid``."""
    key = jwt.PyJWKClient(op.jwks_uri, cache_jwk_set=False).get_signing_key_from_jwt(token)
    claims: dict[str, Any] = jwt.decode(
        token, key, algorithms=[alg], audience=audience, issuer=op.issuer, options={"require": ["exp", "iat"]}
    )
    return claims


def test_discovery(oidc_provider: OIDCProvider) -> None:
    op = oidc_provider
    assert op.issuer == f"http://127.0.0.1:{op.port}"
    assert op.discovery["issuer"] == op.issuer
    for endpoint in (op.jwks_uri, op.token_endpoint, op.revocation_endpoint, op.end_session_endpoint):
        assert endpoint.startswith(op.issuer + "/")
    assert op.discovery["backchannel_logout_supported"] is True
    assert op.discovery["backchannel_logout_session_supported"] is True
    assert "client_credentials" in op.discovery["grant_types_supported"]
    assert op.jwks()["keys"][0]["kid"] == op.signing_kid


def test_client_credentials_access_token_is_a_jwt_verified_through_jwks_uri(oidc_provider: OIDCProvider) -> None:
    op = oidc_provider
    token = op.access_token(scope="api:read")
    header = jwt.get_unverified_header(token)
    assert header == {"alg": "RS256", "typ": "at+jwt", "kid": op.signing_kid}
    claims = verify(op, token, op.resource)
    assert claims["sub"] == claims["client_id"] == op.client_id  # no user: sub is the client
    assert claims["scope"] == "api:read"
    assert len(claims["jti"]) >= 20
    assert claims["exp"] - claims["iat"] == 600
    with pytest.raises(jwt.InvalidAudienceError):
        verify(op, token, "https://another.api")


def test_login_gives_jwt_access_token_with_sub_and_sid(oidc_provider: OIDCProvider) -> None:
    op = oidc_provider
    login = op.login("alice")
    access = verify(op, login.access_token, op.resource)
    identity = verify(op, login.id_token, op.client_id)
    assert access["sub"] == identity["sub"] == "alice"
    assert login.sid is not None
    assert access["sid"] == identity["sid"] == login.sid
    assert access["scope"] == "api:read api:write"
    assert login.refresh_token is not None and login.refresh_token.count(".") == 0  # opaque


def test_rotation(oidc_provider: OIDCProvider) -> None:
    op = oidc_provider
    before = op.access_token()
    old_kid = jwt.get_unverified_header(before)["kid"]

    # published ahead: in the JWKS, not yet signing
    published = [key["kid"] for key in op.jwks()["keys"]]
    ahead = op.rotate_keys(sign_with_new=False)
    assert [key["kid"] for key in op.jwks()["keys"]] == [*published, ahead]
    assert jwt.get_unverified_header(op.access_token())["kid"] == old_kid

    # the new key signs, the old one still verifies
    new_kid = op.rotate_keys()
    assert op.signing_kid == new_kid != old_kid
    after = op.access_token()
    assert jwt.get_unverified_header(after)["kid"] == new_kid
    assert verify(op, after, op.resource)["iss"] == op.issuer
    assert verify(op, before, op.resource)["iss"] == op.issuer

    # the old keys gone: their tokens no longer verify
    last = op.rotate_keys(keep_old=False)
    assert [key["kid"] for key in op.jwks()["keys"]] == [last]
    with pytest.raises(jwt.PyJWKClientError):
        verify(op, before, op.resource)
    assert verify(op, op.access_token(), op.resource)["sub"] == op.client_id


def decode_logout_token(op: OIDCProvider, token: str) -> dict[str, Any]:
    assert jwt.get_unverified_header(token)["typ"] == "logout+jwt"
    return verify(op, token, op.client_id)


def test_backchannel_logout_delivers_a_signed_logout_token(oidc_provider: OIDCProvider) -> None:
    op = oidc_provider
    op.reset()
    delivery = op.backchannel_logout("alice", "sid-of-alice")
    assert delivery == op_module.Delivery(ok=True, status=200, error=None)
    (received,) = op.recorder.wait(1)
    assert received.path == "/backchannel-logout"
    assert received.headers["content-type"] == "application/x-www-form-urlencoded"
    assert list(received.form) == ["logout_token"]
    header = jwt.get_unverified_header(received.logout_token)
    assert header == {"alg": "RS256", "typ": "logout+jwt", "kid": op.signing_kid}
    claims = decode_logout_token(op, received.logout_token)
    assert claims["events"] == {BACKCHANNEL_LOGOUT_EVENT: {}}
    assert (claims["sub"], claims["sid"], claims["aud"]) == ("alice", "sid-of-alice", op.client_id)
    assert claims["exp"] - claims["iat"] == 120
    assert "nonce" not in claims and claims["jti"]
    assert op.deliveries() == [
        {"url": op.recorder.url, "method": "POST", "at": pytest.approx(time.time(), abs=5), "status": 200}
    ]

    # sid alone: no sub claim at all
    op.recorder.clear()
    assert op.backchannel_logout(None, "sid-only").ok
    claims = decode_logout_token(op, op.recorder.wait(1)[0].logout_token)
    assert "sub" not in claims and claims["sid"] == "sid-only"


def test_backchannel_logout_failures_are_reported(oidc_provider: OIDCProvider) -> None:
    op = oidc_provider
    op.reset()
    op.recorder.status = 400
    delivery = op.backchannel_logout("alice", "sid-1")
    assert (delivery.ok, delivery.status) == (False, 400)
    assert delivery.error is not None and "got: 400" in delivery.error
    op.recorder.status = 204  # oidc-provider takes 200 and 204
    assert op.backchannel_logout("alice", "sid-1").ok

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{closed.getsockname()[1]}/backchannel-logout"
    op.configure(backchannel_logout_uri=dead)
    try:
        delivery = op.backchannel_logout("alice", "sid-1")
        assert (delivery.ok, delivery.status) == (False, None)
        assert delivery.error
    finally:
        op.configure(backchannel_logout_uri=op.recorder.url)
    op.reset()


def test_end_session_logs_out_with_backchannel_logout(oidc_provider: OIDCProvider) -> None:
    op = oidc_provider
    login = op.login("bob")
    op.reset()
    answer = op.end_session(login, post_logout_redirect_uri=op.post_logout_redirect_uri, state="s-1")
    assert answer.status_code == 303
    assert answer.headers["location"] == f"{op.post_logout_redirect_uri}?state=s-1"
    (received,) = op.recorder.requests  # sent before the OP answered
    claims = decode_logout_token(op, received.logout_token)
    assert (claims["sub"], claims["sid"]) == ("bob", login.sid)
    # offline_access: the refresh token outlives the OP's session (oidc-provider's default)
    assert login.refresh_token is not None and op.introspect(login.refresh_token)["active"] is True


def test_revocation_endpoint(oidc_provider: OIDCProvider) -> None:
    op = oidc_provider
    assert op.revoke("an-unknown-opaque-token").status_code == 200  # RFC 7009 2.2
    login = op.login("carol")
    assert login.refresh_token is not None
    assert op.introspect(login.refresh_token)["active"] is True
    answer = op.revoke(login.refresh_token, "refresh_token")
    assert (answer.status_code, answer.text) == (200, "")
    assert op.introspect(login.refresh_token) == {"active": False}
    # JWT access tokens cannot be revoked there
    answer = op.revoke(login.access_token, "access_token")
    assert answer.status_code == 400 and answer.json()["error"] == "unsupported_token_type"
    # client_secret_post is accepted too; a wrong secret is not
    posted = op.http.post(
        op.revocation_endpoint, data={"token": "x", "client_id": op.client_id, "client_secret": op.client_secret}
    )
    assert posted.status_code == 200
    wrong = op.http.post(op.revocation_endpoint, data={"token": "x"}, auth=(op.client_id, "wrong"))
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"


def test_jwks_requests_and_outages(oidc_provider: OIDCProvider) -> None:
    op = oidc_provider
    op.reset()
    assert op.jwks_requests() == 0
    ok = op.http.get(op.jwks_uri)
    assert ok.status_code == 200 and ok.headers["content-type"].startswith("application/jwk-set+json")
    assert "cache-control" not in ok.headers  # oidc-provider sends no caching headers for its JWKS
    op.keys()
    assert op.jwks_requests() == 1  # the control API is not counted

    op.jwks_mode("fail")
    failed = op.http.get(op.jwks_uri)
    assert failed.status_code == 503 and failed.headers["retry-after"] == "1"
    op.jwks_mode("fail", status=500)
    assert op.http.get(op.jwks_uri).status_code == 500

    op.jwks_mode("hang")
    with pytest.raises(httpx.ReadTimeout):
        op.http.get(op.jwks_uri, timeout=0.3)

    op.jwks_mode("delay", delay=0.3)
    started = time.monotonic()
    assert op.http.get(op.jwks_uri).status_code == 200
    assert time.monotonic() - started >= 0.3

    op.jwks_mode("garbage")
    garbage = op.http.get(op.jwks_uri)
    assert garbage.status_code == 200 and garbage.headers["content-type"] == "text/html"

    op.jwks_mode("huge", size=300_000)
    huge = op.http.get(op.jwks_uri)
    assert huge.status_code == 200 and len(huge.content) >= 300_000

    op.jwks_mode("ok")
    assert op.http.get(op.jwks_uri).json()["keys"][0]["kid"] == op.signing_kid
    assert op.jwks_requests() == 8
    op.reset()
    assert op.jwks_requests() == 0


def test_another_algorithm_and_no_orphan_process() -> None:
    with start_oidc_provider(alg="ES256", client_id="es-client") as op:
        process = op.process
        token = op.access_token()
        assert jwt.get_unverified_header(token)["alg"] == "ES256"
        assert verify(op, token, op.resource, alg="ES256")["sub"] == "es-client"
        assert op.jwks()["keys"][0]["kty"] == "EC"
        port = op.port
    assert process.poll() is not None
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/jwks", timeout=1)


@pytest.mark.parametrize(("ci", "outcome"), [("true", pytest.fail.Exception), ("", pytest.skip.Exception)])
def test_missing_node_skips_or_fails_under_ci(
    monkeypatch: pytest.MonkeyPatch, ci: str, outcome: type[BaseException]
) -> None:
    monkeypatch.setenv("CI", ci)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(outcome, match="node"):
        op_module.ensure_installed()
