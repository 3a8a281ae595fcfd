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

from .web import Headers, header_values, origin_of

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


def _own_scheme(scheme: str) -> str:
    return "https" if scheme in ("https", "wss") else "http"


def refusal(method: str, headers: Headers, trusted: frozenset[str], scheme: str) -> str | None:
    """Why a browser's request from a page that is not the app's own (nor trusted) is refused;
    ``None`` when it is not one. ``scheme``: the app's, as the server reports it."""
    sites = header_values(headers, b"sec-fetch-site")
    origins = header_values(headers, b"origin")
    if len(origins) > 1:
        return "several Origin headers"
    origin = origins[0].decode("latin-1") if origins else None
    site = sites[0].strip().lower() if len(sites) == 1 else None
    if site in (b"same-origin", b"none"):  # "none": typed URL, bookmark
        return None
    if site in (b"same-site", b"cross-site") or len(sites) > 1:
        return "Sec-Fetch-Site without an Origin" if origin is None else _foreign(origin, headers, trusted, scheme)
    if origin is not None:
        return _foreign(origin, headers, trusted, scheme)
    # Neither header: a non-browser client, or a browser too old for both.
    # Such a browser sends no Origin on a top-level GET, exactly what a forged
    # link looks like, so only POST (which every browser marks with Origin
    # when cross-site) is let through.
    return None if method == "POST" else "a GET with neither Origin nor Sec-Fetch-Site"


def _foreign(origin: str, headers: Headers, trusted: frozenset[str], scheme: str) -> str | None:
    normal = origin_of(origin)
    if normal is None:  # "null" (sandboxed frames, file:), garbage
        return "an opaque Origin"
    if normal in trusted:
        return None
    host = _host(headers)
    own = _own_scheme(scheme)
    if host is None or _netloc(normal) != _netloc(f"{own}://{host}"):
        return "Origin of another site"
    if not normal.startswith(own + "://"):
        # The app's own host on the other scheme. An http:// page is what an attacker on the
        # network can inject; an https:// one against an app reported as http is a TLS proxy
        # whose scheme the server was not told (README "CSRF" says how to tell it).
        return f"Origin on {normal.partition('://')[0]}, but the app runs on {own} (as its server reports it)"
    return None


def parse_trusted(values: Iterable[str]) -> frozenset[str]:
    out = set()
    for value in values:
        origin = origin_of(value)
        if origin is None or (value.rstrip("/") != origin and value.rstrip("/").lower() != origin):
            raise ValueError(value)
        out.add(origin)
    return frozenset(out)
