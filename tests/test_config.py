"""Constructor kwargs (``signout.config``, and ``signout.wiring`` for the store's): a bad one is a
``ConfigError`` that names it; an unknown one says which was meant."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from signout import ConfigError, Revoker, SignOutMiddleware, SignOutWSGIMiddleware
from signout.config import build_settings

from .apps import starlette_app, wsgi_app
from .conftest import SECRET
from .helpers import ADAPTERS, middleware

RSA_PUBLIC_PEM = (
    rsa.generate_private_key(public_exponent=65537, key_size=2048)
    .public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
)
REFRESH_PATH = "/api/token/refresh/"


CONFIG_CASES: list[tuple[dict[str, Any], str]] = [
    ({"key": ""}, "key"),
    ({"key": "short"}, "key"),
    ({"key": RSA_PUBLIC_PEM}, "key"),
    ({"algorithms": ["none"]}, "algorithms"),
    ({"algorithms": ["NONE"]}, "algorithms"),
    ({"algorithms": "HS256"}, "algorithms"),
    ({"algorithms": []}, "algorithms"),
    ({"algorithms": ["HS256", "RS256"]}, "algorithms"),
    ({"algorithms": ["XX999"]}, "algorithms"),
    ({"key": b"not a pem key at all, but long enough", "algorithms": ["RS256"]}, "key"),
    ({"leeway": -1}, "leeway"),
    ({"leeway": "30"}, "leeway"),
    ({"max_token_lifetime": 0}, "max_token_lifetime"),
    ({"key_prefix": "a{b}"}, "key_prefix"),
    ({"key_prefix": ""}, "key_prefix"),
    ({"logout_path": "auth/logout"}, "logout_path"),
    ({"logout_all_path": "/auth/logout"}, "logout_all_path"),
    ({"refresh_cookie": "bad name"}, "refresh_cookie"),
    ({"refresh_cookie": "rt\n"}, "refresh_cookie"),  # a trailing newline would end the Set-Cookie line
    ({"jwks_url": "https://op.example/\x0bjwks"}, "jwks_url"),
    ({"refresh_cookie_path": "/a;b"}, "refresh_cookie_path"),
    ({"cookie_domain": "bad domain"}, "cookie_domain"),
    ({"cookie_secure": "yes"}, "cookie_secure"),
    ({"cookie_samesite": "sometimes"}, "cookie_samesite"),
    ({"cookie_samesite": "none", "cookie_secure": False}, "cookie_samesite"),
    ({"refresh_cookie": "__Host-refresh"}, "refresh_cookie"),
    ({"refresh_cookie": "__Secure-refresh", "cookie_secure": False}, "cookie_secure"),
    ({"access_cookie": "a b"}, "access_cookie"),
    ({"on_invalid_token": "ignore"}, "on_invalid_token"),
    ({"on_store_error": "open"}, "on_store_error"),
    ({"store_timeout": 0}, "store_timeout"),
    ({"store_timeout": 60}, "store_timeout"),
    ({"exclude_paths": "/health"}, "exclude_paths"),
    ({"exclude_paths": ["health"]}, "exclude_paths"),
    ({"allowed_redirects": ["/relative"]}, "allowed_redirects"),
    ({"allowed_redirects": ["javascript:alert(1)"]}, "allowed_redirects"),
    ({"clear_site_data": ["everything"]}, "clear_site_data"),
    ({"clear_site_data": "cookies"}, "clear_site_data"),
    ({"audience": ""}, "audience"),
    ({"issuer": [1]}, "issuer"),
    ({"required_claims": "jti"}, "required_claims"),
    ({"clock": 5}, "clock"),
    ({"verified_cache_size": -1}, "verified_cache_size"),
    ({"trusted_origins": ["not an origin"]}, "trusted_origins"),
    ({"clients": {"a": "short"}}, "clients"),
    ({"clients": {"a:b": "x" * 20}}, "clients"),
    ({"revoke_path": "/auth/logout"}, "revoke_path"),
    ({"max_body_bytes": 10}, "max_body_bytes"),
    ({"on_event": "log"}, "on_event"),
]


@pytest.mark.parametrize(("kwargs", "kwarg"), CONFIG_CASES, ids=[f"{c[1]}-{i}" for i, c in enumerate(CONFIG_CASES)])
def test_bad_configuration_names_the_kwarg(kwargs: dict[str, Any], kwarg: str) -> None:
    kwargs = {"key": SECRET, **kwargs}
    with pytest.raises(ConfigError) as raised:
        build_settings(**kwargs)
    assert raised.value.kwarg == kwarg
    assert str(raised.value).startswith(f"{kwarg}: ")
    assert isinstance(raised.value, ValueError)


@pytest.mark.parametrize(
    ("kwarg", "value"),
    [
        ("check_token_type", "yes"),
        ("user_claim", ""),
        ("user_claim", 7),
        ("require_revocable", 1),
        ("refresh_paths", "/api/token/refresh/"),
        ("refresh_paths", ["relative"]),
        ("refresh_paths", ["/auth/logout"]),
        ("refresh_body_fields", "refresh"),
        ("refresh_body_fields", [""]),
        ("refresh_rotation", "on"),
        ("refresh_reuse_grace", -1),
        ("refresh_reuse_grace", 3600),
        ("max_token_bytes", 100),
        ("max_token_bytes", 16384.5),
    ],
)
def test_bad_configuration_through_the_middleware_names_the_kwarg(kwarg: str, value: object) -> None:
    with pytest.raises(ConfigError) as caught:
        options: Any = {kwarg: value}
        SignOutMiddleware(starlette_app(), key=SECRET, **options)
    assert caught.value.kwarg == kwarg


def test_a_refresh_path_under_an_excluded_prefix_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="exclude_paths") as caught:
        SignOutMiddleware(starlette_app(), key=SECRET, exclude_paths=["/api"], refresh_paths=["/api/token/refresh/"])
    assert caught.value.kwarg == "refresh_paths"


def test_refresh_paths_with_no_fields_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as caught:
        SignOutMiddleware(starlette_app(), key=SECRET, refresh_paths=[REFRESH_PATH], refresh_body_fields=[])
    assert caught.value.kwarg == "refresh_body_fields"


def test_middleware_refuses_unknown_and_conflicting_kwargs() -> None:
    from signout import SignOutMiddleware

    async def app(scope: Any, receive: Any, send: Any) -> None: ...

    with pytest.raises(ConfigError) as raised:
        SignOutMiddleware(app, key=SECRET, logout_pth="/x")  # type: ignore[call-arg]
    assert raised.value.kwarg == "logout_pth"
    with pytest.raises(ConfigError) as raised:
        SignOutMiddleware(app, key=SECRET, redis_url="redis://x", store=object())
    assert raised.value.kwarg == "store"
    with pytest.raises(ConfigError) as raised:
        SignOutMiddleware(app, key=SECRET, redis_url="http://not-redis")
    assert raised.value.kwarg == "redis_url"
    with pytest.raises(ConfigError) as raised:
        SignOutMiddleware(app, key=SECRET, redis=42)
    assert raised.value.kwarg == "redis"


def test_local_mirror_needs_redis() -> None:
    with pytest.raises(ConfigError) as raised:
        SignOutMiddleware(starlette_app(), key=SECRET, local_mirror=True)
    assert raised.value.kwarg == "local_mirror"


# ---- a missing kwarg, an unknown one -----------------------------------------------------------------


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_no_key_is_a_config_error_naming_key(adapter: str) -> None:
    with pytest.raises(ConfigError) as caught:
        if adapter == "asgi":
            SignOutMiddleware(starlette_app())
        else:
            SignOutWSGIMiddleware(wsgi_app())
    assert caught.value.kwarg == "key"
    assert "is required" in str(caught.value)


@pytest.mark.parametrize("adapter", ADAPTERS)
@pytest.mark.parametrize(
    ("typo", "meant"),
    [("redis_ulr", "redis_url"), ("Redis_URL", "redis_url"), ("audiance", "audience"), ("logout_pat", "logout_path")],
)
def test_an_unknown_kwarg_suggests_the_closest(adapter: str, typo: str, meant: str) -> None:
    with pytest.raises(ConfigError) as caught:
        middleware(adapter, **{typo: "x"})
    assert caught.value.kwarg == typo
    assert str(caught.value) == f"{typo}: is not a signout option; did you mean {meant!r}?"


def test_an_unknown_kwarg_far_from_all_says_where_the_list_is() -> None:
    with pytest.raises(ConfigError, match="banana: is not a signout option; the README's Options section lists"):
        middleware("asgi", banana=1)


def test_the_revoker_suggests_too() -> None:
    with pytest.raises(ConfigError) as caught:
        Revoker(key_prefx="app")
    assert caught.value.kwarg == "key_prefx"
    assert "did you mean 'key_prefix'?" in str(caught.value)
