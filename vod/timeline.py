"""A live's recorded media timeline, read from its renditions' recording playlists.

The timeline counts media only: 0 is the first frame of the current live (the first
segment whose `EXT-X-PROGRAM-DATE-TIME` is not before `since`, when the job last went
online) and a reconnect gap between two segments is not counted. Each segment's place
on it is the sum of the `#EXTINF` durations before it (milliseconds, as written), so
the API, the cut and a player reading the playlists agree to the millisecond.
Date-times map through each segment's program date-time.
"""

from __future__ import annotations

import bisect
import logging
import posixpath
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import m3u8

from packager import layout
from packager.object_store import S3Storage
from vod.errors import CutError

log = logging.getLogger(__name__)

MAX_PARTS = 100_000  # a part is an hour: far beyond any live


@dataclass(frozen=True, slots=True)
class RecordedSegment:
    """One stored segment of a rendition, placed on the live's media timeline."""

    key: str
    start_ms: int  # on the gap-free media timeline
    duration_ms: int
    discontinuity: bool  # the live's playlist starts a new run here (a reconnect)
    program_time: datetime | None  # wall clock of its first frame

    @property
    def end_ms(self) -> int:
        return self.start_ms + self.duration_ms


@dataclass(frozen=True)
class RecordedRendition:
    """One rendition's segments of the current live, in order."""

    name: str
    segments: tuple[RecordedSegment, ...]

    def index_at(self, ms: int) -> int:
        """The segment holding media instant `ms` (the last one for the very end)."""
        starts = [s.start_ms for s in self.segments]
        return max(0, min(len(starts) - 1, bisect.bisect_right(starts, ms) - 1))


@dataclass(frozen=True)
class VariantEntry:
    """A rendition's line in the live's master playlist (kept for the VOD's master)."""

    name: str
    bandwidth_bps: int
    average_bandwidth_bps: int | None
    codecs: str
    width: int
    height: int
    frame_rate: float | None


@dataclass(frozen=True)
class RecordedTimeline:
    """What was recorded since the job last went online, on the media timeline."""

    renditions: tuple[str, ...]  # as recorded, top rendition first
    duration_ms: int  # media recorded since `since` (gaps not counted)
    first_program_time: datetime | None  # wall clock of its first frame
    last_program_time: datetime | None  # wall clock of its end
    tracks: tuple[RecordedRendition, ...] = field(default=(), compare=False, repr=False)
    variants: tuple[VariantEntry, ...] = field(default=(), compare=False, repr=False)

    def describe(self) -> str:
        """The recorded range, as an error message says it."""
        text = f"0 to {self.duration_ms} ms"
        if self.first_program_time is not None and self.last_program_time is not None:
            text += (
                f" ({self.first_program_time.isoformat(timespec='milliseconds')} to "
                f"{self.last_program_time.isoformat(timespec='milliseconds')})"
            )
        return text

    def resolve(
        self,
        from_ms: int | None,
        to_ms: int | None,
        from_time: datetime | None,
        to_time: datetime | None,
    ) -> tuple[int, int]:
        """(from_ms, to_ms) on the media timeline; None = start/end of the recording;
        raises CutError saying the recorded range when outside it, or from >= to."""
        start = from_ms if from_ms is not None else None
        end = to_ms if to_ms is not None else None
        if start is None and from_time is not None:
            start = self.ms_at(from_time, starting=True)
        if end is None and to_time is not None:
            end = self.ms_at(to_time, starting=False)
        start = 0 if start is None else start
        end = self.duration_ms if end is None else end
        if start < 0 or end > self.duration_ms or start > self.duration_ms or end < 0:
            raise CutError(
                f"the range {start} to {end} ms is outside the recording: "
                f"the recorded range is {self.describe()}"
            )
        if start >= end:
            raise CutError(
                f"the range must end after it starts (from {start} ms, to {end} ms); "
                f"the recorded range is {self.describe()}"
            )
        return start, end

    def ms_at(self, instant: datetime, *, starting: bool) -> int:
        """The media instant recorded at wall-clock `instant`. Inside a reconnect gap: the
        start of the media after it (`starting`) or the end of the media before it."""
        if instant.tzinfo is None:
            raise CutError("a date-time needs its time zone")
        segments = self.tracks[0].segments if self.tracks else ()
        first, last = self.first_program_time, self.last_program_time
        if not segments or first is None or last is None:
            raise CutError("the recording has no program date-times to map a date-time through")
        if instant < first or instant > last:
            raise CutError(
                f"{instant.isoformat()} is outside the recording: "
                f"the recorded range is {self.describe()}"
            )
        previous_end = 0
        for segment in segments:
            begins = segment.program_time
            if begins is None:
                continue
            if instant < begins:  # in the gap before this segment
                return segment.start_ms if starting else previous_end
            offset_ms = round((instant - begins) / timedelta(milliseconds=1))
            if offset_ms <= segment.duration_ms:
                return segment.start_ms + offset_ms
            previous_end = segment.end_ms
        return self.duration_ms


