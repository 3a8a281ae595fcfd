"""The ``signout`` command line, against the real redis-server, proven through the middleware.

Each subprocess costs ~0.2 s, so the effects an operator relies on run the
installed ``signout`` console script; error paths and variants call ``main()``
in process. ``test_cli_console.py`` holds the operator-facing contract (SPEC
section 9): missing bucket claims, what a revoke prints, options on either side
of the command, a closed stdout. ``signout stats`` is in ``test_stats.py``.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import jwt
import pytest
import redis
from starlette.testclient import TestClient

import signout

from .apps import starlette_app
from .conftest import ISS, SECRET, TokenFactory, claims, free_port
from .helpers import REVOKED_LINE, cli, in_process

pytestmark = pytest.mark.redis


def signout_token() -> str:
    return jwt.encode(claims(), SECRET, algorithm="HS256")


def guarded(url: str) -> TestClient:
    return TestClient(signout.SignOutMiddleware(starlette_app(), key=SECRET, redis_url=url), base_url="https://t")


def status(client: TestClient, token: str) -> int:
    code: int = client.get("/me", headers={"Authorization": f"Bearer {token}"}).status_code
    return code


# ---- effects, through the middleware --------------------------------------------------------


def test_revoke_user_logs_the_user_out_everywhere(redis_url: str, make_token: TokenFactory) -> None:
    app = guarded(redis_url)
    phone, laptop = make_token(sid="s-1", jti="j-1"), make_token(sid="s-2", jti="j-2")
    bob = make_token(sub="bob", sid="s-3", jti="j-3")
    assert [status(app, t) for t in (phone, laptop, bob)] == [200, 200, 200]

    done = cli("revoke-user", "alice", "--iss", ISS, url=redis_url)
    assert done.returncode == 0, done.stderr
    what = rf"user cutoff \(sub 'alice', iss '{re.escape(ISS)}'\): every token issued at or before 20\S+Z"
    assert re.fullmatch(REVOKED_LINE.format(what=what) + "\n", done.stdout), done.stdout
    assert done.stderr == ""
    assert [status(app, t) for t in (phone, laptop, bob)] == [401, 401, 200]
    # A login after the cutoff works again.
    assert status(app, make_token(sid="s-4", jti="j-4", iat=int(time.time()) + 2)) == 200


def test_revoke_session_needs_sub_and_ends_tokens_with_or_without_one(
    redis_url: str, redis_client: redis.Redis, make_token: TokenFactory
) -> None:
    app = guarded(redis_url)
    access, refresh = make_token(sid="s-1", jti="j-1"), make_token(sid="s-1", jti="j-2")
    subless = make_token(sub=None, sid="s-1", jti="j-4")
    other = make_token(sid="s-2", jti="j-3")

    # SPEC section 9: --sub or --no-sub, said on the command line; nothing written without it.
    missed = cli("revoke-session", "s-1", "--iss", ISS, url=redis_url)
    assert (missed.returncode, missed.stdout) == (2, "")
    assert "missing --sub" in missed.stderr and "--no-sub" in missed.stderr
    assert redis_client.dbsize() == 0

    # A session is (iss, sid): its revocation lives in the session's own bucket, which every token
    # carrying that sid reads, with or without a sub.
    done = cli("revoke-session", "s-1", "--sub", "alice", "--iss", ISS, url=redis_url)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    what = rf"session 's-1' \(iss '{re.escape(ISS)}'\): every token of that login, with or without a sub"
    assert re.fullmatch(REVOKED_LINE.format(what=what) + "\n", done.stdout), done.stdout
    assert [status(app, t) for t in (access, refresh, subless, other)] == [401, 401, 401, 200]
    assert redis_client.dbsize() == 1


def test_revoke_token_from_stdin(redis_url: str, make_token: TokenFactory) -> None:
    app = guarded(redis_url)
    token, sibling = make_token(sid="s-1", jti="j-1"), make_token(sid="s-1", jti="j-2")
    done = cli("revoke-token", "-", url=redis_url, stdin=token + "\n", SIGNOUT_KEY=SECRET)
    assert done.returncode == 0, done.stderr
    what = rf"token jti 'j-1' \(sub 'alice', iss '{re.escape(ISS)}'\)"
    assert re.fullmatch(REVOKED_LINE.format(what=what) + "\n", done.stdout), done.stdout
    assert token not in done.stdout + done.stderr
    assert [status(app, token), status(app, sibling)] == [401, 200]


def test_revoke_token_by_ids(redis_url: str, make_token: TokenFactory) -> None:
    app = guarded(redis_url)
    exp = int(time.time()) + 600
    token, sibling = make_token(jti="j-9", exp=exp), make_token(jti="j-10", exp=exp)
    args = ("revoke-token", "--jti", "j-9", "--exp", str(exp), "--sub", "alice", "--iss", ISS)
    done = cli(*args, url=redis_url)
    assert done.returncode == 0, done.stderr
    what = rf"token jti 'j-9' \(sub 'alice', iss '{re.escape(ISS)}'\)"
    assert re.fullmatch(REVOKED_LINE.format(what=what) + "\n", done.stdout), done.stdout
    assert [status(app, token), status(app, sibling)] == [401, 200]


def test_revoke_token_with_session_in_process(
    redis_url: str, make_token: TokenFactory, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("SIGNOUT_KEY", SECRET)
    app = guarded(redis_url)
    token, refresh = make_token(sid="s-1", jti="j-1"), make_token(sid="s-1", jti="j-2")
    code, out, err = in_process(monkeypatch, capsys, "revoke-token", "--session", stdin=f"Bearer {token}")
    assert (code, err) == (0, "")
    bucket = rf"\(sub 'alice', iss '{re.escape(ISS)}'\)"
    session = rf"session 's-1' \(iss '{re.escape(ISS)}'\): every token of that login, with or without a sub"
    lines = [rf"token jti 'j-1' {bucket}", session]
    assert re.fullmatch("".join(REVOKED_LINE.format(what=what) + "\n" for what in lines), out), out
    assert [status(app, token), status(app, refresh)] == [401, 401]


def test_check(redis_url: str, make_token: TokenFactory) -> None:
    exp = int(time.time()) + 600
    revoked, live = make_token(jti="j-1", exp=exp), make_token(jti="j-2", exp=exp)
    signout.Revoker(redis_url=redis_url).revoke_sync(claims(jti="j-1", exp=exp))

    answers = [cli("check", url=redis_url, stdin=t, SIGNOUT_KEY=SECRET) for t in (revoked, live, "not.a.token")]
    assert [a.returncode for a in answers] == [1, 0, 3]
    assert answers[0].stdout.splitlines()[:5] == [
        "revoked",
        f"  iss  '{ISS}'",
        "  sub  'alice'",
        "  sid  's-1'",
        "  jti  'j-1'",
    ]
    assert answers[0].stdout.splitlines()[-1].endswith(f"({exp})")
    assert answers[1].stdout.startswith("not revoked\n")
    assert answers[2].stdout == "invalid: Token is malformed\n"
    for answer, token in zip(answers, (revoked, live), strict=False):
        assert token not in answer.stdout + answer.stderr
    assert guarded(redis_url).get("/me", headers={"Authorization": f"Bearer {revoked}"}).status_code == 401


def test_check_refuses_a_forged_token_without_echoing_it(
    redis_url: str, make_token: TokenFactory, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("SIGNOUT_KEY", SECRET)
    forged = make_token(key="another-secret-of-at-least-32-bytes!!")
    code, out, err = in_process(monkeypatch, capsys, "check", forged)
    assert (code, out) == (3, "invalid: Token signature is invalid\n")
    assert forged not in out + err
    expired = make_token(iat=int(time.time()) - 900, exp=int(time.time()) - 600)
    code, out, _ = in_process(monkeypatch, capsys, "revoke-token", stdin=expired)
    assert code == 3


# ---- failures: exit codes, one line, nothing secret ------------------------------------------


def test_help_documents_the_exit_codes() -> None:
    done = cli("--help", url=None)
    assert done.returncode == 0
    for line in ("exit codes", "  1    check: the token is revoked", "  4    the store is unreachable", "  70   "):
        assert line in done.stdout
    assert "REDIS_URL" in done.stdout


def test_no_redis_url_is_a_usage_error() -> None:
    done = cli("revoke-user", "alice", "--iss", ISS, url=None)
    assert done.returncode == 2
    assert done.stdout == ""
    assert "set REDIS_URL" in done.stderr
    assert len(done.stderr.splitlines()) == 1


def test_unreachable_store(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    closed = f"redis://127.0.0.1:{free_port()}/0"
    done = cli("revoke-user", "alice", "--iss", ISS, url=closed)
    assert done.returncode == 4
    assert done.stderr.startswith("signout: redis write failed: ConnectionError: Error 111 connecting to 127.0.0.1")
    assert done.stderr.rstrip().endswith(f"[store {closed}]")  # refused: never sent, so no "may"
    assert len(done.stderr.splitlines()) == 1
    assert "Traceback" not in done.stderr

    monkeypatch.setenv("REDIS_URL", closed)
    monkeypatch.setenv("SIGNOUT_KEY", SECRET)
    token = signout_token()
    for argv in (["stats"], ["check"], ["revoke-session", "s-1", "--sub", "alice", "--no-iss"]):
        code, out, err = in_process(monkeypatch, capsys, *argv, stdin=token)
        assert code == 4, argv
        assert len(err.splitlines()) == 1
        assert token not in out + err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["revoke-token", "--jti", "j-1"], "--jti needs --exp"),
        (["revoke-token", "--jti", "j-1", "--exp", "2000000000", "tok"], "either a token or --jti"),
        (["revoke-token", "--sub", "alice"], "go with --jti"),
        (["revoke-token", "--jti", "j-1", "--exp", "1795271731000", "--no-sub", "--no-iss", "--no-sid"], "seconds?"),
        (["revoke-token", "--jti", "j-1", "--exp", "2000000000", "--no-iss", "--sub", "a", "--session"], "needs --sid"),
        (["revoke-token", "--no-iss"], "go with --jti"),
        (["revoke-user", "alice", "--iss", ISS, "--at", "2999-01-01T00:00:00Z"], "--at is in the future"),
        (["revoke-user", "alice", "--at", "2020-01-01T00:00:00"], "has no time zone"),
        (["revoke-user", "alice", "--at", "yesterday"], "neither epoch seconds nor an ISO 8601 time"),
        (["revoke-user", "alice", "--no-iss", "--at", "nan"], "'nan' is not a time"),
        (["revoke-token", "--jti", "j-1", "--exp", "inf", "--no-sub", "--no-iss", "--no-sid"], "'inf' is not a time"),
        (["revoke-user", "alice", "--no-iss", "--prefix", "a{b}"], "--prefix: must be"),
        (["revoke-user", "alice", "--no-iss", "--max-token-lifetime", "5"], "--max-token-lifetime: must be at least"),
        (["revoke-user", "alice", "--no-iss", "--redis-url", "http://localhost"], "--redis-url"),
        (["revoke-user", "alice", "--no-iss", "--redis-url", "redis://h/0?socket_timeout=x"], "not a valid Redis URL"),
        (["revoke-user", "alice", "--iss", ""], "may not be empty"),
        (["revoke-user", "alice", "--iss", ISS, "--no-iss"], "--iss and --no-iss contradict each other"),
        (["--iss", ISS, "revoke-user", "alice", "--no-iss"], "--iss and --no-iss contradict each other"),
        (["revoke-session", "s-1", "--sub", "a", "--no-sub", "--no-iss"], "--sub and --no-sub contradict"),
        (["--sub", "a", "revoke-user", "alice", "--no-iss"], "--sub does nothing for revoke-user"),
        (["--key-env", "K", "stats"], "--key-env does nothing for stats"),
        (["--no-iss", "check"], "--no-iss does nothing for check"),
        (["revoke-user", "alice", "--no-iss", "--json"], "unrecognized arguments: --json"),
        (["revoke-session", ""], "may not be empty"),
        (["check", "--algorithm", "none"], "--algorithm:"),
        (["check", "--key-file", "/nonexistent/key"], "cannot read --key-file"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_usage_errors(
    argv: list[str],
    message: str,
    redis_url: str,
    redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("SIGNOUT_KEY", SECRET)
    code, out, err = in_process(monkeypatch, capsys, *argv, stdin=signout_token())
    assert code == 2
    assert message in err
    assert SECRET not in out + err
    assert redis_client.dbsize() == 0


def test_key_problems_never_print_the_key(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.delenv("SIGNOUT_KEY", raising=False)
    token = signout_token()
    code, out, err = in_process(monkeypatch, capsys, "check", stdin=token)
    assert (code, out) == (2, "")
    assert "set SIGNOUT_KEY" in err

    monkeypatch.setenv("APP_KEY", "short-secret-value")
    code, out, err = in_process(monkeypatch, capsys, "check", "--key-env", "APP_KEY", stdin=token)
    assert code == 2
    assert "needs at least 32 bytes" in err
    assert "short-secret-value" not in out + err

    key_file = tmp_path / "key"
    key_file.write_text(SECRET + "\n")  # as `echo $SECRET > key` writes it
    code, out, _ = in_process(monkeypatch, capsys, "check", "--key-file", str(key_file), stdin=token)
    assert (code, out.splitlines()[0]) == (0, "not revoked")


def test_revoke_token_edge_cases(
    redis_url: str,
    redis_client: redis.Redis,
    make_token: TokenFactory,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("SIGNOUT_KEY", SECRET)
    anonymous = make_token(sid=None, jti=None)
    code, _, err = in_process(monkeypatch, capsys, "revoke-token", stdin=anonymous)
    assert code == 2
    assert "neither jti nor sid" in err
    assert "revoke-user 'alice'" in err
    code, _, err = in_process(monkeypatch, capsys, "revoke-token", "--session", stdin=make_token(sid=None))
    assert code == 2
    assert "--session: this token has no sid" in err
    assert redis_client.dbsize() == 0

    argv = ("revoke-token", "--jti", "j-1", "--exp", "1000", "--iss", ISS, "--sub", "alice")
    code, out, _ = in_process(monkeypatch, capsys, *argv)
    assert code == 0
    assert out.startswith("nothing to revoke: the token expired at 1970-01-01T00:16:40Z")
    assert redis_client.dbsize() == 0

    code, _, _ = in_process(monkeypatch, capsys, "revoke-token", stdin="")
    assert code == 2


def test_user_claim_makes_the_cli_reach_what_the_middleware_reads(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import jwt

    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("SIGNOUT_KEY", SECRET)
    now = int(time.time()) - 2
    simplejwt = {"token_type": "access", "user_id": 42, "iat": now, "exp": now + 600}
    one, two = (jwt.encode({**simplejwt, "jti": jti}, SECRET, algorithm="HS256") for jti in ("a-1", "a-2"))
    app = TestClient(
        signout.SignOutMiddleware(starlette_app(), key=SECRET, redis_url=redis_url, user_claim="user_id"),
        base_url="https://t",
    )
    code, out, _ = in_process(monkeypatch, capsys, "check", "--user-claim", "user_id", stdin=one)
    assert code == 0 and "  sub (user_id)  '42'" in out.splitlines() and "  kind  access" in out.splitlines()
    code, out, _ = in_process(monkeypatch, capsys, "revoke-token", "--user-claim", "user_id", stdin=one)
    assert code == 0 and "(sub '42', no iss)" in out
    assert [status(app, one), status(app, two)] == [401, 200]
    code, _, _ = in_process(monkeypatch, capsys, "revoke-user", "42", "--no-iss")  # the tokens carry no iss
    assert code == 0 and [status(app, one), status(app, two)] == [401, 401]
