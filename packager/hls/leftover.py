"""What a closed HLS writer leaves for the next start, and a writer made from it.

A writer closed with segments not yet stored writes its manifest (`packager.recovery`):
every rendition, what its playlists list, and each segment still to store with its
place in the recording. The next start makes a writer from it (`HlsWriter.start(...,
leftover=...)`), which uploads those segments in order, lists them where they belong,
writes every part of the recording again (the old writer may have been closed before
writing some) and ends the playlists. Both functions run with the writer's lock held.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path

from packager.hls.items import Upload
from packager.hls.renditions import RenditionState
from packager.hls.spool_limits import SpoolLimits
from packager.recovery import Leftover, PendingSegment


def leftover_of(
    states: Iterable[RenditionState], spool_root: Path, *, resumed: bool, segment_seconds: float
) -> Leftover:
    """The manifest of what is not yet stored (`resumed`: the stored playlists were read
    back, so every pending segment's number is known)."""
    states = list(states)
    pending: list[PendingSegment] = []
    for state in states:
        gap = state.discontinuity_pending
        for upload in state.added:
            if upload.lost or (upload.spool_path is None and not upload.stored):
                gap = True  # given up, vanished, or only in memory: a gap
                continue
            file = None
            if not upload.stored and upload.spool_path is not None:
                file = upload.spool_path.relative_to(spool_root).as_posix()
            pending.append(
                PendingSegment(
                    rendition=state.name,
                    sequence=upload.sequence,
                    number=state.number(upload) if resumed else upload.number,
                    duration_seconds=upload.duration_seconds,
                    discontinuity=upload.discontinuity or gap,
                    file=file,
                    opens_run=upload.opens_run and not state.continues_history,
                    arrived_at=_iso(upload.arrived_at),
                )
            )
            gap = False
    return Leftover(
        variants=[s.info for s in states],
        segment_seconds=segment_seconds,
        resumed=resumed,
        published={s.name: list(s.recording.segments()) for s in states},
        pending=pending,
    )


def inherit(
    leftover: Leftover,
    states: dict[str, RenditionState],
    spool_root: Path,
    limits: SpoolLimits,
    next_order: Callable[[], int],
) -> list[Upload]:
    """Seed `states` with an earlier writer's unfinished work; the uploads to queue."""
    if leftover.resumed:
        for name, listed in leftover.published.items():
            state = states.get(name)
            if state is None:
                continue
            for segment in listed:
                state.recording.append(segment)
            state.earlier_seconds = state.recording.seconds
    queued: list[Upload] = []
    for item in leftover.pending:
        state = states.get(item.rendition)
        if state is None:
            continue
        path = None if item.file is None else spool_root / item.file
        size = 0
        if path is not None:
            try:
                size = path.stat().st_size
            except OSError:
                path = None  # gone: listed as lost
        upload = Upload(
            rendition=item.rendition,
            sequence=item.sequence,
            duration_seconds=item.duration_seconds,
            discontinuity=item.discontinuity,
            size_bytes=size,
            spool_path=path,
            arrived_at=_instant(item.arrived_at),
            order=next_order(),
            stored=item.file is None,
            lost=item.file is not None and path is None,
            opens_run=item.opens_run,
            number=item.number,
        )
        if path is not None:
            limits.take_anyway(size)  # already on disk: counted, never refused
        state.added.append(upload)
        state.last_sequence = item.sequence
        state.run_started = True
        if not (upload.stored or upload.lost):
            queued.append(upload)
    return queued


def _iso(instant: datetime | None) -> str | None:
    return None if instant is None else instant.isoformat()


def _instant(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)
