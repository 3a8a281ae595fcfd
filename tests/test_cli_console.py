"""The ``signout`` console script as an operator meets it (SPEC section 9: no silent no-ops).

Each test runs the installed script against the real redis-server, and proves
a revocation by what both adapters (ASGI and WSGI) then answer. Subprocesses
cost ~0.2 s each: cases share one parametrized body, repeated runs go in
parallel.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import redis
from starlette.testclient import TestClient

import signout
from signout import cli as signout_cli

from .apps import starlette_app, wsgi_app
from .conftest import ISS, SECRET, PEP3333Transport, TokenFactory, claims
from .helpers import REVOKED_LINE, SIGNOUT, cli, in_process

pytestmark = pytest.mark.redis

MONTH = 30 * 86400
TIME = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"
ALICE = rf"\(sub 'alice', iss '{re.escape(ISS)}'\)"


def adapters(url: str) -> dict[str, Callable[[str], int]]:
    """What each adapter answers a token on a guarded route, both on ``url`` with the default prefix."""
    asgi = TestClient(signout.SignOutMiddleware(starlette_app(), key=SECRET, redis_url=url), base_url="https://t")
    wsgi = httpx.Client(
        transport=PEP3333Transport(signout.SignOutWSGIMiddleware(wsgi_app(), key=SECRET, redis_url=url)),  # type: ignore[arg-type]
        base_url="https://t",
    )

    def asker(client: Any) -> Callable[[str], int]:
        return lambda token: int(client.get("/me", headers={"Authorization": f"Bearer {token}"}).status_code)

    return {"asgi": asker(asgi), "wsgi": asker(wsgi)}


def answers(url: str, tokens: list[str]) -> dict[str, list[int]]:
    return {name: [ask(t) for t in tokens] for name, ask in adapters(url).items()}


def mint(**overrides: Any) -> str:
    return jwt.encode(claims(**overrides), SECRET, algorithm="HS256")


def kept_until(line: str) -> float:
    found = re.search(rf"kept until ({TIME})", line)
    assert found is not None, line
    return datetime.fromisoformat(found[1].replace("Z", "+00:00")).timestamp()


# ---- a revocation that cannot reach its tokens is an error -----------------------------------

EXP = str(int(time.time()) + 600)
JTI = ("revoke-token", "--jti", "j-1", "--exp", EXP)


@pytest.mark.parametrize(
    ("argv", "env", "missing"),
    [
        (("revoke-user", "frank"), {}, ["--iss"]),
        (("revoke-user", "frank"), {"SIGNOUT_ISSUER": ""}, ["--iss"]),  # set but empty is not an issuer
        (("revoke-session", "s-1", "--iss", ISS), {}, ["--sub"]),
        (("revoke-session", "s-1", "--sub", "alice"), {}, ["--iss"]),
        (("revoke-session", "s-1"), {}, ["--iss", "--sub"]),
        (("revoke-session", "s-1", "--sub", "alice"), {"SIGNOUT_ISSUER": ISS}, []),  # the control: it works
        ((*JTI, "--iss", ISS), {}, ["--sub"]),
        ((*JTI, "--sub", "alice"), {}, ["--iss"]),
        (JTI, {}, ["--iss", "--sub"]),
        ((*JTI, "--no-sub", "--iss", ISS), {}, ["--sid"]),  # without a sub, tokens live under their sid
    ],
)
def test_a_missing_bucket_claim_exits_2_and_writes_nothing(
    argv: tuple[str, ...], env: dict[str, str], missing: list[str], redis_url: str, redis_client: redis.Redis
) -> None:
    done = cli(*argv, url=redis_url, **env)
    if not missing:
        assert done.returncode == 0, done.stderr
        return
    assert (done.returncode, done.stdout) == (2, ""), done.stderr
    assert len(done.stderr.splitlines()) == 1
    for option in missing:
        assert f"missing {option}: " in done.stderr
        assert f"--no-{option[2:]} if they carry none" in done.stderr
    assert done.stderr.rstrip().endswith("Nothing was revoked.")
    assert redis_client.dbsize() == 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("revoke-user", "frank", "--iss", ISS, "--no-iss"), "--iss and --no-iss contradict each other"),
        (("--iss", ISS, "revoke-user", "frank", "--no-iss"), "--iss and --no-iss contradict each other"),
        ((*JTI, "--sub", "a", "--no-sub", "--iss", ISS), "--sub and --no-sub contradict each other"),
        (("revoke-user", "frank", "--iss", ""), "may not be empty"),
    ],
)
def test_contradictions_exit_2_and_write_nothing(
    argv: tuple[str, ...], message: str, redis_url: str, redis_client: redis.Redis
) -> None:
    done = cli(*argv, url=redis_url)
    assert done.returncode == 2
    assert message in done.stderr
    assert redis_client.dbsize() == 0


def test_the_reported_case_revoke_user_without_iss(redis_url: str, make_token: TokenFactory) -> None:
    frank = make_token(sub="frank", jti="f-1")
    missed = cli("revoke-user", "frank", url=redis_url)
    assert missed.returncode == 2
    assert missed.stderr.startswith("signout: missing --iss: pass the tokens' iss claim (--iss ISS, or set")
    assert answers(redis_url, [frank]) == {"asgi": [200], "wsgi": [200]}

    done = cli("revoke-user", "frank", "--iss", ISS, url=redis_url)
    assert done.returncode == 0, done.stderr
    assert answers(redis_url, [frank]) == {"asgi": [401], "wsgi": [401]}


# ---- every revoke prints what it wrote, and the middleware enforces it ------------------------

NO_SUB = {"sub": None}
SESSION_1 = rf"session 's-1' \(iss '{re.escape(ISS)}'\): every token of that login, with or without a sub"
LONE = {"iss": None, "sub": None}


@pytest.mark.parametrize(
    ("argv", "env", "revoked", "spared", "printed"),
    [
        (
            ("revoke-user", "alice", "--iss", ISS),
            {},
            [{"sid": "s-1", "jti": "a-1"}, {"sid": "s-2", "jti": "a-2"}],
            [{"sub": "bob", "sid": "s-3", "jti": "b-1"}, {"iss": None, "jti": "a-3"}],
            [rf"user cutoff {ALICE}: every token issued at or before {TIME}"],
        ),
        (
            ("revoke-user", "alice"),
            {"SIGNOUT_ISSUER": ISS},
            [{"sid": "s-1", "jti": "a-1"}],
            [{"sub": "bob", "sid": "s-3", "jti": "b-1"}],
            [rf"user cutoff {ALICE}: every token issued at or before {TIME}"],
        ),
        (
            ("revoke-user", "alice", "--no-iss"),  # --no-iss beats SIGNOUT_ISSUER
            {"SIGNOUT_ISSUER": ISS},
            [{"iss": None, "jti": "a-1"}],
            [{"jti": "a-2"}, {"iss": None, "sub": "bob", "jti": "b-1"}],
            [rf"user cutoff \(sub 'alice', no iss\): every token issued at or before {TIME}"],
        ),
        (
            ("revoke-session", "s-1", "--sub", "alice", "--iss", ISS),
            {},
            [{"sid": "s-1", "jti": "a-1"}, {"sid": "s-1", "jti": "a-2"}, {**NO_SUB, "sid": "s-1", "jti": "x-1"}],
            [{"sid": "s-2", "jti": "a-3"}],
            [SESSION_1],
        ),
        (
            ("revoke-session", "s-9", "--no-sub"),
            {"SIGNOUT_ISSUER": ISS},
            [{**NO_SUB, "sid": "s-9", "jti": "x-1"}, {"sid": "s-9", "jti": "a-1"}],
            [{**NO_SUB, "sid": "s-8", "jti": "x-2"}],
            [rf"session 's-9' \(iss '{re.escape(ISS)}'\): every token of that login, with or without a sub"],
        ),
        (
            ("revoke-token", "--jti", "a-1", "--exp", EXP, "--sub", "alice", "--iss", ISS),
            {},
            [{"jti": "a-1"}],
            [{"jti": "a-2"}],
            [rf"token jti 'a-1' {ALICE}"],
        ),
        (
            ("revoke-token", "--jti", "t-1", "--exp", EXP, "--no-sub", "--no-iss", "--sid", "s-7"),
            {},
            [{**LONE, "sid": "s-7", "jti": "t-1"}],
            [{**LONE, "sid": "s-7", "jti": "t-2"}],
            [r"token jti 't-1' \(no sub, no iss\)"],
        ),
        (
            ("revoke-token", "--jti", "t-1", "--exp", EXP, "--no-sub", "--no-sid", "--iss", ISS),
            {},
            [{**NO_SUB, "sid": None, "jti": "t-1"}],
            [{**NO_SUB, "sid": None, "jti": "t-2"}],
            [rf"token jti 't-1' \(no sub, iss '{re.escape(ISS)}'\)"],
        ),
        (
            ("revoke-token", "--session", "-"),  # the token itself comes on stdin: the first revoked one
            {"SIGNOUT_KEY": SECRET},
            [{"sid": "s-1", "jti": "a-1"}, {"sid": "s-1", "jti": "a-2"}],
            [{"sid": "s-2", "jti": "a-3"}],
            [rf"token jti 'a-1' {ALICE}", SESSION_1],
        ),
    ],
    ids=[
        "user-iss",
        "user-SIGNOUT_ISSUER",
        "user-no-iss-beats-SIGNOUT_ISSUER",
        "session-iss",
        "session-SIGNOUT_ISSUER",
        "jti-sub-iss",
        "jti-no-sub-no-iss-sid",
        "jti-no-sub-no-sid",
        "token-on-stdin-session",
    ],
)
def test_each_revoke_prints_what_it_wrote_and_both_adapters_enforce_it(
    argv: tuple[str, ...],
    env: dict[str, str],
    revoked: list[dict[str, Any]],
    spared: list[dict[str, Any]],
    printed: list[str],
    redis_url: str,
    redis_client: redis.Redis,
) -> None:
    kill, keep = [mint(**c) for c in revoked], [mint(**c) for c in spared]
    everyone = [200] * (len(kill) + len(keep))
    assert answers(redis_url, kill + keep) == {"asgi": everyone, "wsgi": everyone}

    done = cli(*argv, url=redis_url, stdin=kill[0], **env)
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    assert re.fullmatch("".join(REVOKED_LINE.format(what=what) + "\n" for what in printed), done.stdout), done.stdout
    for line in done.stdout.splitlines():
        key = line.rsplit(" in key ", 1)[1]
        assert redis_client.type(key) == b"hash" and redis_client.ttl(key) > 0  # the key it names holds it
    assert all(token not in done.stdout + done.stderr for token in kill)

    expected = [401] * len(kill) + [200] * len(keep)
    assert answers(redis_url, kill + keep) == {"asgi": expected, "wsgi": expected}


def test_what_a_revoke_prints_says_until_when_it_lives(redis_url: str) -> None:
    before = time.time()
    user = cli("revoke-user", "alice", "--iss", ISS, "--max-token-lifetime", "86400", url=redis_url).stdout
    exp = int(before) + 900
    token = cli("revoke-token", "--jti", "a-1", "--exp", str(exp), "--sub", "alice", "--iss", ISS, url=redis_url).stdout
    # A user cutoff lives as long as any token issued before it can (max_token_lifetime + 2 x leeway);
    # a token's entry until its exp + leeway.
    assert math.floor(before) + 86400 + 60 <= kept_until(user) <= time.time() + 86400 + 61
    assert kept_until(token) == exp + 30


# ---- options go before or after the command; defaults apply when given nowhere ----------------


@pytest.mark.parametrize("where", ["before", "after", "split"])
def test_options_go_before_or_after_the_command(where: str, redis_url: str) -> None:
    before = time.time()
    issued = claims(iat=int(before))  # at or before the cutoff second the command takes
    store = ["--redis-url", redis_url, "--prefix", "app2", "--max-token-lifetime", "86400", "--leeway", "5"]
    revoke = ["revoke-user", "alice"]
    argv = {
        "before": [*store, "--iss", ISS, *revoke],
        "after": [*revoke, "--iss", ISS, *store],
        "split": [*store[:4], "--iss", ISS, *revoke, *store[4:]],
    }[where]
    done = cli(*argv, url=None)  # no REDIS_URL: --redis-url must have been read
    assert done.returncode == 0, done.stderr
    assert " in key app2:{" in done.stdout
    # --max-token-lifetime + 2 x --leeway: neither default (30 days, 30 s) was used.
    assert math.floor(before) + 86400 + 10 <= kept_until(done.stdout) <= time.time() + 86400 + 11

    stats = cli(*(["stats", "--json", *store[:4]] if where == "after" else [*store[:4], "stats", "--json"]), url=None)
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout)["users"] == 1
    assert signout.Revoker(redis_url=redis_url, key_prefix="app2").is_revoked_sync(issued)
    assert not signout.Revoker(redis_url=redis_url).is_revoked_sync(issued)


def test_defaults_apply_when_options_are_given_nowhere(redis_url: str) -> None:
    before = time.time()
    done = cli("revoke-user", "alice", "--iss", ISS, url=redis_url)
    assert done.returncode == 0, done.stderr
    assert " in key signout:{" in done.stdout
    assert math.floor(before) + MONTH + 60 <= kept_until(done.stdout) <= time.time() + MONTH + 61
    assert json.loads(cli("stats", "--json", url=redis_url).stdout)["prefix"] == "signout"


# ---- stats on an empty prefix says so -----------------------------------------------------------


def test_stats_says_when_its_prefix_holds_no_keys(redis_url: str) -> None:
    empty = cli("stats", "--prefix", "typo", url=redis_url)
    assert empty.returncode == 0
    assert "  bucket keys                  0\n" in empty.stdout
    assert empty.stderr == (
        "signout: note: prefix 'typo' holds no signout keys: nothing is revoked there, "
        "or --prefix or --redis-url (or its database) is not the middleware's\n"
    )

    signout.Revoker(redis_url=redis_url).revoke_user_sync(sub="alice", iss=ISS)
    signout.Revoker(redis_url=redis_url, key_prefix="app2").revoke_user_sync(sub="alice", iss=ISS)
    hinted = cli("--prefix", "typo", "stats", "--json", url=redis_url)
    assert hinted.returncode == 0
    assert json.loads(hinted.stdout)["keys"] == 0  # stdout stays machine-readable
    assert hinted.stderr.startswith("signout: note: prefix 'typo' holds no signout keys; keys shaped like signout's")
    assert "did you mean --prefix" in hinted.stderr
    assert "--prefix signout" in hinted.stderr and "--prefix app2" in hinted.stderr
    assert len(hinted.stderr.splitlines()) == 1

    found = cli("stats", url=redis_url)
    assert (found.returncode, found.stderr) == (0, "")
    assert "  users logged out everywhere  1\n" in found.stdout


# ---- help: an example per command, every exit code --------------------------------------------


@pytest.mark.parametrize("command", ["revoke-user", "revoke-session", "revoke-token", "check", "stats"])
def test_each_command_help_shows_an_example_and_the_exit_codes(command: str) -> None:
    done = cli(command, "--help", url=None)
    assert done.returncode == 0
    examples = re.search(r"\nexamples?:\n((?:  signout .*\n)+)", done.stdout)
    assert examples is not None, done.stdout
    assert f" {command} " in examples[1]
    # The example comes before the option list: the top of the page is what gets read.
    assert done.stdout.index("example") < done.stdout.index("options:")
    for code in ("0", "1", "2", "3", "4", "70", "130"):
        assert re.search(rf"\n  {code} +\S", done.stdout), code


def test_version_is_the_packages() -> None:
    done = cli("--version", url=None)
    assert (done.returncode, done.stdout) == (0, f"signout {signout.__version__}\n")


# ---- exit 1 is check's "revoked" and nothing else ------------------------------------------------


def check_with_stdout_gone(mode: str, token_file: Path, url: str) -> tuple[int, str]:
    """``signout check``'s exit code and stderr when its stdout reader is gone, in one of three ways."""
    env = {"PATH": os.environ.get("PATH", ""), "REDIS_URL": url, "SIGNOUT_KEY": SECRET, "TOKEN_FILE": str(token_file)}
    if mode != "buffered":
        env["PYTHONUNBUFFERED"] = "1"  # the first print raises, not the flush at exit
    if mode == "head -1":
        return check_through_head(env)
    read, write = os.pipe()
    os.close(read)  # no reader at all: every write to stdout fails with EPIPE
    try:
        with token_file.open() as stdin:
            done = subprocess.run(
                [*SIGNOUT, "check"], stdin=stdin, stdout=write, stderr=subprocess.PIPE, env=env, timeout=60, check=False
            )
    finally:
        os.close(write)
    return done.returncode, done.stderr.decode()


