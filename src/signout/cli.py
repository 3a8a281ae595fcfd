"""``signout``: revoke a user, a session or a token from a shell; check a token; count the store.

For the on-call engineer: every revoke prints what it wrote, every command
exits with a documented code (1 only ever means "check: revoked"), and nothing
prints a token or a secret (errors included). It writes through ``Revoker``,
so the middleware judges a CLI revocation exactly as one made by a logout route.
"""

from __future__ import annotations

import argparse
import getpass
import json
import math
import os
import re
import shlex
import sys
import textwrap
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from . import __version__, layout
from .errors import ConfigError, StoreError, TokenError

if TYPE_CHECKING:
    import redis

    from .layout import Write
    from .revoker import Revoker
    from .stores.redis import RedisStore

OK, REVOKED, USAGE, INVALID, STORE = 0, 1, 2, 3, 4
INTERNAL = 70  # EX_SOFTWARE (sysexits.h); Python's own 1 for an uncaught exception would read as "revoked"
INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C
STORE_TIMEOUT = 3.0  # seconds per store call; a shell can wait longer than a request
ISSUER_ENV = "SIGNOUT_ISSUER"

EPILOG = """\
exit codes (1 comes from check's "revoked" and from nothing else):
  0    done; check: the token is not revoked; stats: also when the prefix holds no
       keys (a note on stderr says so)
  1    check: the token is revoked
  2    usage or configuration error (bad or missing option, REDIS_URL not set, no
       verification key); nothing was written
  3    the token is invalid (bad signature, expired, malformed, wrong iss or aud)
  4    the store is unreachable, timed out (3 s per call) or failed; a revoke may or
       may not have been recorded: run it again
  70   internal error, a bug in signout (EX_SOFTWARE); a revoke may or may not have
       been recorded: run it again
  130  interrupted (Ctrl-C)
A reader that stops early (signout check < token.txt | head -1) never changes the code.

A revocation is stored under the tokens' iss and sub, so none is guessed: revoke-user,
revoke-session and revoke-token --jti need --iss ISS (or $SIGNOUT_ISSUER) or --no-iss;
revoke-session and revoke-token --jti need --sub SUB or --no-sub; revoke-token --jti
with --no-sub needs --sid SID or --no-sid. (A session is stored under its iss and sid
alone and reaches its tokens with or without a sub; revoke-session's --sub names the
user in the audit record.) --iss and --no-iss beat $SIGNOUT_ISSUER.
--redis-url, --prefix, --max-token-lifetime, --leeway and --user-claim must match the
middleware's redis_url, key_prefix, max_token_lifetime, leeway and user_claim: otherwise
a revocation lands where the middleware never looks, or expires before the tokens it
should stop. Options go before or after the command, except a command's own (--at,
--session, --jti, --exp, --json); one that does nothing for the command is refused.
Every revoke prints one line per revocation it wrote: which, whose (sub, iss), kept until
when, in which key. Tokens and secrets are never printed. Pass a token on stdin: argv is
visible in ps.
"""

EXAMPLES = {
    "revoke-user": (
        "signout revoke-user alice --iss https://id.example",
        "signout revoke-user 42 --no-iss      # simplejwt: user_id 42, tokens without iss",
    ),
    "revoke-session": ("signout revoke-session 3f2a9c --sub alice --iss https://id.example",),
    "revoke-token": (
        "signout revoke-token - < token.txt",
        "signout revoke-token --jti 9c1e --exp 1795270376 --sub alice --iss https://id.example",
    ),
    "check": ("signout check - < token.txt",),
    "stats": ("signout --prefix signout stats --json",),
}

# ConfigError names the Revoker kwarg; the engineer typed an option.
_OPTION = {"key_prefix": "--prefix", "algorithms": "--algorithm", "key": "the key (--key-env/--key-file)"}

