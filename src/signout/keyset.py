"""The keys an OpenID Provider publishes at ``jwks_url`` (RFC 7517 section 5; SPEC section 10).

A ``KeySet`` holds the last good JWK Set and decides when to fetch it again; the
fetch itself is blocking ``urllib`` and always runs off the event loop: in a
thread of its own under ASGI, in the request's thread under WSGI. The rules,
and the pitfalls of PyJWT's ``PyJWKClient`` they avoid:

- one fetch at a time: every request that needs the set while a fetch is under
  way waits for that one (a ``concurrent.futures.Future`` shared by threads and
  by event loops alike);
- a ``kid`` the set does not hold asks for a fetch at most once per
  ``min_interval`` (10 s), so made-up ``kid``s cannot make signout hammer the OP
  (``PyJWKClient`` refetches on every miss);
- a failed fetch keeps the last good set, for ``max_stale`` (24 h) after it was
  fetched, and logs a WARNING naming the URL and the cause (``PyJWKClient``
  wiped its cache: a JWKS outage became a full outage);
- the set is fetched again in the background every ``refresh_every`` (5 min),
  so a key the OP removed stops verifying within minutes (``PyJWKClient``'s
  cache served removed keys forever), and ``version`` changes only when the keys
  do, so the verified-claims cache survives a refresh that changed nothing;
- a response other than 200, larger than ``max_bytes`` (1 MiB), slower than
  ``timeout`` (5 s), or not a JWK Set is refused; a redirect is not followed
  (it could lead from https to http).

Which keys are used: not ``use: "enc"`` (RFC 7517 section 4.2), not ones whose
``key_ops`` leave out ``verify`` (4.3), and only those whose ``alg`` (or, without
one, the algorithm PyJWT infers from ``kty`` and ``crv``) is among the pinned
``algorithms``. A symmetric (``oct``) key can never pass: ``jwks_url`` needs
asymmetric algorithms. Every key left out is logged once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

import jwt

from .errors import KeysUnavailable, describe, masked
from .keys import VerificationKey

log = logging.getLogger("signout")

#: Seconds a fetch may take, connecting and reading, before it counts as failed.
FETCH_TIMEOUT = 5.0
#: The largest JWK Set read; a real one is a few KB (Google's: 1.5 KB, Azure AD's: 10 KB).
MAX_JWKS_BYTES = 1 << 20
#: Age at which the set is fetched again in the background (Microsoft.IdentityModel
#: and jwx refresh on a similar scale); a key the OP removed dies within this.
REFRESH_EVERY = 300.0
#: The least time between two fetches asked for by an unknown ``kid`` or retried after a
#: failure: what a flood of made-up ``kid``s can cost the OP (6 fetches a minute at most).
MIN_INTERVAL = 10.0
#: The same, while no set was ever fetched: every token gets 503 meanwhile, so a set
#: coming back is worth noticing at once.
UNREADY_INTERVAL = 1.0
#: How long after its fetch a good set is still used while fetches fail: an OP outage
#: of up to a day is survived; past it, tokens get 503 (fail closed).
MAX_STALE = 86400.0
#: A repeated fetch failure is logged at WARNING at most this often (at DEBUG otherwise).
WARN_EVERY = 60.0


class JWKSRefused(Exception):
    """A fetch that failed or a document that is not a usable JWK Set; the message says why."""


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        # Not followed: the JWKS URL is pinned (an https URL redirecting to http would
        # hand the keys to anyone on the path). The 3xx then fails the fetch.
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


def download(url: str, *, timeout: float = FETCH_TIMEOUT, max_bytes: int = MAX_JWKS_BYTES) -> bytes:
    """The body of a 200 answer to ``GET url``, or ``JWKSRefused`` saying why not."""
    # S310: only http(s) URLs get here (config._jwks_url checks the scheme).
    request = urllib.request.Request(  # noqa: S310
        url, headers={"Accept": "application/jwk-set+json, application/json", "User-Agent": "signout"}
    )
    deadline = time.monotonic() + timeout
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            if response.status != 200:
                raise JWKSRefused(f"answered HTTP {response.status}, not 200")
            length = response.headers.get("Content-Length", "")
            if length.isdigit() and int(length) > max_bytes:
                raise JWKSRefused(f"is {int(length)} bytes, more than the {max_bytes} read")
            chunks: list[bytes] = []
            size = 0
            while True:
                # read1: one socket read at a time, so a server dripping bytes meets the deadline.
                if time.monotonic() > deadline:
                    raise JWKSRefused(f"took longer than {timeout:g} s")
                chunk = response.read1(65536)
                if not chunk:
                    return b"".join(chunks)
                size += len(chunk)
                if size > max_bytes:
                    raise JWKSRefused(f"is more than the {max_bytes} bytes read")
                chunks.append(chunk)
    except JWKSRefused:
        raise
    except Exception as exc:  # URLError, HTTPError, timeouts, a connection cut mid-body
        raise JWKSRefused(describe(exc)) from exc


def parse_jwks(body: bytes, algorithms: Sequence[str]) -> tuple[list[VerificationKey], list[str], list[str]]:
    """The usable keys of a JWK Set, the identity of each (to tell a changed set), and why others were left out."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise JWKSRefused("is not JSON") from exc
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise JWKSRefused("is not a JWK Set (a JSON object with a 'keys' list)")
    keys: list[VerificationKey] = []
    identities: list[str] = []
    skipped: list[str] = []
    for number, jwk in enumerate(document["keys"]):
        if not isinstance(jwk, dict):
            skipped.append(f"key #{number} is not a JSON object")
            continue
        kid = jwk.get("kid") if isinstance(jwk.get("kid"), str) else None
        name = f"key {kid!r}" if kid is not None else f"key #{number}"
        why = _unusable(jwk, algorithms)
        if why is None:
            try:
                prepared = jwt.PyJWK(jwk)
            except Exception as exc:  # PyJWKError, InvalidKeyError, and whatever a hostile JWK makes it raise
                why = f"cannot be read ({describe(exc)})"
            else:
                alg = prepared.algorithm_name
                if alg not in algorithms:
                    why = f"is for {alg!r}, not among algorithms {list(algorithms)}"
                else:
                    keys.append(VerificationKey(key=_public(prepared.key), algorithms=frozenset({alg}), kid=kid))
                    identities.append(json.dumps([alg, jwk], sort_keys=True))
                    continue
        skipped.append(f"{name} {why}")
    return keys, identities, skipped


