"""Audit events: one structured record per logout, revocation, rejection and CSRF refusal.

Each goes to the ``signout.audit`` logger (INFO, the record as one JSON line,
so an id with CR/LF cannot forge a log line) and to the ``on_event`` callback
when one is configured. Records carry ids (``iss``, ``sub``, ``sid``,
``jti``), never a token.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from .tokens import Token

audit_log = logging.getLogger("signout.audit")
log = logging.getLogger("signout")


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """What happened, to whom, and where from.

    ``event``: ``logout``, ``logout_all``, ``revocation``, ``rejected``,
    ``csrf_refused``, ``refresh_reuse``, ``refresh`` (a refresh token's use
    not recorded), ``backchannel_logout`` (``signout.backchannel``) or
    ``upstream_logout`` (the browser back from the OP, ``signout.rp_logout``: outcome
    ``returned``, or ``refused`` for a state not signed here or expired).
    ``outcome``: ``revoked``, ``nothing_revoked``,
    ``invalid_token``, ``invalid_request``, ``unauthenticated``,
    ``invalid_client``, ``store_error``, ``refused``, ``keys_unavailable`` (no usable signing keys
    from ``jwks_url``). ``count``: how many tokens the request revoked. ``upstream``
    (``logout`` and ``logout_all`` with ``upstream_logout`` only): what became of telling the
    identity provider, ``ok``, ``failed``, ``skipped`` (no verified token to send it, or
    nothing to send the browser to the OP for) or ``redirected`` (``RPInitiated``).
    """

    event: str
    outcome: str
    path: str
    client: str | None
    iss: str | None = None
    sub: str | None = None
    sid: str | None = None
    jti: str | None = None
    scope: str | None = None
    client_id: str | None = None
    reason: str | None = None
    count: int = 0
    upstream: str | None = None

    def as_dict(self) -> dict[str, object]:
        return {k: v for k, v in asdict(self).items() if v is not None}


Sink = Callable[[AuditEvent], None]


def ids(token: Token | None) -> dict[str, str | None]:
    if token is None:
        return {}
    return {"iss": token.iss or None, "sub": token.sub, "sid": token.sid, "jti": token.jti}


class Auditor:
    def __init__(self, on_event: Sink | None) -> None:
        self._on_event = on_event

    def __call__(self, event: AuditEvent) -> None:
        if audit_log.isEnabledFor(logging.INFO):
            audit_log.info(json.dumps(event.as_dict(), ensure_ascii=True, separators=(",", ":")))
        if self._on_event is not None:
            try:
                self._on_event(event)
            except Exception:
                # An audit sink that fails must not turn a logout into a 500.
                log.exception("signout: the on_event callback raised; the event was still logged")


class OutageLog:
    """Logs failing store checks: the first at once, then at most one line per ``every`` seconds
    with a count.

    During an outage every guarded request fails the same way; one line per
    request would bury the logs (and the 503s already say it to clients).
    """

    def __init__(self, every: float = 10.0, *, letting_through: bool = False) -> None:
        self._every = every
        self._next = 0.0
        self._skipped = 0
        #: What a failed check means for requests, as the log lines say it.
        self.effect = (
            "requests are let through unchecked (on_store_error='allow')"
            if letting_through
            else "requests with a token get 503 until it answers"
        )

    def warn(self, reason: str) -> None:
        now = time.monotonic()
        if now < self._next:
            self._skipped += 1
            return
        if self._skipped:
            log.warning(
                "signout: revocation check failed: %s; %d more failed since the last report; %s",
                reason,
                self._skipped,
                self.effect,
            )
        else:
            log.warning("signout: revocation check failed: %s; %s", reason, self.effect)
        self._next, self._skipped = now + self._every, 0
