"""The HLS publisher: spools segments, uploads them in parallel, publishes them in order.

    encoder thread ── add_segment ──> spool file ──> upload queue ──> N worker threads ──> S3
                                                                        │
                      playlists (re)written once every segment they list is stored

A segment is written to `spool_dir/{rendition}/` before anything else, so an outage
or a slow upload never stalls the encoder and never loses a segment. Workers take the
oldest pending upload first (playlists before segments: they are small and make what
is stored playable). A rendition's published list grows only through the contiguous
prefix of stored segments, and playlists are rendered from that list when a worker
picks them up, so a playlist can only list stored objects and the latest content
always wins (one write per playlist key at a time).

A job's playlists outlive one publisher: a new publisher for the same prefix (the
job put online again, a pipeline restarted after a failure, the service restarted)
first reads each rendition's event playlist back and continues after it: segment
numbers and media sequence go on, the first new segment carries
`EXT-X-DISCONTINUITY`, and nothing stored is overwritten. No upload starts before
that read succeeds (it is retried through an outage like any write).

When a write fails the storage is considered failing: every worker pauses and one
probe retries the oldest pending object with exponential backoff until it succeeds.
`StorageOutage` is reported once at the first failure; `StorageRecovered` once every
segment delayed by the outage is stored.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

from packager import layout
from packager.bandwidth import BandwidthMeter, ts_ceiling_bps
from packager.continuity import ContinuityCounters, TsFormatError, clear_discontinuity
from packager.playlist import (
    DEFAULT_WINDOW_SEGMENTS,
    ListedSegment,
    PlaylistError,
    VariantStream,
    dvr_playlist,
    event_playlist,
    live_playlist,
    master_playlist,
    parse_history,
)
from packager.recovery import Leftover, PendingSegment, remove_leftover, write_leftover
from packager.segments import Segment, VariantInfo
from packager.spool import Spool, SpoolBudget
from packager.storage import (
    ENDED_PLAYLIST_CACHE_CONTROL,
    LIVE_PLAYLIST_CACHE_CONTROL,
    PLAYLIST_CONTENT_TYPE,
    SEGMENT_CACHE_CONTROL,
    SEGMENT_CONTENT_TYPE,
    ObjectStore,
    PermanentStorageError,
    StorageError,
)
from packager.storage_health import STORAGE_OUTAGE, STORAGE_RECOVERED, StorageHealth

__all__ = [
    "FIRST_SEGMENT_PUBLISHED",
    "SPOOL_FULL",
    "STORAGE_OUTAGE",
    "STORAGE_RECOVERED",
    "STORAGE_REFUSED",
    "HlsPublisher",
]

logger = logging.getLogger(__name__)
# The master is rewritten when BANDWIDTH grows, or AVERAGE-BANDWIDTH moves by more
# than this fraction.
MASTER_REWRITE_CHANGE = 0.10
DEFAULT_DVR_WINDOW_SECONDS = 7200.0
FIRST_SEGMENT_PUBLISHED = "FirstSegmentPublished"
STORAGE_REFUSED = "StorageRefused"  # a permanent refusal: the output failed
SPOOL_FULL = "SpoolFull"  # segments given up for the spool's limits
SPOOL_REPORT_SECONDS = 30.0

_RESUME_PRIORITY = -1
_PLAYLIST_PRIORITY = 0
_SEGMENT_PRIORITY = 1


@dataclass(eq=False)
class _Upload:
    """One spooled segment on its way to storage."""

    rendition: str
    sequence: int
    duration_seconds: float
    discontinuity: bool
    size_bytes: int
    spool_path: Path | None
    key: str = ""  # set when taken for upload: the rendition's offset is known then
    data: bytes | None = None  # kept in memory only when the spool write failed
    order: int = 0
    stored: bool = False
    lost: bool = False  # the spool file vanished: it can never be uploaded
    # The first segment of this publisher's run of the rendition: muxed with the TS
    # discontinuity indicators, cleared at upload unless the playlist marks it.
    opens_run: bool = False
    clear_indicators: bool = False  # decided when taken for upload
    in_flight: bool = False  # a worker is uploading it
    given_up: bool = False  # dropped for the spool's limits (and so `lost`)
    number: int | None = None  # its number in the recording, when fixed (a leftover)


@dataclass(eq=False)
class _PlaylistSlot:
    """One playlist object: written by one worker at a time, always with the latest content."""

    key: str
    kind: str  # "live", "dvr", "event", "master" or "dvr-master"
    rendition: str = ""
    order: int = 0
    dirty: bool = False
    queued: bool = False
    in_flight: bool = False
    written: bool = False


@dataclass(eq=False)
class _Rendition:
    info: VariantInfo
    meter: BandwidthMeter
    live: _PlaylistSlot
    dvr: _PlaylistSlot
    event: _PlaylistSlot
    ceiling_bps: int | None = None  # the most the rendition can weigh (BANDWIDTH floor)
    counters: ContinuityCounters = field(default_factory=ContinuityCounters)
    added: deque[_Upload] = field(default_factory=deque)  # spooled, not yet published
    published: list[ListedSegment] = field(default_factory=list)
    last_sequence: int | None = None
    discontinuity_pending: bool = False  # a lost segment left a gap before the next one
    offset: int = 0  # added to the encoder's sequence numbers: segments stored before
    earlier_seconds: float = 0.0  # listed by earlier publishers of the prefix
    continues_history: bool = False  # earlier publishers listed segments: a new run
    run_started: bool = False  # a segment went through add_segment

    @property
    def playlists(self) -> tuple[_PlaylistSlot, ...]:
        return (self.live, self.dvr, self.event)


@dataclass(eq=False)
class _Resume:
    """Read back what earlier publishers of the prefix listed, before any upload."""

    order: int = 0


@dataclass
class _Rendered:
    slot: _PlaylistSlot
    render: Callable[[], str]
    cache_control: str


_Job = _Upload | _Rendered | _Resume
_Event = tuple[str, str, str | None]  # status, message, the rendition it is about


class HlsPublisher:
    """Publishes an ABR ladder's segments as HLS into one bucket prefix (a `SegmentSink`).

    `on_event(status, message, rendition)` is called from a worker thread with
    `StorageOutage` (about the rendition whose object failed first, if any),
    `StorageRecovered` (the job) and `FirstSegmentPublished` (once per rendition, when
    its live playlist first lists a segment); it must not block for long.
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
    ) -> None:
        if window_segments < 1 or upload_workers < 1:
            raise ValueError("window_segments and upload_workers must be at least 1")
        if dvr_window_seconds <= 0:
            raise ValueError("dvr_window_seconds must be positive")
        self._storage = storage
        self._bucket = bucket
        self._prefix = prefix
        self._window_segments = window_segments
        self._dvr_window_seconds = dvr_window_seconds
        self._upload_workers = upload_workers
        self._log_prefix = f"[hls {label}]"
        self._spool = Spool(spool_dir, self._log_prefix)
        self._on_event = on_event
        self._report_failure = on_failure
        self._prepare = prepare
        self._stop_timeout_seconds = stop_timeout_seconds
        self._spool_max_bytes = spool_max_bytes
        self._budget = spool_budget or SpoolBudget(None)
        self._spooled_bytes = 0  # this publisher's share of the budget
        self._given_up_unreported: list[str] = []
        self._spool_reported_at: float | None = None

        self._cond = threading.Condition()
        self._health = StorageHealth(retry_initial_seconds, retry_max_seconds)
        self._renditions: dict[str, _Rendition] = {}
        self._master = _PlaylistSlot(layout.master_key(prefix), "master")
        self._dvr_master = _PlaylistSlot(layout.dvr_master_key(prefix), "dvr-master")
        self._master_rendered: tuple[VariantStream, ...] = ()
        self._master_rendered_ended = False
        self._heap: list[tuple[int, int, _Upload | _PlaylistSlot | _Resume]] = []
        self._orders = itertools.count()
        self._workers: list[threading.Thread] = []
        self._min_target_seconds = 1
        self._started = False
        self._resumed = False  # earlier playlists read back: uploads may start
        self._ended = False  # final playlists (EXT-X-ENDLIST) requested
        self._finished = False
        self._closed = False
        self._failed: PermanentStorageError | None = None  # the storage refused for good
        self.dropped_segments = 0  # given up: after a refusal, or for the spool's limits
        self.inherited_segments = 0  # a leftover's, to upload before anything else
        self._history_known = False  # a leftover said what the playlists list
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

        With `leftover` (a manifest an earlier publisher of this spool wrote when it was
        closed, see `packager.recovery`), its segments are uploaded and listed first,
        where they belong in the recording; nothing else is to be added then.
        """
        with self._cond:
            if self._started:
                logger.warning("%s start() called again; ignored", self._log_prefix)
                return
            if not variants:
                raise ValueError("at least one variant is needed")
            self._segment_seconds = segment_seconds
            self._min_target_seconds = max(
                1, int(Decimal(str(segment_seconds)).quantize(Decimal(1), ROUND_HALF_UP))
            )
            self._spool.prepare((v.name for v in variants), set_aside=leftover is None)
            for info in variants:
                self._renditions[info.name] = _Rendition(
                    info=info,
                    meter=BandwidthMeter(segment_seconds),
                    live=_PlaylistSlot(
                        layout.live_playlist_key(self._prefix, info.name), "live", info.name
                    ),
                    dvr=_PlaylistSlot(
                        layout.dvr_playlist_key(self._prefix, info.name), "dvr", info.name
                    ),
                    event=_PlaylistSlot(
                        layout.event_playlist_key(self._prefix, info.name), "event", info.name
                    ),
                    ceiling_bps=ts_ceiling_bps(info, segment_seconds),
                )
            self._started = True
            if leftover is not None:
                self._inherit(leftover)
            resume = _Resume(order=next(self._orders))
            heapq.heappush(self._heap, (_RESUME_PRIORITY, resume.order, resume))
            for index in range(self._upload_workers):
                worker = threading.Thread(
                    target=self._run_worker, name=f"hls-upload-{index}", daemon=True
                )
                self._workers.append(worker)
                worker.start()
        logger.info(
            "%s publishing %s to s3://%s/%s",
            self._log_prefix,
            ", ".join(v.name for v in variants),
            self._bucket,
            self._prefix,
        )

    def add_segment(self, segment: Segment) -> None:
        """Spool one segment and queue its upload; never waits on the network."""
        with self._cond:
            if not self._started:
                raise RuntimeError("add_segment() before start()")
            state = self._renditions.get(segment.rendition)
            if state is None:
                raise ValueError(f"unknown rendition {segment.rendition!r}")
            if self._failed is not None:
                self.dropped_segments += 1
                return  # the output failed: reported once, when the storage refused
            if self._closed or self._ended:
                logger.warning(
                    "%s segment %s/%d after the end; dropped",
                    self._log_prefix,
                    segment.rendition,
                    segment.sequence,
                )
                return
            last = state.last_sequence
            if last is not None and segment.sequence <= last:
                logger.warning(
                    "%s segment %s/%d not after %d; dropped",
                    self._log_prefix,
                    segment.rendition,
                    segment.sequence,
                    last,
                )
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
        opens_run = not state.run_started
        state.run_started = True
        try:
            data = state.counters.carry(
                segment.data, keep_indicators=opens_run or segment.discontinuity
            )
        except TsFormatError as error:
            logger.warning(
                "%s segment %s/%d: %s; stored as given",
                self._log_prefix,
                segment.rendition,
                segment.sequence,
                error,
            )
            data = segment.data
        upload = _Upload(
            rendition=segment.rendition,
            sequence=segment.sequence,
            duration_seconds=segment.duration_seconds,
            discontinuity=segment.discontinuity,
            size_bytes=len(data),
            spool_path=None,
            opens_run=opens_run and not segment.discontinuity,
        )
        with self._cond:
            room = self._make_room(upload)
            events = self._spool_events()
        self._emit(events)
        if room:
            upload.spool_path = self._spool.write(segment.rendition, segment.sequence, data)
            if upload.spool_path is None:
                upload.data = data

        with self._cond:
            upload.order = next(self._orders)
            state.added.append(upload)
            if upload.lost:
                self._advance(state)  # a gap, marked as a discontinuity
                return
            if self._health.failing:
                self._health.delay(upload)
            heapq.heappush(self._heap, (_SEGMENT_PRIORITY, upload.order, upload))
            self._cond.notify_all()

    def finish(self, timeout: float | None = None) -> None:
        """Upload everything spooled, then write the final playlists with EXT-X-ENDLIST.

        Retries through an outage; raises `TimeoutError` if `timeout` passes first
        (workers keep going: call `finish` again to keep waiting, or `close`).
        Idempotent once it has returned normally.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            if self._finished:
                return
            if self._failed is not None:
                self._finished = True
                logger.warning("%s not finished: %s", self._log_prefix, self._failed)
                return
            if self._closed:
                raise RuntimeError("finish() after close()")
            if not self._started:
                self._finished = True
                return
            self._wait_for(self._all_published, deadline, "segments to upload")
            if not self._ended:
                self._ended = True
                for state in self._renditions.values():
                    if state.published:
                        for slot in state.playlists:
                            self._mark_dirty(slot)
                self._update_master()
                self._cond.notify_all()
            self._wait_for(self._playlists_idle, deadline, "final playlists")
            self._finished = True
            published = sum(len(s.published) for s in self._renditions.values())
            events = self._spool_events(flush=True)
        self._emit(events)
        self._stop_workers()
        self._spool.remove_empty_folders(self._renditions)
        logger.info(
            "%s finished: %d segments in %d renditions",
            self._log_prefix,
            published,
            len(self._renditions),
        )

    # -- control and state -------------------------------------------------------------

    def close(self) -> None:
        """Stop the workers without finishing (job torn down); the spool stays on disk."""
        with self._cond:
            if self._closed:
                return
            pending = sum(self._pending_count(s) for s in self._renditions.values())
            events = self._spool_events(flush=True)
        self._emit(events)
        self._stop_workers()
        if pending and not self._finished:
            kept = "" if self._failed is not None else self._write_leftover()
            logger.warning(
                "%s closed with %d segments not uploaded (kept in %s%s)",
                self._log_prefix,
                pending,
                self._spool.root,
                kept,
            )

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per rendition: what is published (listed in its playlists) and what is pending."""
        with self._cond:
            return {
                name: {
                    # The whole recording, earlier publishers' part included.
                    "segments": len(state.published),
                    "seconds": round(state.earlier_seconds + state.meter.seconds, 3),
                    "peakBandwidth": state.meter.peak_bps,
                    "averageBandwidth": state.meter.average_bps,
                    "pendingUploads": self._pending_count(state),
                }
                for name, state in self._renditions.items()
            }

    @property
    def outage(self) -> bool:
        """True from the StorageOutage event until the StorageRecovered one."""
        with self._cond:
            return self._health.in_outage

    # -- helpers (called with the lock held) -------------------------------------------

    @staticmethod
    def _pending_count(state: _Rendition) -> int:
        return sum(1 for u in state.added if not u.stored and not u.lost)

    def _all_published(self) -> bool:
        return all(not s.added for s in self._renditions.values())

    def _playlists_idle(self) -> bool:
        slots = [self._master, self._dvr_master]
        for state in self._renditions.values():
            slots += state.playlists
        return not any(s.dirty or s.queued or s.in_flight for s in slots)

    def _wait_for(self, done: Callable[[], bool], deadline: float | None, what: str) -> None:
        while not done():
            if self._closed:
                raise RuntimeError("publisher closed while finishing")
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                pending = sum(self._pending_count(s) for s in self._renditions.values())
                health = self._health
                reason = f"; storage failing: {health.last_error}" if health.failing else ""
                raise TimeoutError(
                    f"{self._log_prefix} timed out waiting for {what} "
                    f"({pending} segments pending){reason}"
                )
            self._cond.wait(remaining)

    def _mark_dirty(self, slot: _PlaylistSlot) -> None:
        slot.dirty = True
        if not slot.queued and not slot.in_flight:
            slot.queued = True
            slot.order = next(self._orders)
            heapq.heappush(self._heap, (_PLAYLIST_PRIORITY, slot.order, slot))

    def _advance(self, state: _Rendition) -> None:
        """Publish the contiguous prefix of stored segments."""
        advanced = False
        while state.added and (state.added[0].stored or state.added[0].lost):
            upload = state.added.popleft()
            if upload.lost:
                state.discontinuity_pending = True
                continue
            state.published.append(
                ListedSegment(
                    _number(state, upload),
                    upload.duration_seconds,
                    upload.discontinuity or state.discontinuity_pending,
                )
            )
            state.discontinuity_pending = False
            state.meter.add(upload.size_bytes, upload.duration_seconds)
            advanced = True
        if advanced:
            # The master first: a bigger peak is announced before it is listed.
            self._update_master()
            for slot in state.playlists:
                self._mark_dirty(slot)

    def _master_variants(self) -> tuple[VariantStream, ...]:
        """What the masters would list now: every variant once each has its media
        playlists stored; at the end, those that have them."""
        states = list(self._renditions.values())
        ready = [s for s in states if all(slot.written for slot in s.playlists)]
        if not ready or (not self._ended and len(ready) < len(states)):
            return ()
        return tuple(
            VariantStream(s.info, s.meter.peak_bps, s.meter.average_bps, s.ceiling_bps)
            for s in ready
        )

    def _update_master(self) -> None:
        """Mark the masters dirty when they appear, change shape, the live ends,
        BANDWIDTH grows or AVERAGE-BANDWIDTH moves."""
        wanted = self._master_variants()
        if not wanted:
            return
        rendered = self._master_rendered
        if (
            [v.info.name for v in wanted] != [v.info.name for v in rendered]
            or (self._ended and not self._master_rendered_ended)
            or any(_moved(new, old) for new, old in zip(wanted, rendered, strict=True))
        ):
            self._master_rendered = wanted
            self._master_rendered_ended = self._ended
            self._mark_dirty(self._master)
            self._mark_dirty(self._dvr_master)

    def _take(self) -> _Job:
        _, _, item = heapq.heappop(self._heap)
        if isinstance(item, _Resume):
            return item
        if isinstance(item, _Upload):
            item.in_flight = True
            state = self._renditions[item.rendition]
            item.key = layout.segment_key(self._prefix, item.rendition, _number(state, item))
            # Known now (uploads wait for the read-back): whether the playlist will
            # mark the run's first segment as a discontinuity.
            item.clear_indicators = item.opens_run and not state.continues_history
            return item
        item.queued = False
        item.dirty = False
        item.in_flight = True
        ended = self._ended
        cache_control = ENDED_PLAYLIST_CACHE_CONTROL if ended else LIVE_PLAYLIST_CACHE_CONTROL
        if item.kind in ("master", "dvr-master"):
            variants = self._master_rendered
            # Once the live ended the master leads to the whole recording.
            if item.kind == "dvr-master":
                media = layout.DVR_PLAYLIST_NAME
            else:
                media = layout.EVENT_PLAYLIST_NAME if ended else layout.LIVE_PLAYLIST_NAME
            return _Rendered(item, lambda: master_playlist(variants, media), cache_control)
        state = self._renditions[item.rendition]
        history = list(state.published)
        target = self._min_target_seconds
        if item.kind == "live":
            window = self._window_segments
            return _Rendered(
                item,
                lambda: live_playlist(
                    history, window_segments=window, min_target_seconds=target, ended=ended
                ),
                cache_control,
            )
        if item.kind == "dvr":
            seconds = self._dvr_window_seconds
            return _Rendered(
                item,
                lambda: dvr_playlist(
                    history, window_seconds=seconds, min_target_seconds=target, ended=ended
                ),
                cache_control,
            )
        return _Rendered(
            item,
            lambda: event_playlist(history, min_target_seconds=target, ended=ended),
            cache_control,
        )

    # -- workers -------------------------------------------------------------------------

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

    def _next_job(self) -> _Job | None:
        with self._cond:
            while not self._closed:
                timeout: float | None = None
                # Until the earlier playlists are read back only that read may run.
                while self._heap and _given_up(self._heap[0][2]):
                    heapq.heappop(self._heap)  # dropped for the spool's limits meanwhile
                if self._heap and (self._resumed or isinstance(self._heap[0][2], _Resume)):
                    timeout = self._health.wait_seconds(time.monotonic())
                    if timeout == 0:
                        job = self._take()
                        self._health.started(_health_item(job))
                        return job
                self._cond.wait(timeout)
            return None

    def _run_job(self, job: _Job) -> None:
        history: dict[str, tuple[list[ListedSegment], int]] = {}
        try:
            if isinstance(job, _Resume):
                if self._prepare is not None:
                    self._prepare()  # the bucket: created, or checked, before any write
                history = self._read_history()
            elif isinstance(job, _Upload):
                data = job.data
                if data is None and job.spool_path is not None:
                    data = self._spool.read(job.spool_path)
                if data is None:
                    self._on_lost(job)
                    return
                if job.clear_indicators:
                    data = _without_indicators(data)
                self._storage.put(
                    self._bucket, job.key, data, SEGMENT_CONTENT_TYPE, SEGMENT_CACHE_CONTROL
                )
                if job.spool_path is not None:
                    self._spool.remove(job.spool_path)
                logger.debug("%s stored %s", self._log_prefix, job.key)
            else:
                body = job.render().encode()
                self._storage.put(
                    self._bucket, job.slot.key, body, PLAYLIST_CONTENT_TYPE, job.cache_control
                )
                logger.debug("%s wrote %s", self._log_prefix, job.slot.key)
        except PermanentStorageError as error:
            self._on_refused(job, error)
        except StorageError as error:
            self._on_failure(job, str(error))
        except Exception as error:
            # A bug here must neither lose a segment nor leave a playlist in flight forever.
            logger.exception("%s unexpected error publishing", self._log_prefix)
            self._on_failure(job, f"unexpected error: {error!r}")
        else:
            if isinstance(job, _Resume):
                self._on_resumed(job, history)
            else:
                self._on_success(job)

    def _read_history(self) -> dict[str, tuple[list[ListedSegment], int]]:
        """Per rendition with an event playlist stored by an earlier publisher: what it
        lists (to continue) and the first segment number free to use."""
        history: dict[str, tuple[list[ListedSegment], int]] = {}
        if self._history_known:
            return history  # a leftover's: it knows more than the stored playlists
        for name, state in self._renditions.items():
            text = self._storage.get_text(self._bucket, state.event.key)
            if text is None:
                continue
            try:
                listed = parse_history(text)
            except PlaylistError as error:
                # Not a playlist of ours: keep clear of every segment number it names.
                numbers = layout.segment_numbers(text)
                logger.error(
                    "%s %s is not a playlist onair can continue (%s): starting it anew "
                    "after segment %d",
                    self._log_prefix,
                    state.event.key,
                    error,
                    max(numbers, default=-1),
                )
                history[name] = ([], max(numbers, default=-1) + 1)
            else:
                history[name] = (listed, listed[-1].sequence + 1 if listed else 0)
        return history

    def _on_resumed(
        self, job: _Resume, history: dict[str, tuple[list[ListedSegment], int]]
    ) -> None:
        with self._cond:
            for name, (listed, next_sequence) in history.items():
                state = self._renditions[name]
                state.offset = next_sequence
                if not listed:
                    continue
                state.published = list(listed)
                state.earlier_seconds = sum(s.duration_seconds for s in listed)
                state.discontinuity_pending = True  # another encoder: timestamps restart
                state.continues_history = True
                logger.info(
                    "%s %s continues after %d earlier segments (%.1f s)",
                    self._log_prefix,
                    name,
                    len(listed),
                    state.earlier_seconds,
                )
            self._resumed = True
            for state in self._renditions.values():
                self._advance(state)  # a leftover's segments stored before it stopped
        self._on_success(job)

    def _on_success(self, job: _Job) -> None:
        with self._cond:
            now = time.monotonic()
            was_failing = self._health.failing
            self._health.succeeded(_health_item(job), now)
            if was_failing:
                logger.info("%s storage answers again", self._log_prefix)
            if isinstance(job, _Upload):
                job.stored = True
                job.in_flight = False
                self._release(job)
                self._health.stored(job, now)
                self._advance(self._renditions[job.rendition])
            elif isinstance(job, _Rendered):
                slot = job.slot
                slot.in_flight = False
                first_write = not slot.written
                slot.written = True
                if slot.dirty:
                    self._mark_dirty(slot)
                if first_write and slot.kind in ("live", "dvr", "event"):
                    self._update_master()
            events = _about(self._health.take_events(), None)
            if isinstance(job, _Rendered) and first_write and job.slot.kind == "live":
                state = self._renditions[job.slot.rendition]
                first = state.published[-1]
                events.append(
                    (
                        FIRST_SEGMENT_PUBLISHED,
                        f"{first.uri} ({first.duration_seconds:.3f} s) listed in {job.slot.key}",
                        job.slot.rendition,
                    )
                )
            self._cond.notify_all()
        self._emit(events)

    def _on_failure(self, job: _Job, reason: str) -> None:
        with self._cond:
            health = self._health
            item: _Upload | _PlaylistSlot | _Resume
            if isinstance(job, _Resume):
                item = job
                heapq.heappush(self._heap, (_RESUME_PRIORITY, job.order, job))
            elif isinstance(job, _Upload):
                item = job
                job.in_flight = False
                heapq.heappush(self._heap, (_SEGMENT_PRIORITY, job.order, job))
            else:
                item = job.slot
                item.in_flight = False
                self._mark_dirty(item)  # re-rendered when retried: the latest content wins
            reported = health.in_outage
            outcome = health.failed(item, reason, time.monotonic())
            if outcome == "new":
                for state in self._renditions.values():
                    for upload in state.added:
                        if not (upload.stored or upload.lost):
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
            rendition = item.rendition if not isinstance(item, _Resume) else None
            events = _about(health.take_events(), rendition or None)
            self._cond.notify_all()
        self._emit(events)

    def _on_refused(self, job: _Job, error: PermanentStorageError) -> None:
        """The storage refused for good (no retry can help): the output fails at once;
        what is spooled stays on disk."""
        with self._cond:
            if self._failed is not None:
                return
            self._failed = error
            self._closed = True  # the workers stop taking jobs
            self._cond.notify_all()
            item = _health_item(job)
            rendition = getattr(item, "rendition", "") or None
        logger.error("%s storage refused for good: %s", self._log_prefix, error)
        self._emit([(STORAGE_REFUSED, str(error), rendition)])
        if self._report_failure is not None:
            try:
                self._report_failure(error)
            except Exception:
                logger.exception("%s on_failure failed", self._log_prefix)

    # -- what a closed publisher leaves, and its recovery ----------------------------------

    def _write_leftover(self) -> str:
        """The manifest of what is not yet stored, for the next start to finish."""
        with self._cond:
            pending: list[PendingSegment] = []
            for name, state in self._renditions.items():
                gap = state.discontinuity_pending
                for upload in state.added:
                    if upload.lost or (upload.spool_path is None and not upload.stored):
                        gap = True  # given up, vanished, or only in memory: a gap
                        continue
                    file = None
                    if not upload.stored and upload.spool_path is not None:
                        file = upload.spool_path.relative_to(self._spool.root).as_posix()
                    pending.append(
                        PendingSegment(
                            rendition=name,
                            sequence=upload.sequence,
                            number=_number(state, upload) if self._resumed else upload.number,
                            duration_seconds=upload.duration_seconds,
                            discontinuity=upload.discontinuity or gap,
                            file=file,
                            opens_run=upload.opens_run and not state.continues_history,
                        )
                    )
                    gap = False
            leftover = Leftover(
                variants=[s.info for s in self._renditions.values()],
                segment_seconds=self._segment_seconds,
                resumed=self._resumed,
                published={n: list(s.published) for n, s in self._renditions.items()},
                pending=pending,
            )
        path = write_leftover(self._spool.root, leftover)
        return "" if path is None else f"; {path.name} lists them for the next start"

    def _inherit(self, leftover: Leftover) -> None:
        """Seed the renditions with an earlier publisher's unfinished work (lock held)."""
        if leftover.resumed:
            self._history_known = True
            for name, listed in leftover.published.items():
                state = self._renditions.get(name)
                if state is not None:
                    state.published = list(listed)
                    state.earlier_seconds = sum(s.duration_seconds for s in listed)
        for item in leftover.pending:
            state = self._renditions.get(item.rendition)
            if state is None:
                continue
            path = None if item.file is None else self._spool.root / item.file
            size = 0
            if path is not None:
                try:
                    size = path.stat().st_size
                except OSError:
                    path = None  # gone: listed as lost
            upload = _Upload(
                rendition=item.rendition,
                sequence=item.sequence,
                duration_seconds=item.duration_seconds,
                discontinuity=item.discontinuity,
                size_bytes=size,
                spool_path=path,
                order=next(self._orders),
                stored=item.file is None,
                lost=item.file is not None and path is None,
                opens_run=item.opens_run,
                number=item.number,
            )
            if path is not None:
                self._spooled_bytes += size
                self._budget.take(size)  # already on disk: counted, never refused
            state.added.append(upload)
            state.last_sequence = item.sequence
            state.run_started = True
            if not (upload.stored or upload.lost):
                heapq.heappush(self._heap, (_SEGMENT_PRIORITY, upload.order, upload))
        self.inherited_segments = sum(1 for p in leftover.pending if p.file is not None)
        remove_leftover(self._spool.root)  # rewritten by close() if this run stops short too

    # -- the spool's limits (called with the lock held) ---------------------------------

    def _make_room(self, upload: _Upload) -> bool:
        """Reserve spool room for `upload`, giving up the oldest segments not yet
        uploaded (never one in flight) while this job or the host is over its limit;
        False, and `upload` itself is given up, when nothing else can go."""
        size = upload.size_bytes
        while True:
            fits = self._spool_max_bytes is None or self._spooled_bytes + size <= (
                self._spool_max_bytes
            )
            if fits and self._budget.take(size):
                self._spooled_bytes += size
                return True
            victim = self._oldest_pending()
            if victim is None:
                self._give_up(upload, reserved=False)
                return False
            self._give_up(victim, reserved=True)

    def _oldest_pending(self) -> _Upload | None:
        candidates = []
        for state in self._renditions.values():
            for upload in state.added:
                if not (upload.stored or upload.lost or upload.in_flight):
                    candidates.append(upload)
                    break
        return min(candidates, key=lambda u: u.order, default=None)

    def _give_up(self, upload: _Upload, *, reserved: bool) -> None:
        if reserved:
            self._release(upload)
        upload.lost = upload.given_up = True
        if upload.spool_path is not None:
            self._spool.remove(upload.spool_path)
        upload.data = None
        self._health.dropped(upload, time.monotonic())
        self.dropped_segments += 1
        state = self._renditions[upload.rendition]
        number = _number(state, upload) if self._resumed else upload.sequence
        self._given_up_unreported.append(f"{upload.rendition}/{layout.segment_name(number)}")
        if upload in state.added:
            self._advance(state)

    def _release(self, upload: _Upload) -> None:
        """Its spool room is free again (stored, vanished or given up: once each)."""
        if upload.given_up:
            return  # released when it was given up (or never reserved)
        self._spooled_bytes = max(0, self._spooled_bytes - upload.size_bytes)
        self._budget.give(upload.size_bytes)

    def _spool_events(self, *, flush: bool = False) -> list[_Event]:
        """A SpoolFull event naming what was given up: at once, then at most every
        SPOOL_REPORT_SECONDS while it goes on (and whatever is left at the end)."""
        if not self._given_up_unreported:
            return []
        now = time.monotonic()
        last = self._spool_reported_at
        if not flush and last is not None and now - last < SPOOL_REPORT_SECONDS:
            return []
        self._spool_reported_at = now
        names, self._given_up_unreported = self._given_up_unreported, []
        limit = "" if self._spool_max_bytes is None else f"{self._spool_max_bytes} bytes per job"
        host = "" if self._budget.max_bytes is None else f"{self._budget.max_bytes} in all"
        limits = " / ".join(x for x in (limit, host) if x)
        shown = ", ".join(names[:20]) + (f" and {len(names) - 20} more" if len(names) > 20 else "")
        message = (
            f"spool limit reached ({limits}): gave up {len(names)} segments not yet "
            f"uploaded, oldest first: {shown}"
        )
        return [(SPOOL_FULL, message, None)]

    @property
    def failed(self) -> PermanentStorageError | None:
        """The refusal that failed this output, if any."""
        return self._failed

    def _on_lost(self, upload: _Upload) -> None:
        with self._cond:
            now = time.monotonic()
            self._health.abandoned(upload)  # the storage was not tried: nothing learned
            upload.lost = True
            upload.in_flight = False
            self._release(upload)
            self._health.dropped(upload, now)
            self._advance(self._renditions[upload.rendition])
            events = _about(self._health.take_events(), None)
            self._cond.notify_all()
        self._emit(events)

    def _emit(self, events: list[_Event]) -> None:
        if self._on_event is None:
            return
        for status, message, rendition in events:
            try:
                self._on_event(status, message, rendition)
            except Exception:
                logger.exception("%s on_event(%s) failed", self._log_prefix, status)

    # -- shutdown ---------------------------------------------------------------------------

    def _stop_workers(self) -> None:
        """Stop the workers, waiting at most `stop_timeout_seconds` in all: a worker stuck
        in a storage call (its own timeouts bound it) is left to end by itself."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            workers, self._workers = self._workers, []
        deadline = time.monotonic() + self._stop_timeout_seconds
        for worker in workers:
            if worker is not threading.current_thread():
                worker.join(max(0.0, deadline - time.monotonic()))
        stuck = [w.name for w in workers if w.is_alive() and w is not threading.current_thread()]
        if stuck:
            logger.warning("%s upload workers still in a storage call: %s", self._log_prefix, stuck)


def _number(state: _Rendition, upload: _Upload) -> int:
    """The segment's number in the recording (its name, its media sequence)."""
    return upload.number if upload.number is not None else state.offset + upload.sequence


def _given_up(item: _Upload | _PlaylistSlot | _Resume) -> bool:
    return isinstance(item, _Upload) and item.given_up


def _about(events: list[tuple[str, str]], rendition: str | None) -> list[_Event]:
    return [(status, message, rendition) for status, message in events]


def _without_indicators(data: bytes) -> bytes:
    try:
        return clear_discontinuity(data)
    except TsFormatError:
        return data  # not TS (add_segment said so): stored as given


def _health_item(job: _Job) -> _Upload | _PlaylistSlot | _Resume:
    return job.slot if isinstance(job, _Rendered) else job


def _moved(new: VariantStream, old: VariantStream) -> bool:
    """Whether the master must be rewritten for this variant: BANDWIDTH grew (players
    must never see a segment above it), or AVERAGE-BANDWIDTH moved noticeably."""
    if new.bandwidth_bps > old.bandwidth_bps:
        return True
    now, then = new.average_bandwidth_bps, old.average_bandwidth_bps
    if now is None or then is None:
        return now != then
    return abs(now - then) > MASTER_REWRITE_CHANGE * then
