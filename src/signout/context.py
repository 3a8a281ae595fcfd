"""What the request handlers beside the engine need of it: ``Context``.

The revocation endpoint (``signout.endpoint``) and refresh token rotation
(``signout.rotation``) are parts of ``core.Engine``'s decisions kept in
modules of their own. They take the engine as a ``Context``, which
``Engine`` satisfies by its shape, so they never import ``signout.core``
and ``core`` importing them makes no cycle.
"""

from __future__ import annotations

from typing import Protocol

from .answers import Answers
from .config import Settings
from .rules import Policy
from .tokens import Token
from .web import Request


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