# How to give each claim that picks a revocation's bucket, or to say the tokens have none.
_GIVE = {
    "iss": f"pass the tokens' iss claim (--iss ISS, or set {ISSUER_ENV}), or --no-iss if they carry none",
    "sub": "pass the tokens' sub claim (--sub SUB), or --no-sub if they carry none",
    "sid": "tokens without a sub are stored under their sid: pass --sid SID, or --no-sid if they carry none",
}

# Every option but a command's own (--at, --session, --jti, --exp, --json) goes before or
# after the command. Each is parsed into its own attribute on either side (argparse would
# let the command's copy overwrite what came before it), then settled into one (_settle),
# with its default when given nowhere.
_STORE = {"redis_url": None, "prefix": "signout", "max_token_lifetime": 30.0 * 86400, "leeway": 30.0}
_VERIFY = {
    "key_env": "SIGNOUT_KEY",
    "key_file": None,
    "user_claim": "sub",
    "algorithm": None,
    "issuer": None,
    "audience": None,
}
_BUCKET = ("iss", "sub", "sid")
_DEFAULTS: dict[str, object] = {
    **_STORE,
    **_VERIFY,
    **{n: None for n in _BUCKET},
    **{f"no_{n}": False for n in _BUCKET},
}
_REPEATABLE = ("algorithm", "issuer", "audience")
_AFTER = "_after_command"

# The shape of layout.bucket_key: "<prefix>:{<4 hex digits>}".
_BUCKET_KEY = re.compile(rb"(.+):\{[0-9a-f]{4}\}")
_HINT_PAGES = 20  # SCAN pages (COUNT 1000) looked at for a --prefix hint: a hint, not a census


class Usage(Exception):
    """Exit 2 with this message."""


def main(argv: list[str] | None = None) -> int:
    code = _main(argv)
    # The answer is known now; a reader that went away (| head -1) must not change it,
    # nor must Python's flush at exit fail later and turn it into 120.
    _flush(sys.stdout)
    _flush(sys.stderr)
    return code


def _main(argv: list[str] | None) -> int:
    try:
        args = _settle(_parser().parse_args(argv))
        run: Callable[[argparse.Namespace], int] = args.run
        return run(args)
    except SystemExit as exc:  # --help (0), or a usage error argparse has already explained (2)
        return exc.code if isinstance(exc.code, int) else USAGE
    except Usage as exc:
        return _fail(USAGE, str(exc))
    except ConfigError as exc:
        return _fail(USAGE, f"{_OPTION.get(exc.kwarg, '--' + exc.kwarg.replace('_', '-'))}: {exc.reason}")
    except TokenError as exc:
        return _fail(INVALID, f"invalid token: {exc.description}")
    except StoreError as exc:
        # The message names the store's address and the cause; a write cut off may still land.
        unsure = "; the revocation may not have been recorded (Redis may still apply it): run it again"
        return _fail(STORE, f"{exc}{unsure if exc.unsure else ''}")
    except ImportError as exc:
        if (exc.name or "").partition(".")[0] != "redis":
            return _fail(INTERNAL, _internal(exc))
        return _fail(USAGE, f"{exc}; install redis-py: pip install 'signout[redis]'")
    except KeyboardInterrupt:
        return INTERRUPTED
    except Exception as exc:
        return _fail(INTERNAL, _internal(exc))


def _internal(exc: BaseException) -> str:
    # The type and the place, never str(exc): an exception's text may quote a token.
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
    return f"internal error: {type(exc).__name__}{where}; this is a bug in signout, please report it"


# ---- output -----------------------------------------------------------------


def _say(text: str, stream: TextIO | None = None) -> None:
    """Print one line of the answer; a closed or failing stream never changes the exit code."""
    out = sys.stdout if stream is None else stream
    try:
        print(text, file=out)
    except OSError as exc:
        _mute(out, exc)


def _fail(code: int, message: str) -> int:
    _say("signout: " + " ".join(message.split()), sys.stderr)
    return code


def _note(message: str) -> None:
    _say("signout: note: " + message, sys.stderr)


def _flush(stream: TextIO | None) -> None:
    if stream is None:  # started with the descriptor closed (>&-)
        return
    try:
        stream.flush()
    except OSError as exc:
        _mute(stream, exc)