def _unusable(jwk: dict[str, Any], algorithms: Sequence[str]) -> str | None:
    if jwk.get("use") == "enc":
        return "is for encryption (use: 'enc')"
    ops = jwk.get("key_ops")
    if isinstance(ops, list) and "verify" not in ops:
        return "does not allow 'verify' (key_ops)"
    alg = jwk.get("alg")
    if alg is not None and alg not in algorithms:
        return f"is for {alg!r}, not among algorithms {list(algorithms)}"
    return None


def _public(key: Any) -> Any:
    # A published private key (an OP's blunder) verifies nothing by itself; keep its public half.
    public = getattr(key, "public_key", None)
    if callable(public) and not hasattr(key, "verify"):
        return public()
    return key


class KeySet:
    """The last good JWK Set from ``url``, and when to fetch it again.

    ``keys``, ``ready`` and ``version`` are read without a lock: a change sets the
    keys first and bumps ``version`` last, so a reader that sees the new version
    sees the new keys. ``version`` changes when the usable keys change, when the
    set becomes ready and when it is dropped (older than ``max_stale``); a
    ``Verifier`` that sees it change drops what it derived from the old keys.

    The tuning attributes (``timeout``, ``max_bytes``, ``refresh_every``,
    ``min_interval``, ``unready_interval``, ``max_stale``) and ``clock`` (monotonic
    seconds) are read at each decision; tests set them.
    """

    def __init__(self, url: str, algorithms: Sequence[str], *, clock: Callable[[], float] = time.monotonic) -> None:
        self.url = url
        self.where = masked(url)
        self.algorithms = tuple(algorithms)
        self.clock = clock
        self.timeout = FETCH_TIMEOUT
        self.max_bytes = MAX_JWKS_BYTES
        self.refresh_every = REFRESH_EVERY
        self.min_interval = MIN_INTERVAL
        self.unready_interval = UNREADY_INTERVAL
        self.max_stale = MAX_STALE
        #: The usable keys of the last good set (none before it, or once it is dropped).
        self.keys: tuple[VerificationKey, ...] = ()
        #: Bumped on every change of ``keys`` or ``ready``.
        self.version = 0
        #: A good set is held (fetched, and not older than ``max_stale``).
        self.ready = False
        #: When the set in ``keys`` was last fetched (``clock`` seconds), or ``None``.
        self.fetched_at: float | None = None
        #: When a request should next start a background fetch (``clock`` seconds).
        self.due = 0.0
        #: Fetches attempted, good or not.
        self.fetches = 0
        self._identities: list[str] | None = None
        self._attempted: float | None = None  # when the last fetch ended
        self._failure = "no fetch was attempted yet"
        self._warned: tuple[str, float] | None = None
        self._skipped: set[str] = set()
        self._lock = threading.Lock()
        self._flight: Future[None] | None = None

    # ---- what the verifier asks -------------------------------------------------------

    def may_fetch(self) -> bool:
        """Whether a token whose key is missing may ask for a fetch now (one under way: it shares it)."""
        return self._flight is not None or self._allowed(self.clock())

    def unavailable(self) -> KeysUnavailable:
        """The error for a token that needs the set while none is usable."""
        if self.fetched_at is None:
            return KeysUnavailable(self.where, f"no fetch has succeeded yet ({self._failure})")
        return KeysUnavailable(self.where, f"the last good set is older than {self.max_stale:g} s ({self._failure})")

    # ---- fetching -------------------------------------------------------------------------

    async def refresh(self) -> None:
        """Fetch the set now, off the event loop, unless the rate limit says no; a fetch under way is shared.

        Never raises: a failure is logged, and the keys held stay."""
        flight, mine = self._start(background=False)
        if flight is None:
            return
        if mine:
            self._spawn(flight)
        await asyncio.wrap_future(flight)

    def refresh_sync(self) -> None:
        """``refresh`` for WSGI: the fetch runs in this thread; other threads wait for it."""
        flight, mine = self._start(background=False)
        if flight is None:
            return
        if mine:
            self._run(flight)
        else:
            flight.result()

    def refresh_soon(self) -> None:
        """Start a fetch in a thread of its own when one is ``due``; the caller goes on with the keys held."""
        now = self.clock()
        if self.ready and self.fetched_at is not None and now >= self.fetched_at + self.max_stale:
            self._drop(now)
        flight, mine = self._start(background=True)
        if flight is not None and mine:
            self._spawn(flight)

    def _allowed(self, now: float) -> bool:
        last = self._attempted
        if last is None:
            return True
        return now - last >= (self.min_interval if self.ready else self.unready_interval)

    def _start(self, *, background: bool) -> tuple[Future[None] | None, bool]:
        """The fetch to wait for, and whether the caller must run it; ``(None, False)``: none now."""
        with self._lock:
            if self._flight is not None:
                return self._flight, False
            now = self.clock()
            if (now < self.due) if background else not self._allowed(now):
                return None, False
            flight: Future[None] = Future()
            # Running: a waiter that is cancelled cannot cancel it for the others.
            flight.set_running_or_notify_cancel()
            self._flight = flight
            return flight, True

    def _spawn(self, flight: Future[None]) -> None:
        # A thread of its own, not an event loop's executor: the flight is shared by every
        # loop the middleware runs on, and outlives the request (and the loop) that started it.
        threading.Thread(target=self._run, args=(flight,), name="signout-jwks", daemon=True).start()

    def _run(self, flight: Future[None]) -> None:
        try:
            self._fetch()
        except Exception:  # a bug here must not leave waiters hanging
            log.exception("signout: fetching the JWKS at %s failed unexpectedly", self.where)
        finally:
            self._attempted = self.clock()
            with self._lock:
                self._flight = None
            flight.set_result(None)

    def _fetch(self) -> None:
        self.fetches += 1
        try:
            body = download(self.url, timeout=self.timeout, max_bytes=self.max_bytes)
            keys, identities, skipped = parse_jwks(body, self.algorithms)
            self._log_skipped(skipped)
            if not keys:
                raise JWKSRefused(f"holds no key usable with algorithms {list(self.algorithms)}")
        except JWKSRefused as exc:
            self._failed(str(exc))
        else:
            self._install(keys, identities)

    def _install(self, keys: list[VerificationKey], identities: list[str]) -> None:
        now = self.clock()
        changed = not self.ready or identities != self._identities
        self.fetched_at = now
        self.due = now + self.refresh_every
        self._warned = None
        if changed:
            self.keys = tuple(keys)
            self._identities = identities
            self.ready = True
            self.version += 1  # last: a reader that sees it sees the keys above
            kids = ", ".join(repr(k.kid) for k in keys)
            log.info("signout: %d signing key(s) from %s: %s", len(keys), self.where, kids)

    def _failed(self, reason: str) -> None:
        now = self.clock()
        self._failure = reason
        if self.ready and self.fetched_at is not None:
            expires = self.fetched_at + self.max_stale
            if now >= expires:
                self._drop(now)
                effect = "tokens get 503 until a fetch succeeds"
            else:
                self.due = min(now + self.min_interval, expires)
                effect = (
                    f"keeping the keys fetched {now - self.fetched_at:.0f} s ago "
                    f"(for {expires - now:.0f} s more at most)"
                )
        else:
            self.due = now + self.unready_interval
            effect = "tokens get 503 until a fetch succeeds"
        repeat = self._warned is not None and self._warned[0] == reason and now - self._warned[1] < WARN_EVERY
        if repeat:
            log.debug("signout: the JWKS at %s could not be fetched again: %s", self.where, reason)
        else:
            self._warned = (reason, now)
            log.warning("signout: the JWKS at %s could not be fetched: %s; %s", self.where, reason, effect)

    def _drop(self, now: float) -> None:
        """Stop using a set older than ``max_stale``: its tokens get 503 from now on (fail closed)."""
        with self._lock:
            if not self.ready:
                return
            self.keys = ()
            self._identities = None
            self.ready = False
            self.version += 1
        log.error(
            "signout: the keys from %s were fetched %.0f s ago, more than the %g s they are kept; "
            "tokens get 503 until a fetch succeeds",
            self.where,
            now - (self.fetched_at or now),
            self.max_stale,
        )

    def _log_skipped(self, skipped: list[str]) -> None:
        for why in skipped:
            if why not in self._skipped:
                self._skipped.add(why)
                log.info("signout: the JWKS at %s: %s; it is not used", self.where, why)
