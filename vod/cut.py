"""A frame-accurate cut of a live's recording into a video on demand, cheaply.

Per rendition, on the recorded media timeline (`vod.timeline`):

- the segments wholly inside [from, to) are copied server-side (S3 CopyObject), their
  bytes untouched;
- the segment holding `from` (unless `from` is its first frame) and the one holding
  `to` (unless `to` is its end) are fetched, decoded from their keyframe and
  re-encoded with the rendition's settings from the frame at `from` / up to the frame
  before `to`, their AAC packets copied (`vod.edges`); their TS continuity counters
  are fitted to the copied neighbours (`vod.continuity`) and their timestamps are
  the live's, so the seams need no discontinuity;
- a VOD media playlist lists them (`EXT-X-PLAYLIST-TYPE:VOD`, `EXT-X-ENDLIST`,
  `EXT-X-DISCONTINUITY` only where the live had one inside the range).

Then the top rendition's segments are remuxed into `original.mp4` (`vod.mp4`), and the
master is written last: a reader never sees half a video.

The work runs on a thread of its own at a lower priority (`CUT_NICE`, per thread on
Linux) with single-threaded decoding and encoding: at most one core, and a running
live's encoder threads win the CPU over it.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from encoder.templates import JobTemplate
from media.segments import VariantInfo
from packager import layout
from packager.object_store import (
    ENDED_PLAYLIST_CACHE_CONTROL,
    PLAYLIST_CONTENT_TYPE,
    SEGMENT_CACHE_CONTROL,
    SEGMENT_CONTENT_TYPE,
    S3Storage,
)
from packager.playlist import (
    ListedSegment,
    VariantStream,
    master_playlist,
    media_playlist,
    target_duration_seconds,
)
from vod.continuity import counters_after, counters_before, fit_counters
from vod.edges import reencode_edge, rendition_template
from vod.errors import CutError
from vod.mp4 import remux_to_mp4
from vod.timeline import RecordedRendition, RecordedSegment, recorded_timeline

log = logging.getLogger(__name__)

CUT_NICE = 10  # added to the calling thread's nice value for the cut's own thread
COPY_WORKERS = 8  # server-side copies in flight (I/O only)
MP4_READ_AHEAD = 4  # segment reads in flight for the MP4
MP4_CONTENT_TYPE = "video/mp4"
MEDIA_PLAYLIST_NAME = "index.m3u8"
ORIGINAL_FILE_NAME = "original.mp4"


@dataclass(frozen=True)
class CutRequest:
    """What to cut (`to_ms` and `from_ms` as `RecordedTimeline.resolve` gave them)."""

    bucket: str
    live_prefix: str  # packager.layout.object_prefix(destination, file_path)
    video_prefix: str  # f"{live_prefix}/videos/{video_public_id}"
    since: datetime | None
    from_ms: int
    to_ms: int


@dataclass(frozen=True)
class CutResult:
    duration_ms: int
    master_key: str  # f"{video_prefix}/master.m3u8"
    original_file_key: str  # f"{video_prefix}/original.mp4" (top rendition, faststart)
    renditions: tuple[str, ...]
    # What it took (for logs and the benchmark): segments copied and re-encoded.
    copied_segments: int = 0
    reencoded_segments: int = 0


class CutCancelled(CutError):
    """The cut was cancelled before its master was written."""


@dataclass(frozen=True)
class _Piece:
    """One segment of the VOD: a live segment copied, or part of one re-encoded."""

    source: RecordedSegment
    from_offset_ms: int | None = None  # re-encode from here (offset in the segment)
    to_offset_ms: int | None = None  # re-encode up to here

    @property
    def copied(self) -> bool:
        return self.from_offset_ms is None and self.to_offset_ms is None


def cut_video(
    storage: S3Storage, request: CutRequest, *, cancel: threading.Event | None = None
) -> CutResult:
    """Cut [from_ms, to_ms) of the live's recording into a VOD under `video_prefix`
    (every rendition's playlist and segments, `original.mp4`, the master last).

    Blocking; the work runs on a thread of its own at a lower priority. Raises
    `CutError` (a bad range, nothing recorded, something unsupported, `CutCancelled`),
    `StorageError` (the caller retries later)."""
    outcome: list[CutResult | BaseException] = []

    def work() -> None:
        _lower_priority()
        try:
            outcome.append(_cut(storage, request, cancel or threading.Event()))
        except BaseException as error:  # handed to the caller's thread
            outcome.append(error)

    thread = threading.Thread(target=work, name=f"vod-cut {request.video_prefix}", daemon=True)
    thread.start()
    thread.join()
    result = outcome[0]
    if isinstance(result, BaseException):
        raise result
    return result


def _lower_priority() -> None:
    """Nice this thread (Linux: per thread; the threads it starts inherit it)."""
    try:
        tid = threading.get_native_id()
        current = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(19, current + CUT_NICE))
    except (AttributeError, OSError) as error:
        log.info("[vod] cut at normal priority: %s", error)


def _cut(storage: S3Storage, request: CutRequest, cancel: threading.Event) -> CutResult:
    started = time.monotonic()
    prefix = f"[vod {request.video_prefix}]"
    timeline = recorded_timeline(storage, request.bucket, request.live_prefix, request.since)
    from_ms, to_ms = timeline.resolve(request.from_ms, request.to_ms, None, None)
    template = rendition_template(timeline.renditions)
    copied = reencoded = 0
    written: dict[str, list[str]] = {}  # rendition -> VOD segment keys, in order
    durations: dict[str, int] = {}
    original_key = f"{request.video_prefix}/{ORIGINAL_FILE_NAME}"
    mp4: Future[None] | None = None
    under_way: list[Future[None]] = []
    copies = ThreadPoolExecutor(COPY_WORKERS, thread_name_prefix="vod-copy")
    # The MP4 is remuxed while the other renditions are cut (it reads the live's copies
    # of the inner segments, not the VOD's, so it need not wait for them).
    remux = ThreadPoolExecutor(1, thread_name_prefix="vod-mp4")
    abandoned = threading.Event()  # this cut failed: the MP4 stops too

    def stopped() -> bool:
        return cancel.is_set() or abandoned.is_set()

    try:
        for track in timeline.tracks:
            pieces = _pieces(track, from_ms, to_ms)
            if not pieces:
                continue
            keys, parts, listed, started_copies = _rendition(
                storage, request, track.name, pieces, template, copies, cancel
            )
            under_way.extend(started_copies)
            if mp4 is None:
                mp4 = remux.submit(
                    _write_mp4, storage, request.bucket, parts, original_key, stopped
                )
            written[track.name] = keys
            copied += len(started_copies)
            reencoded += len(pieces) - len(started_copies)
            durations[track.name] = round(sum(s.duration_seconds for s in listed) * 1000)
            _put_text(
                storage,
                request.bucket,
                f"{request.video_prefix}/{track.name}/{MEDIA_PLAYLIST_NAME}",
                media_playlist(
                    listed,
                    target_seconds=target_duration_seconds(listed),
                    playlist_type="vod",
                    ended=True,
                ),
            )
        edges_done = time.monotonic()
        for copy in under_way:
            copy.result()  # a StorageError propagates
        copies_done = time.monotonic()
        if mp4 is not None:
            mp4.result()
        mp4_done = time.monotonic()
    except BaseException:
        abandoned.set()  # the MP4 stops at its next packet
        copies.shutdown(wait=True, cancel_futures=True)
        remux.shutdown(wait=True, cancel_futures=True)
        raise
    copies.shutdown()
    remux.shutdown()
    if not written:
        raise CutError(
            f"no rendition holds that range; the recorded range is {timeline.describe()}"
        )
    renditions = tuple(name for name in timeline.renditions if name in written)
    top = renditions[0]
    if cancel.is_set():
        raise CutCancelled("the cut was cancelled")
    master_key = f"{request.video_prefix}/{layout.MASTER_NAME}"
    variants = [
        VariantStream(
            VariantInfo(v.name, v.width, v.height, v.frame_rate, v.codecs, v.bandwidth_bps),
            peak_bandwidth_bps=v.bandwidth_bps,
            average_bandwidth_bps=v.average_bandwidth_bps,
        )
        for v in timeline.variants
        if v.name in written
    ]
    _put_text(storage, request.bucket, master_key, master_playlist(variants, MEDIA_PLAYLIST_NAME))
    log.info(
        "%s cut %d-%d ms: %d renditions, %d segments copied, %d re-encoded, %.2f s "
        "(edges done at %.2f s, copies at %.2f s, MP4 at %.2f s)",
        prefix,
        from_ms,
        to_ms,
        len(renditions),
        copied,
        reencoded,
        time.monotonic() - started,
        edges_done - started,
        copies_done - started,
        mp4_done - started,
    )
    return CutResult(
        duration_ms=durations[top],
        master_key=master_key,
        original_file_key=original_key,
        renditions=renditions,
        copied_segments=copied,
        reencoded_segments=reencoded,
    )


def _pieces(track: RecordedRendition, from_ms: int, to_ms: int) -> list[_Piece]:
    """The live segments making [from_ms, to_ms) of this rendition, and what to do with each."""
    segments = track.segments
    to_ms = min(to_ms, segments[-1].end_ms)
    if from_ms >= to_ms:
        return []
    first = track.index_at(from_ms)
    last = track.index_at(max(from_ms, to_ms - 1))
    pieces = []
    for index in range(first, last + 1):
        segment = segments[index]
        cut_start = index == first and from_ms > segment.start_ms
        cut_end = index == last and to_ms < segment.end_ms
        start = from_ms - segment.start_ms if cut_start else None
        end = to_ms - segment.start_ms if cut_end else None
        pieces.append(_Piece(segment, start, end))
    return pieces


def _rendition(
    storage: S3Storage,
    request: CutRequest,
    rendition: str,
    pieces: list[_Piece],
    template: JobTemplate | None,
    pool: ThreadPoolExecutor,
    cancel: threading.Event,
) -> tuple[list[str], list[str | bytes], list[ListedSegment], list[Future[None]]]:
    """Copy or re-encode one rendition's pieces: (VOD keys, each segment's live key or
    re-encoded bytes, listing, the copies under way)."""
    bucket = request.bucket
    keys: list[str] = []
    parts: list[str | bytes] = []
    listed: list[ListedSegment] = []
    copies: list[Future[None]] = []
    for number, piece in enumerate(pieces):
        if cancel.is_set():
            raise CutCancelled("the cut was cancelled")
        key = f"{request.video_prefix}/{rendition}/{layout.segment_name(number)}"
        keys.append(key)
        source = piece.source
        # A reconnect inside the range stays one; the VOD's own start is none.
        discontinuity = source.discontinuity and number > 0
        program_time = source.program_time
        if piece.copied:
            copies.append(
                pool.submit(
                    storage.copy,
                    bucket,
                    source.key,
                    key,
                    SEGMENT_CONTENT_TYPE,
                    SEGMENT_CACHE_CONTROL,
                )
            )
            parts.append(source.key)
            duration_ms = source.duration_ms
            listed.append(ListedSegment(number, duration_ms / 1000, discontinuity, program_time))
            continue
        data = storage.get_bytes(bucket, source.key)
        if data is None:
            raise CutError(f"the recording's segment {source.key} is no longer stored")
        edge = reencode_edge(
            data,
            segment_ms=source.duration_ms,
            from_offset_ms=piece.from_offset_ms,
            to_offset_ms=piece.to_offset_ms,
            template=template,
            rendition=rendition,
            opens_video=number == 0,
        )
        fitted = _fit(edge.data, data, number == 0, number == len(pieces) - 1, discontinuity)
        storage.put(bucket, key, fitted, SEGMENT_CONTENT_TYPE, SEGMENT_CACHE_CONTROL)
        parts.append(fitted)
        if program_time is not None:
            program_time += timedelta(milliseconds=round(edge.start_offset_ticks / 90))
        listed.append(
            ListedSegment(number, edge.duration_ticks / 90_000, discontinuity, program_time)
        )
    return keys, parts, listed, copies


def _fit(edge: bytes, live: bytes, first: bool, last: bool, discontinuity: bool) -> bytes:
    """The edge's counters fitted to its neighbours: the first edge ends where the live
    segment it replaces ended (the copied next one goes on from there), the last starts
    where the live one started (it goes on from the copied previous one). Its
    indicators stay only where the live had a discontinuity."""
    if first and last:
        return fit_counters(edge)  # the whole video: no neighbour
    if first:
        return fit_counters(edge, ending=counters_after(live))
    return fit_counters(edge, after=counters_before(live), keep_indicators=discontinuity)


def _put_text(storage: S3Storage, bucket: str, key: str, text: str) -> None:
    storage.put(bucket, key, text.encode(), PLAYLIST_CONTENT_TYPE, ENDED_PLAYLIST_CACHE_CONTROL)


def _write_mp4(
    storage: S3Storage,
    bucket: str,
    parts: list[str | bytes],
    key: str,
    stopped: Callable[[], bool],
) -> None:
    """Remux the segments (a live key to read, or bytes) into `original.mp4`."""
    with ThreadPoolExecutor(MP4_READ_AHEAD, thread_name_prefix="vod-read") as reads:
        with tempfile.TemporaryDirectory(prefix="onair-vod-") as folder:
            path = Path(folder) / ORIGINAL_FILE_NAME
            try:
                remux_to_mp4(_read_ahead(storage, bucket, parts, reads), path, cancelled=stopped)
            except InterruptedError as error:
                raise CutCancelled("the cut was cancelled") from error
            storage.put_file(bucket, key, str(path), MP4_CONTENT_TYPE, SEGMENT_CACHE_CONTROL)


def _read_ahead(
    storage: S3Storage, bucket: str, parts: list[str | bytes], reads: ThreadPoolExecutor
) -> Iterator[bytes]:
    """The parts' bytes in order, the next few fetched while one is remuxed."""
    pending: deque[Future[bytes]] = deque()
    upcoming = iter(parts)

    def fetch(part: str | bytes) -> Future[bytes]:
        if isinstance(part, bytes):
            done: Future[bytes] = Future()
            done.set_result(part)
            return done
        return reads.submit(_stored, storage, bucket, part)

    for part in upcoming:
        pending.append(fetch(part))
        if len(pending) >= 2 * MP4_READ_AHEAD:
            break
    while pending:
        data = pending.popleft().result()
        following = next(upcoming, None)
        if following is not None:
            pending.append(fetch(following))
        yield data


def _stored(storage: S3Storage, bucket: str, key: str) -> bytes:
    data = storage.get_bytes(bucket, key)
    if data is None:
        raise CutError(f"the recording's segment {key} is no longer stored")
    return data
