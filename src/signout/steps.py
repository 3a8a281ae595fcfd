"""The steps the sans-IO engine hands its adapters (see ``signout.core``).

``Pass`` and ``Respond`` end a request; ``Read``, ``Fetch`` and ``Commit`` ask
the adapter for one piece of I/O and carry the function to call with its
result. An adapter is a loop over these five, nothing more.

They are never edited once made, but not frozen: one or two are made on every
request, and a frozen dataclass costs four times as much to build.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .http import Answer
from .layout import Lookup, Write
from .tokens import Token

Row = Sequence[bytes | str | None]


@dataclass(slots=True)
class Pass:
    """Hand the request to the app, with the verified token if there is one."""

    token: Token | None = None


@dataclass(slots=True)
class Respond:
    """Send this answer; the app never sees the request."""

    answer: Answer


@dataclass(slots=True)
class Read:
    """Read the request body, at most ``limit`` bytes; resume with ``None`` if it is longer."""

    limit: int
    resume: Callable[[bytes | None], Step]


@dataclass(slots=True)
class Fetch:
    """Read these store fields; resume with the rows, or ``None`` if the store failed."""

    lookups: tuple[Lookup, ...]
    now: float
    resume: Callable[[Sequence[Row] | None], Step]


@dataclass(slots=True)
class Commit:
    """Write these revocations; resume with whether every one was written."""

    writes: tuple[Write, ...]
    now: float
    resume: Callable[[bool], Step]


Step = Pass | Respond | Read | Fetch | Commit
