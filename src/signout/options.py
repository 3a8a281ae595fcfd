"""The kwargs both middlewares take, as a type: editors complete them, mypy checks them.

``SignOutMiddleware(app, **kwargs: Unpack[Options])`` also lets a type checker
accept ``app.add_middleware(SignOutMiddleware, key=...)`` in Starlette and
FastAPI, whose middleware protocol rejects a bare ``**kwargs: Any``. Values are
validated at construction by ``config.build_settings`` and
``stores.resolve.resolve_store`` whatever their static type.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypedDict

if TYPE_CHECKING:
    from .audit import Sink
    from .config import Clock
    from .upstream import Preset


class Options(TypedDict, total=False):
    key: Any  # str | bytes | PEM | jwt.PyJWK | a list of them; required unless jwks_url is given
    jwks_url: str | None
    algorithms: Iterable[str]
    audience: str | Iterable[str] | None
    issuer: str | Iterable[str] | None
    leeway: float | timedelta
    redis_url: str | None
    redis: Any
    store: Any
    local_mirror: bool
    key_prefix: str
    logout_path: str | None
    logout_all_path: str | None
    refresh_cookie: str
    refresh_cookie_path: str
    cookie_domain: str | None
    cookie_secure: bool
    cookie_samesite: str
    access_cookie: str | None
    access_cookie_path: str
    max_token_lifetime: float | timedelta
    required_claims: Iterable[str]
    on_invalid_token: str
    on_store_error: str
    store_timeout: float
    retry_after: int
    exclude_paths: Iterable[str]
    allowed_redirects: Iterable[str]
    clear_site_data: Iterable[str] | None
    trusted_origins: Iterable[str]
    revoke_path: str | None
    clients: Mapping[str, str | bytes] | None
    max_body_bytes: int
    on_event: Sink | None
    verified_cache_size: int
    clock: Clock | None
    check_token_type: bool
    user_claim: str
    require_revocable: bool
    refresh_paths: Iterable[str]
    refresh_body_fields: Iterable[str]
    refresh_rotation: bool
    refresh_reuse_grace: float | timedelta
    max_token_bytes: int
    upstream_logout: Preset | None
    upstream_timeout: float | timedelta
    backchannel_logout_path: str | None
    backchannel_audience: str | Iterable[str] | None
