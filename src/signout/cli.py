"""``signout``: revoke a user, a session or a token from a shell; check a token; count the store.

For the on-call engineer: every command prints one line saying what it did,
exits with a documented code, and never prints a token or a secret (errors
included). It writes through ``Revoker``, so the middleware judges a CLI
revocation exactly as one made by a logout route.
"""

from __future__ import annotations

import argparse
import getpass
import json
import math
import os
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, StoreError, TokenError

if TYPE_CHECKING:
    from .revoker import Revoker
    from .stores.redis import RedisStore

OK, REVOKED, USAGE, INVALID, STORE = 0, 1, 2, 3, 4
STORE_TIMEOUT = 3.0  # seconds; a shell can wait longer than a request

EPILOG = """\
exit codes:
  0  done; check: the token is not revoked
  1  check: the token is revoked
  2  usage or configuration error (bad option, REDIS_URL not set, no verification key)
  3  the token is invalid (bad signature, expired, malformed, wrong iss or aud)
  4  the store is unreachable or failed

--redis-url, --prefix, --max-token-lifetime, --leeway and --user-claim must match the
middleware's redis_url, key_prefix, max_token_lifetime, leeway and user_claim: otherwise
a revocation lands where the middleware never looks, or expires before the tokens it
should stop.
Tokens and secrets are never printed. Pass a token on stdin: argv is visible in ps.
"""

# ConfigError names the Revoker kwarg; the engineer typed an option.
_OPTION = {"key_prefix": "--prefix", "algorithms": "--algorithm", "key": "the key (--key-env/--key-file)"}


class Usage(Exception):
    """Exit 2 with this message."""


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # --help (0), or a usage error argparse has already explained (2)
        return exc.code if isinstance(exc.code, int) else USAGE
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        return run(args)
    except Usage as exc:
        return _fail(USAGE, str(exc))
    except ConfigError as exc:
        return _fail(USAGE, f"{_OPTION.get(exc.kwarg, '--' + exc.kwarg.replace('_', '-'))}: {exc.reason}")
    except TokenError as exc:
        return _fail(INVALID, f"invalid token: {exc.description}")
    except StoreError as exc:
        cause = f" ({exc.__cause__})" if exc.__cause__ is not None and str(exc.__cause__) else ""
        return _fail(STORE, f"{exc}{cause}")
    except ImportError as exc:
        return _fail(USAGE, f"{exc}; install redis-py: pip install 'signout[redis]'")
    except ValueError as exc:
        return _fail(USAGE, str(exc))
    except KeyboardInterrupt:
        return 130


def _fail(code: int, message: str) -> int:
    print("signout: " + " ".join(message.split()), file=sys.stderr)
    return code


# ---- commands ---------------------------------------------------------------


def _revoke_user(args: argparse.Namespace) -> int:
    """Log a user out everywhere. Every token of SUB issued at or before now (or --at) is refused, in every
    app on this store; tokens issued later (a fresh login) still work."""
    revoker, _ = _revoker(args)
    now = time.time()
    at = now if args.at is None else args.at
    if at > now:
        raise Usage("--at is in the future; a revocation covers tokens already issued")
    revoker.revoke_user_sync(sub=args.sub, iss=args.iss, at=at)
    _note(args.iss, args.sub)
    print(f"revoked: every token {_whose(args.sub, args.iss)} issued at or before {_time(at)}")
    return OK


def _revoke_session(args: argparse.Namespace) -> int:
    """Revoke every token of one login. SID is the sid claim, as audit records show it. Give --sub when
    the tokens carry a sub: they are stored in the user's bucket, and without --sub only tokens with no
    sub are reached."""
    revoker, _ = _revoker(args)
    revoker.revoke_session_sync(sid=args.sid, iss=args.iss, sub=args.sub)
    _note(args.iss, args.sub)
    print(f"revoked: every token of session {args.sid!r} {_whose(args.sub, args.iss)}")
    return OK


