"""Cross-site request refusal for cookie-authenticated logout routes.

A logout authenticated by a cookie can be forged by any site the user visits
(a form post, a link to ``GET /auth/logout-all``). Fetch Metadata
(``Sec-Fetch-Site``, W3C Fetch Metadata Request Headers) tells a browser's
cross-site request apart; ``Origin`` (RFC 6454, Fetch) is the fallback for
browsers without it. A request authenticated by an ``Authorization`` header is
not CSRF-able: a page cannot set that header cross-site without CORS consent.
"""

from __future__ import annotations

from collections.abc import Iterable

from .http import Headers, header_values, origin_of

_DEFAULT_PORTS = {"http": "80", "https": "443"}


def _host(headers: Headers) -> str | None:
    values = header_values(headers, b"host")
    return values[0].decode("latin-1").strip().lower() if len(values) == 1 else None


def _netloc(origin: str) -> str:
    scheme, _, rest = origin.partition("://")
    host, sep, port = rest.rpartition(":")
    if sep and port == _DEFAULT_PORTS.get(scheme) and not host.endswith("]"):
        return host
    return rest


def same_or_trusted(origin: str, headers: Headers, trusted: frozenset[str]) -> bool:
    normal = origin_of(origin)
    if normal is None:  # "null" (sandboxed frames, file:), garbage
        return False
    if normal in trusted:
        return True
    host = _host(headers)
    return host is not None and _netloc(normal) == _netloc(f"{normal.partition('://')[0]}://{host}")


def cross_site(method: str, headers: Headers, trusted: frozenset[str]) -> bool:
    """Whether a browser sent this request from a page that is not the app's own or trusted."""
    sites = header_values(headers, b"sec-fetch-site")
    origins = header_values(headers, b"origin")
    origin = origins[0].decode("latin-1") if len(origins) == 1 else None
    if len(origins) > 1:
        return True
    site = sites[0].strip().lower() if len(sites) == 1 else None
    if site in (b"same-origin", b"none"):  # "none": typed URL, bookmark
        return False
    if site in (b"same-site", b"cross-site") or len(sites) > 1:
        return origin is None or not same_or_trusted(origin, headers, trusted)
    if origin is not None:
        return not same_or_trusted(origin, headers, trusted)
    # Neither header: a non-browser client, or a browser too old for both.
    # Such a browser sends no Origin on a top-level GET, exactly what a forged
    # link looks like, so only POST (which every browser marks with Origin
    # when cross-site) is let through.
    return method != "POST"


def parse_trusted(values: Iterable[str]) -> frozenset[str]:
    out = set()
    for value in values:
        origin = origin_of(value)
        if origin is None or (value.rstrip("/") != origin and value.rstrip("/").lower() != origin):
            raise ValueError(value)
        out.add(origin)
    return frozenset(out)
