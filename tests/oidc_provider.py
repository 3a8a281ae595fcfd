"""A real OpenID Provider for the tests: panva's ``oidc-provider`` (npm, version 9, installed by
``npm ci`` into ``tests/oidc/``) on a free loopback port, driven through its own endpoints and a
test-only control API (``tests/oidc/provider.mjs`` documents it).

- ``start_oidc_provider(**options)``: a context manager; starts ``node tests/oidc/provider.mjs``,
  waits for its ``ready`` line, yields an :class:`OIDCProvider`, stops the process on exit
  (always: and the process exits by itself when its stdin, our pipe, closes).
- ``oidc_provider`` (``oidc_provider_fixture``): the same with the defaults, one per test
  module (starting Node takes about half a second). Tests that change it (``rotate_keys``,
  ``jwks_mode``, ``configure``) call ``reset()`` or leave it as they found it; ``reset()`` does
  not undo a rotation.
- ``BackchannelRecorder``: a tiny HTTP server on 127.0.0.1 that records the back-channel logout
  requests the OP sends; every provider has one, the client's ``backchannel_logout_uri`` unless
  the test gives another (``configure(backchannel_logout_uri=...)`` points it at an app).

Without ``node`` or ``npm``, or when ``npm ci`` fails, the tests that need the OP skip; under
``CI=true`` they fail.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import secrets
import selectors
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
import jwt
import pytest

OIDC_DIR = Path(__file__).resolve().parent / "oidc"
PROVIDER_SCRIPT = OIDC_DIR / "provider.mjs"
LOCK_FILE = OIDC_DIR / "package-lock.json"
PACKAGE = OIDC_DIR / "node_modules" / "oidc-provider" / "package.json"
#: npm writes it on every install (the packages' own files keep their tarballs' mtimes)
INSTALLED = OIDC_DIR / "node_modules" / ".package-lock.json"
#: oidc-provider 9 wants Node 22 LTS (it warns on 20 and works); 20.18 has the URL.parse it uses
NODE_MINIMUM = (20, 18)
NPM_CI_TIMEOUT = 300.0
START_TIMEOUT = 15.0

CLIENT_ID = "signout-test-client"
CLIENT_SECRET = "signout-test-secret-0123456789abcdef"
RESOURCE = "https://api.signout.test"
RESOURCE_SCOPE = "api:read api:write"
REDIRECT_URI = "http://127.0.0.1/callback"
POST_LOGOUT_REDIRECT_URI = "http://127.0.0.1/logged-out"
BACKCHANNEL_LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"


def under_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(reason: str) -> NoReturn:
    """Skip, or fail under ``CI=true``: the suite must prove it ran against the real OP there."""
    if under_ci():
        pytest.fail(f"the test OpenID Provider (node, oidc-provider) is required under CI=true: {reason}")
    pytest.skip(reason)


_install_checked = False


def ensure_installed() -> str:
    """The path of ``node``, after ``npm ci`` in ``tests/oidc`` if ``node_modules`` is missing or
    older than the lock file (``scripts/test.sh`` normally did it already)."""
    global _install_checked
    node = shutil.which("node")
    if node is None:
        unavailable("node is not installed (apt-get install nodejs npm)")
    if _install_checked:
        return node
    version = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30, check=False).stdout
    numbers = tuple(int(part) for part in version.strip().lstrip("v").split(".")[:2] if part.isdigit())
    if numbers < NODE_MINIMUM:
        wanted = ".".join(map(str, NODE_MINIMUM))
        unavailable(f"node {version.strip() or '?'} is too old for oidc-provider 9 (>= {wanted}, 22 preferred)")
    if not PACKAGE.exists() or not INSTALLED.exists() or INSTALLED.stat().st_mtime < LOCK_FILE.stat().st_mtime:
        npm = shutil.which("npm")
        if npm is None:
            unavailable("npm is not installed (apt-get install npm)")
        command = [npm, "ci", "--prefix", str(OIDC_DIR), "--no-audit", "--no-fund", "--loglevel=error"]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=NPM_CI_TIMEOUT, check=False)
        except subprocess.TimeoutExpired:
            unavailable(f"npm ci in {OIDC_DIR} took over {NPM_CI_TIMEOUT:.0f} s")
        if done.returncode != 0 or not PACKAGE.exists():
            unavailable(f"npm ci in {OIDC_DIR} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    _install_checked = True
    return node


# ---- the receiver of back-channel logout requests ------------------------------------------


@dataclass(frozen=True)
class Received:
    """One request the OP sent to a back-channel logout URI."""

    path: str
    headers: dict[str, str]
    form: dict[str, list[str]]

    @property
    def logout_token(self) -> str:
        return self.form["logout_token"][0]


class BackchannelRecorder:
    """Records every POST on 127.0.0.1:<port>; answers ``status`` (200 unless a test changes it)."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.status = 200
        self._lock = threading.Lock()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length).decode()
                with recorder._lock:
                    recorder.requests.append(
                        Received(self.path, {k.lower(): v for k, v in self.headers.items()}, parse_qs(body))
                    )
                self.send_response(recorder.status)
                self.send_header("Cache-Control", "no-store")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/backchannel-logout"
        self._thread = threading.Thread(target=self.server.serve_forever, name="backchannel-recorder", daemon=True)
        self._thread.start()

    def wait(self, count: int = 1, timeout: float = 5.0) -> list[Received]:
        """Until ``count`` requests arrived; all of them."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if len(self.requests) >= count:
                    return list(self.requests)
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(self.requests)} back-channel logout requests, expected {count}")
            time.sleep(0.01)

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()
        self.status = 200

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# ---- the provider ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    """The outcome of ``Client#backchannelLogout(sub, sid)``: ``ok`` when the receiver answered
    200 or 204 (the only answers oidc-provider accepts); ``status`` None when nothing answered."""

    ok: bool
    status: int | None
    error: str | None


@dataclass
class Login:
    """A user logged in at the OP through the authorization code flow (PKCE): the tokens the
    client got, and ``browser``, the HTTP client that holds the OP's session cookies."""

    sub: str
    sid: str | None
    id_token: str
    access_token: str
    refresh_token: str | None
    browser: httpx.Client = field(repr=False)


