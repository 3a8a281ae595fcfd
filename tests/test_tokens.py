"""Token verification (``signout.tokens``, with the keys of ``signout.keys``): a table of tokens and what the
verifier says of each, its cache; then audience, ``require_revocable``, ``max_token_bytes`` and hostile
tokens end to end, through both adapters."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from starlette.testclient import TestClient

from signout import (
    BadSignature,
    DisallowedAlgorithm,
    ExpiredToken,
    ImmatureToken,
    InvalidClaim,
    MalformedToken,
    SignOutMiddleware,
    TokenError,
)
from signout.config import build_settings
from signout.tokens import Source, Verifier

from .apps import starlette_app
from .conftest import ISS, NOW, SECRET, Backend, TokenFactory
from .helpers import bearer
from .issuers import base, keycloak, refused, sign

Client = Callable[..., Any]

RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PEM, SPKI = serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
RSA_PUBLIC_PEM = RSA.public_key().public_bytes(PEM, SPKI)
EC = ec.generate_private_key(ec.SECP256R1())
EC_PUBLIC_PEM = EC.public_key().public_bytes(PEM, SPKI)


def verifier(**kwargs: Any) -> Verifier:
    kwargs.setdefault("key", SECRET)
    return build_settings(clock=lambda: NOW, **kwargs).verifier


def good(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"iss": ISS, "sub": "alice", "sid": "s", "jti": "j", "iat": int(NOW), "exp": int(NOW) + 600}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def hs(claims: dict[str, Any], key: str | bytes = SECRET, **headers: Any) -> str:
    return jwt.encode(claims, key, algorithm="HS256", headers=headers or None)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict[str, Any], payload: bytes) -> str:
    return f"{b64(json.dumps(header).encode())}.{b64(payload)}."


def signed(payload: bytes) -> str:
    """A correctly HS256-signed token whose payload is arbitrary bytes."""
    signing_input = f"{b64(json.dumps({'alg': 'HS256', 'typ': 'JWT'}).encode())}.{b64(payload)}"
    return f"{signing_input}.{b64(hmac.new(SECRET.encode(), signing_input.encode(), hashlib.sha256).digest())}"


CASES: list[tuple[str, str, type[TokenError] | None]] = [
    ("a good token", hs(good()), None),
    ("expired beyond leeway", hs(good(exp=int(NOW) - 31, iat=int(NOW) - 600)), ExpiredToken),
    ("expired within leeway", hs(good(exp=int(NOW) - 29, iat=int(NOW) - 600)), None),
    ("not valid before", hs(good(nbf=int(NOW) + 60)), ImmatureToken),
    ("issued in the future", hs(good(iat=int(NOW) + 60)), ImmatureToken),
    ("no exp", hs(good(exp=None)), InvalidClaim),
    ("exp is a bool", hs(good(exp=True)), InvalidClaim),
    ("exp is a string", hs(good(exp="soon")), InvalidClaim),
    ("exp beyond max_token_lifetime", hs(good(exp=int(NOW) + 40 * 86400, iat=None)), InvalidClaim),
    ("lifetime from iat beyond max", hs(good(iat=int(NOW) - 40 * 86400, exp=int(NOW) + 60)), InvalidClaim),
    ("jti is a number", hs(good(jti=7)), InvalidClaim),
    ("sid is empty", hs(good(sid="")), InvalidClaim),
    ("wrong secret", hs(good(), key="x" * 40), BadSignature),
    ("alg none", unsigned({"alg": "none", "typ": "JWT"}, json.dumps(good()).encode()), DisallowedAlgorithm),
    ("alg NoNe", unsigned({"alg": "NoNe", "typ": "JWT"}, json.dumps(good()).encode()), DisallowedAlgorithm),
    ("alg not pinned", jwt.encode(good(), "k" * 64, algorithm="HS512"), DisallowedAlgorithm),
    ("RS256 token for an HS256 verifier", jwt.encode(good(), RSA, algorithm="RS256"), DisallowedAlgorithm),
    ("non-UTF-8 payload", signed(b"\xff\xfe\xfd"), MalformedToken),
    ("payload not JSON", signed(b"not json"), MalformedToken),
    ("payload not an object", signed(b"[1,2]"), MalformedToken),
    ("payload with a 5 KB jti", signed(json.dumps(good(jti="x" * 5000)).encode()), None),
    ("two dots only", "..", MalformedToken),
    ("one dot", "a.b", MalformedToken),
    ("64 KB", "a" * 32768 + "." + "b" * 32768 + ".c", MalformedToken),
    ("non-ASCII", "é.é.é", MalformedToken),
    ("empty", "", MalformedToken),
    ("header not JSON", "bm90anNvbg.e30.c2ln", MalformedToken),
]


@pytest.mark.parametrize(("name", "token", "error"), CASES, ids=[c[0] for c in CASES])
def test_verifier_table(name: str, token: str, error: type[TokenError] | None) -> None:
    v = verifier(issuer=ISS)
    if error is None:
        assert v.verify(token, Source.HEADER, NOW).sub == "alice"
    else:
        with pytest.raises(error):
            v.verify(token, Source.HEADER, NOW)


def test_audience_and_issuer_are_checked_when_set() -> None:
    v = verifier(audience="api", issuer=ISS)
    assert v.verify(hs(good(aud="api")), Source.HEADER, NOW).iss == ISS
    with pytest.raises(InvalidClaim, match="aud"):
        v.verify(hs(good(aud="other")), Source.HEADER, NOW)
    with pytest.raises(InvalidClaim, match="iss"):
        v.verify(hs(good(iss="https://evil.test", aud="api")), Source.HEADER, NOW)


def test_a_token_naming_an_audience_is_refused_when_none_is_configured() -> None:
    # RFC 7519 4.1.3, as PyJWT: a token minted for another service is not one of ours.
    with pytest.raises(InvalidClaim, match="aud"):
        verifier().verify(hs(good(aud="anything")), Source.HEADER, NOW)


@pytest.mark.parametrize("aud", [None, "", []])
def test_an_empty_audience_names_none_and_passes_as_pyjwt_lets_it(aud: object) -> None:
    assert verifier().verify(hs(good(aud=aud)), Source.HEADER, NOW).jti == "j"


def test_hs256_signed_with_the_rsa_public_key_is_refused() -> None:
    # The classic confusion attack: the public key used as an HMAC secret.
    forged = jwt.api_jws.PyJWS().encode(json.dumps(good()).encode(), b"x" * 32, algorithm="HS256")
    header, payload, _ = forged.split(".")
    signature = hmac.new(RSA_PUBLIC_PEM, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    token = f"{header}.{payload}.{b64(signature)}"
    with pytest.raises(DisallowedAlgorithm):
        verifier(key=RSA_PUBLIC_PEM, algorithms=["RS256"]).verify(token, Source.HEADER, NOW)


def test_rs256_and_es256_with_pem_keys() -> None:
    v = verifier(key=[RSA_PUBLIC_PEM, EC_PUBLIC_PEM], algorithms=["RS256", "ES256"])
    assert v.verify(jwt.encode(good(), RSA, algorithm="RS256"), Source.HEADER, NOW).sub == "alice"
    assert v.verify(jwt.encode(good(), EC, algorithm="ES256"), Source.HEADER, NOW).sub == "alice"
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(BadSignature):
        v.verify(jwt.encode(good(), other, algorithm="RS256"), Source.HEADER, NOW)


def test_key_rotation_with_a_list_of_secrets() -> None:
    old, new = "o" * 32, "n" * 32
    v = verifier(key=[new, old])
    assert v.verify(hs(good(), key=old), Source.HEADER, NOW).jti == "j"
    assert v.verify(hs(good(), key=new), Source.HEADER, NOW).jti == "j"


def test_pyjwk_keys_are_picked_by_kid() -> None:
    first = jwt.PyJWK({"kty": "oct", "k": b64(b"1" * 32), "alg": "HS256", "kid": "one"})
    second = jwt.PyJWK({"kty": "oct", "k": b64(b"2" * 32), "alg": "HS256", "kid": "two"})
    v = verifier(key=[first, second])
    assert v.verify(hs(good(), key=b"2" * 32, kid="two"), Source.HEADER, NOW).sub == "alice"
    with pytest.raises(BadSignature):
        v.verify(hs(good(), key=b"2" * 32, kid="one"), Source.HEADER, NOW)


def test_verified_cache_skips_pyjwt_but_still_judges_time(monkeypatch: pytest.MonkeyPatch) -> None:
    from signout.tokens import Verifier

    calls = []
    real = Verifier._decode

    def counting(self: Verifier, *args: Any) -> Any:
        calls.append(1)
        return real(self, *args)

    monkeypatch.setattr(Verifier, "_decode", counting)
    v = verifier(verified_cache_size=2)
    token = hs(good(exp=int(NOW) + 60, roles=["user"]))
    first = v.verify(token, Source.HEADER, NOW)
    again = v.verify(token, Source.ACCESS_COOKIE, NOW + 1)
    assert len(calls) == 1
    assert again.source is Source.ACCESS_COOKIE and again.claims == first.claims
    with pytest.raises(ExpiredToken):
        v.verify(token, Source.HEADER, NOW + 60 + 31)  # cached, and still expired on time
    with pytest.raises(TypeError):  # the cached claims are read-only ...
        first.claims["sub"] = "mallory"  # type: ignore[index]
    mine = first.app_claims()  # ... and the app gets its own copy, nested values included
    mine["sub"] = "mallory"
    mine["roles"].append("admin")
    assert v.verify(token, Source.HEADER, NOW).sub == "alice"
    assert v.verify(token, Source.HEADER, NOW).app_claims() == {**mine, "sub": "alice", "roles": ["user"]}


def test_verified_cache_is_bounded_and_never_holds_bad_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    v = verifier(verified_cache_size=2)
    tokens = [hs(good(jti=f"j{i}")) for i in range(5)]
    for t in tokens:
        v.verify(t, Source.HEADER, NOW)
    assert list(v._cache) == tokens[-2:]
    for bad in (hs(good(), key="x" * 40), hs(good(exp=int(NOW) - 100, iat=int(NOW) - 200))):
        with pytest.raises(TokenError):
            v.verify(bad, Source.HEADER, NOW)
        assert bad not in v._cache


def test_cache_disabled_with_zero() -> None:
    v = verifier(verified_cache_size=0)
    v.verify(hs(good()), Source.HEADER, NOW)
    assert len(v._cache) == 0


# ---- end to end: audience, require_revocable, max_token_bytes ----------------------------------------


def test_a_token_naming_an_audience_is_refused_when_no_audience_is_set(real_client: Client) -> None:
    r = real_client().get("/me", headers=bearer(keycloak("Bearer")))
    assert refused(r, "Token claim 'aud' names an audience, and no audience is configured")


def test_a_token_for_the_configured_audience_passes_and_a_list_accepts_any_member(real_client: Client) -> None:
    token = keycloak("Bearer")
    assert real_client(audience="account").get("/me", headers=bearer(token)).json()["claims"]["aud"] == "account"
    assert real_client(audience=["billing", "account"]).get("/me", headers=bearer(token)).status_code == 200
    assert real_client(audience=["billing"]).get("/me", headers=bearer(token)).status_code == 401


def test_a_token_no_logout_could_end_is_refused(real_client: Client) -> None:
    r = real_client().get("/me", headers=bearer(sign(base(sub="alice", jti=None))))
    assert refused(r, "Token carries neither jti nor sid, so no logout could revoke it")


def test_with_require_revocable_off_its_logout_says_nothing_was_revoked(
    real_client: Client, store_keys: Callable[[], list[bytes]], caplog: pytest.LogCaptureFixture
) -> None:
    c = real_client(require_revocable=False)
    token = sign(base(sub="alice", jti=None))
    assert c.get("/me", headers=bearer(token)).status_code == 200
    with caplog.at_level(logging.WARNING, logger="signout"):
        r = c.post("/auth/logout", headers=bearer(token))
    assert r.status_code == 200 and r.json()["revoked"] is False
    assert r.headers["set-cookie"].startswith('refresh_token=""; Path=/auth/refresh;')
    assert any("neither jti nor sid" in m for m in caplog.messages)
    assert store_keys() == []
    assert c.get("/me", headers=bearer(token)).status_code == 200  # as the answer said


def test_a_20_kb_casdoor_token_passes_once_max_token_bytes_allows_it(real_client: Client) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    user = {"owner": "org", "name": "alice", "properties": {f"field{i}": "x" * 40 for i in range(280)}}
    token = jwt.encode(
        base(iss="https://door.example", sub="org/alice", tokenType="access-token", **user), private, "RS256"
    )
    assert len(token) > 16384
    kwargs: dict[str, Any] = {"key": public, "algorithms": ["RS256"]}
    assert refused(real_client(**kwargs).get("/me", headers=bearer(token)), "Token is malformed")
    r = real_client(max_token_bytes=32768, **kwargs).get("/me", headers=bearer(token))
    assert r.status_code == 200 and r.json()["claims"]["name"] == "alice"


# ---- end to end: hostile tokens, on every store ------------------------------------------------------


def test_a_deeply_nested_header_is_malformed_not_a_500(client: Any) -> None:
    token = f"{b64(b'[' * 5000)}.e30.x"
    for path, method in (("/me", "GET"), ("/auth/logout", "POST"), ("/auth/logout-all", "POST")):
        r = client().request(
            method, path, headers={"Authorization": f"Bearer {token}", "Cookie": f"refresh_token={token}"}
        )
        assert r.status_code < 500


def test_exp_is_required_even_when_required_claims_is_given(make_token: TokenFactory) -> None:
    verifier = build_settings(key=SECRET, required_claims=["jti"], clock=lambda: NOW).verifier
    import jwt

    token = jwt.encode({"sub": "a", "jti": "j", "iat": int(NOW)}, SECRET, algorithm="HS256")
    with pytest.raises(InvalidClaim, match="exp"):
        verifier.verify(token, Source.HEADER, NOW)


def test_rs256_middleware_refuses_an_hs256_token_signed_with_its_public_key(backend: Backend) -> None:
    import base64
    import hashlib
    import hmac
    import json

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header, payload = json.dumps({"alg": "HS256"}), json.dumps({"sub": "x", "jti": "y", "exp": 2**31})
    body = f"{b64(header.encode())}.{b64(payload.encode())}"
    forged = f"{body}.{b64(hmac.new(public, body.encode(), hashlib.sha256).digest())}"
    middleware = SignOutMiddleware(starlette_app(), key=public, algorithms=["RS256"], store=backend.make())
    c = TestClient(middleware, base_url="https://t")
    r = c.get("/me", headers=bearer(forged))
    assert r.status_code == 401
    assert r.json()["message"] == "Token algorithm is not allowed"
    assert c.post("/auth/logout", headers=bearer(forged)).status_code == 200
    assert backend.count() == 0
