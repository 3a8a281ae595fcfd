"""examples/frameworks/simplejwt_app.py end to end: Django REST framework + simplejwt behind signout,
served by werkzeug (HTTP/1.1) over a real redis-server.

The example configures Django's process-wide settings its own way (auth apps, a database,
simplejwt), and test_frameworks.py's django_app configures them another way in this same
process, so the example runs as its own process: the command its docstring documents.

Assertions never take a token or a body holding one as an operand (pytest would print it on a
failure): responses are judged by the helpers below, which describe them with tokens masked.
"""

from __future__ import annotations

import importlib.util
import math
import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from .conftest import SECRET, RedisServer
from .framework_helpers import REVOKED

pytestmark = pytest.mark.redis

SCRIPT = Path(__file__).resolve().parent.parent / "examples" / "frameworks" / "simplejwt_app.py"
OPTIONAL = ("django", "rest_framework", "rest_framework_simplejwt", "werkzeug")
USERNAME, PASSWORD = "alice", "correct-horse-battery-staple"
READY = "Serving on "
# simplejwt's own refusals carry {"detail", "code"} and `WWW-Authenticate: Bearer realm="api"`;
# these are signout's, so a request answered with them never reached the app.
REUSED = {"error": "invalid_token", "message": "Refresh token was already used; its login has been revoked"}
NOT_ACCESS = {"error": "invalid_token", "message": "Token is not an access token"}


def missing_dependency(reason: str) -> None:
    # As conftest.missing_redis: under CI the example must really run, not quietly skip.
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"the simplejwt example's dependencies are required under CI=true: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def served(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``http://host:port`` of the example, run as its own process with grace 0 (any second use is reuse)."""
    missing = [name for name in OPTIONAL if importlib.util.find_spec(name) is None]
    if missing:
        missing_dependency(f"not installed: {', '.join(missing)} (pip install -e '.[frameworks]')")
    log = tmp_path_factory.mktemp("simplejwt") / "server.log"
    env = {
        **os.environ,
        "REDIS_URL": redis_server.url,
        "SIGNOUT_KEY": SECRET,
        "DEMO_USERNAME": USERNAME,
        "DEMO_PASSWORD": PASSWORD,
    }
    command = [sys.executable, str(SCRIPT), "--port", "0", "--refresh-reuse-grace", "0"]
    with log.open("wb") as errors:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors, env=env)
    assert process.stdout is not None
    try:
        # The first line names the bound port; a crash closes stdout instead (EOF: "").
        ready, _, _ = select.select([process.stdout], [], [], 30)
        line = process.stdout.readline().decode() if ready else ""
        if not line.startswith(READY):
            pytest.fail(f"simplejwt_app did not start; its stderr:\n{log.read_text()[-3000:]}")
        yield line[len(READY) :].strip()
    finally:
        process.terminate()
        process.wait(10)
        process.stdout.close()


@pytest.fixture
def client(served: str, redis_url: str) -> Iterator[httpx.Client]:
    """A client of the running example; ``redis_url`` empties Redis first, so no test sees another's revocations."""
    with httpx.Client(base_url=served, timeout=10) as c:
        yield c


def described(response: httpx.Response) -> str:
    """The status and JSON body of ``response`` for a failure message, tokens masked."""
    try:
        body = response.json()
    except ValueError:
        return f"{response.status_code}, {response.headers.get('content-type')} body"
    if isinstance(body, dict):
        body = {k: "<token>" if k in ("access", "refresh") else v for k, v in body.items()}
    return f"{response.status_code}, {body}"


def assert_ok(response: httpx.Response) -> None:
    assert response.status_code == 200, described(response)


def pair_from(response: httpx.Response) -> tuple[str, str]:
    """(access, refresh) from a 200 of simplejwt's token views."""
    assert_ok(response)
    body = response.json()
    fields = sorted(body)
    assert fields == ["access", "refresh"]
    return body["access"], body["refresh"]


def assert_refused_by_signout(response: httpx.Response, error: dict[str, Any]) -> None:
    """signout answered: its 401 with ``error``; the app's refusals look different, so the app never saw it."""
    assert response.status_code == 401, described(response)
    assert response.json() == error
    challenge = response.headers.get("www-authenticate", "")
    assert challenge.startswith('Bearer error="invalid_token"')


