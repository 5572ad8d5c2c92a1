"""The spool's limits for one writer: its job's bytes and its share of the host's, and
the `SpoolFull` report of what was given up for them.

When a new segment would pass a limit, the writer gives up the oldest segments not yet
uploaded (never one in flight) until it fits (`packager.hls.writer`); this class counts
the bytes and words the report: at once, then at most every `SPOOL_REPORT_SECONDS` of
the writer's clock while it goes on (and whatever is left at the end). Not thread-safe:
the writer calls it with its lock held (`SpoolBudget`, shared by every job, has its own).
"""

from __future__ import annotations

from media.clock import Clock
from packager.spool import SpoolBudget

SPOOL_FULL = "SpoolFull"  # segments given up for the spool's limits
SPOOL_REPORT_SECONDS = 30.0
_NAMES_SHOWN = 20


class SpoolLimits:
    """Bytes this writer keeps spooled, against its own limit and the host's budget."""

    def __init__(self, max_bytes: int | None, budget: SpoolBudget | None, clock: Clock) -> None:
        self.max_bytes = max_bytes
        self.budget = budget or SpoolBudget(None)
        self.spooled_bytes = 0  # this writer's share of the budget
        self._clock = clock
        self._unreported: list[str] = []
        self._reported_at: float | None = None

    def take(self, size: int) -> bool:
        """Reserve `size` bytes; False (nothing reserved) when a limit would be passed."""
        if self.max_bytes is not None and self.spooled_bytes + size > self.max_bytes:
            return False
        if not self.budget.take(size):
            return False
        self.spooled_bytes += size
        return True

    def take_anyway(self, size: int) -> None:
        """Count bytes already on disk (a leftover's): counted, never refused."""
        self.spooled_bytes += size
        self.budget.take(size)

    def release(self, size: int) -> None:
        self.spooled_bytes = max(0, self.spooled_bytes - size)
        self.budget.give(size)

    def given_up(self, name: str) -> None:
        """`name` (`rendition/seg_000042.ts`) was given up: to report."""
        self._unreported.append(name)

    def report(self, *, flush: bool = False) -> str | None:
        """The SpoolFull message naming what was given up, when one is due."""
        if not self._unreported:
            return None
        now = self._clock.monotonic()
        last = self._reported_at
        if not flush and last is not None and now - last < SPOOL_REPORT_SECONDS:
            return None
        self._reported_at = now
        names, self._unreported = self._unreported, []
        limit = "" if self.max_bytes is None else f"{self.max_bytes} bytes per job"
        host = "" if self.budget.max_bytes is None else f"{self.budget.max_bytes} in all"
        limits = " / ".join(x for x in (limit, host) if x)
        shown = ", ".join(names[:_NAMES_SHOWN])
        if len(names) > _NAMES_SHOWN:
            shown += f" and {len(names) - _NAMES_SHOWN} more"
        return (
            f"spool limit reached ({limits}): gave up {len(names)} segments not yet "
            f"uploaded, oldest first: {shown}"
        )