def _revoke_token(args: argparse.Namespace) -> int:
    """Revoke one token. Give it on stdin (signout revoke-token < file), or give its ids instead:
    --jti JTI --exp EPOCH [--sub SUB] [--sid SID] [--iss ISS], exactly as in the token."""
    if args.jti is None:
        if args.exp is not None or args.sub or args.sid or args.iss:
            raise Usage("--exp, --sub, --sid and --iss go with --jti; a token string carries its own")
        revoker, _ = _revoker(args, key=_key(args))
        raw = _read_token(args.token)
        token = revoker.token(raw)
        if token.jti is None and token.sid is None:
            hint = f"; revoke-user {token.sub!r} stops it" if token.sub else ""
            raise Usage(f"this token has neither jti nor sid, so it cannot be revoked alone{hint}")
        revoker.revoke_sync(raw, session=args.session)
    else:
        if args.token is not None:
            raise Usage("give either a token or --jti, not both")
        if args.exp is None:
            raise Usage("--jti needs --exp (the token's exp claim): the revocation must outlive the token")
        revoker, _ = _revoker(args)
        claims = {"jti": args.jti, "exp": args.exp, "sub": args.sub, "sid": args.sid, "iss": args.iss or None}
        token = revoker.token({k: v for k, v in claims.items() if v is not None})
        if token.exp > time.time() + revoker.policy.max_token_lifetime + revoker.policy.leeway:
            raise Usage("--exp is further away than --max-token-lifetime: milliseconds instead of seconds?")
        if math.ceil(token.exp) + revoker.policy.leeway <= time.time():
            print(f"nothing to revoke: the token expired at {_time(token.exp)} and is already refused")
            return OK
        revoker.revoke_sync(token.claims, session=args.session)
        _note(args.iss, args.sub)
    what = [f"token jti {token.jti!r}"] if token.jti is not None else []
    if token.sid is not None and (args.session or token.jti is None):
        what.append(f"every token of session {token.sid!r}")
    print(f"revoked: {' and '.join(what)} {_whose(token.sub, token.iss)}")
    return OK


def _check(args: argparse.Namespace) -> int:
    """Verify a token and say whether it is revoked. Prints revoked, not revoked or invalid: <reason>, then
    its iss, sub, sid, jti, iat and exp; never the token."""
    revoker, _ = _revoker(args, key=_key(args))
    raw = _read_token(args.token)
    try:
        token = revoker.token(raw)
    except TokenError as exc:
        print(f"invalid: {exc.description}")
        return INVALID
    revoked = revoker.is_revoked_sync(raw)
    print("revoked" if revoked else "not revoked")
    if token.sub is None and token.sid is None and token.jti is None:
        print("  (no sub, sid or jti: nothing can revoke this token before it expires)")
    for name in ("iss", "sub", "sid", "jti"):
        value = getattr(token, name)
        label = f"{name} ({args.user_claim})" if name == "sub" and args.user_claim != "sub" else name
        print(f"  {label}  {value!r}" if value else f"  {label}  -")
    print(f"  kind  {token.kind}")
    for name, when in (("iat", token.iat), ("exp", token.exp)):
        print(f"  {name}  {_time(when)} ({token.claims.get(name)})" if when is not None else f"  {name}  -")
    return REVOKED if revoked else OK


def _stats(args: argparse.Namespace) -> int:
    """Count live revocations by kind, bucket keys and their memory. Memory is MEMORY USAGE, estimated
    from a sample of 10000 keys on larger stores."""
    import redis

    from .stats import collect

    _, store = _revoker(args)  # validates --prefix as the middleware does
    client = store.sync_client()
    if not isinstance(client, redis.Redis):
        raise Usage("stats needs the URL of a single Redis server")
    now = time.time()
    stats = collect(client, args.prefix, now)
    if args.json:
        print(json.dumps({"prefix": args.prefix, "now": int(now), **asdict(stats)}))
        return OK
    memory = _size(stats.memory_bytes)
    if stats.memory_estimated:
        memory += f" (estimate: MEMORY USAGE of {stats.memory_sampled} of {stats.keys} keys, scaled)"
    print(f"live revocations under prefix {args.prefix!r} at {_time(now)}:")
    print(f"  users logged out everywhere  {stats.users}\n  revoked sessions             {stats.sessions}")
    print(f"  revoked tokens               {stats.tokens}\n  bucket keys                  {stats.keys}")
    print(f"  expired, not yet pruned      {stats.expired}\n  memory                       {memory}")
    return OK