def _mute(stream: TextIO | None, exc: OSError) -> None:
    """Send ``stream``'s descriptor to /dev/null, as the Python docs advise for SIGPIPE.

    What is still buffered, and Python's flush at exit, then go nowhere instead
    of raising again. A reader that left early (``| head -1``) is normal; any
    other failure (a full disk) is said on stderr, and the exit code stays.
    """
    if stream is None:
        return
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # no descriptor (an in-memory stream): nothing to redirect
        pass
    if not isinstance(exc, BrokenPipeError) and stream is not sys.stderr:
        _say(f"signout: could not write the answer: {exc.strerror or type(exc).__name__}", sys.stderr)


def _report(writes: Sequence[Write], *, iss: str, sub: str | None, sid: str | None, jti: str | None) -> None:
    """One line per revocation written: which, in whose bucket, kept until when. Ids only."""
    bucket = f"({_said('sub', sub)}, {_said('iss', iss)})"
    for write in writes:
        for field, value in write.fields:
            parsed = layout.parse(value)
            assert parsed is not None  # Revoker's own writes always parse
            cutoff, expires = parsed
            if field[:1] == b"u":
                what = f"user cutoff {bucket}: every token issued at or before {_time(cutoff)}"
            elif field[:1] == b"s":
                what = f"session {sid!r} ({_said('iss', iss)}): every token of that login, with or without a sub"
            else:
                what = f"token jti {jti!r} {bucket}"
            _say(f"revoked: {what}; kept until {_time(expires)} in key {write.key}")


def _said(name: str, value: str | None) -> str:
    return f"{name} {value!r}" if value else f"no {name}"


# ---- commands ---------------------------------------------------------------


def _revoke_user(args: argparse.Namespace) -> int:
    """Log a user out everywhere. Every token of SUB issued at or before now (or --at) is refused, in every
    app on this store; tokens issued later (a fresh login) still work."""
    iss = _claims(args, "iss")["iss"] or ""
    now = time.time()
    at = now if args.at is None else args.at
    if at > now:
        raise Usage("--at is in the future; a revocation covers tokens already issued")
    revoker, _ = _revoker(args, now)
    writes = revoker.plan_user(sub=args.user, iss=iss, at=at)
    revoker.revoke_user_sync(sub=args.user, iss=iss, at=at)
    _report(writes, iss=iss, sub=args.user, sid=None, jti=None)
    return OK


def _revoke_session(args: argparse.Namespace) -> int:
    """Revoke every token of one login, with or without a sub. SID is the sid claim, as audit records show
    it; --iss names the tokens' iss, or --no-iss says they carry none; --sub names the user for the audit
    record, or --no-sub says the tokens carry none."""
    ids = _claims(args, "iss", "sub")
    iss = ids["iss"] or ""
    revoker, _ = _revoker(args, time.time())
    writes = revoker.plan_session(sid=args.session_id, iss=iss)
    revoker.revoke_session_sync(sid=args.session_id, iss=iss, sub=ids["sub"])
    _report(writes, iss=iss, sub=ids["sub"], sid=args.session_id, jti=None)
    return OK


def _revoke_token(args: argparse.Namespace) -> int:
    """Revoke one token. Give it on stdin (signout revoke-token < file), or give its ids instead, exactly as
    in the token: --jti JTI --exp EPOCH, --sub SUB or --no-sub, --iss ISS or --no-iss, and with --no-sub
    also --sid SID or --no-sid (a token without a sub is stored under its sid)."""
    return _revoke_token_string(args) if args.jti is None else _revoke_token_ids(args)


