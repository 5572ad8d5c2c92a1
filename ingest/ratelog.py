"""Rate-limited logging: what strangers can trigger must not flood the log.

`RateLimitedLog` writes at most `lines_per_interval` lines per key (a *reason*, such
as "refused" or "handshake") in each window of `interval_seconds`; the lines it holds
back are counted and reported in one summary line, "suppressed K similar lines",
written when the window is over (at the next line of that key, or by `flush()`, which
the owner calls from a timer while `suppressing` is true). Keys must come from a small
fixed set chosen by the code, never from what a peer sent; past `max_keys` they share
one key, so the state stays bounded whatever happens.

Not thread-safe: use it from one thread (the event loop). The clock is a parameter.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

OVERFLOW_KEY = "(other)"


@dataclass
class _Window:
    started_at: float
    written: int = 0
    suppressed: int = 0
    suppressed_level: int = logging.NOTSET


class RateLimitedLog:
    """At most `lines_per_interval` lines per key and interval, then one summary line."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        lines_per_interval: int = 10,
        interval_seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        prefix: str = "",
        max_keys: int = 32,
    ) -> None:
        if lines_per_interval < 1:
            raise ValueError("lines_per_interval must be at least 1")
        if not interval_seconds > 0:
            raise ValueError("interval_seconds must be positive")
        self.logger = logger
        self.lines_per_interval = lines_per_interval
        self.interval_seconds = interval_seconds
        self.clock = clock
        self.prefix = prefix  # put before summary lines, e.g. "[rtmp] "
        self.max_keys = max(1, max_keys)
        self.suppressed_total = 0  # lines held back since construction
        self._windows: dict[str, _Window] = {}

    @property
    def suppressing(self) -> bool:
        """Some lines were held back and their summary is not written yet."""
        return any(w.suppressed for w in self._windows.values())

    def log(
        self,
        key: str,
        level: int,
        msg: str,
        *args: object,
        exc_info: BaseException | None = None,
    ) -> bool:
        """Log `msg % args` unless `key` used up its lines in this window; True if written."""
        if not self.logger.isEnabledFor(level):
            return False
        now = self.clock()
        if key not in self._windows and len(self._windows) >= self.max_keys - 1:
            self.flush()  # forget windows that are over before merging keys
            if len(self._windows) >= self.max_keys - 1:
                key = OVERFLOW_KEY  # the last of the max_keys windows
        window = self._windows.get(key)
        if window is not None and now >= window.started_at + self.interval_seconds:
            self._summarize(key, window, now)
            window = None
        if window is None:
            window = self._windows[key] = _Window(started_at=now)
        if window.written < self.lines_per_interval:
            window.written += 1
            self.logger.log(level, msg, *args, exc_info=exc_info)
            return True
        window.suppressed += 1
        window.suppressed_level = max(window.suppressed_level, level)
        self.suppressed_total += 1
        return False

    def flush(self, *, force: bool = False) -> None:
        """Write the summary of every window that is over (of every window with `force`)
        and forget those windows."""
        now = self.clock()
        for key, window in list(self._windows.items()):
            if force or now >= window.started_at + self.interval_seconds:
                self._summarize(key, window, now)
                del self._windows[key]

    def _summarize(self, key: str, window: _Window, now: float) -> None:
        if not window.suppressed:
            return
        elapsed = max(now - window.started_at, 0.0)
        self.logger.log(
            window.suppressed_level,
            "%ssuppressed %d similar lines (%s) in the last %.0f s",
            self.prefix,
            window.suppressed,
            key,
            elapsed,
        )