class OIDCProvider:
    """A running ``tests/oidc/provider.mjs``; endpoints from its discovery document."""

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        issuer: str,
        log_path: Path,
        options: dict[str, Any],
        recorder: BackchannelRecorder,
    ) -> None:
        self.process = process
        self.issuer = issuer
        self.port = int(urlsplit(issuer).port or 0)
        self.log_path = log_path
        self.recorder = recorder
        self.client_id: str = options["client_id"]
        self.client_secret: str = options["client_secret"]
        self.resource: str = options["resource"]
        self.redirect_uri: str = options["redirect_uris"][0]
        post_logout = options["post_logout_redirect_uris"]
        self.post_logout_redirect_uri: str | None = post_logout[0] if post_logout else None
        self.http = httpx.Client(base_url=issuer, timeout=10.0)
        self.discovery: dict[str, Any] = self.http.get("/.well-known/openid-configuration").raise_for_status().json()
        self.jwks_uri: str = self.discovery["jwks_uri"]
        self.token_endpoint: str = self.discovery["token_endpoint"]
        self.authorization_endpoint: str = self.discovery["authorization_endpoint"]
        self.revocation_endpoint: str = self.discovery["revocation_endpoint"]
        self.introspection_endpoint: str = self.discovery["introspection_endpoint"]
        self.end_session_endpoint: str = self.discovery["end_session_endpoint"]

    # -- the OP's own endpoints --

    def access_token(self, resource: str | None = None, scope: str | None = None) -> str:
        """A JWT access token from the client credentials grant (``sub`` is the client id)."""
        data = {"grant_type": "client_credentials", "resource": resource or self.resource}
        if scope is not None:
            data["scope"] = scope
        answer = self.http.post(self.token_endpoint, data=data, auth=(self.client_id, self.client_secret))
        if answer.status_code != 200:
            raise AssertionError(f"client_credentials: {answer.status_code} {answer.text}")
        return str(answer.json()["access_token"])

    def login(self, sub: str, scope: str = f"openid offline_access {RESOURCE_SCOPE}") -> Login:
        """``sub`` logs in: authorization code flow with PKCE, the OP's session in ``Login.browser``;
        the access token is a JWT for ``resource`` (with the session's ``sid``), the refresh token
        opaque (present with ``offline_access``)."""
        browser = httpx.Client(timeout=10.0)
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        state = secrets.token_urlsafe(12)
        params = {
            "client_id": self.client_id,
            "response_type": "code",
            "redirect_uri": self.redirect_uri,
            "scope": scope,
            "login_hint": sub,
            "prompt": "consent",  # oidc-provider drops offline_access without it
            "state": state,
            "nonce": secrets.token_urlsafe(12),
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "resource": self.resource,
        }
        answer = browser.get(self.authorization_endpoint, params=params)
        for _ in range(10):
            location = answer.headers.get("location")
            if answer.status_code not in (302, 303) or location is None:
                raise AssertionError(f"login stopped at {answer.url}: {answer.status_code} {answer.text[:500]}")
            target = urljoin(str(answer.url), location)
            if target.startswith(self.redirect_uri):
                break
            answer = browser.get(target)
        else:
            raise AssertionError("login: too many redirects")
        query = parse_qs(urlsplit(target).query)
        if "code" not in query or query.get("state") != [state]:
            raise AssertionError(f"login: the OP redirected to {target}")
        tokens = self.http.post(
            self.token_endpoint,
            data={
                "grant_type": "authorization_code",
                "code": query["code"][0],
                "redirect_uri": self.redirect_uri,
                "code_verifier": verifier,
                "resource": self.resource,
            },
            auth=(self.client_id, self.client_secret),
        )
        if tokens.status_code != 200:
            raise AssertionError(f"code exchange: {tokens.status_code} {tokens.text}")
        body = tokens.json()
        claims = jwt.decode(body["id_token"], options={"verify_signature": False})
        return Login(sub, claims.get("sid"), body["id_token"], body["access_token"], body.get("refresh_token"), browser)

    def end_session(
        self,
        login: Login,
        *,
        post_logout_redirect_uri: str | None = None,
        state: str | None = None,
        everywhere: bool = True,
    ) -> httpx.Response:
        """RP-Initiated Logout as a browser does it: ``GET end_session_endpoint`` with the
        ``id_token_hint``, then the confirmation form (``logout=yes`` when ``everywhere``: every
        client of the session gets a back-channel logout, else only this one). The OP sends the
        back-channel logout requests before it answers: the answer is its final 303."""
        params = {"id_token_hint": login.id_token, "client_id": self.client_id}
        if post_logout_redirect_uri is not None:
            params["post_logout_redirect_uri"] = post_logout_redirect_uri
        if state is not None:
            params["state"] = state
        page = login.browser.get(self.end_session_endpoint, params=params)
        if page.status_code != 200:
            raise AssertionError(f"end_session: {page.status_code} {page.text[:500]}")
        action = urljoin(str(page.url), _html_attribute(page.text, 'method="post" action="'))
        data = {"xsrf": _html_attribute(page.text, 'name="xsrf" value="')}
        if everywhere:
            data["logout"] = "yes"
        return login.browser.post(action, data=data)

    def revoke(self, token: str, token_type_hint: str | None = None) -> httpx.Response:
        """RFC 7009 at the OP (client_secret_basic). Opaque tokens only: a JWT gets 400
        ``unsupported_token_type``."""
        data = {"token": token, **({"token_type_hint": token_type_hint} if token_type_hint else {})}
        return self.http.post(self.revocation_endpoint, data=data, auth=(self.client_id, self.client_secret))

    def introspect(self, token: str) -> dict[str, Any]:
        """RFC 7662 at the OP (opaque tokens: ``{"active": ...}``)."""
        answer = self.http.post(
            self.introspection_endpoint, data={"token": token}, auth=(self.client_id, self.client_secret)
        )
        result: dict[str, Any] = answer.raise_for_status().json()
        return result

    def jwks(self) -> dict[str, Any]:
        """``GET jwks_uri`` (counted like any other fetch)."""
        result: dict[str, Any] = self.http.get(self.jwks_uri).raise_for_status().json()
        return result

    # -- the control API (tests/oidc/provider.mjs) --

    def _control(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        answer = self.http.request(method, f"/__test/{path}", json=body)
        if answer.status_code != 200:
            raise AssertionError(f"control {path}: {answer.status_code} {answer.text}")
        result: dict[str, Any] = answer.json()
        return result

    def keys(self) -> dict[str, Any]:
        """``{"keys": [public JWKs as published], "signing_kid": ...}``, without a counted fetch."""
        return self._control("GET", "keys")

    @property
    def signing_kid(self) -> str:
        return str(self.keys()["signing_kid"])

    def rotate_keys(self, keep_old: bool = True, sign_with_new: bool = True) -> str:
        """A new signing key; its kid. ``keep_old=False`` drops the old keys from the JWKS;
        ``sign_with_new=False`` only publishes it (last), the old key still signs."""
        return str(self._control("POST", "rotate", {"keep_old": keep_old, "sign_with_new": sign_with_new})["new_kid"])

    def configure(self, **metadata: Any) -> dict[str, Any]:
        """Changes the client's metadata at run time (``backchannel_logout_uri``,
        ``backchannel_logout_session_required``, ``redirect_uris``, ``post_logout_redirect_uris``,
        ``extra_clients``); the OP's sessions and tokens survive."""
        return self._control("POST", "configure", metadata)

    def backchannel_logout(self, sub: str | None, sid: str | None, client_id: str | None = None) -> Delivery:
        """The OP's own ``Client#backchannelLogout(sub, sid)``: a signed logout token POSTed to the
        client's ``backchannel_logout_uri``; the token carries ``sid`` when the client has
        ``backchannel_logout_session_required`` (the default here); ``sub`` None: no ``sub``
        claim. The OP does not retry a failed delivery."""
        body = {
            key: value for key, value in (("sub", sub), ("sid", sid), ("client_id", client_id)) if value is not None
        }
        result = self._control("POST", "backchannel-logout", body)
        return Delivery(bool(result["ok"]), result["status"], result["error"])

    def deliveries(self) -> list[dict[str, Any]]:
        """Every request the OP sent out since the last reset: ``url``, ``method``, ``status`` or
        ``error``, ``at``."""
        return list(self._control("GET", "deliveries")["deliveries"])

    def jwks_requests(self) -> int:
        """``GET /jwks`` requests the OP saw since the last reset (failed, hung ones included)."""
        return int(self._control("GET", "jwks-requests")["count"])

    def jwks_mode(self, mode: str, *, status: int = 503, delay: float = 0.5, size: int = 2_000_000) -> None:
        """How ``GET /jwks`` answers: ``ok``; ``fail`` (``status``, ``Retry-After: 1``); ``hang``
        (never: the connection is dropped when the mode changes); ``delay`` (ok after ``delay``
        seconds); ``garbage`` (200 text/html); ``huge`` (200, a JWK Set of ``size`` bytes)."""
        self._control(
            "POST", "jwks-mode", {"mode": mode, "status": status, "delay_ms": int(delay * 1000), "size": size}
        )

    def reset(self) -> None:
        """JWKS mode ok, counters and deliveries cleared, the recorder emptied (keys and client
        metadata stay)."""
        self._control("POST", "reset")
        self.recorder.clear()

    def log(self) -> str:
        """What the OP wrote on stderr so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")


def _html_attribute(html: str, marker: str) -> str:
    """The attribute value after ``marker`` (which ends with its opening quote)."""
    start = html.find(marker)
    if start < 0:
        raise AssertionError(f"no {marker} in the OP's page: {html[:500]}")
    start += len(marker)
    return html[start : html.index('"', start)]


def _wait_ready(process: subprocess.Popen[bytes], log_path: Path) -> str:
    assert process.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + START_TIMEOUT
    line = b""
    try:
        while not line.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not selector.select(remaining):
                raise RuntimeError(f"the test OP did not start in {START_TIMEOUT:.0f} s: {log_path.read_text()}")
            chunk = os.read(process.stdout.fileno(), 4096)
            if not chunk:
                raise RuntimeError(f"the test OP exited ({process.wait()}): {log_path.read_text()}")
            line += chunk
    finally:
        selector.close()
    words = line.decode().split()
    if len(words) != 3 or words[0] != "ready":
        raise RuntimeError(f"the test OP said {line!r}")
    return words[2]


@contextlib.contextmanager
def start_oidc_provider(
    *,
    client_id: str = CLIENT_ID,
    client_secret: str = CLIENT_SECRET,
    redirect_uris: Sequence[str] = (REDIRECT_URI,),
    post_logout_redirect_uris: Sequence[str] = (POST_LOGOUT_REDIRECT_URI,),
    backchannel_logout_uri: str | None = None,
    backchannel_logout_session_required: bool = True,
    resource: str = RESOURCE,
    resource_scope: str = RESOURCE_SCOPE,
    alg: str = "RS256",
    access_token_ttl: int = 600,
    access_token_sid: bool = True,
    extra_clients: Sequence[dict[str, Any]] = (),
) -> Iterator[OIDCProvider]:
    """An OP of its own; ``backchannel_logout_uri`` None: the provider's ``recorder``."""
    node = ensure_installed()
    recorder = BackchannelRecorder()
    options: dict[str, Any] = {
        "port": 0,
        "client_id": client_id,
        "client_secret": client_secret,
        "redirect_uris": list(redirect_uris),
        "post_logout_redirect_uris": list(post_logout_redirect_uris),
        "backchannel_logout_uri": backchannel_logout_uri or recorder.url,
        "backchannel_logout_session_required": backchannel_logout_session_required,
        "resource": resource,
        "resource_scope": resource_scope,
        "alg": alg,
        "access_token_ttl": access_token_ttl,
        "access_token_sid": access_token_sid,
        "extra_clients": list(extra_clients),
    }
    log_file = tempfile.NamedTemporaryFile(prefix="signout-test-op-", suffix=".log", delete=False)  # noqa: SIM115
    log_path = Path(log_file.name)
    process = subprocess.Popen(
        [node, str(PROVIDER_SCRIPT), json.dumps(options)],
        cwd=OIDC_DIR,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log_file,
    )
    log_file.close()
    provider: OIDCProvider | None = None
    try:
        issuer = _wait_ready(process, log_path)
        provider = OIDCProvider(process, issuer, log_path, options, recorder)
        yield provider
    finally:
        if provider is not None:
            provider.http.close()
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                stream.close()
        recorder.close()
        log_path.unlink(missing_ok=True)


@pytest.fixture(scope="module", name="oidc_provider")
def oidc_provider_fixture() -> Iterator[OIDCProvider]:
    """The fixture ``oidc_provider``: one OP per test module, with the defaults
    (``start_oidc_provider()``). A test module (or conftest.py) that wants it imports
    ``oidc_provider_fixture`` (``# noqa: F401``: pytest finds it by its name ``oidc_provider``)."""
    with start_oidc_provider() as provider:
        yield provider