def check_through_head(env: dict[str, str]) -> tuple[int, str]:
    """As reported: ``signout check < token | head -1``; bash hands back signout's own status."""
    script = '"$@" check < "$TOKEN_FILE" | head -1 > /dev/null; exit "${PIPESTATUS[0]}"'
    done = subprocess.run(
        ["bash", "-c", script, "bash", *SIGNOUT], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    return done.returncode, done.stderr


@pytest.mark.parametrize("revoked", [False, True], ids=["not-revoked", "revoked"])
def test_a_closed_stdout_never_turns_checks_answer_into_another(
    revoked: bool, redis_url: str, make_token: TokenFactory, tmp_path: Path
) -> None:
    token = make_token(jti="j-pipe")
    if revoked:
        signout.Revoker(redis_url=redis_url).revoke_sync(claims(jti="j-pipe"))
    token_file = tmp_path / "token"
    token_file.write_text(token)
    modes = ["unbuffered", "buffered", "head -1"] * 7  # 21 runs, each way 7 times
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda mode: check_with_stdout_gone(mode, token_file, redis_url), modes))
    assert [code for code, _ in results] == [1 if revoked else 0] * len(modes), results
    assert all(err == "" for _, err in results), results  # no traceback, no note: a reader leaving is normal


def test_a_stdout_that_fails_otherwise_keeps_the_answer_and_says_so(redis_url: str, make_token: TokenFactory) -> None:
    full = Path("/dev/full")
    if not full.exists():
        pytest.skip("no /dev/full here")
    env = {"PATH": os.environ.get("PATH", ""), "REDIS_URL": redis_url, "SIGNOUT_KEY": SECRET}
    with full.open("w") as stdout:
        done = subprocess.run(
            [*SIGNOUT, "check"],
            input=make_token(),
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            check=False,
        )
    assert done.returncode == 0
    assert done.stderr == "signout: could not write the answer: No space left on device\n"


def test_an_unexpected_error_exits_70_with_one_line_and_no_token(
    redis_url: str, make_token: TokenFactory, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("SIGNOUT_KEY", SECRET)
    token = make_token()

    def boom(*args: object, **kwargs: object) -> bool:
        raise KeyError(f"a message quoting {token}")

    monkeypatch.setattr(signout.Revoker, "is_revoked_sync", boom)
    code, out, err = in_process(monkeypatch, capsys, "check", stdin=token)
    assert (code, out) == (70, "")
    assert re.fullmatch(
        r"signout: internal error: KeyError at test_cli_console\.py:\d+; this is a bug in signout, please report it\n",
        err,
    )
    assert token not in err

    monkeypatch.setattr(signout_cli, "_parser", boom)  # before any command runs
    code, out, err = in_process(monkeypatch, capsys, "stats")
    assert (code, out) == (70, "")
    assert err.startswith("signout: internal error: KeyError at ")
