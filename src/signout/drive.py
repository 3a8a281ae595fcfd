"""Plans written once for sync and async callers.

A plan is a generator: it yields each piece of I/O it needs, is sent that I/O's
result, and returns its value. ``run_sync`` does the I/O in this thread, ``run``
awaits it; the ``io`` function they are given does one piece. These two drivers
are the only place where the sync and the async forms of a plan differ: the
plan's decisions (what to ask, what an answer means) exist once.

An exception raised by ``io`` reaches the caller as it is (it is not thrown
into the plan).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from typing import TypeVar

_Need = TypeVar("_Need")
_Got = TypeVar("_Got")
_T = TypeVar("_T")


def run_sync(plan: Generator[_Need, _Got, _T], io: Callable[[_Need], _Got]) -> _T:
    """Drive ``plan`` to its end, doing each piece of I/O it yields with ``io`` in this thread."""
    try:
        need = next(plan)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]  # the plan's return value
    while True:
        got = io(need)  # outside the try: a StopIteration of io's is not the plan's end
        try:
            need = plan.send(got)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]


async def run(plan: Generator[_Need, _Got, _T], io: Callable[[_Need], Awaitable[_Got]]) -> _T:
    """``run_sync`` for async callers: each piece of I/O is awaited."""
    try:
        need = next(plan)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    while True:
        got = await io(need)
        try:
            need = plan.send(got)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
