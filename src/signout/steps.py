"""The steps the sans-IO engine hands its adapters (see ``signout.core``).

``Pass`` and ``Respond`` end a request; ``Read``, ``Fetch``, ``Commit``,
``Claim``, ``Keys`` and ``Upstream`` ask the adapter for one piece of I/O and
carry the function to call with its result. An adapter is a loop over these
eight, nothing more.

They are never edited once made, but not frozen: one or two are made on every
request, and a frozen dataclass costs four times as much to build.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

from .layout import Lookup, Write
from .tokens import Token
from .web import Answer

if TYPE_CHECKING:
    from .keyset import KeySet
    from .upstream import Call, Outcome

Row = Sequence[bytes | str | None]


@dataclass(slots=True)
class Pass:
    """Hand the request to the app, with the verified token if there is one.

    ``after``: when the app answers with a 2xx, the step to drive before that
    answer is sent (a refresh token's first use to record, ``refresh_rotation``);
    if it ends in ``Respond``, that answer is sent instead of the app's.
    """

    token: Token | None = None
    after: Callable[[], Step] | None = None


@dataclass(slots=True)
class Respond:
    """Send this answer; the app never sees the request."""

    answer: Answer


class Unread(Enum):
    """Why a body was not read whole."""

    TOO_LARGE = 413  # longer than the limit: read no further
    BROKEN = 400  # the stream failed (a malformed chunked body)


@dataclass(slots=True)
class Read:
    """Read the request body, at most ``limit`` bytes; resume with it, or with why it was not read."""

    limit: int
    resume: Callable[[bytes | Unread], Step]


@dataclass(slots=True)
class Fetch:
    """Read these store fields; resume with the rows, or ``None`` if the store failed."""

    lookups: tuple[Lookup, ...]
    now: float
    resume: Callable[[Sequence[Row] | None], Step]


class Written(Enum):
    """What became of a ``Commit``'s writes."""

    YES = "written"
    NO = "not written"  # refused, or never sent: nothing was applied
    # Timed out or cut off after sending: Redis may still apply it. The answer
    # must say "may not have been recorded", never "was not".
    UNSURE = "unsure"


@dataclass(slots=True)
class Commit:
    """Write these revocations; resume with what became of them."""

    writes: tuple[Write, ...]
    now: float
    resume: Callable[[Written], Step]


@dataclass(slots=True)
class Claim:
    """Merge this claim (``layout.claim_value``); resume with what its field held before, or
    with ``failed`` True when the store could not say."""

    write: Write
    now: float
    resume: Callable[[bytes | str | None, bool], Step]


@dataclass(slots=True)
class Keys:
    """Refresh ``keyset`` (the keys at ``jwks_url``; a fetch under way is shared, and the rate
    limit may make it a no-op), then resume: a token named a key the set may hold after a fetch."""

    keyset: KeySet
    resume: Callable[[], Step]


@dataclass(slots=True)
class Upstream:
    """Make this call to the identity provider (``upstream_logout``), bounded by ``timeout``,
    off the event loop; resume with its outcome, ``"ok"`` or ``"failed"`` (never an exception)."""

    call: Call
    timeout: float
    resume: Callable[[Outcome], Step]


Step = Pass | Respond | Read | Fetch | Commit | Claim | Keys | Upstream
