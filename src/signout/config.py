"""Constructor kwargs: validated and precomputed once, shared by both adapters.

Every kwarg is checked here and a ``ConfigError`` names the one that is wrong,
so a typo fails at start-up instead of on the first logout.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from .audit import Sink
from .csrf import parse_trusted
from .errors import ConfigError
from .keys import HMAC_ALGORITHMS, parse_algorithms, parse_keys
from .keyset import KeySet
from .tokens import MAX_TOKEN_CHARS, Verifier
from .upstream import DEFAULT_TIMEOUT, PRESETS, Preset, RPInitiated
from .web import deletion_cookie, https_url, is_cookie_name, path_matches
from .web import origin_of as _origin

Clock = Callable[[], float]

# RFC 6265 section 4.1.1: a cookie name is an RFC 2616 token.
_PREFIX = re.compile(r"^[A-Za-z0-9_.:\-/]{1,64}$")
# Clear-Site-Data directives (W3C Clear Site Data, section 3.1).
_CLEAR_SITE_DATA = frozenset(
    {"cache", "cookies", "storage", "executionContexts", "clientHints", "prefetchCache", "prerenderCache", "*"}
)
_DEFAULT_LIFETIME = timedelta(days=30)
# Seconds a rotated-out refresh token may come back without counting as reuse: two tabs
# refreshing at once, a retry after a lost answer. README "Refresh rotation" says why 10.
DEFAULT_REUSE_GRACE = 10
_CLAIM = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")


@dataclass(frozen=True, slots=True)
class Settings:
    verifier: Verifier
    key_prefix: str
    logout_path: str | None
    logout_all_path: str | None
    refresh_cookie: str
    refresh_cookie_path: str
    access_cookie: str | None
    on_invalid_token: str
    on_store_error: str
    store_timeout: float
    retry_after: int
    exclude_paths: tuple[str, ...]
    allowed_redirects: frozenset[str]
    allowed_origins: frozenset[str]
    clear_site_data: bytes | None
    trusted_origins: frozenset[str]
    revoke_path: str | None
    clients: dict[str, bytes]
    max_body_bytes: int
    on_event: Sink | None
    max_token_lifetime: int
    leeway: int
    clock: Clock
    check_token_type: bool
    user_claim: str
    refresh_paths: frozenset[str]
    refresh_body_fields: tuple[str, ...]
    refresh_rotation: bool
    refresh_reuse_grace: float
    # Precomputed deletion Set-Cookie values.
    delete_refresh: bytes
    delete_access: bytes | None
    #: The keys published at ``jwks_url`` (the verifier's too), or ``None``.
    keyset: KeySet | None = None
    #: The identity provider a logout also ends the session at (``signout.upstream``), or ``None``.
    upstream_logout: Preset | None = None
    upstream_timeout: float = DEFAULT_TIMEOUT
    #: Where the OP posts back-channel logout tokens (``signout.backchannel``), or ``None``.
    backchannel_logout_path: str | None = None

    def redirect_allowed(self, location: str) -> bool:
        """Whether a logout's ``return_to`` may send the browser to ``location`` (``allowed_redirects``)."""
        origin = _origin(location)
        if origin is None:
            return False
        return location in self.allowed_redirects or origin in self.allowed_origins


def _seconds(kwarg: str, value: object, *, minimum: float, integral: bool = False) -> float:
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(kwarg, f"must be a number of seconds or a timedelta, not {type(value).__name__}")
    if not value >= minimum or value == float("inf"):
        raise ConfigError(kwarg, f"must be at least {minimum} seconds and finite")
    return float(int(value)) if integral else float(value)