def login(client: httpx.Client) -> tuple[str, str]:
    return pair_from(client.post("/api/token/", json={"username": USERNAME, "password": PASSWORD}))


def refresh(client: httpx.Client, token: str) -> httpx.Response:
    return client.post("/api/token/refresh/", json={"refresh": token})


def me(client: httpx.Client, access: str) -> httpx.Response:
    return client.get("/api/me/", headers={"Authorization": f"Bearer {access}"})


def claims_of(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, SECRET, algorithms=["HS256"])
    return claims


def into_next_second() -> None:
    """Sleep past the current whole second: a user cutoff is a whole second, and a token whose
    ``iat`` equals it is revoked, so only tokens issued in a later second outlive it."""
    now = time.time()
    time.sleep(math.floor(now) + 1 - now + 0.01)


def test_login_refresh_rotates_and_the_new_access_token_works(client: httpx.Client) -> None:
    no_token = client.get("/api/me/")
    assert no_token.status_code == 401
    assert "detail" in no_token.json()  # DRF's answer: signout passes a tokenless request through

    access, refresh_token = login(client)
    kinds = claims_of(access)["token_type"], claims_of(refresh_token)["token_type"]
    assert kinds == ("access", "refresh")

    new_access, new_refresh = pair_from(refresh(client, refresh_token))
    old_ids = {claims_of(access)["jti"], claims_of(refresh_token)["jti"]}
    new_ids = {claims_of(new_access)["jti"], claims_of(new_refresh)["jti"]}
    assert old_ids.isdisjoint(new_ids)  # ROTATE_REFRESH_TOKENS: a new pair, not the old refresh token back

    answer = me(client, new_access)
    user_id = int(claims_of(new_access)["user_id"])
    assert_ok(answer)
    assert answer.json() == {"user_id": user_id}


def test_logout_with_the_refresh_token_in_the_body_kills_both_tokens_of_that_login(client: httpx.Client) -> None:
    access, refresh_token = login(client)
    other_access, other_refresh = login(client)  # a second login of the same user (another device)

    out = client.post("/api/logout/", headers={"Authorization": f"Bearer {access}"}, json={"refresh": refresh_token})
    assert_ok(out)
    assert out.json() == {"message": "Logged out successfully"}

    # simplejwt alone (no blacklist app) would mint a new access token from it: signout refuses it first.
    assert_refused_by_signout(refresh(client, refresh_token), REVOKED)
    assert_refused_by_signout(me(client, access), REVOKED)

    # A local logout ends that login only: simplejwt tokens have no sid, and no user cutoff was written.
    assert_ok(me(client, other_access))
    assert_ok(refresh(client, other_refresh))


def test_a_rotated_out_refresh_token_presented_again_revokes_the_whole_login(client: httpx.Client) -> None:
    first_access, first_refresh = login(client)
    second_access, second_refresh = pair_from(refresh(client, first_refresh))
    assert_ok(me(client, second_access))

    # Past the grace (0 here) a second use is reuse: a stolen or replayed refresh token.
    assert_refused_by_signout(refresh(client, first_refresh), REUSED)

    # No sid in simplejwt tokens, so the user's cutoff was written: every token issued until now is dead.
    assert_refused_by_signout(refresh(client, second_refresh), REVOKED)
    assert_refused_by_signout(me(client, second_access), REVOKED)
    assert_refused_by_signout(me(client, first_access), REVOKED)

    into_next_second()
    fresh_access, fresh_refresh = login(client)
    assert_ok(me(client, fresh_access))
    assert_ok(refresh(client, fresh_refresh))


def test_a_refresh_token_used_as_a_bearer_token_is_refused(client: httpx.Client) -> None:
    access, refresh_token = login(client)

    assert_refused_by_signout(me(client, refresh_token), NOT_ACCESS)

    # Refused for where it was used, not revoked: both tokens still work where they belong.
    assert_ok(me(client, access))
    assert_ok(refresh(client, refresh_token))
