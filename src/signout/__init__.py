"""signout: a real logout for JWT-based web apps (ASGI and WSGI middleware)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import upstream
from .asgi import SignOutMiddleware
from .audit import AuditEvent
from .errors import (
    BadSignature,
    ConfigError,
    DisallowedAlgorithm,
    ExpiredToken,
    ImmatureToken,
    InvalidClaim,
    MalformedToken,
    SignOutError,
    StoreError,
    TokenError,
)
from .revoker import Revoker
from .stores.memory import MemoryStore
from .wiring import CLAIMS_KEY, REVOKER_KEY
from .wsgi import SignOutWSGIMiddleware

if TYPE_CHECKING:
    from .stores.redis import RedisStore

__all__ = [
    "CLAIMS_KEY",
    "REVOKER_KEY",
    "AuditEvent",
    "BadSignature",
    "ConfigError",
    "DisallowedAlgorithm",
    "ExpiredToken",
    "ImmatureToken",
    "InvalidClaim",
    "MalformedToken",
    "MemoryStore",
    "RedisStore",
    "Revoker",
    "SignOutError",
    "SignOutMiddleware",
    "SignOutWSGIMiddleware",
    "StoreError",
    "TokenError",
    "upstream",
]
# The one place the version lives: a plain literal, which setuptools reads without importing
# signout (pyproject.toml, [tool.setuptools.dynamic]) to write the distribution's metadata.
__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    if name == "RedisStore":
        from .stores.redis import RedisStore

        return RedisStore
    raise AttributeError(name)