def _choice(kwarg: str, value: object, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(kwarg, f"must be one of {', '.join(map(repr, choices))}, not {value!r}")
    return str(value)


def _path(kwarg: str, value: object, *, optional: bool) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value.startswith("/") or any(c in value for c in "?#; \r\n\t\0"):
        raise ConfigError(kwarg, f"must be an absolute path such as '/auth/logout', not {value!r}")
    return value


def _cookie_name(kwarg: str, value: object) -> str:
    if not is_cookie_name(value):
        raise ConfigError(kwarg, f"{value!r} is not a valid cookie name (RFC 6265 section 4.1.1)")
    return value


def _redirects(value: object) -> tuple[frozenset[str], frozenset[str]]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ConfigError("allowed_redirects", "must be a list of absolute URLs or origins")
    urls: set[str] = set()
    origins: set[str] = set()
    for item in value:
        if not isinstance(item, str) or _origin(item) is None:
            raise ConfigError("allowed_redirects", f"{item!r} is not an absolute http(s) URL or origin")
        parts = urlsplit(item)
        if parts.path in ("", "/") and not parts.query and not parts.fragment:
            origins.add(_origin(item) or "")
        else:
            urls.add(item)
    return frozenset(urls), frozenset(origins)


def _clear_site_data(value: object) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ConfigError("clear_site_data", "must be a list such as ('cookies', 'storage')")
    items = list(value)
    bad = [v for v in items if v not in _CLEAR_SITE_DATA]
    if bad or not items:
        raise ConfigError("clear_site_data", f"use directives from {sorted(_CLEAR_SITE_DATA)}, got {bad or items}")
    return ", ".join(f'"{v}"' for v in items).encode("ascii")


def _jwks_url(value: object) -> str | None:
    """An https URL; plain http only to a loopback host (keys fetched in the clear could be swapped on the way)."""
    if value is None:
        return None
    return https_url(
        "jwks_url",
        value,
        usage="must be the https:// URL of a JWK Set, such as 'https://op.example/.well-known/jwks.json'",
        clear="must use https:// (plain http:// only to a loopback host such as 127.0.0.1): "
        "keys fetched in the clear can be swapped by anyone on the way",
    )


def _clients(value: object) -> dict[str, bytes]:
    """Client ids to secrets for the revocation endpoint (RFC 7009, HTTP Basic client auth)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not value:
        raise ConfigError("clients", "must map client ids to secrets, e.g. {'billing': os.environ['BILLING_SECRET']}")
    out: dict[str, bytes] = {}
    for client_id, secret in value.items():
        if not isinstance(client_id, str) or not client_id or ":" in client_id:
            raise ConfigError("clients", f"client id {client_id!r} must be a non-empty string without ':'")
        if not isinstance(secret, (str, bytes)) or len(secret) < 16:
            raise ConfigError("clients", f"the secret of {client_id!r} must be a string of at least 16 characters")
        out[client_id] = secret.encode() if isinstance(secret, str) else secret
    return out


def _names(kwarg: str, value: object) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ConfigError(kwarg, "must be a list of field names such as ['refresh']")
    names = tuple(value)
    if not all(isinstance(n, str) and n for n in names):
        raise ConfigError(kwarg, "must be a list of non-empty field names")
    return names


def _refresh_paths(value: object, excluded: tuple[str, ...], routes: tuple[str | None, ...]) -> frozenset[str]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ConfigError("refresh_paths", "must be a list of exact paths such as ['/api/token/refresh/']")
    paths = frozenset(_path("refresh_paths", p, optional=False) or "/" for p in value)
    for path in sorted(paths):
        if path in routes:
            raise ConfigError("refresh_paths", f"{path!r} is one of signout's own routes")
        under = next((prefix for prefix in excluded if path_matches(path, prefix)), None)
        if under is not None:
            # The guard never looks at an excluded path, so its refresh tokens would go unchecked.
            raise ConfigError("refresh_paths", f"{path!r} is under exclude_paths {under!r}")
    return paths


def _claim_values(kwarg: str, value: object) -> str | tuple[str, ...] | None:
    """``audience``, ``issuer``, ``backchannel_audience``: a string, or a non-empty list of them,
    read once (a generator would be empty the second time), or ``None``."""
    if value is None:
        return None
    if isinstance(value, str):
        if not value:
            raise ConfigError(kwarg, "may not be empty; use None to skip the check")
        return value
    values = tuple(value) if isinstance(value, Iterable) else None
    if values is None or not all(isinstance(v, str) and v for v in values):
        raise ConfigError(kwarg, "must be a string or a list of strings")
    if not values:
        # An empty list would accept no token at all (and a receiver no logout token).
        raise ConfigError(kwarg, "may not be an empty list; use None to skip the check")
    return values


def _backchannel_path(
    value: object,
    routes: tuple[str | None, ...],
    issuer: object,
    audience: object,
    algorithms: tuple[str, ...],
    user_claim: str,
) -> str | None:
    """``backchannel_logout_path``: a logout token is verified with the OP's keys, for this app."""
    kwarg = "backchannel_logout_path"
    path = _path(kwarg, value, optional=True)
    if path is None:
        return None
    if path in routes:
        raise ConfigError(kwarg, f"{path!r} is already one of signout's routes or refresh_paths")
    if issuer is None or audience is None:
        raise ConfigError(
            kwarg,
            "needs issuer (the OP's issuer) and audience or backchannel_audience (this app's client id): "
            "a logout token names both",
        )
    if any(a in HMAC_ALGORITHMS for a in algorithms):
        raise ConfigError(
            kwarg,
            "needs the OP's public keys (jwks_url, or public keys in key with algorithms such as ['RS256']): "
            "a logout token is signed by the OP, never with a shared HMAC secret",
        )
    if user_claim != "sub":
        raise ConfigError(kwarg, f"needs user_claim='sub': a logout token names the user by sub, not {user_claim!r}")
    return path


def build_settings(
    *,
    key: object = None,
    algorithms: object = None,
    audience: str | Iterable[str] | None = None,
    issuer: str | Iterable[str] | None = None,
    leeway: float | timedelta = 30,
    key_prefix: str = "signout",
    logout_path: str | None = "/auth/logout",
    logout_all_path: str | None = "/auth/logout-all",
    refresh_cookie: str = "refresh_token",
    refresh_cookie_path: str = "/auth/refresh",
    cookie_domain: str | None = None,
    cookie_secure: bool = True,
    cookie_samesite: str = "strict",
    access_cookie: str | None = None,
    access_cookie_path: str = "/",
    max_token_lifetime: float | timedelta = _DEFAULT_LIFETIME,
    required_claims: Iterable[str] = ("exp",),
    on_invalid_token: str = "reject",  # noqa: S107 - a mode, not a password
    on_store_error: str = "reject",
    store_timeout: float = 0.25,
    retry_after: int = 5,
    exclude_paths: Iterable[str] = (),
    allowed_redirects: Iterable[str] = (),
    clear_site_data: Iterable[str] | None = None,
    trusted_origins: Iterable[str] = (),
    revoke_path: str | None = "/auth/revoke",
    clients: Mapping[str, str | bytes] | None = None,
    max_body_bytes: int = 20480,
    on_event: Sink | None = None,
    verified_cache_size: int = 4096,
    clock: Clock | None = None,
    check_token_type: bool = True,
    user_claim: str = "sub",
    require_revocable: bool = True,
    refresh_paths: Iterable[str] = (),
    refresh_body_fields: Iterable[str] = ("refresh", "refresh_token"),
    refresh_rotation: bool = False,
    refresh_reuse_grace: float | timedelta = DEFAULT_REUSE_GRACE,
    max_token_bytes: int = MAX_TOKEN_CHARS,
    jwks_url: str | None = None,
    upstream_logout: Preset | None = None,
    upstream_timeout: float | timedelta = DEFAULT_TIMEOUT,
    backchannel_logout_path: str | None = None,
    backchannel_audience: str | Iterable[str] | None = None,
) -> Settings:
    """Validate every kwarg; raise ``ConfigError`` naming the first bad one.

    ``algorithms``: ``("HS256",)`` by default; with ``jwks_url``, ``("RS256",)``, the
    algorithm every OpenID Provider supports (OpenID Connect Core 1.0 section 15.1).
    """
    published = _jwks_url(jwks_url)
    if key is None and published is None:
        # Not a TypeError from Python: the user should read which kwarg and what goes in it.
        raise ConfigError(
            "key",
            "is required: the HMAC secret, public key or list of keys that verify your tokens "
            "(or give jwks_url, the URL where your OpenID Provider publishes its keys)",
        )
    if algorithms is None:
        algorithms = ("HS256",) if published is None else ("RS256",)
    algs = parse_algorithms(algorithms)
    if published is not None and algs[0] in HMAC_ALGORITHMS:
        raise ConfigError(
            "algorithms",
            f"{list(algs)} are HMAC algorithms, and jwks_url publishes public keys: "
            "pin the asymmetric ones your OpenID Provider signs with, e.g. ['RS256']",
        )
    keys = parse_keys(key, algs) if key is not None else ()
    keyset = None if published is None else KeySet(published, algs)
    audience = _claim_values("audience", audience)
    issuer = _claim_values("issuer", issuer)
    backchannel_audience = _claim_values("backchannel_audience", backchannel_audience)
    leeway_s = int(_seconds("leeway", leeway, minimum=0, integral=True))
    lifetime = int(_seconds("max_token_lifetime", max_token_lifetime, minimum=60, integral=True))
    if not isinstance(key_prefix, str) or not _PREFIX.match(key_prefix):
        raise ConfigError("key_prefix", "must be 1-64 characters of letters, digits and _ . : - / (no braces)")
    logout = _path("logout_path", logout_path, optional=True)
    logout_all = _path("logout_all_path", logout_all_path, optional=True)
    if logout is not None and logout == logout_all:
        raise ConfigError("logout_all_path", "must differ from logout_path")
    refresh_name = _cookie_name("refresh_cookie", refresh_cookie)
    refresh_path = _path("refresh_cookie_path", refresh_cookie_path, optional=False) or "/"
    access_path = _path("access_cookie_path", access_cookie_path, optional=False) or "/"
    access_name = None if access_cookie is None else _cookie_name("access_cookie", access_cookie)
    if access_name is not None and access_name == refresh_name and access_path == refresh_path:
        raise ConfigError("access_cookie", "must differ from refresh_cookie (or live on another path)")
    if cookie_domain is not None and (
        not isinstance(cookie_domain, str) or not cookie_domain or not re.match(r"^\.?[A-Za-z0-9.\-]+$", cookie_domain)
    ):
        raise ConfigError("cookie_domain", f"{cookie_domain!r} is not a domain name")
    if not isinstance(cookie_secure, bool):
        raise ConfigError("cookie_secure", "must be True or False")
    samesite = _choice("cookie_samesite", str(cookie_samesite).lower(), ("strict", "lax", "none"))
    if samesite == "none" and not cookie_secure:
        raise ConfigError(
            "cookie_samesite", "'none' needs cookie_secure=True; browsers drop SameSite=None cookies without Secure"
        )
    for cookie_name in (refresh_name, access_name):
        # Cookie prefixes (RFC 6265bis section 4.1.3): the browser refuses a
        # deletion that breaks their rules, so the cookie would survive logout.
        if cookie_name is None:
            continue
        if cookie_name.startswith("__Secure-") and not cookie_secure:
            raise ConfigError("cookie_secure", f"{cookie_name} is a __Secure- cookie; it needs cookie_secure=True")
        if cookie_name.startswith("__Host-"):
            path = refresh_path if cookie_name == refresh_name else access_path
            if not cookie_secure or cookie_domain is not None or path != "/":
                raise ConfigError(
                    "refresh_cookie" if cookie_name == refresh_name else "access_cookie",
                    f"{cookie_name} is a __Host- cookie: it needs Path=/, no Domain and Secure",
                )
    if isinstance(required_claims, str) or not isinstance(required_claims, Iterable):
        raise ConfigError("required_claims", "must be a list of claim names")
    required = tuple(required_claims)
    if not all(isinstance(c, str) and c for c in required):
        raise ConfigError("required_claims", "must be a list of claim names")
    invalid = _choice("on_invalid_token", on_invalid_token, ("reject", "pass"))
    store_error = _choice("on_store_error", on_store_error, ("reject", "allow"))
    timeout = _seconds("store_timeout", store_timeout, minimum=0.001)
    if timeout > 30:
        raise ConfigError("store_timeout", "must be at most 30 seconds; the guard waits this long on every request")
    retry = int(_seconds("retry_after", retry_after, minimum=0, integral=True))
    if isinstance(exclude_paths, str) or not isinstance(exclude_paths, Iterable):
        raise ConfigError("exclude_paths", "must be a list of path prefixes such as ['/health']")
    excluded = tuple(_path("exclude_paths", p, optional=False) or "/" for p in exclude_paths)
    redirect_urls, redirect_origins = _redirects(allowed_redirects)
    if isinstance(trusted_origins, str) or not isinstance(trusted_origins, Iterable):
        raise ConfigError("trusted_origins", "must be a list of origins such as ['https://app.example']")
    try:
        trusted = parse_trusted(trusted_origins)
    except (ValueError, TypeError) as exc:
        raise ConfigError("trusted_origins", f"{exc.args[0]!r} is not an origin (scheme://host[:port])") from exc
    revoke = _path("revoke_path", revoke_path, optional=True)
    if revoke is not None and revoke in (logout, logout_all):
        raise ConfigError("revoke_path", "must differ from logout_path and logout_all_path")
    client_secrets = _clients(clients)
    body_limit = int(_seconds("max_body_bytes", max_body_bytes, minimum=256, integral=True))
    if on_event is not None and not callable(on_event):
        raise ConfigError("on_event", "must be a callable taking an AuditEvent")
    if isinstance(verified_cache_size, bool) or not isinstance(verified_cache_size, int) or verified_cache_size < 0:
        raise ConfigError("verified_cache_size", "must be a whole number >= 0 (0 disables the cache)")
    if clock is not None and not callable(clock):
        raise ConfigError("clock", "must be a callable returning seconds since the epoch")
    for flag, value in (
        ("check_token_type", check_token_type),
        ("require_revocable", require_revocable),
        ("refresh_rotation", refresh_rotation),
    ):
        if not isinstance(value, bool):
            raise ConfigError(flag, "must be True or False")
    if not isinstance(user_claim, str) or not _CLAIM.match(user_claim):
        raise ConfigError("user_claim", f"must be a claim name such as 'sub' or 'user_id', not {user_claim!r}")
    refresh = _refresh_paths(refresh_paths, excluded, (logout, logout_all, revoke))
    fields = _names("refresh_body_fields", refresh_body_fields)
    if refresh and not fields:
        raise ConfigError("refresh_body_fields", "names no field, so refresh_paths would never find a token")
    grace = _seconds("refresh_reuse_grace", refresh_reuse_grace, minimum=0)
    if grace > 300:
        raise ConfigError("refresh_reuse_grace", "must be at most 300 seconds: within it a stolen token is not noticed")
    if (
        isinstance(max_token_bytes, bool)
        or not isinstance(max_token_bytes, int)
        or not 256 <= max_token_bytes <= 1 << 20
    ):
        raise ConfigError("max_token_bytes", "must be a whole number of bytes from 256 to 1048576")
    if refresh and body_limit < max_token_bytes:
        # A refresh body holding a token of the longest accepted size would get 413.
        raise ConfigError("max_body_bytes", f"must be at least max_token_bytes ({max_token_bytes}) with refresh_paths")
    if upstream_logout is not None and not isinstance(upstream_logout, PRESETS):
        raise ConfigError(
            "upstream_logout",
            "must be a preset from signout.upstream (Casdoor, MubarokahID, CentralAuth, RFC7009, RPInitiated) "
            "or None, "
            f"not {type(upstream_logout).__name__}",
        )
    told_within = _seconds("upstream_timeout", upstream_timeout, minimum=0.01)
    if told_within > 30:
        raise ConfigError("upstream_timeout", "must be at most 30 seconds: a logout waits this long for the provider")
    logout_audience = audience if backchannel_audience is None else backchannel_audience
    backchannel = _backchannel_path(
        backchannel_logout_path, (logout, logout_all, revoke, *refresh), issuer, logout_audience, algs, user_claim
    )
    if backchannel is None and backchannel_audience is not None:
        raise ConfigError("backchannel_audience", "is the logout tokens' audience: it needs backchannel_logout_path")
    if isinstance(upstream_logout, RPInitiated):
        back = urlsplit(upstream_logout.post_logout_redirect_uri).path
        if back in (logout, logout_all, revoke, backchannel, refresh_path, *refresh):
            raise ConfigError(
                "upstream_logout",
                f"RPInitiated post_logout_redirect_uri's path {back!r} is already one of signout's routes",
            )
        if upstream_logout.id_token_cookie in (refresh_name, access_name):
            # The ID token goes into a URL: never an access or refresh token.
            raise ConfigError("upstream_logout", "RPInitiated id_token_cookie must differ from signout's token cookies")
    verifier = Verifier(
        keys=keys,
        algorithms=algs,
        audience=audience,
        logout_audience=logout_audience,
        issuer=issuer,
        leeway=leeway_s,
        max_lifetime=lifetime,
        required=required,
        cache_size=verified_cache_size,
        max_token_chars=max_token_bytes,
        user_claim=user_claim,
        require_revocable=require_revocable,
        keyset=keyset,
    )
    cookie: dict[str, Any] = {"domain": cookie_domain, "secure": cookie_secure, "samesite": samesite}
    return Settings(
        verifier=verifier,
        key_prefix=key_prefix,
        logout_path=logout,
        logout_all_path=logout_all,
        refresh_cookie=refresh_name,
        refresh_cookie_path=refresh_path,
        access_cookie=access_name,
        on_invalid_token=invalid,
        on_store_error=store_error,
        store_timeout=timeout,
        retry_after=retry,
        exclude_paths=excluded,
        allowed_redirects=redirect_urls,
        allowed_origins=redirect_origins,
        clear_site_data=_clear_site_data(clear_site_data),
        trusted_origins=trusted,
        revoke_path=revoke,
        clients=client_secrets,
        max_body_bytes=body_limit,
        on_event=on_event,
        max_token_lifetime=lifetime,
        leeway=leeway_s,
        clock=clock or time.time,
        check_token_type=check_token_type,
        user_claim=user_claim,
        refresh_paths=refresh,
        refresh_body_fields=fields,
        refresh_rotation=refresh_rotation,
        refresh_reuse_grace=grace,
        delete_refresh=deletion_cookie(refresh_name, path=refresh_path, **cookie),
        delete_access=None if access_name is None else deletion_cookie(access_name, path=access_path, **cookie),
        keyset=keyset,
        upstream_logout=upstream_logout,
        upstream_timeout=told_within,
        backchannel_logout_path=backchannel,
    )