def _revoke_token_string(args: argparse.Namespace) -> int:
    by_id = ("exp", "sub", "sid", "iss", "no_sub", "no_sid", "no_iss")
    if any(getattr(args, name) not in (None, False) for name in by_id):
        raise Usage("--exp, --sub, --sid, --iss and their --no- forms go with --jti; a token string carries its own")
    now = time.time()
    revoker, _ = _revoker(args, now, key=_key(args))
    raw = _read_token(args.token)
    token = revoker.token(raw)
    if token.jti is None and token.sid is None:
        hint = f"; revoke-user {token.sub!r} stops it" if token.sub else ""
        raise Usage(f"this token has neither jti nor sid, so it cannot be revoked alone{hint}")
    if args.session and token.sid is None:
        hint = f"; revoke-user {token.sub!r} ends every login of its user" if token.sub else ""
        raise Usage(f"--session: this token has no sid, so no session to revoke{hint}")
    _, writes = revoker.plan_token(raw, session=args.session)
    revoker.revoke_sync(raw, session=args.session)
    _report(writes, iss=token.iss, sub=token.sub, sid=token.sid, jti=token.jti)
    return OK


def _revoke_token_ids(args: argparse.Namespace) -> int:
    if args.token is not None:
        raise Usage("give either a token or --jti, not both")
    if args.exp is None:
        raise Usage("--jti needs --exp (the token's exp claim): the revocation must outlive the token")
    ids = _claims(args, "iss", "sub")
    if ids["sub"] is None:  # without a sub, a token's bucket is its sid's
        ids.update(_claims(args, "sid"))
    if args.session and args.sid is None:
        raise Usage("--session needs --sid (the token's sid claim): that is the session it revokes")
    now = time.time()
    revoker, _ = _revoker(args, now)
    claims = {"jti": args.jti, "exp": args.exp, "sub": ids["sub"], "sid": args.sid, "iss": ids["iss"]}
    token = revoker.token({k: v for k, v in claims.items() if v is not None})
    if token.exp > now + revoker.policy.max_token_lifetime + revoker.policy.leeway:
        raise Usage("--exp is further away than --max-token-lifetime: milliseconds instead of seconds?")
    if math.ceil(token.exp) + revoker.policy.leeway <= now:
        _say(f"nothing to revoke: the token expired at {_time(token.exp)} and is already refused")
        return OK
    _, writes = revoker.plan_token(token.claims, session=args.session)
    revoker.revoke_sync(token.claims, session=args.session)
    _report(writes, iss=token.iss, sub=token.sub, sid=token.sid, jti=token.jti)
    return OK


def _check(args: argparse.Namespace) -> int:
    """Verify a token and say whether it is revoked. Prints revoked, not revoked or invalid: <reason>, then
    its iss, sub, sid, jti, iat and exp; never the token."""
    revoker, _ = _revoker(args, time.time(), key=_key(args))
    raw = _read_token(args.token)
    try:
        token = revoker.token(raw)
    except TokenError as exc:
        _say(f"invalid: {exc.description}")
        return INVALID
    revoked = revoker.is_revoked_sync(raw)
    _say("revoked" if revoked else "not revoked")
    if token.sub is None and token.sid is None and token.jti is None:
        _say("  (no sub, sid or jti: nothing can revoke this token before it expires)")
    for name in ("iss", "sub", "sid", "jti"):
        value = getattr(token, name)
        label = f"{name} ({args.user_claim})" if name == "sub" and args.user_claim != "sub" else name
        _say(f"  {label}  {value!r}" if value else f"  {label}  -")
    _say(f"  kind  {token.kind}")
    for name, when in (("iat", token.iat), ("exp", token.exp)):
        _say(f"  {name}  {_time(when)} ({token.claims.get(name)})" if when is not None else f"  {name}  -")
    return REVOKED if revoked else OK


