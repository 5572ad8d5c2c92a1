"""The HLS writer: one job's ladder, as HLS, in one bucket prefix (a `SegmentSink`).

    encoder ── add_segment ──> spool file ──> upload queue ──> workers ──> storage
                                                                 │
                  playlists (re)written once every segment they list is stored

A segment is written to `spool_dir/{rendition}/` before anything else, so an outage or
a slow upload never stalls the encoder and never loses a segment. A rendition's listing
grows only through the contiguous prefix of its stored segments, and playlists are
rendered from it when a worker takes them, so a playlist lists only stored objects and
the latest content always wins. Where each idea lives:

- what a rendition lists, kept bounded: `packager.hls.renditions`, `.recording`;
- the queue, its workers, the storage's health: `packager.hls.uploads`;
- what an upload's outcome means (listing, masters, events): `packager.hls.listing`;
- the read-back of an earlier recording: `packager.hls.resume`;
- the spool's limits: `packager.hls.spool_limits`;
- what a closed writer leaves for the next start: `packager.hls.leftover`.

Every wait, retry and report interval counts on the `clock` given (STYLE.md "Time is a
parameter"); only the joins of the worker threads at the end are in real time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

from media.clock import SYSTEM_CLOCK, Clock
from media.segments import Segment, VariantInfo
from packager.hls import leftover as leftovers
from packager.hls.items import ResumeRead
from packager.hls.listing import Listing
from packager.hls.recording import DEFAULT_PART_SECONDS, Recording
from packager.hls.renditions import RenditionState
from packager.hls.spool_limits import SpoolLimits
from packager.hls.uploads import UploadQueue
from packager.object_store import ObjectStore, PermanentStorageError
from packager.playlist import DEFAULT_WINDOW_SEGMENTS
from packager.recovery import Leftover, remove_leftover, write_leftover
from packager.spool import Spool, SpoolBudget
from packager.storage_health import StorageHealth

logger = logging.getLogger(__name__)

DEFAULT_DVR_WINDOW_SECONDS = 7200.0


@dataclass(frozen=True)
class PublishedRendition:
    """One rendition's recording: what its playlists list, and what waits for upload."""

    segments: int
    seconds: float
    peak_bandwidth: int | None  # None before the first segment
    average_bandwidth: int | None
    pending_uploads: int


