"""The HLS writer's ordered upload queue: worker threads, one at a time per object, and
the storage's health.

    add_segment ──> spool file ──> queue ──> N worker threads ──> storage
                                     │   (read-back first, then playlists, then segments)
                                     └── while the storage fails: one probe, with backoff

Workers take the oldest job of the highest priority (`packager.hls.items`); until the
earlier playlists are read back (`resumed`) only that read may run. A playlist is
rendered when a worker takes it (its latest content always wins, one write per key at a
time). When a write fails the storage is failing: every worker pauses and one probe
retries the oldest pending object with exponential backoff until it succeeds
(`packager.storage_health`, driven with the writer's clock, so tests step it).

What success, failure or a refusal *means* (a segment listed, an output failed) is the
writer's: it is the queue's `UploadHandler`. The queue and the writer share one
condition variable (made by the clock): every method here but `start` and `stop` is
called with it held, or takes it.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import logging
import threading
import time
from collections.abc import Iterable
from typing import Protocol

from media.clock import Clock
from packager.continuity import TsFormatError, clear_discontinuity
from packager.hls.items import (
    PLAYLIST_PRIORITY,
    RESUME_PRIORITY,
    SEGMENT_PRIORITY,
    Event,
    Job,
    PlaylistSlot,
    QueueItem,
    RenderedPlaylist,
    ResumeRead,
    Upload,
    about,
    health_item,
)
from packager.object_store import (
    PLAYLIST_CONTENT_TYPE,
    SEGMENT_CACHE_CONTROL,
    SEGMENT_CONTENT_TYPE,
    ObjectStore,
    PermanentStorageError,
    StorageError,
)
from packager.spool import Spool
from packager.storage_health import StorageHealth

logger = logging.getLogger(__name__)


class UploadHandler(Protocol):
    """What the queue's outcomes mean: the HLS writer. Methods marked (locked) are called
    with the shared condition held."""

    def prepare(self, item: QueueItem) -> Job:
        """(locked) `item` is taken: an upload's key, a playlist's content."""

    def read_back(self) -> object:
        """The read-back job: prepare the storage, read earlier playlists (raises
        `StorageError`)."""

    def resumed(self, result: object) -> list[Event]:
        """(locked) The read-back succeeded with `result`: uploads may start."""

    def upload_stored(self, upload: Upload) -> list[Event]:
        """(locked) A segment is stored."""

    def upload_lost(self, upload: Upload) -> list[Event]:
        """(locked) A segment's spool file is gone: it will never be stored."""

    def playlist_written(self, slot: PlaylistSlot, first_write: bool) -> list[Event]:
        """(locked) A playlist is written."""

    def pending_uploads(self) -> Iterable[Upload]:
        """(locked) Every segment not yet stored (delayed by an outage)."""

    def refused(self, job: Job, error: PermanentStorageError) -> None:
        """The storage refused `job` for good."""

    def emit(self, events: list[Event]) -> None:
        """Report events (called without the lock)."""


# Upper bounds (seconds) of the segment upload latency histogram's buckets.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class LatencyHistogram:
    """How long segment uploads took (one store call each, retries apart): bucket
    counts, sum and count, for a metric. Thread-safe."""

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.bounds = bounds
        self._counts = [0] * (len(bounds) + 1)  # the last: above every bound
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, seconds: float) -> None:
        index = bisect.bisect_left(self.bounds, seconds)
        with self._lock:
            self._counts[index] += 1
            self._sum += seconds

    def snapshot(self) -> tuple[list[tuple[str, int]], float]:
        """Cumulative (upper bound, count) pairs, "+Inf" last, and the sum."""
        with self._lock:
            counts, total = list(self._counts), self._sum
        cumulative, buckets = 0, []
        for bound, count in zip((*map(str, self.bounds), "+Inf"), counts, strict=True):
            cumulative += count
            buckets.append((bound, cumulative))
        return buckets, total


