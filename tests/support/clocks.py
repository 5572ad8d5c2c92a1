"""A clock tests step: `FakeClock`, a `media.clock.Clock` that moves only when told."""

from __future__ import annotations

import itertools
import threading
import time
import weakref

START_UNIX = 1_795_000_000.0  # 2026-11-17, a Tuesday
_REAL_GUARD_SECONDS = 0.5  # a waiter re-checks this often in real time (lost-wakeup guard)


class _FakeCondition(threading.Condition):
    """A condition whose `wait(timeout)` counts in its clock's time."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self._clock = clock
        self._asleep: set[int] = set()  # waiters not notified since they began waiting
        self._tokens = itertools.count()

    @property
    def asleep(self) -> int:
        return len(self._asleep)

    def wait(self, timeout: float | None = None) -> bool:
        token = next(self._tokens)
        deadline = None if timeout is None else self._clock.monotonic() + timeout
        self._asleep.add(token)
        self._clock.waiting_changed()
        try:
            while True:
                if deadline is not None and self._clock.monotonic() >= deadline:
                    return False
                if super().wait(_REAL_GUARD_SECONDS) or token not in self._asleep:
                    return True
        finally:
            self._asleep.discard(token)

    def notify(self, n: int = 1) -> None:
        # Every waiter is woken (spurious wakeups are allowed): none counts as asleep.
        self._asleep.clear()
        super().notify(len(self._waiters))  # type: ignore[attr-defined]

    def notify_all(self) -> None:
        self.notify()


class FakeClock:
    """A `media.clock.Clock` that moves only when a test calls `advance`.

    Conditions it makes wait in its time: a `wait(timeout)` returns once `advance` has
    passed the timeout (or on a notify). `settle(n)` waits, in real time, until `n`
    threads wait on its conditions with nothing notified since: the code under test has
    done everything it can do at the current time.
    """

    def __init__(self, start_unix: float = START_UNIX) -> None:
        self._now = 0.0
        self._start_unix = start_unix
        self._lock = threading.Lock()
        self._conditions: weakref.WeakSet[_FakeCondition] = weakref.WeakSet()
        self._quiet = threading.Condition()

    def monotonic(self) -> float:
        with self._lock:
            return self._now

    def unix(self) -> float:
        return self._start_unix + self.monotonic()

    def condition(self) -> threading.Condition:
        condition = _FakeCondition(self)
        with self._lock:
            self._conditions.add(condition)
        return condition

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds
            conditions = list(self._conditions)
        for condition in conditions:  # not under self._lock: waiters read the time
            with condition:
                condition.notify_all()

    def waiting_changed(self) -> None:
        with self._quiet:
            self._quiet.notify_all()

    def asleep(self) -> int:
        with self._lock:
            conditions = list(self._conditions)
        return sum(c.asleep for c in conditions)

    def settle(self, waiters: int, timeout_seconds: float = 10.0) -> None:
        """Wait until `waiters` threads sleep on this clock's conditions."""
        deadline = time.monotonic() + timeout_seconds
        with self._quiet:
            while self.asleep() < waiters:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"{self.asleep()} of {waiters} threads settled")
                self._quiet.wait(min(remaining, 0.05))

    def step(self, seconds: float, waiters: int) -> None:
        """Advance by `seconds`, then settle."""
        self.advance(seconds)
        self.settle(waiters)
