"""A real browser against the example app: login, /me, logout, then the old refresh cookie replayed.

Debian's Chromium (``apt-get install chromium``) driven by Playwright's Python
package through ``executable_path`` (no ``playwright install``), against the
example app under uvicorn on a free loopback port, on the real redis-server the
test session starts. Chromium or Playwright missing: skipped, or a failure under
CI=true.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
import uvicorn

from .conftest import free_port

try:
    from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright
    from playwright.sync_api import Error as PlaywrightError

    PLAYWRIGHT_MISSING: str | None = None
except ImportError as exc:  # pragma: no cover - depends on the environment
    PLAYWRIGHT_MISSING = f"the playwright package cannot be imported ({exc}); pip install playwright"

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _unavailable(reason: str) -> None:
    # Under CI the browser test must run: a skip there would hide a missing proof.
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"the browser test must run under CI=true: {reason}")
    pytest.skip(reason)


def _chromium() -> str:
    found = shutil.which("chromium")
    if found is None and os.access("/usr/bin/chromium", os.X_OK):
        found = "/usr/bin/chromium"
    if found is None:
        _unavailable("Chromium not found (neither `chromium` on PATH nor /usr/bin/chromium): apt-get install chromium")
        raise AssertionError("unreachable")
    return found


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if PLAYWRIGHT_MISSING is not None:
        _unavailable(PLAYWRIGHT_MISSING)
    executable = _chromium()
    playwright = sync_playwright().start()
    try:
        try:
            launched = playwright.chromium.launch(
                executable_path=executable, headless=True, args=CHROMIUM_ARGS, timeout=30_000
            )
        except PlaywrightError as exc:
            _unavailable(f"Chromium at {executable} did not start: {exc.message.splitlines()[0]}")
            raise
        try:
            yield launched
        finally:
            launched.close()
    finally:
        playwright.stop()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    fresh = browser.new_context()  # an empty cookie jar for every test
    fresh.set_default_timeout(5_000)
    try:
        yield fresh
    finally:
        fresh.close()


@dataclass
class Served:
    url: str
    secure: bool


@functools.cache
def _example_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("signout_example_app", EXAMPLES / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _example_app(**kwargs: Any) -> Any:
    return _example_module().create_app(**kwargs)


@pytest.fixture(params=[True, False], ids=["secure-cookies", "plain-cookies"])
def served(request: pytest.FixtureRequest, redis_url: str) -> Iterator[Served]:
    """The example app on real Redis, with the default Secure cookies, then with plain ones (the walkthrough's)."""
    secure: bool = request.param
    app = _example_app(redis_url=redis_url) if secure else _example_app(redis_url=redis_url, secure_cookies=False)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, name="example-app", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("the example app did not start")
            time.sleep(0.02)
        yield Served(f"http://127.0.0.1:{port}", secure)
    finally:
        server.should_exit = True
        thread.join(10)


def press(page: Page, button: str) -> str:
    """Click a button of the page and return the answer it shows (the log's next numbered line)."""
    log = page.locator("#log")
    count = int(log.get_attribute("data-count") or "0")
    page.get_by_role("button", name=button, exact=True).click()
    expect(log).to_have_attribute("data-count", str(count + 1))
    return page.locator("#status").inner_text()


def refresh_cookies(context: BrowserContext) -> list[Any]:
    return [c for c in context.cookies() if c["name"] == "refresh_token"]


def jar(context: BrowserContext) -> list[tuple[str, str]]:
    """The cookie jar as (name, path): what a failed assertion may print, never a token."""
    return [(c["name"], c["path"]) for c in context.cookies()]


def test_browser_login_me_logout_and_replay(served: Served, context: BrowserContext, tmp_path: Path) -> None:
    page = context.new_page()
    console_errors: list[str] = []
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    page.goto(served.url + "/")
    expect(page.locator("h1")).to_have_text("signout demo")

    # Login: the access token stays in the page; the refresh token is an HttpOnly cookie on /auth/refresh.
    page.get_by_label("Username").fill("alice")
    assert press(page, "Login").startswith("1. POST /auth/login -> 200 ")
    (cookie,) = refresh_cookies(context)
    assert cookie["path"] == "/auth/refresh"
    assert cookie["httpOnly"] is True
    assert cookie["secure"] is served.secure
    assert cookie["sameSite"] == "Strict"
    assert cookie["domain"] == "127.0.0.1"
    assert page.evaluate("() => document.cookie") == ""  # out of the script's reach
    first_refresh = cookie["value"]

    answer = press(page, "Call /me")
    assert answer.startswith("2. GET /me -> 200 ") and '"sub":"alice"' in answer

    # Rotation: the browser sends the cookie to /auth/refresh itself and gets a new one.
    assert press(page, "Refresh").startswith("3. POST /auth/refresh -> 200 ")
    (cookie,) = refresh_cookies(context)
    old_refresh = cookie["value"]
    assert old_refresh != first_refresh
    assert press(page, "Call /me").startswith("4. GET /me -> 200 ")

    # Logout, authenticated by the Bearer header; the browser's cookie jar loses the refresh cookie.
    with page.expect_request("**/auth/logout") as logout_request:
        answer = press(page, "Logout")
    assert answer == '5. POST /auth/logout -> 200 {"message":"Logged out successfully"}'
    authorization = logout_request.value.headers.get("authorization", "")
    assert authorization.startswith("Bearer ")
    assert jar(context) == []
    expect(page.locator("#token-state")).to_have_text("none")
    assert press(page, "Call /me").startswith("6. GET /me -> 401 ")  # the page forgot its token

    # Replay the refresh cookie the browser held at logout: revoked through its session.
    context.add_cookies(
        [
            {
                "name": "refresh_token",
                "value": old_refresh,
                "domain": "127.0.0.1",
                "path": "/auth/refresh",
                "httpOnly": True,
                "secure": served.secure,
                "sameSite": "Strict",
            }
        ]
    )
    answer = press(page, "Refresh")
    assert answer.startswith("7. POST /auth/refresh -> 401 ")
    assert '"message":"Token has been revoked"' in answer
    assert jar(context) == []  # the guard cleared the revoked cookie again

    # The same replays outside the browser: the logged-out pair, and the refresh token rotated away before.
    with httpx.Client(base_url=served.url) as client:
        for raw in (old_refresh, first_refresh):
            replay = client.post("/auth/refresh", headers={"Cookie": f"refresh_token={raw}"})
            assert replay.status_code == 401
            assert replay.json()["message"] == "Token has been revoked"
        me = client.get("/me", headers={"Authorization": authorization})
        assert me.status_code == 401
        assert me.json()["message"] == "Token has been revoked"

    shot = tmp_path / "after-logout.png"
    page.screenshot(path=shot, full_page=True)
    data = shot.read_bytes()
    assert len(data) > 1000 and data.startswith(PNG_SIGNATURE)
    assert console_errors == [m for m in console_errors if "401" in m]  # only the expected 401s, no CSP errors
