"""The HLS writer (`HlsWriter`) and the events it reports; see `packager.hls.writer`."""

from packager.hls.listing import FIRST_SEGMENT_PUBLISHED, STORAGE_REFUSED
from packager.hls.spool_limits import SPOOL_FULL
from packager.hls.writer import DEFAULT_DVR_WINDOW_SECONDS, HlsWriter, PublishedRendition
from packager.storage_health import STORAGE_OUTAGE, STORAGE_RECOVERED

__all__ = [
    "DEFAULT_DVR_WINDOW_SECONDS",
    "FIRST_SEGMENT_PUBLISHED",
    "SPOOL_FULL",
    "STORAGE_OUTAGE",
    "STORAGE_RECOVERED",
    "STORAGE_REFUSED",
    "HlsWriter",
    "PublishedRendition",
]