class HlsWriter:
    """Writes an ABR ladder's segments as HLS into one bucket prefix (a `SegmentSink`).

    `on_event(status, message, rendition)` is called from a worker thread with
    `StorageOutage` (about the rendition whose object failed first, if any),
    `StorageRecovered` (the job), `SpoolFull`, `StorageRefused` and
    `FirstSegmentPublished` (once per rendition, when its live playlist first lists a
    segment); it must not block for long.
    """

    def __init__(
        self,
        storage: ObjectStore,  # an S3Storage in production
        bucket: str,
        prefix: str,
        spool_dir: Path,
        *,
        window_segments: int = DEFAULT_WINDOW_SEGMENTS,
        dvr_window_seconds: float = DEFAULT_DVR_WINDOW_SECONDS,
        part_seconds: float = DEFAULT_PART_SECONDS,
        upload_workers: int = 4,
        label: str = "",
        on_event: Callable[[str, str, str | None], None] | None = None,
        on_failure: Callable[[BaseException], None] | None = None,
        prepare: Callable[[], object] | None = None,
        retry_initial_seconds: float = 0.5,
        retry_max_seconds: float = 5.0,
        stop_timeout_seconds: float = 5.0,
        spool_max_bytes: int | None = None,
        spool_budget: SpoolBudget | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        if window_segments < 1 or upload_workers < 1:
            raise ValueError("window_segments and upload_workers must be at least 1")
        if dvr_window_seconds <= 0 or part_seconds <= 0:
            raise ValueError("dvr_window_seconds and part_seconds must be positive")
        self._bucket = bucket
        self._prefix = prefix
        self._window_segments = window_segments
        self._dvr_window_seconds = dvr_window_seconds
        self._part_seconds = part_seconds
        self._upload_workers = upload_workers
        self._log_prefix = f"[hls {label}]"
        self._spool = Spool(spool_dir, self._log_prefix)
        self._stop_timeout_seconds = stop_timeout_seconds
        self._clock = clock
        self._cond = clock.condition()
        self._listing = Listing(
            storage,
            bucket,
            prefix,
            self._spool,
            SpoolLimits(spool_max_bytes, spool_budget, clock),
            self._cond,
            clock,
            self._log_prefix,
            on_event=on_event,
            on_failure=on_failure,
            prepare=prepare,
        )
        health = StorageHealth(retry_initial_seconds, retry_max_seconds)
        self._queue = UploadQueue(
            storage, bucket, self._spool, self._cond, clock, health, self._listing, self._log_prefix
        )
        self._listing.queue = self._queue
        self._started = False
        self._finished = False
        self.inherited_segments = 0  # a leftover's, to upload before anything else
        self._segment_seconds = 0.0

    # -- SegmentSink -------------------------------------------------------------------

    def start(
        self,
        variants: Sequence[VariantInfo],
        segment_seconds: float,
        *,
        leftover: Leftover | None = None,
    ) -> None:
        """Know the renditions and start the upload workers; called once.

        With `leftover` (the manifest an earlier writer of this spool left when it was
        closed, see `packager.hls.leftover`), its segments are uploaded and listed first,
        where they belong in the recording; nothing else is to be added then.
        """
        listing = self._listing
        with self._cond:
            if self._started:
                logger.warning("%s start() called again; ignored", self._log_prefix)
                return
            if not variants:
                raise ValueError("at least one variant is needed")
            self._segment_seconds = segment_seconds
            min_target = max(
                1, int(Decimal(str(segment_seconds)).quantize(Decimal(1), ROUND_HALF_UP))
            )
            self._spool.prepare((v.name for v in variants), set_aside=leftover is None)
            for info in variants:
                recording = Recording(
                    window_segments=self._window_segments,
                    dvr_window_seconds=self._dvr_window_seconds,
                    part_seconds=self._part_seconds,
                    min_target_seconds=min_target,
                )
                listing.renditions[info.name] = RenditionState.create(
                    info, self._prefix, segment_seconds, recording
                )
            self._started = True
            if leftover is not None:
                listing.history_known = leftover.resumed
                uploads = leftovers.inherit(
                    leftover,
                    listing.renditions,
                    self._spool.root,
                    listing.limits,
                    self._queue.next_order,
                )
                for upload in uploads:
                    self._queue.push(upload)
                self.inherited_segments = sum(1 for p in leftover.pending if p.file is not None)
                remove_leftover(self._spool.root)  # rewritten by close() if this stops short
            self._queue.push(ResumeRead())
            self._queue.start(self._upload_workers)
        logger.info(
            "%s writing %s to s3://%s/%s",
            self._log_prefix,
            ", ".join(v.name for v in variants),
            self._bucket,
            self._prefix,
        )

    def add_segment(self, segment: Segment) -> None:
        """Spool one segment and queue its upload; never waits on the network."""
        listing = self._listing
        with self._cond:
            if not self._started:
                raise RuntimeError("add_segment() before start()")
            state = listing.renditions.get(segment.rendition)
            if state is None:
                raise ValueError(f"unknown rendition {segment.rendition!r}")
            if listing.failed is not None:
                listing.dropped_segments += 1
                return  # the output failed: reported once, when the storage refused
            if self._queue.closed or listing.ended:
                self._drop(segment, "after the end")
                return
            last = state.last_sequence
            if last is not None and segment.sequence <= last:
                self._drop(segment, f"not after {last}")
                return
            if last is not None and segment.sequence != last + 1:
                logger.warning(
                    "%s segment %s/%d follows %d: sequence gap",
                    self._log_prefix,
                    segment.rendition,
                    segment.sequence,
                    last,
                )
            state.last_sequence = segment.sequence

        # Segments of a rendition arrive in order from one thread: the counters too.
        upload, data = state.upload_of(segment, self._log_prefix)
        with self._cond:
            room = listing.make_room(upload)
            events = listing.spool_events()
        listing.emit(events)
        if room:
            upload.spool_path = self._spool.write(segment.rendition, segment.sequence, data)
            if upload.spool_path is None:
                upload.data = data

        with self._cond:
            upload.order = self._queue.next_order()
            state.added.append(upload)
            if upload.lost:
                listing.list_stored(state)  # a gap, marked as a discontinuity
                return
            if self._queue.health.failing:
                self._queue.health.delay(upload)
            self._queue.push(upload)

    def finish(self, timeout_seconds: float | None = None) -> None:
        """Upload everything spooled, then write the final playlists with EXT-X-ENDLIST
        (each whole-live playlist, then the master that leads to them).

        Retries through an outage; raises `TimeoutError` if `timeout_seconds` (of the
        writer's clock) pass first (workers keep going: call `finish` again to keep
        waiting, or `close`). Idempotent once it has returned normally.
        """
        listing = self._listing
        clock = self._clock
        deadline = None if timeout_seconds is None else clock.monotonic() + timeout_seconds
        with self._cond:
            if self._finished:
                return
            if listing.failed is not None:
                self._finished = True
                logger.warning("%s not finished: %s", self._log_prefix, listing.failed)
                return
            if self._queue.closed:
                raise RuntimeError("finish() after close()")
            if not self._started:
                self._finished = True
                return
            self._wait_for(listing.all_listed, deadline, "segments to upload")
            if not listing.ended:
                listing.end()
            self._wait_for(listing.playlists_idle, deadline, "final playlists")
            self._finished = True
            listed = sum(s.recording.count for s in listing.renditions.values())
            events = listing.spool_events(flush=True)
        listing.emit(events)
        self._queue.stop(self._stop_timeout_seconds)
        self._spool.remove_empty_folders(listing.renditions)
        logger.info(
            "%s finished: %d segments in %d renditions",
            self._log_prefix,
            listed,
            len(listing.renditions),
        )

    def close(self) -> None:
        """Stop the workers without finishing (after a `finish` timeout, or the job torn
        down); what is not stored stays in the spool, listed in its manifest."""
        listing = self._listing
        with self._cond:
            if self._queue.closed:
                return
            pending = listing.pending_count()
            events = listing.spool_events(flush=True)
        listing.emit(events)
        self._queue.stop(self._stop_timeout_seconds)
        if pending and not self._finished:
            kept = "" if listing.failed is not None else self._write_leftover()
            logger.warning(
                "%s closed with %d segments not uploaded (kept in %s%s)",
                self._log_prefix,
                pending,
                self._spool.root,
                kept,
            )

    # -- state --------------------------------------------------------------------------

    def wait_idle(self, timeout_seconds: float) -> bool:
        """Wait (on the writer's clock) until every segment added is listed and every
        playlist written; False if that did not happen in time (or the writer closed)."""
        listing = self._listing
        deadline = self._clock.monotonic() + timeout_seconds
        with self._cond:
            try:
                self._wait_for(
                    lambda: listing.all_listed() and listing.playlists_idle(), deadline, "idle"
                )
            except (TimeoutError, RuntimeError):
                return False
        return True

    def stats(self) -> dict[str, PublishedRendition]:
        """Per rendition: what is published (listed in its playlists) and what is pending."""
        with self._cond:
            return {
                name: PublishedRendition(
                    # The whole recording, earlier writers' part included.
                    segments=state.recording.count,
                    seconds=round(state.earlier_seconds + state.meter.seconds, 3),
                    peak_bandwidth=state.meter.peak_bps,
                    average_bandwidth=state.meter.average_bps,
                    pending_uploads=state.pending_count(),
                )
                for name, state in self._listing.renditions.items()
            }

    def upload_latency(self) -> tuple[list[tuple[str, int]], float]:
        """Segment upload latencies: cumulative buckets and the sum (`LatencyHistogram`)."""
        return self._queue.latency.snapshot()

    @property
    def spooled_bytes(self) -> int:
        """Bytes of this writer's segments in the spool, not yet uploaded."""
        with self._cond:
            return self._listing.limits.spooled_bytes

    @property
    def dropped_segments(self) -> int:
        """Segments given up: after a refusal, or for the spool's limits."""
        return self._listing.dropped_segments

    @property
    def failed(self) -> PermanentStorageError | None:
        """The refusal that failed this output, if any."""
        return self._listing.failed

    @property
    def outage(self) -> bool:
        """True from the StorageOutage event until the StorageRecovered one."""
        with self._cond:
            return self._queue.health.in_outage

    # -- helpers ------------------------------------------------------------------------

    def _wait_for(self, done: Callable[[], bool], deadline: float | None, what: str) -> None:
        """(lock held) Wait on the clock's condition until `done()`."""
        while not done():
            if self._queue.closed:
                raise RuntimeError("writer closed while finishing")
            remaining = None if deadline is None else deadline - self._clock.monotonic()
            if remaining is not None and remaining <= 0:
                health = self._queue.health
                reason = f"; storage failing: {health.last_error}" if health.failing else ""
                raise TimeoutError(
                    f"{self._log_prefix} timed out waiting for {what} "
                    f"({self._listing.pending_count()} segments pending){reason}"
                )
            self._cond.wait(remaining)

    def _drop(self, segment: Segment, why: str) -> None:
        logger.warning(
            "%s segment %s/%d %s; dropped",
            self._log_prefix,
            segment.rendition,
            segment.sequence,
            why,
        )

    def _write_leftover(self) -> str:
        """The manifest of what is not yet stored, for the next start to finish."""
        with self._cond:
            leftover = leftovers.leftover_of(
                self._listing.renditions.values(),
                self._spool.root,
                resumed=self._queue.resumed,
                segment_seconds=self._segment_seconds,
            )
        path = write_leftover(self._spool.root, leftover)
        return "" if path is None else f"; {path.name} lists them for the next start"