class UploadQueue:
    """Jobs in order, the workers that run them, and the storage's health."""

    def __init__(
        self,
        store: ObjectStore,
        bucket: str,
        spool: Spool,
        cond: threading.Condition,
        clock: Clock,
        health: StorageHealth,
        handler: UploadHandler,
        log_prefix: str,
    ) -> None:
        self._store = store
        self._bucket = bucket
        self._spool = spool
        self._cond = cond
        self._clock = clock
        self.health = health
        self._handler = handler
        self._log_prefix = log_prefix
        self.latency = LatencyHistogram()
        self._heap: list[tuple[int, int, QueueItem]] = []
        self._orders = itertools.count()
        self._workers: list[threading.Thread] = []
        self.resumed = False  # the earlier playlists are read back: uploads may start
        self.closed = False  # the workers stop taking jobs

    # -- queueing (locked) --------------------------------------------------------------

    def next_order(self) -> int:
        return next(self._orders)

    def push(self, item: Upload | ResumeRead) -> None:
        """Queue a segment (its `order` set) or the read-back."""
        if isinstance(item, ResumeRead):
            item.order = self.next_order()
            heapq.heappush(self._heap, (RESUME_PRIORITY, item.order, item))
        else:
            heapq.heappush(self._heap, (SEGMENT_PRIORITY, item.order, item))
        self._cond.notify_all()

    def mark_dirty(self, slot: PlaylistSlot) -> None:
        """`slot`'s content changed: write it (again) once no worker is writing it."""
        slot.dirty = True
        if not slot.queued and not slot.in_flight:
            slot.queued = True
            slot.order = self.next_order()
            heapq.heappush(self._heap, (PLAYLIST_PRIORITY, slot.order, slot))
            self._cond.notify_all()

    # -- workers ------------------------------------------------------------------------

    def start(self, workers: int) -> None:
        for index in range(workers):
            worker = threading.Thread(
                target=self._run_worker, name=f"hls-upload-{index}", daemon=True
            )
            self._workers.append(worker)
            worker.start()

    def stop(self, timeout_seconds: float) -> None:
        """Stop the workers, waiting at most `timeout_seconds` of real time in all (threads
        are joined in real time): a worker stuck in a storage call (its own timeouts
        bound it) is left to end by itself."""
        with self._cond:
            self.closed = True
            self._cond.notify_all()
            workers, self._workers = self._workers, []
        deadline = time.monotonic() + timeout_seconds
        current = threading.current_thread()
        for worker in workers:
            if worker is not current:
                worker.join(max(0.0, deadline - time.monotonic()))
        stuck = [w.name for w in workers if w.is_alive() and w is not current]
        if stuck:
            logger.warning("%s upload workers still in a storage call: %s", self._log_prefix, stuck)

    def _run_worker(self) -> None:
        try:
            while True:
                job = self._next_job()
                if job is None:
                    return
                self._run_job(job)
        except Exception:
            logger.exception("%s upload worker crashed", self._log_prefix)
            with self._cond:
                self._cond.notify_all()

    def _next_job(self) -> Job | None:
        with self._cond:
            while not self.closed:
                timeout: float | None = None
                while self._heap and _given_up(self._heap[0][2]):
                    heapq.heappop(self._heap)  # dropped for the spool's limits meanwhile
                # Until the earlier playlists are read back only that read may run.
                if self._heap and (self.resumed or isinstance(self._heap[0][2], ResumeRead)):
                    timeout = self.health.wait_seconds(self._clock.monotonic())
                    if timeout == 0:
                        job = self._take()
                        self.health.started(health_item(job))
                        return job
                self._cond.wait(timeout)
            return None

    def _take(self) -> Job:
        _, _, item = heapq.heappop(self._heap)
        if isinstance(item, Upload):
            item.in_flight = True
        elif isinstance(item, PlaylistSlot):
            item.queued = False
            item.dirty = False
            item.in_flight = True
        return self._handler.prepare(item)

    def _run_job(self, job: Job) -> None:
        result: object = None
        try:
            if isinstance(job, ResumeRead):
                result = self._handler.read_back()
            elif isinstance(job, Upload):
                data = job.data
                if data is None and job.spool_path is not None:
                    data = self._spool.read(job.spool_path)
                if data is None:
                    self._lost(job)
                    return
                if job.clear_indicators:
                    data = _without_indicators(data)
                started = self._clock.monotonic()
                self._store.put(
                    self._bucket, job.key, data, SEGMENT_CONTENT_TYPE, SEGMENT_CACHE_CONTROL
                )
                self.latency.observe(self._clock.monotonic() - started)
                if job.spool_path is not None:
                    self._spool.remove(job.spool_path)
                logger.debug("%s stored %s", self._log_prefix, job.key)
            else:
                self._store.put(
                    self._bucket, job.slot.key, job.body, PLAYLIST_CONTENT_TYPE, job.cache_control
                )
                logger.debug("%s wrote %s", self._log_prefix, job.slot.key)
        except PermanentStorageError as error:
            self._handler.refused(job, error)
        except StorageError as error:
            self._failed(job, str(error))
        except Exception as error:
            # A bug here must neither lose a segment nor leave a playlist in flight forever.
            logger.exception("%s unexpected error publishing", self._log_prefix)
            self._failed(job, f"unexpected error: {error!r}")
        else:
            self._succeeded(job, result)

    # -- outcomes -----------------------------------------------------------------------

    def _succeeded(self, job: Job, result: object) -> None:
        handler = self._handler
        with self._cond:
            now = self._clock.monotonic()
            was_failing = self.health.failing
            self.health.succeeded(health_item(job), now)
            if was_failing:
                logger.info("%s storage answers again", self._log_prefix)
            if isinstance(job, Upload):
                job.stored = True
                job.in_flight = False
                self.health.stored(job, now)
                events = handler.upload_stored(job)
            elif isinstance(job, RenderedPlaylist):
                slot = job.slot
                slot.in_flight = False
                first_write = not slot.written
                slot.written = True
                if slot.dirty:
                    self.mark_dirty(slot)
                events = handler.playlist_written(slot, first_write)
            else:
                events = handler.resumed(result)
            events = about(self.health.take_events(), None) + events
            self._cond.notify_all()
        handler.emit(events)

    def _failed(self, job: Job, reason: str) -> None:
        health = self.health
        with self._cond:
            item: QueueItem
            if isinstance(job, ResumeRead):
                item = job
                heapq.heappush(self._heap, (RESUME_PRIORITY, job.order, job))
            elif isinstance(job, Upload):
                item = job
                job.in_flight = False
                heapq.heappush(self._heap, (SEGMENT_PRIORITY, job.order, job))
            else:
                item = job.slot
                item.in_flight = False
                self.mark_dirty(item)  # re-rendered when retried: the latest content wins
            reported = health.in_outage
            outcome = health.failed(item, reason, self._clock.monotonic())
            if outcome == "new":
                for upload in self._handler.pending_uploads():
                    health.delay(upload)
                again = "failing again" if reported else "outage"
                logger.warning("%s storage %s: %s", self._log_prefix, again, reason)
            elif outcome == "probe":
                logger.info(
                    "%s storage still failing, next try in %.1f s: %s",
                    self._log_prefix,
                    health.retry_delay,
                    reason,
                )
            # The outage is reported about the rendition whose object failed first.
            rendition = item.rendition if not isinstance(item, ResumeRead) else None
            events = about(health.take_events(), rendition or None)
            self._cond.notify_all()
        self._handler.emit(events)

    def _lost(self, upload: Upload) -> None:
        with self._cond:
            self.health.abandoned(upload)  # the storage was not tried: nothing learned
            upload.lost = True
            upload.in_flight = False
            self.health.dropped(upload, self._clock.monotonic())
            events = self._handler.upload_lost(upload)
            events = about(self.health.take_events(), None) + events
            self._cond.notify_all()
        self._handler.emit(events)


def _given_up(item: QueueItem) -> bool:
    return isinstance(item, Upload) and item.given_up


def _without_indicators(data: bytes) -> bytes:
    try:
        return clear_discontinuity(data)
    except TsFormatError:
        return data  # not TS (add_segment said so): stored as given