def _stats(args: argparse.Namespace) -> int:
    """Count live revocations by kind, bucket keys and their memory. Memory is MEMORY USAGE, estimated
    from a sample of 10000 keys on larger stores. An empty prefix is said on stderr (exit 0)."""
    import redis

    from .stats import collect

    now = time.time()
    _, store = _revoker(args, now)  # validates --prefix as the middleware does
    client = store.sync_client()
    if not isinstance(client, redis.Redis):
        raise Usage("stats needs the URL of a single Redis server")
    stats = collect(client, args.prefix, now)
    if args.json:
        _say(json.dumps({"prefix": args.prefix, "now": int(now), **asdict(stats)}))
    else:
        memory = _size(stats.memory_bytes)
        if stats.memory_estimated:
            memory += f" (estimate: MEMORY USAGE of {stats.memory_sampled} of {stats.keys} keys, scaled)"
        _say(f"live revocations under prefix {args.prefix!r} at {_time(now)}:")
        _say(f"  users logged out everywhere  {stats.users}\n  revoked sessions             {stats.sessions}")
        _say(f"  revoked tokens               {stats.tokens}\n  bucket keys                  {stats.keys}")
        _say(f"  expired, not yet pruned      {stats.expired}\n  memory                       {memory}")
    if stats.keys == 0:
        _note(_empty_prefix(args.prefix, _prefixes_elsewhere(client, args.prefix)))
    return OK


def _empty_prefix(prefix: str, others: Sequence[str]) -> str:
    said = f"prefix {prefix!r} holds no signout keys"
    if not others:
        return f"{said}: nothing is revoked there, or --prefix or --redis-url (or its database) is not the middleware's"
    where = ", ".join(repr(p) for p in others)
    guesses = " or ".join(f"--prefix {shlex.quote(p)}" for p in others)
    return f"{said}; keys shaped like signout's are under {where}: did you mean {guesses}?"


def _prefixes_elsewhere(client: redis.Redis, prefix: str) -> list[str]:
    """Other prefixes holding keys shaped like signout buckets, from a bounded SCAN."""
    import redis

    found: list[str] = []
    cursor, deadline = 0, time.monotonic() + STORE_TIMEOUT
    try:
        for _ in range(_HINT_PAGES):
            reply: Any = client.scan(cursor, match="*:{????}", count=1000)
            cursor = int(reply[0])
            for key in reply[1]:
                shaped = _BUCKET_KEY.fullmatch(key if isinstance(key, bytes) else str(key).encode())
                if shaped is None:
                    continue
                name = shaped[1].decode("utf-8", "replace")
                if name != prefix and name not in found:
                    found.append(name)
            if cursor == 0 or len(found) >= 3 or time.monotonic() > deadline:
                break
    except (redis.RedisError, OSError):
        pass  # only a hint: the counts above already answered
    return found[:3]


# ---- helpers ----------------------------------------------------------------


def _claims(args: argparse.Namespace, *names: str) -> dict[str, str | None]:
    """The claims that pick a revocation's bucket: each given, or said absent (--no-NAME).

    Never guessed: a token with an iss (or sub) lives in another bucket than one
    without, so a revocation that guessed wrong would miss every token it names.
    """
    found: dict[str, str | None] = {}
    missing = []
    for name in names:
        found[name] = None
        if getattr(args, f"no_{name}"):  # said on the command line: beats $SIGNOUT_ISSUER too
            continue
        value = getattr(args, name)
        if value is None and name == "iss":
            value = os.environ.get(ISSUER_ENV) or None  # set but empty counts as not set
        found[name] = value
        if value is None:
            missing.append(name)
    if missing:
        raise Usage("; ".join(f"missing --{name}: {_GIVE[name]}" for name in missing) + ". Nothing was revoked.")
    return found


