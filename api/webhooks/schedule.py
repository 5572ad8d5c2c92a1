"""When a failed delivery is tried again: exponential backoff with full jitter, until
its event is `retry_seconds` old (24 h by default), then it is given up."""

from __future__ import annotations

import random
from collections.abc import Callable

# The delay before attempt n+1 is drawn from [0, min(MAX_DELAY, initial * 2**(n-1))].
MAX_DELAY_SECONDS = 3600.0


def retry_delay_seconds(
    attempts: int,
    initial_seconds: float,
    *,
    max_seconds: float = MAX_DELAY_SECONDS,
    uniform: Callable[[float, float], float] = random.uniform,
) -> float:
    """The wait after the `attempts`-th failed attempt (1 for the first): full jitter
    over an exponential bound (AWS's "full jitter": retries of many receivers spread out)."""
    if attempts < 1:
        raise ValueError("attempts counts from 1")
    bound = min(max_seconds, initial_seconds * 2.0 ** min(attempts - 1, 64))
    return uniform(0.0, bound)


def next_attempt_unix(
    attempts: int,
    now_unix: float,
    created_unix: float,
    *,
    initial_seconds: float,
    retry_seconds: float,
    uniform: Callable[[float, float], float] = random.uniform,
) -> float | None:
    """When to try again after the `attempts`-th failure at `now_unix`; None when that
    would be past `retry_seconds` after the event (`created_unix`): given up."""
    at = now_unix + retry_delay_seconds(attempts, initial_seconds, uniform=uniform)
    return at if at <= created_unix + retry_seconds else None
