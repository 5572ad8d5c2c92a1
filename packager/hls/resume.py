"""Reading back what earlier writers of a prefix listed, so that a new one continues it.

A job's recording outlives one pipeline (the job put online again, a pipeline
restarted after a failure, the service restarted). Before any upload, a new writer
reads each rendition's recording back and goes on after it: segment numbers and media
sequence continue, the first new segment carries `EXT-X-DISCONTINUITY`, and nothing
stored is overwritten.

Per rendition it reads the parts in order, `parts/part_000000.m3u8`, `part_000001`, ...
until one is missing; a recording with no part (written before parts existed) is read
from its whole-live playlist, `event.m3u8`, and its parts are then written anew. The
live playlist is read too, only to keep clear of any number it lists (a part whose
write was lost). A playlist onair did not write is never continued: the numbers it
names are kept clear of, and the recording starts anew after them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from packager import layout
from packager.object_store import ObjectStore
from packager.playlist import ListedSegment, PlaylistError, parse_media_playlist

logger = logging.getLogger(__name__)


@dataclass
class StoredRecording:
    """One rendition's recording as stored."""

    parts: list[list[ListedSegment]] = field(default_factory=list)
    next_number: int = 0  # the first segment number free to use
    parts_missing: bool = False  # read from a whole-live playlist: its parts are to write

    @property
    def segments(self) -> list[ListedSegment]:
        return [segment for part in self.parts for segment in part]


def read_recording(
    store: ObjectStore, bucket: str, prefix: str, rendition: str, log_prefix: str = ""
) -> StoredRecording:
    """The stored recording of `rendition` (empty: nothing stored); raises `StorageError`."""
    found = StoredRecording()
    clear_of = -1  # the highest number named by a playlist that is not continued
    index = 0
    while True:
        key = layout.part_playlist_key(prefix, rendition, index)
        text = store.get_text(bucket, key)
        if text is None:
            break
        try:
            listed = parse_media_playlist(text, uri_prefix=layout.PART_URI_PREFIX)
            last = found.parts[-1][-1].sequence if found.parts else None
            if listed and last is not None and listed[0].sequence != last + 1:
                raise PlaylistError(f"starts at {listed[0].sequence}, not {last + 1}")
        except PlaylistError as error:
            clear_of = max(clear_of, *layout.segment_numbers(text), -1)
            logger.error(
                "%s %s is not a part onair can continue (%s): the recording stops before it",
                log_prefix,
                key,
                error,
            )
            break
        if listed:
            found.parts.append(listed)
        index += 1
    if not found.parts and index == 0:
        event_key = layout.event_playlist_key(prefix, rendition)
        text = store.get_text(bucket, event_key)
        if text is not None:
            try:
                listed = parse_media_playlist(text)
            except PlaylistError as error:
                clear_of = max(clear_of, *layout.segment_numbers(text), -1)
                logger.error(
                    "%s %s is not a playlist onair can continue (%s): starting it anew "
                    "after segment %d",
                    log_prefix,
                    event_key,
                    error,
                    clear_of,
                )
            else:
                if listed:
                    found.parts.append(listed)
                    found.parts_missing = True
    live_key = layout.live_playlist_key(prefix, rendition)
    live = store.get_text(bucket, live_key)
    if live is not None:
        clear_of = max(clear_of, *layout.segment_numbers(live), -1)
    last = found.parts[-1][-1].sequence if found.parts else -1
    if clear_of > last and found.parts:
        logger.warning(
            "%s %s lists segments up to %d, the recording's parts up to %d: numbering after %d",
            log_prefix,
            live_key,
            clear_of,
            last,
            clear_of,
        )
    found.next_number = max(last, clear_of) + 1
    return found
