"""Waiting in tests: poll a condition with a deadline, never sleep and hope.

One contract, sync and async alike: `predicate` is polled every 10 ms until it is
true; past `timeout_seconds` the test fails with an AssertionError that says what it
was waiting for.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

POLL_SECONDS = 0.01


def _timed_out(predicate: Callable[[], object], seconds: float, what: str) -> AssertionError:
    return AssertionError(f"timed out after {seconds}s waiting for {what or predicate}")


def wait_until(
    predicate: Callable[[], object], timeout_seconds: float = 20.0, what: str = ""
) -> None:
    """Poll `predicate` until true; raise AssertionError after `timeout_seconds`."""
    deadline = time.monotonic() + timeout_seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise _timed_out(predicate, timeout_seconds, what)
        time.sleep(POLL_SECONDS)


async def async_wait_until(
    predicate: Callable[[], object], timeout_seconds: float = 20.0, what: str = ""
) -> None:
    """`wait_until` on an event loop: the loop runs on while it polls."""
    deadline = time.monotonic() + timeout_seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise _timed_out(predicate, timeout_seconds, what)
        await asyncio.sleep(POLL_SECONDS)
