"""Time in onair: the 90 kHz media clock, and the host clock stages take as a parameter.

Media time. Every timestamp on a job's output timeline, from the encoder's frames to
the finished segments, counts MPEG-TS's 90 kHz clock (`TICKS_PER_SECOND`); this module
is its one definition.

Host time. Anything that waits, retries or expires takes a `Clock` (STYLE.md "Time is a
parameter"): `monotonic()` for intervals, `unix()` for instants (a segment's wall-clock
arrival, `EXT-X-PROGRAM-DATE-TIME`), and `condition()` for the condition variable its
threads wait on, whose `wait(timeout)` counts in that clock's time. Production uses
`SYSTEM_CLOCK`; tests pass a clock they step, so that a simulated outage or a simulated
day runs in a fraction of a second.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from fractions import Fraction
from typing import Protocol

TICKS_PER_SECOND = 90_000
TICK_TIME_BASE = Fraction(1, TICKS_PER_SECOND)  # the time base of every output timestamp


def seconds_to_ticks(seconds: Fraction | float) -> int:
    """The nearest tick of `seconds`."""
    return round(Fraction(seconds) * TICKS_PER_SECOND)


def ticks_to_seconds(ticks: int) -> Fraction:
    """`ticks` in seconds, exactly."""
    return Fraction(ticks, TICKS_PER_SECOND)


def utc_instant(unix_seconds: float) -> datetime:
    """A Unix time as an aware UTC datetime."""
    return datetime.fromtimestamp(unix_seconds, UTC)


class Clock(Protocol):
    """The host's time, as a stage sees it."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (intervals, deadlines)."""

    def unix(self) -> float:
        """The wall clock, in Unix seconds (instants)."""

    def condition(self) -> threading.Condition:
        """A new condition variable whose `wait(timeout)` counts in this clock's time."""


class SystemClock:
    """The real clocks: `time.monotonic`, `time.time`, `threading.Condition`."""

    def monotonic(self) -> float:
        return time.monotonic()

    def unix(self) -> float:
        return time.time()

    def condition(self) -> threading.Condition:
        return threading.Condition()


SYSTEM_CLOCK = SystemClock()