# ---- helpers ----------------------------------------------------------------


def _revoker(args: argparse.Namespace, *, key: object = None) -> tuple[Revoker, RedisStore]:
    url = args.redis_url or os.environ.get("REDIS_URL")
    if not url:
        raise Usage("no Redis given: set REDIS_URL (e.g. redis://localhost:6379/0) or pass --redis-url")
    from .revoker import Revoker
    from .stores.redis import RedisStore

    store = RedisStore(url, timeout=STORE_TIMEOUT)
    options: dict[str, Any] = {
        "key_prefix": args.prefix,
        "leeway": args.leeway,
        "max_token_lifetime": args.max_token_lifetime,
    }
    if key is not None:
        options.update(
            key=key,
            algorithms=args.algorithm or ["HS256"],
            issuer=args.issuer,
            audience=args.audience,
            user_claim=args.user_claim,
            # The CLI looks at any token the middleware could have let through, and says
            # itself when one carries neither jti nor sid (revoke-token, check).
            require_revocable=False,
        )
    return Revoker(store=store, **options), store


def _key(args: argparse.Namespace) -> str | bytes:
    if args.key_file is not None:
        try:
            # `echo secret > file` adds a newline that is not part of the secret.
            return Path(args.key_file).read_bytes().rstrip(b"\r\n")
        except OSError as exc:
            raise Usage(f"cannot read --key-file {args.key_file}: {exc.strerror}") from None
    value = os.environ.get(args.key_env)
    if not value:
        raise Usage(f"no verification key: set {args.key_env} (the HMAC secret or public key PEM) or pass --key-file")
    return value


def _read_token(arg: str | None) -> str:
    if arg is not None and arg != "-":
        text = arg
    elif sys.stdin.isatty():  # not echoed: no token in the scrollback or a screen share
        text = getpass.getpass("paste the token (not shown), then Enter: ")
    else:
        text = sys.stdin.read()
    text = text.strip()
    if text[:7].lower() == "bearer ":  # pasted with its Authorization header
        text = text[7:].strip()
    if not text:
        raise Usage("no token given (pass it on stdin, or as TOKEN)")
    return text


def _note(iss: str, sub: str | None) -> None:
    # (iss, sub) pick the bucket: leaving one out silently misses tokens that carry it.
    for option, value in (("iss", iss), ("sub", sub)):
        if not value:
            print(f"signout: note: no --{option}: this reaches only tokens without an {option} claim", file=sys.stderr)


def _whose(sub: str | None, iss: str | None) -> str:
    return (f"of sub {sub!r}" if sub else "with no sub") + (f" (iss {iss!r})" if iss else " (no iss)")


