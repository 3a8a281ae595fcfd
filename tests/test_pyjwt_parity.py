"""signout checks signatures, aud and iss itself (faster); PyJWT's jwt.decode must agree on every case."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from signout.config import build_settings
from signout.errors import TokenError
from signout.tokens import Source

from .conftest import NOW, SECRET

RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC = ec.generate_private_key(ec.SECP256R1())
ED = ed25519.Ed25519PrivateKey.generate()
PEM, SPKI = serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def base(**more: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {"sub": "alice", "jti": "j", "iat": int(NOW), "exp": int(NOW) + 600}
    claims.update(more)
    return claims


def raw_hs(header: dict[str, Any], payload: bytes, key: bytes = SECRET.encode()) -> str:
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(payload)}"
    return f"{signing_input}.{b64(hmac.new(key, signing_input.encode(), hashlib.sha256).digest())}"


HS = {"alg": "HS256", "typ": "JWT"}
TOKENS: dict[str, str] = {
    "plain": jwt.encode(base(), SECRET, algorithm="HS256"),
    "aud str": jwt.encode(base(aud="api"), SECRET, algorithm="HS256"),
    "aud list": jwt.encode(base(aud=["web", "api"]), SECRET, algorithm="HS256"),
    "aud other": jwt.encode(base(aud=["web"]), SECRET, algorithm="HS256"),
    "aud number": jwt.encode(base(aud=5), SECRET, algorithm="HS256"),
    "aud list with number": jwt.encode(base(aud=["api", 5]), SECRET, algorithm="HS256"),
    "aud empty list": jwt.encode(base(aud=[]), SECRET, algorithm="HS256"),
    "aud empty string": jwt.encode(base(aud=""), SECRET, algorithm="HS256"),
    "aud null": jwt.encode(base(aud=None), SECRET, algorithm="HS256"),
    "iss ok": jwt.encode(base(iss="https://id.test", aud="api"), SECRET, algorithm="HS256"),
    "iss other": jwt.encode(base(iss="https://evil.test", aud="api"), SECRET, algorithm="HS256"),
    "iss number": raw_hs(HS, json.dumps(base(iss=7, aud="api")).encode()),
    "wrong key": jwt.encode(base(), "x" * 40, algorithm="HS256"),
    "truncated signature": jwt.encode(base(), SECRET, algorithm="HS256")[:-4],
    "no signature": jwt.encode(base(), SECRET, algorithm="HS256").rsplit(".", 1)[0] + ".",
    "crit header": raw_hs({**HS, "crit": ["exp"]}, json.dumps(base()).encode()),
    "b64 false": raw_hs({**HS, "b64": False}, b""),
    "kid number": raw_hs({**HS, "kid": 5}, json.dumps(base()).encode()),
    "payload array": raw_hs(HS, b"[1]"),
    "payload not json": raw_hs(HS, b"nope"),
    "payload non-utf8": raw_hs(HS, b"\xff\xfe"),
    "signature bad base64 length": jwt.encode(base(), SECRET, algorithm="HS256") + "A",
}


@pytest.mark.parametrize("name", sorted(TOKENS))
@pytest.mark.parametrize(
    "config",
    [{}, {"audience": "api"}, {"audience": ["api", "admin"]}, {"audience": "api", "issuer": "https://id.test"}],
    ids=["none", "aud", "aud list", "aud+iss"],
)
def test_hs256_verdicts_match_pyjwt(name: str, config: dict[str, Any]) -> None:
    token = TOKENS[name]
    ours = verdict(
        lambda: (
            build_settings(key=SECRET, clock=lambda: NOW, **config).verifier.verify(token, Source.HEADER, NOW).claims
        )
    )
    theirs = verdict(
        lambda: jwt.decode(
            token,
            SECRET,
            algorithms=["HS256"],
            audience=config.get("audience"),
            issuer=config.get("issuer"),
            # PyJWT's defaults but for the clock (the tokens are minted for NOW): verify_aud
            # stays on with no audience, so a token naming one must be refused by both.
            options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
        )
    )
    if name == "iss number":
        # Stricter on purpose: iss keys every revocation, so it must be a string even unchecked.
        assert ours == "rejected"
    else:
        assert ours == theirs


@pytest.mark.parametrize(
    ("alg", "private", "tamper"),
    [(a, k, t) for a, k in (("RS256", RSA), ("PS256", RSA), ("ES256", EC), ("EdDSA", ED)) for t in (False, True)],
)
def test_asymmetric_verdicts_match_pyjwt(alg: str, private: Any, tamper: bool) -> None:
    public = private.public_key().public_bytes(PEM, SPKI)
    token = jwt.encode(base(), private, algorithm=alg)
    if tamper:
        head, _, sig = token.split(".")
        token = f"{head}.{b64(json.dumps(base(sub='mallory')).encode())}.{sig}"
    ours = verdict(
        lambda: (
            build_settings(key=public, algorithms=[alg], clock=lambda: NOW)
            .verifier.verify(token, Source.HEADER, NOW)
            .claims
        )
    )
    options: Any = {"verify_exp": False, "verify_iat": False, "verify_nbf": False}
    theirs = verdict(lambda: jwt.decode(token, public, algorithms=[alg], options=options))
    assert ours == theirs
    assert (ours == "rejected") is tamper


def verdict(call: Any) -> Any:
    try:
        return dict(call())
    except (TokenError, jwt.InvalidTokenError):
        return "rejected"