def recorded_timeline(
    storage: S3Storage, bucket: str, live_prefix: str, since: datetime | None
) -> RecordedTimeline:
    """The recording of the current live: reads the master (which renditions, top
    first), then each rendition's part playlists (or its `event.m3u8`). Segments whose
    program time is before `since` belong to an earlier live and are left out.
    Raises CutError if nothing was recorded; `StorageError` propagates."""
    master_text = storage.get_text(bucket, layout.master_key(live_prefix))
    if master_text is None:
        raise CutError("nothing was recorded: the live has no master playlist")
    variants = _variants(master_text)
    if not variants:
        raise CutError("nothing was recorded: the live's master lists no rendition")
    tracks = []
    for variant in variants:
        segments = _recorded_segments(storage, bucket, live_prefix, variant.name, since)
        if segments:
            tracks.append(RecordedRendition(variant.name, tuple(segments)))
    if not tracks:
        raise CutError("nothing was recorded since the live went online")
    names = {t.name for t in tracks}
    top = tracks[0].segments
    duration_ms = top[-1].end_ms
    first = top[0].program_time
    last_segment = top[-1]
    last = (
        None
        if last_segment.program_time is None
        else last_segment.program_time + timedelta(milliseconds=last_segment.duration_ms)
    )
    return RecordedTimeline(
        renditions=tuple(t.name for t in tracks),
        duration_ms=duration_ms,
        first_program_time=first,
        last_program_time=last,
        tracks=tuple(tracks),
        variants=tuple(v for v in variants if v.name in names),
    )


def _variants(master_text: str) -> list[VariantEntry]:
    master = m3u8.loads(master_text)
    entries = []
    for playlist in master.playlists:
        info = playlist.stream_info
        name = posixpath.dirname(playlist.uri or "")
        if not name:
            continue
        width, height = info.resolution or (0, 0)
        entries.append(
            VariantEntry(
                name=name,
                bandwidth_bps=int(info.bandwidth or 0),
                average_bandwidth_bps=(
                    int(info.average_bandwidth) if info.average_bandwidth else None
                ),
                codecs=str(info.codecs or ""),
                width=int(width),
                height=int(height),
                frame_rate=float(info.frame_rate) if info.frame_rate else None,
            )
        )
    return entries


def _playlists(storage: S3Storage, bucket: str, prefix: str, rendition: str) -> list[str]:
    """The rendition's recording: its parts in order, else its whole-live playlist."""
    texts = []
    for index in range(MAX_PARTS):
        text = storage.get_text(bucket, layout.part_playlist_key(prefix, rendition, index))
        if text is None:
            break
        texts.append(text)
    if texts:
        return texts
    event = storage.get_text(bucket, layout.event_playlist_key(prefix, rendition))
    return [] if event is None else [event]


def _recorded_segments(
    storage: S3Storage, bucket: str, prefix: str, rendition: str, since: datetime | None
) -> list[RecordedSegment]:
    folder = f"{prefix}/{rendition}" if prefix else rendition
    segments: list[RecordedSegment] = []
    position = 0
    pending_discontinuity = False
    for text in _playlists(storage, bucket, prefix, rendition):
        for item in m3u8.loads(text).segments:
            instant = item.current_program_date_time
            program_time = instant if isinstance(instant, datetime) else None
            if since is not None and (program_time is None or program_time < since):
                continue  # an earlier live of the job
            duration_ms = round(float(item.duration or 0) * 1000)
            discontinuity = bool(item.discontinuity) or pending_discontinuity
            pending_discontinuity = False
            if duration_ms <= 0:
                pending_discontinuity = discontinuity
                continue
            key = f"{folder}/{posixpath.basename(item.uri)}"
            segments.append(
                RecordedSegment(key, position, duration_ms, discontinuity, program_time)
            )
            position += duration_ms
    return segments
