"""What the request handlers beside the engine need of it: ``Context``.

The revocation endpoint (``signout.endpoint``), refresh token rotation
(``signout.rotation``), the back-channel receiver (``signout.backchannel``) and
the logout routes (``signout.logout``) are parts of ``core.Engine``'s decisions
kept in modules of their own. They take the engine as a ``Context`` (the logout
routes as a ``Judge``, which also finds and verifies tokens), which ``Engine``
satisfies by its shape, so they never import ``signout.core`` and ``core``
importing them makes no cycle.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from .answers import Answers
from .config import Settings
from .layout import Lookup
from .rp_logout import RPLogout
from .rules import Policy
from .steps import Row, Step
from .tokens import Source, Token
from .web import Answer, Request


class Context(Protocol):
    """The engine as a handler sees it: its settings, answers and store policy, and its audit."""

    @property
    def settings(self) -> Settings: ...

    @property
    def answers(self) -> Answers: ...

    @property
    def policy(self) -> Policy: ...

    def event(self, request: Request, event: str, outcome: str, token: Token | None = None, **more: object) -> None:
        """Record an audit event about ``request`` (and ``token``, when there is one)."""


class Judge(Context, Protocol):
    """The engine as the logout routes see it: a ``Context`` that also finds a request's tokens,
    reads the store, and fetches keys when a token's key is not at hand."""

    @property
    def check_kinds(self) -> bool:
        """``check_token_type``: tokens are accepted only where their kind belongs."""

    @property
    def keys_unavailable(self) -> Answer:
        """The answer when a token's signing keys are unavailable (503)."""

    @property
    def rp(self) -> RPLogout | None:
        """OIDC RP-Initiated Logout, when ``upstream_logout`` is ``RPInitiated``."""

    def presented(self, request: Request, *, all_cookies: bool) -> tuple[list[tuple[Source, str]], bool]:
        """The raw tokens of a request, and whether its Authorization header was unusable."""

    def keyed(self, decide: Callable[[], Step], request: Request, event: str, unavailable: Answer) -> Step:
        """``decide``, which verifies tokens; a ``Keys`` step first when a token's key may be fetched."""

    def fetch(self, lookups: tuple[Lookup, ...], now: float, resume: Callable[[Sequence[Row] | None], Step]) -> Step:
        """Read the store, then ``resume`` with its rows (``None``: the store failed)."""
