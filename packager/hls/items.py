"""The things the HLS writer's upload queue carries: segments, playlists, the read-back."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

# Priorities: the read-back of earlier playlists before anything, then playlists (small,
# they make what is stored playable), then segments; oldest first within each.
RESUME_PRIORITY = -1
PLAYLIST_PRIORITY = 0
SEGMENT_PRIORITY = 1


@dataclass(eq=False)
class Upload:
    """One spooled segment on its way to storage."""

    rendition: str
    sequence: int
    duration_seconds: float
    discontinuity: bool
    size_bytes: int
    spool_path: Path | None
    arrived_at: datetime | None = None  # its first frame's arrival (EXT-X-PROGRAM-DATE-TIME)
    key: str = ""  # set when taken for upload: the rendition's offset is known then
    data: bytes | None = None  # kept in memory only when the spool write failed
    order: int = 0
    stored: bool = False
    lost: bool = False  # the spool file vanished: it can never be uploaded
    # The first segment of this writer's run of the rendition: muxed with the TS
    # discontinuity indicators, cleared at upload unless the playlist marks it.
    opens_run: bool = False
    clear_indicators: bool = False  # decided when taken for upload
    in_flight: bool = False  # a worker is uploading it
    given_up: bool = False  # dropped for the spool's limits (and so `lost`)
    number: int | None = None  # its number in the recording, when fixed (a leftover)


@dataclass(eq=False)
class PlaylistSlot:
    """One playlist object: written by one worker at a time, always with the latest content."""

    key: str
    kind: str  # "live", "dvr", "part", "event", "master" or "dvr-master"
    rendition: str = ""
    part: int = -1  # the part's index (kind "part")
    order: int = 0
    dirty: bool = False
    queued: bool = False
    in_flight: bool = False
    written: bool = False


@dataclass(eq=False)
class ResumeRead:
    """Read back what earlier writers of the prefix listed, before any upload."""

    order: int = 0


@dataclass(eq=False)
class RenderedPlaylist:
    """A playlist slot taken for writing, with the content it had when taken."""

    slot: PlaylistSlot
    body: bytes
    cache_control: str


QueueItem = Upload | PlaylistSlot | ResumeRead
Job = Upload | RenderedPlaylist | ResumeRead


def health_item(job: Job) -> QueueItem:
    """What the storage health tracks for a job (a playlist: its slot)."""
    return job.slot if isinstance(job, RenderedPlaylist) else job


Event = tuple[str, str, str | None]  # status, message, the rendition it is about


def about(events: list[tuple[str, str]], rendition: str | None) -> list[Event]:
    return [(status, message, rendition) for status, message in events]