def _revoker(args: argparse.Namespace, now: float, *, key: object = None) -> tuple[Revoker, RedisStore]:
    url = args.redis_url or os.environ.get("REDIS_URL")
    if not url:
        raise Usage("no Redis given: set REDIS_URL (e.g. redis://localhost:6379/0) or pass --redis-url")
    from .revoker import Revoker
    from .stores.redis import RedisStore

    store = RedisStore(url, timeout=STORE_TIMEOUT)
    try:
        store.sync_client()  # builds redis-py's client (no connection yet): its URL errors surface here
    except ValueError:
        raise Usage("--redis-url: is not a valid Redis URL") from None  # its text may quote a password
    options: dict[str, Any] = {
        "key_prefix": args.prefix,
        "leeway": args.leeway,
        "max_token_lifetime": args.max_token_lifetime,
        # One moment for the whole command: what it plans is what it writes and reports.
        "clock": lambda: now,
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


def _time(epoch: float) -> str:
    return datetime.fromtimestamp(math.floor(epoch), timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _size(n: int) -> str:
    return f"{n} bytes" if n < 1024 else f"{n / 1024:.1f} KiB" if n < 1 << 20 else f"{n / (1 << 20):.1f} MiB"


def _moment(text: str) -> float:
    """Epoch seconds, or an ISO 8601 time with a zone (2026-11-21T14:30:00Z)."""
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds):  # nan and inf parse as floats, but name no moment
            raise argparse.ArgumentTypeError(f"{text!r} is not a time")
        return seconds
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


def _claim_value(text: str) -> str:
    if not text:  # an empty --iss "$UNSET_VAR" must not pass for "the tokens carry none"
        raise argparse.ArgumentTypeError("may not be empty; tokens without this claim: its --no- option")
    return text


# ---- the parser ---------------------------------------------------------------


def _settle(args: argparse.Namespace) -> argparse.Namespace:
    """One value per option from both sides of the command (after wins; lists add up), else its default."""
    given = set()
    for name, default in _DEFAULTS.items():
        before, after = vars(args).pop(name, None), vars(args).pop(name + _AFTER, None)
        if before is None and after is None:
            setattr(args, name, default)
            continue
        given.add(name)
        if name in _REPEATABLE:
            setattr(args, name, [*(before or []), *(after or [])])
        else:
            setattr(args, name, before if after is None else after)
    stray = sorted(given - set(_STORE) - args.takes)
    if stray:
        flag = "--" + stray[0].replace("_", "-")
        raise Usage(f"{flag} does nothing for {args.command}: leave it out (see signout {args.command} --help)")
    for name in _BUCKET:
        if getattr(args, name) is not None and getattr(args, f"no_{name}"):
            raise Usage(f"--{name} and --no-{name} contradict each other: give one. Nothing was revoked.")
    return args


def _add(group: Any, late: bool, flag: str, **kwargs: Any) -> None:
    # Nothing is set unless typed (SUPPRESS), so _settle tells a typed value from a default.
    dest = flag.lstrip("-").replace("-", "_")
    if kwargs.get("action") != "store_true":
        kwargs.setdefault("metavar", dest.upper())  # not the internal name of the copy after the command
    group.add_argument(flag, dest=dest + _AFTER if late else dest, default=argparse.SUPPRESS, **kwargs)


def _store_options(parser: argparse.ArgumentParser, *, late: bool) -> None:
    group = parser.add_argument_group("store (must match the middleware's settings)")
    _add(group, late, "--redis-url", metavar="URL", help="where revocations live (default: $REDIS_URL)")
    _add(group, late, "--prefix", help="the middleware's key_prefix (default: signout)")
    _add(
        group,
        late,
        "--max-token-lifetime",
        type=float,
        metavar="SECONDS",
        help="the middleware's max_token_lifetime (default: 2592000 = 30 days)",
    )
    _add(group, late, "--leeway", type=float, metavar="SECONDS", help="the middleware's leeway (default: 30)")


def _verify_options(parser: argparse.ArgumentParser, *, late: bool) -> None:
    group = parser.add_argument_group("verifying a token string, as the middleware does (check, revoke-token)")
    _add(group, late, "--key-env", metavar="VAR", help="env var holding the HMAC secret or PEM (default: SIGNOUT_KEY)")
    _add(group, late, "--key-file", metavar="PATH", help="read the key from this file instead")
    _add(group, late, "--user-claim", metavar="CLAIM", help="the middleware's user_claim (default: sub)")
    _add(group, late, "--algorithm", action="append", metavar="ALG", help="allowed, repeatable (default: HS256)")
    _add(group, late, "--issuer", action="append", metavar="ISS", help="required iss, repeatable")
    _add(group, late, "--audience", action="append", metavar="AUD", help="required aud, repeatable")


def _bucket_options(parser: argparse.ArgumentParser, names: Sequence[str], *, late: bool) -> None:
    """--NAME VALUE or --no-NAME for each claim that picks where a revocation is stored."""
    group = parser.add_argument_group("whose tokens: the claims that pick where a revocation is stored")
    for name in names:
        note = {"iss": f" (default: ${ISSUER_ENV})", "sid": " (needed with --no-sub)"}.get(name, "")
        _add(group, late, f"--{name}", type=_claim_value, help=f"the tokens' {name} claim, exactly{note}")
        _add(group, late, f"--no-{name}", action="store_true", help=f"the tokens carry no {name} claim")


# "--iss" must never be taken for an abbreviation of "--issuer": no abbreviations at all.
_LOOK: dict[str, Any] = {"formatter_class": argparse.RawDescriptionHelpFormatter, "allow_abbrev": False}


def _examples(*lines: str) -> str:
    return "example" + ("s" if len(lines) > 1 else "") + ":\n" + "".join(f"  {line}\n" for line in lines)


def _parser() -> argparse.ArgumentParser:
    every = [line for lines in EXAMPLES.values() for line in lines]
    parser = argparse.ArgumentParser(
        prog="signout",
        description="Revoke a user, a session or a token; check a token; count the store.",
        epilog=f"{_examples(*every)}\n{EPILOG}",
        **_LOOK,
    )
    parser.add_argument("--version", action="version", version=f"signout {__version__}")
    _store_options(parser, late=False)
    _verify_options(parser, late=False)
    _bucket_options(parser, _BUCKET, late=False)
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    def command(
        run: Callable[[argparse.Namespace], int], bucket: Sequence[str] = (), *, verifies: bool = False
    ) -> argparse.ArgumentParser:
        text = " ".join((run.__doc__ or "").split())
        name = run.__name__.strip("_").replace("_", "-")
        sub: argparse.ArgumentParser = commands.add_parser(
            name,
            help=text.split(". ")[0],
            # The example comes first: read under stress, help is read from the top.
            description=f"{textwrap.fill(text, 88)}\n\n{_examples(*EXAMPLES[name])}",
            epilog=EPILOG,
            **_LOOK,
        )
        takes = {*bucket, *(f"no_{n}" for n in bucket), *(_VERIFY if verifies else ())}
        sub.set_defaults(run=run, command=name, takes=frozenset(takes))
        if verifies:
            sub.add_argument(
                "token", nargs="?", metavar="TOKEN", help="the token; - or none: read stdin (safer: argv shows in ps)"
            )
        return sub

    def options(sub: argparse.ArgumentParser, bucket: Sequence[str] = (), *, verifies: bool = False) -> None:
        if bucket:
            _bucket_options(sub, bucket, late=True)
        if verifies:
            _verify_options(sub, late=True)
        _store_options(sub, late=True)

    cmd = command(_revoke_user, ("iss",))
    cmd.add_argument("user", type=_id, metavar="SUB", help="the tokens' sub claim (the user, as user_claim names it)")
    cmd.add_argument("--at", type=_moment, metavar="EPOCH", help="cutoff: epoch seconds or ISO 8601 (default: now)")
    options(cmd, ("iss",))

    cmd = command(_revoke_session, ("sub", "iss"))
    cmd.add_argument("session_id", type=_id, metavar="SID", help="the tokens' sid claim")
    options(cmd, ("sub", "iss"))

    cmd = command(_revoke_token, _BUCKET, verifies=True)
    cmd.add_argument("--session", action="store_true", help="also revoke every token of its login (its sid)")
    group = cmd.add_argument_group("revoking by ids, without the token (with --sub/--no-sub, --iss/--no-iss below)")
    group.add_argument("--jti", type=_id, help="the token's jti claim")
    group.add_argument("--exp", type=_moment, metavar="EPOCH", help="the token's exp claim (required with --jti)")
    options(cmd, _BUCKET, verifies=True)

    options(command(_check, verifies=True), verifies=True)
    cmd = command(_stats)
    cmd.add_argument("--json", action="store_true", help="one JSON object instead of text")
    options(cmd)
    return parser
