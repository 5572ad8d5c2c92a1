"""One track of a live, published to any number of readers (mediamtx's `stream`).

A `Broadcast` is fed by one stage (the decoder's frames, the source's packets, the
ladder's encoded packets) and read by any number of others, each through its own
`Reader`: a queue bounded by items and by bytes. A reader that is full drops the
item for itself only and counts it (`Reader.dropped`, per kind; "reader X too slow,
dropped N" logged when a burst ends, every 2 s while one goes on, and at the end);
nothing a reader does slows the stage that feeds the track or the other readers,
except a pacing reader, below. Control items (a session's start and end) are never dropped;
a reader whose queue fills with them too has stopped reading and is dropped from the
live (its `get()` then ends with `QueueClosed`).

A reader that joins mid-live gets the track's configuration first (the last item
`is_config` said so of, per stream: a session start, a rendition's codec
parameters), then each stream's items from its next keyframe on (`is_keyframe`). A reader of packets
(`resync_after_drop`) that had to drop one skips until the next keyframe too: a
decoder cannot use what follows a lost reference frame.

One kind of reader may hold its feeder back: a pacing reader (`paces=True`, the
ladder encoder on the decoded frames) is waited for, up to the `wait_until` the
feeding stage gives `put()` (the decoder gives it while its source is ahead of real
time: a file pushed as fast as it goes is encoded whole, at the ladder's speed, and a
real-time source that the ladder cannot follow still drops, so latency stays
bounded). Readers that do not pace are never waited for.

A reader, in ten lines::

    reader = live.frames.subscribe("thumbnails", max_items=30, max_bytes=16 << 20)
    try:
        while True:
            item = reader.get(timeout=0.5)      # None: nothing for half a second
            if isinstance(item, av.VideoFrame):
                save_thumbnail(item)
    except QueueClosed:                         # the live ended, all was read
        pass
    finally:
        reader.close()                          # unsubscribe (idempotent)
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from media.clock import SYSTEM_CLOCK, Clock

logger = logging.getLogger(__name__)

T = TypeVar("T")
LONG_BURST_SECONDS = 2.0  # a burst still going on is reported this often
STUCK_EXTRA_ITEMS = 256  # control items past a full queue: the reader has stopped


class QueueClosed(EOFError):
    """Raised by `Reader.get()` once the broadcast ended and the reader is drained."""


@dataclass(frozen=True)
class TrackRules(Generic[T]):
    """What a broadcast needs to know about its items."""

    size_of: Callable[[T], int] = lambda item: 0  # bytes held (frames, payloads)
    kind_of: Callable[[T], str] = lambda item: "item"  # for the drop counters
    is_control: Callable[[T], bool] = lambda item: False  # never dropped
    is_config: Callable[[T], bool] = lambda item: False  # replayed to late readers
    is_keyframe: Callable[[T], bool] = lambda item: True  # where a late reader starts
    resync_after_drop: bool = False  # packets: after a drop, wait for a keyframe
    # The stream an item belongs to (a rendition of a ladder): keyframes, resyncs and
    # late starts are per stream.
    stream_of: Callable[[T], str] = lambda item: ""


@dataclass
class _Burst:
    dropped: int = 0
    first_kind: str = ""
    since: float = 0.0  # when it started, or was last reported (the broadcast's clock)


@dataclass(eq=False)
class Reader(Generic[T]):
    """One reader's queue of a broadcast; read from one thread."""

    name: str
    max_items: int
    max_bytes: int | None
    _broadcast: Broadcast[T]
    paces: bool = False  # its feeder waits for room, up to put()'s wait_until
    _late: bool = False  # joined mid-live: each stream starts at its next keyframe
    _started: set[str] = field(default_factory=set)  # streams a late reader started
    _resync: set[str] = field(default_factory=set)  # streams waiting after a drop
    _items: collections.deque[tuple[T, int]] = field(default_factory=collections.deque)
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _closed: bool = False
    _feeder_waiting: bool = False
    queued_bytes: int = 0
    peak_bytes: int = 0
    received: int = 0  # items taken into the queue, ever
    dropped: collections.Counter[str] = field(default_factory=collections.Counter)
    _burst: _Burst = field(default_factory=_Burst)

    def _offer(self, item: T, size: int) -> bool:
        """From the feeding stage: enqueue or drop (never waits)."""
        rules = self._broadcast.rules
        control = rules.is_control(item)
        report: _Burst | None = None
        with self._cond:
            if self._closed:
                return False
            if not control:
                stream = rules.stream_of(item)
                if (self._late and stream not in self._started) or stream in self._resync:
                    if not rules.is_keyframe(item):
                        return False  # not a drop: this stream has not (re)started yet
                    self._started.add(stream)
                    self._resync.discard(stream)
            full = self._full(size)
            if control and len(self._items) >= self.max_items + STUCK_EXTRA_ITEMS:
                # Full of what it may never drop: this reader has stopped reading.
                self._closed = stuck = True
                self._cond.notify_all()
            else:
                stuck = False
            taken = not stuck and (control or not full)
            if taken:
                self._items.append((item, size))
                self.received += 1
                self.queued_bytes += size
                self.peak_bytes = max(self.peak_bytes, self.queued_bytes)
                self._cond.notify()
                if self._burst.dropped and not control:  # the burst is over: how long?
                    report, self._burst = self._burst, _Burst()
            else:
                kind = rules.kind_of(item)
                self.dropped[kind] += 1
                now = self._broadcast.clock.monotonic()
                if not self._burst.dropped:
                    self._burst.first_kind = kind
                    self._burst.since = now
                self._burst.dropped += 1
                if rules.resync_after_drop:
                    self._resync.add(rules.stream_of(item))
                if now - self._burst.since >= LONG_BURST_SECONDS:  # still going on
                    report, self._burst = self._burst, _Burst(first_kind=kind, since=now)
        if report is not None:
            self._broadcast.report_drops(self, report.dropped, report.first_kind)
        if stuck:
            logger.warning(
                "[%s] reader %s stopped reading: dropped from the live",
                self._broadcast.label,
                self.name,
            )
            self._broadcast.unsubscribe(self)
        return taken

    def _full(self, size: int) -> bool:
        """Under the lock: whether an item of `size` bytes finds no room."""
        return len(self._items) >= self.max_items or (
            self.max_bytes is not None
            and bool(self._items)
            and self.queued_bytes + size > self.max_bytes
        )

    def _wait_for_room(self, size: int, deadline: float) -> None:
        """From the feeding stage, for a pacing reader: until an item of `size` fits,
        the reader ends, or `deadline` (the broadcast's clock) passes."""
        clock = self._broadcast.clock
        with self._cond:
            while not self._closed and self._full(size):
                left = deadline - clock.monotonic()
                if left <= 0:
                    return
                self._feeder_waiting = True
                self._cond.wait(left)
            self._feeder_waiting = False

    def get(self, timeout: float | None = None) -> T | None:
        """The next item; None on timeout; `QueueClosed` once ended and drained."""
        with self._cond:
            if not self._items and not self._closed:
                self._cond.wait(timeout)
            if self._items:
                item, size = self._items.popleft()
                self.queued_bytes -= size
                if self._feeder_waiting:
                    self._cond.notify_all()
                return item
            if self._closed:
                raise QueueClosed(f"{self._broadcast.label} ended for {self.name}")
            return None

    def end(self) -> None:
        """No more items for this reader: it drains what it has, then `QueueClosed`
        (a burst of drops not yet reported is reported now)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            report, self._burst = self._burst, _Burst()
        if report.dropped:
            self._broadcast.report_drops(self, report.dropped, report.first_kind)

    def close(self) -> None:
        """Unsubscribe: the reader gets nothing more (idempotent)."""
        self.end()
        self._broadcast.unsubscribe(self)

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)


class Broadcast(Generic[T]):
    """One track: `put()` hands each item to every reader's own bounded queue.

    `on_drop(reader_name, count, kind)` is called at the end of each burst of drops
    (from the feeding thread), as the log line is written.
    """

    def __init__(
        self,
        label: str,
        rules: TrackRules[T] | None = None,
        *,
        on_drop: Callable[[str, int, str], None] | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.label = label
        self.clock = clock
        self.rules: TrackRules[T] = rules or TrackRules()
        self._on_drop = on_drop
        self._lock = threading.Lock()
        self._readers: list[Reader[T]] = []
        self._configs: dict[str, T] = {}  # the last configuration of each stream
        self._closed = False

    def subscribe(
        self,
        name: str,
        *,
        max_items: int,
        max_bytes: int | None = None,
        late: bool = True,
        paces: bool = False,
    ) -> Reader[T]:
        """A new reader. With `late` (the default) and a live already under way, it
        starts with the track's configuration, then at the next keyframe. With
        `paces`, `put()` waits for room in it (up to its `wait_until`)."""
        reader: Reader[T] = Reader(name, max(1, max_items), max_bytes, self, paces=paces)
        with self._lock:
            if self._closed:
                reader.end()
                return reader
            if late and self._configs:
                for config in self._configs.values():
                    reader._offer(config, self.rules.size_of(config))
                reader._late = True
            self._readers.append(reader)
        return reader

    def unsubscribe(self, reader: Reader[T]) -> None:
        with self._lock:
            if reader in self._readers:
                self._readers.remove(reader)

    def put(self, item: T, wait_until: float | None = None) -> bool:
        """Publish `item` to every reader; False if no reader took it (or ended).

        `wait_until` (this broadcast's `clock.monotonic()`): how long the caller may be
        held for its pacing readers to make room; without it nobody waits."""
        rules = self.rules
        size = rules.size_of(item)
        with self._lock:
            if self._closed:
                return False
            if rules.is_config(item):
                self._configs[rules.stream_of(item)] = item
            readers = list(self._readers)
        if wait_until is not None and not rules.is_control(item):
            for reader in readers:
                if reader.paces:
                    reader._wait_for_room(size, wait_until)
        taken = False
        for reader in readers:
            taken = reader._offer(item, size) or taken
        return taken

    def close(self) -> None:
        """The live ended: every reader drains its queue, then gets `QueueClosed`."""
        with self._lock:
            self._closed = True
            readers = list(self._readers)
        for reader in readers:
            reader.end()

    @property
    def readers(self) -> list[Reader[T]]:
        with self._lock:
            return list(self._readers)

    def report_drops(self, reader: Reader[T], count: int, kind: str) -> None:
        logger.warning(
            "[%s] reader %s too slow, dropped %d (%s first)", self.label, reader.name, count, kind
        )
        if self._on_drop is not None:
            try:
                self._on_drop(reader.name, count, kind)
            except Exception:
                logger.exception("[%s] on_drop failed", self.label)
