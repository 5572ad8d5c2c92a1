"""Whether the storage is failing, when to try it again, and the outage to report.

A pure state machine driven by the HLS writer (under its lock) with explicit times, so
that backoff and reporting are tested without sleeping:

- the first failed write makes the storage *failing*: no new write starts except one
  probe at a time, the first after `retry_initial_seconds`, then doubling up to
  `retry_max_seconds`; any successful write ends the failing period;
- a write that started before a failing period ended and fails after it is stale news
  of that period (a connection cut during the outage, answering late): it is retried
  but starts no new failing period;
- the *outage* is reported once (`StorageOutage`, with the first failure's reason) and
  ends (`StorageRecovered`) once the storage answers again and every segment that was
  delayed by it is stored.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Literal

STORAGE_OUTAGE = "StorageOutage"
STORAGE_RECOVERED = "StorageRecovered"


class StorageHealth:
    """Failing state, probe scheduling and outage events of one HLS writer; not thread-safe."""

    def __init__(self, retry_initial_seconds: float, retry_max_seconds: float) -> None:
        if retry_initial_seconds <= 0:
            raise ValueError("retry_initial_seconds must be positive")
        self._initial = retry_initial_seconds
        self._max = max(retry_max_seconds, retry_initial_seconds)
        self.failing = False
        self.last_error = ""
        self.retry_delay = retry_initial_seconds
        self._next_try_at = 0.0
        self._probe: Hashable | None = None
        self._outage_since: float | None = None
        self._delayed: set[Hashable] = set()
        self._delayed_stored = 0
        self._events: list[tuple[str, str]] = []
        self._periods_ended = 0  # failing periods over so far
        self._started_in: dict[Hashable, int] = {}  # write in flight -> _periods_ended then

    @property
    def in_outage(self) -> bool:
        """Between the StorageOutage and the StorageRecovered events."""
        return self._outage_since is not None

    def wait_seconds(self, now: float) -> float | None:
        """0 when a write may start now; else how long until the next probe (None: until
        the probe in flight ends)."""
        if not self.failing:
            return 0.0
        if self._probe is not None:
            return None
        return max(0.0, self._next_try_at - now)

    def started(self, item: Hashable) -> None:
        """A write of `item` starts; while failing it is the probe."""
        self._started_in[item] = self._periods_ended
        if self.failing and self._probe is None:
            self._probe = item

    def succeeded(self, item: Hashable, now: float) -> None:
        self._started_in.pop(item, None)
        if self._probe is item:
            self._probe = None
        if self.failing:
            self.failing = False
            self._periods_ended += 1
            self.retry_delay = self._initial
        self._check_recovered(now)

    def abandoned(self, item: Hashable) -> None:
        """A write of `item` ended without reaching the storage (nothing learned)."""
        self._started_in.pop(item, None)
        if self._probe is item:
            self._probe = None

    def failed(self, item: Hashable, reason: str, now: float) -> Literal["new", "probe", "other"]:
        """A write failed. "new": a failing period starts (mark what is pending as
        delayed); "probe": the probe failed and the next try was pushed back;
        "other": a write that was already in flight when the failing began, or that
        started before the last failing period ended (stale news of that period)."""
        self.last_error = reason
        started_in = self._started_in.pop(item, self._periods_ended)
        was_probe = self._probe is item
        if was_probe:
            self._probe = None
        if not self.failing and started_in < self._periods_ended:
            return "other"
        if not self.failing:
            self.failing = True
            self.retry_delay = self._initial
            self._next_try_at = now + self.retry_delay
            if self._outage_since is None:
                self._outage_since = now
                self._events.append((STORAGE_OUTAGE, reason))
            return "new"
        if was_probe:
            self.retry_delay = min(self.retry_delay * 2, self._max)
            self._next_try_at = now + self.retry_delay
            return "probe"
        return "other"

    def delay(self, segment: Hashable) -> None:
        """`segment` is pending while the storage fails: it counts until stored."""
        self._delayed.add(segment)

    def stored(self, segment: Hashable, now: float) -> None:
        if segment in self._delayed:
            self._delayed.discard(segment)
            self._delayed_stored += 1
        self._check_recovered(now)

    def dropped(self, segment: Hashable, now: float) -> None:
        """`segment` will never be stored (its spool file is gone)."""
        self._delayed.discard(segment)
        self._check_recovered(now)

    def take_events(self) -> list[tuple[str, str]]:
        """(status, message) to report, oldest first; each is returned once."""
        events, self._events = self._events, []
        return events

    def _check_recovered(self, now: float) -> None:
        if self._outage_since is None or self.failing or self._delayed:
            return
        seconds = now - self._outage_since
        self._events.append(
            (
                STORAGE_RECOVERED,
                f"uploaded {self._delayed_stored} delayed segments after {seconds:.1f} s",
            )
        )
        self._outage_since = None
        self._delayed_stored = 0