def _time(epoch: float) -> str:
    return datetime.fromtimestamp(math.floor(epoch), timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _size(n: int) -> str:
    return f"{n} bytes" if n < 1024 else f"{n / 1024:.1f} KiB" if n < 1 << 20 else f"{n / (1 << 20):.1f} MiB"


def _moment(text: str) -> float:
    """Epoch seconds, or an ISO 8601 time with a zone (2026-11-21T14:30:00Z)."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text.upper().replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither epoch seconds nor an ISO 8601 time") from None
    if when.tzinfo is None:  # a guessed zone would silently shift the cutoff by hours
        raise argparse.ArgumentTypeError(f"{text!r} has no time zone; add Z or +hh:mm")
    return when.timestamp()


def _id(text: str) -> str:
    if not text:
        raise argparse.ArgumentTypeError("may not be empty")
    return text


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("store (must match the middleware's settings)")
    group.add_argument("--redis-url", metavar="URL", help="where revocations live (default: $REDIS_URL)")
    group.add_argument("--prefix", default="signout", help="the middleware's key_prefix (default: %(default)s)")
    group.add_argument(
        "--max-token-lifetime",
        type=float,
        default=30 * 86400,
        metavar="SECONDS",
        help="the middleware's max_token_lifetime (default: %(default)d = 30 days)",
    )
    group.add_argument(
        "--leeway", type=float, default=30, metavar="SECONDS", help="the middleware's leeway (default: 30)"
    )

    keyed = argparse.ArgumentParser(add_help=False)
    keyed.add_argument(
        "token", nargs="?", metavar="TOKEN", help="the token; - or none: read stdin (safer: argv shows in ps)"
    )
    group = keyed.add_argument_group("verifying a token string (as the middleware does)")
    group.add_argument(
        "--key-env",
        default="SIGNOUT_KEY",
        metavar="VAR",
        help="env var holding the HMAC secret or PEM (default: %(default)s)",
    )
    group.add_argument("--key-file", metavar="PATH", help="read the key from this file instead")
    group.add_argument("--algorithm", action="append", metavar="ALG", help="allowed, repeatable (default: HS256)")
    group.add_argument("--issuer", action="append", metavar="ISS", help="required iss, repeatable")
    group.add_argument("--audience", action="append", metavar="AUD", help="required aud, repeatable")
    group.add_argument(
        "--user-claim",
        default="sub",
        metavar="CLAIM",
        help="the middleware's user_claim: the claim naming the user (default: %(default)s)",
    )

    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="signout",
        description="Revoke a user, a session or a token; check a token; count the store.",
        epilog=EPILOG,
        formatter_class=raw,
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    def command(run: Callable[[argparse.Namespace], int], *parents: argparse.ArgumentParser) -> Any:
        text = " ".join((run.__doc__ or "").split())
        name = run.__name__.strip("_").replace("_", "-")
        sub = commands.add_parser(
            name,
            help=text.split(". ")[0],
            description=textwrap.fill(text, 88),
            epilog=EPILOG,
            parents=[*parents, common],
            formatter_class=raw,
        )
        sub.set_defaults(run=run)
        return sub

    iss = "the tokens' iss claim, exactly (it picks the bucket; omit only if they have none)"
    cmd = command(_revoke_user)
    cmd.add_argument("sub", type=_id, metavar="SUB", help="the tokens' sub claim")
    cmd.add_argument("--iss", default="", help=iss)
    cmd.add_argument("--at", type=_moment, metavar="EPOCH", help="cutoff: epoch seconds or ISO 8601 (default: now)")

    cmd = command(_revoke_session)
    cmd.add_argument("sid", type=_id, metavar="SID", help="the tokens' sid claim")
    cmd.add_argument("--sub", type=_id, help="the tokens' sub claim (needed when they carry one)")
    cmd.add_argument("--iss", default="", help=iss)

    cmd = command(_revoke_token, keyed)
    cmd.add_argument("--session", action="store_true", help="also revoke every token of its login (its sid)")
    group = cmd.add_argument_group("revoking by ids, without the token")
    group.add_argument("--jti", type=_id, help="the token's jti claim")
    group.add_argument("--exp", type=_moment, metavar="EPOCH", help="the token's exp claim (required with --jti)")
    group.add_argument("--sub", type=_id, help="the token's sub claim, if it has one")
    group.add_argument("--sid", type=_id, help="the token's sid claim (revoked too with --session)")
    group.add_argument("--iss", default="", help=iss)

    command(_check, keyed)
    command(_stats).add_argument("--json", action="store_true", help="one JSON object instead of text")
    return parser
