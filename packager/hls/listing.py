"""What the HLS writer's uploads mean: segments listed in order, playlists and masters
rewritten, the spool's room, and the events reported (the upload queue's handler).

`Listing` holds the writer's state across renditions (`RenditionState` each, the
masters, the end and failure flags) and answers the upload queue
(`packager.hls.uploads.UploadHandler`): a stored segment extends its rendition's
listing through the contiguous prefix of stored ones, which marks its playlists (and,
first, the masters when a bandwidth moved) to be rewritten; a refusal fails the output.
Every method runs with the writer's condition held unless it says otherwise.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator

from media.clock import Clock
from packager.hls.items import (
    Event,
    Job,
    PlaylistSlot,
    QueueItem,
    RenderedPlaylist,
    ResumeRead,
    Upload,
)
from packager.hls.masters import Masters
from packager.hls.renditions import RenditionState
from packager.hls.resume import StoredRecording, read_recording
from packager.hls.spool_limits import SPOOL_FULL, SpoolLimits
from packager.hls.uploads import UploadQueue
from packager.layout import segment_key, segment_name
from packager.object_store import (
    ENDED_PLAYLIST_CACHE_CONTROL,
    LIVE_PLAYLIST_CACHE_CONTROL,
    ObjectStore,
    PermanentStorageError,
)
from packager.spool import Spool

logger = logging.getLogger(__name__)

FIRST_SEGMENT_PUBLISHED = "FirstSegmentPublished"
STORAGE_REFUSED = "StorageRefused"  # a permanent refusal: the output failed


class Listing:
    """The writer's renditions and masters, as the upload queue's outcomes change them."""

    def __init__(
        self,
        storage: ObjectStore,
        bucket: str,
        prefix: str,
        spool: Spool,
        limits: SpoolLimits,
        cond: threading.Condition,
        clock: Clock,
        log_prefix: str,
        *,
        on_event: Callable[[str, str, str | None], None] | None,
        on_failure: Callable[[BaseException], None] | None,
        prepare: Callable[[], object] | None,
    ) -> None:
        self._storage = storage
        self._bucket = bucket
        self.prefix = prefix
        self.spool = spool
        self.limits = limits
        self._cond = cond
        self._clock = clock
        self._log_prefix = log_prefix
        self._on_event = on_event
        self._report_failure = on_failure
        self._prepare = prepare
        self.queue: UploadQueue  # set by the writer, which makes both
        self.renditions: dict[str, RenditionState] = {}
        self.masters = Masters(prefix)
        self.ended = False  # final playlists (EXT-X-ENDLIST) requested
        self.failed: PermanentStorageError | None = None  # the storage refused for good
        self.history_known = False  # a leftover said what the playlists list
        self.dropped_segments = 0  # given up: after a refusal, or for the spool's limits

    # -- UploadHandler --------------------------------------------------------------------

    def prepare(self, item: QueueItem) -> Job:
        if isinstance(item, ResumeRead):
            return item
        if isinstance(item, Upload):
            state = self.renditions[item.rendition]
            item.key = segment_key(self.prefix, item.rendition, state.number(item))
            # Known now (uploads wait for the read-back): whether the playlist will mark
            # the run's first segment as a discontinuity.
            item.clear_indicators = item.opens_run and not state.continues_history
            return item
        if item.kind in ("master", "dvr-master"):
            body = self.masters.render(item)
            final = self.ended
        else:
            state = self.renditions[item.rendition]
            body = state.render(item, ended=self.ended)
            final = self.ended or state.part_complete(item)
        cache_control = ENDED_PLAYLIST_CACHE_CONTROL if final else LIVE_PLAYLIST_CACHE_CONTROL
        return RenderedPlaylist(item, body.encode(), cache_control)

    def read_back(self) -> object:
        """(no lock) The bucket is prepared (created, or checked) before any write; then
        each rendition's recording is read back, unless a leftover said what it is."""
        if self._prepare is not None:
            self._prepare()
        if self.history_known:
            return {}
        return {
            name: read_recording(self._storage, self._bucket, self.prefix, name, self._log_prefix)
            for name in self.renditions
        }

    def resumed(self, result: object) -> list[Event]:
        assert isinstance(result, dict)
        for name, stored in result.items():
            assert isinstance(stored, StoredRecording)
            self._continue(self.renditions[name], stored)
        self.queue.resumed = True
        for state in self.renditions.values():
            self.list_stored(state)  # a leftover's segments stored before it stopped
            if self.history_known:
                for slot in state.every_part():  # the old writer may not have written them
                    self.queue.mark_dirty(slot)
        return []

    def upload_stored(self, upload: Upload) -> list[Event]:
        self.release(upload)
        self.list_stored(self.renditions[upload.rendition])
        return []

    def upload_lost(self, upload: Upload) -> list[Event]:
        self.release(upload)
        self.list_stored(self.renditions[upload.rendition])
        return []

    def playlist_written(self, slot: PlaylistSlot, first_write: bool) -> list[Event]:
        state = self.renditions.get(slot.rendition)
        if state is not None:
            state.written(slot)
        if first_write and slot.kind in ("live", "dvr", "event"):
            self.update_masters()
        if not (first_write and slot.kind == "live" and state is not None):
            return []
        first = state.recording.last
        assert first is not None
        message = f"{first.uri} ({first.duration_seconds:.3f} s) listed in {slot.key}"
        return [(FIRST_SEGMENT_PUBLISHED, message, slot.rendition)]

    def pending_uploads(self) -> Iterator[Upload]:
        for state in self.renditions.values():
            for upload in state.added:
                if not (upload.stored or upload.lost):
                    yield upload

    def refused(self, job: Job, error: PermanentStorageError) -> None:
        """(no lock) The storage refused for good (no retry can help): the output fails
        at once; what is spooled stays on disk."""
        with self._cond:
            if self.failed is not None:
                return
            self.failed = error
            self.queue.closed = True  # the workers stop taking jobs
            self._cond.notify_all()
            item = job.slot if isinstance(job, RenderedPlaylist) else job
            rendition = getattr(item, "rendition", "") or None
        logger.error("%s storage refused for good: %s", self._log_prefix, error)
        self.emit([(STORAGE_REFUSED, str(error), rendition)])
        if self._report_failure is not None:
            try:
                self._report_failure(error)
            except Exception:
                logger.exception("%s on_failure failed", self._log_prefix)

    def emit(self, events: list[Event]) -> None:
        """(no lock) Report events to `on_event`."""
        if self._on_event is None:
            return
        for status, message, rendition in events:
            try:
                self._on_event(status, message, rendition)
            except Exception:
                logger.exception("%s on_event(%s) failed", self._log_prefix, status)

    # -- listing ----------------------------------------------------------------------------

    def _continue(self, state: RenditionState, stored: StoredRecording) -> None:
        """Go on after what earlier writers of the prefix stored."""
        state.offset = stored.next_number
        if not stored.parts:
            return
        if stored.parts_missing:
            for segment in stored.segments:  # a whole-live playlist: cut into parts
                state.recording.append(segment)
            for slot in state.every_part():
                self.queue.mark_dirty(slot)
        else:
            state.recording.load(stored.parts)
        state.earlier_seconds = state.recording.seconds
        state.discontinuity_pending = True  # another encoder: timestamps restart
        state.continues_history = True
        logger.info(
            "%s %s continues after %d earlier segments (%.1f s)",
            self._log_prefix,
            state.name,
            state.recording.count,
            state.earlier_seconds,
        )

    def list_stored(self, state: RenditionState) -> None:
        """List what `state` has stored in order; rewrite the playlists that changed."""
        slots = state.advance()
        if slots is None:
            return
        # The masters first: a bigger peak is announced before it is listed.
        self.update_masters()
        for slot in slots:
            self.queue.mark_dirty(slot)

    def end(self) -> None:
        """The live ended: every playlist once more, with EXT-X-ENDLIST (the master
        follows once every whole-live playlist is written)."""
        self.ended = True
        for state in self.renditions.values():
            for slot in state.final_slots():
                self.queue.mark_dirty(slot)
        self.update_masters()

    def update_masters(self) -> None:
        for slot in self.masters.update(self.renditions.values(), ended=self.ended):
            self.queue.mark_dirty(slot)

    def all_listed(self) -> bool:
        return all(not s.added for s in self.renditions.values())

    def playlists_idle(self) -> bool:
        slots = list(self.masters.slots)
        for state in self.renditions.values():
            slots += [state.live, state.dvr, state.event, *state.parts.values()]
        return not any(s.dirty or s.queued or s.in_flight for s in slots)

    def pending_count(self) -> int:
        return sum(s.pending_count() for s in self.renditions.values())

    # -- the spool's room -------------------------------------------------------------------

    def make_room(self, upload: Upload) -> bool:
        """Reserve spool room for `upload`, giving up the oldest segments not yet
        uploaded (never one in flight) while this job or the host is over its limit;
        False, and `upload` itself is given up, when nothing else can go."""
        while not self.limits.take(upload.size_bytes):
            victim = self._oldest_pending()
            if victim is None:
                self._give_up(upload, reserved=False)
                return False
            self._give_up(victim, reserved=True)
        return True

    def _oldest_pending(self) -> Upload | None:
        candidates = []
        for state in self.renditions.values():
            for upload in state.added:
                if not (upload.stored or upload.lost or upload.in_flight):
                    candidates.append(upload)
                    break
        return min(candidates, key=lambda u: u.order, default=None)

    def _give_up(self, upload: Upload, *, reserved: bool) -> None:
        if reserved:
            self.release(upload)
        upload.lost = upload.given_up = True
        if upload.spool_path is not None:
            self.spool.remove(upload.spool_path)
        upload.data = None
        self.queue.health.dropped(upload, self._clock.monotonic())
        self.dropped_segments += 1
        state = self.renditions[upload.rendition]
        number = state.number(upload) if self.queue.resumed else upload.sequence
        self.limits.given_up(f"{upload.rendition}/{segment_name(number)}")
        if upload in state.added:
            self.list_stored(state)

    def release(self, upload: Upload) -> None:
        """Its spool room is free again (stored, vanished or given up: once each)."""
        if not upload.given_up:  # else released when it was given up (or never reserved)
            self.limits.release(upload.size_bytes)

    def spool_events(self, *, flush: bool = False) -> list[Event]:
        message = self.limits.report(flush=flush)
        return [] if message is None else [(SPOOL_FULL, message, None)]
