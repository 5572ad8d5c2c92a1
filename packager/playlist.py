"""HLS playlists as pure functions over what has been published (RFC 8216).

Nothing here touches storage or clocks; the HLS writer decides *what* is listed (only
segments already stored) and these functions decide *how* it is written. Media
playlists are rendered here line by line (in exactly the form `m3u8` writes, which
the tests check, and parse back with `m3u8`): one entry's text never changes once
rendered, so the writer keeps it and a playlist costs a join, whatever the length of
the live. The master playlist is rendered with `m3u8`.

Choices worth knowing:

- `EXT-X-VERSION:3` on media playlists: the lowest version that allows the decimal
  `#EXTINF` durations we write (RFC 8216 section 7). The master playlist uses nothing
  beyond version 1 (`AVERAGE-BANDWIDTH`, `FRAME-RATE`, `EXT-X-INDEPENDENT-SEGMENTS`
  carry no version requirement), so it has no `EXT-X-VERSION` tag.
- `EXT-X-MEDIA-SEQUENCE` and `EXT-X-DISCONTINUITY-SEQUENCE` are omitted when they
  are 0; RFC 8216 4.3.3.2 and 4.3.3.3 define that absence as 0.
- `EXT-X-TARGETDURATION` is the largest `#EXTINF` *as written* (milliseconds) rounded
  half up, over every segment of the recording so far and never below
  `min_target_seconds` (the writer passes the configured segment length): it never
  decreases while the live goes on, and in practice stays constant (RFC 8216 6.2.1).
- `EXT-X-PROGRAM-DATE-TIME` (the wall-clock instant the segment's first frame
  arrived, UTC, milliseconds) is written on the first segment a playlist lists and on
  every segment after an `EXT-X-DISCONTINUITY` (RFC 8216 4.3.2.6), and nowhere else:
  a player counts `#EXTINF` durations from there.
- The whole-live playlist (`event.m3u8`) has `EXT-X-PLAYLIST-TYPE:EVENT` and, once
  the live ended, `EXT-X-ENDLIST`: players treat that as VOD, and the type tag never
  changes (a later live of the job appends to it).
- The master's `BANDWIDTH` is never below the rendition's ceiling (its VBV cap with
  audio and TS overhead, `packager.bandwidth.ts_ceiling_bps`) nor below the peak
  measured on any complete segment so far; `AVERAGE-BANDWIDTH` is measured.
- The DVR playlist (`dvr.m3u8`) is the live playlist with a window counted in
  seconds (`ONAIR_DVR_WINDOW_SECONDS`) instead of segments.
- `FRAME-RATE` is rounded to three decimal places by `m3u8` and printed without
  trailing zeros (`30`, `29.97`, `23.976`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

import m3u8

from media.segments import VariantInfo
from packager.layout import LIVE_PLAYLIST_NAME, segment_name

MEDIA_PLAYLIST_VERSION = 3
DEFAULT_WINDOW_SEGMENTS = 6


class PlaylistError(ValueError):
    """A stored playlist is not one this module wrote."""


@dataclass(frozen=True, slots=True)
class ListedSegment:
    """A stored segment as a media playlist lists it."""

    sequence: int
    duration_seconds: float
    discontinuity: bool = False
    # When its first frame arrived (aware, UTC): EXT-X-PROGRAM-DATE-TIME where written.
    program_date_time: datetime | None = None

    @property
    def uri(self) -> str:
        """Relative to a playlist in the rendition's folder."""
        return segment_name(self.sequence)


@dataclass(frozen=True)
class VariantStream:
    """A rendition with its measured bit rates, as the master playlist lists it."""

    info: VariantInfo
    peak_bandwidth_bps: int | None = None  # measured; None before any segment
    average_bandwidth_bps: int | None = None
    ceiling_bps: int | None = None  # the most the encoder may send (None: a copy)

    @property
    def bandwidth_bps(self) -> int:
        """`BANDWIDTH`: the larger of the ceiling and the measured peak; the template's
        target when neither is known."""
        known = [b for b in (self.ceiling_bps, self.peak_bandwidth_bps) if b is not None]
        return max(known) if known else self.info.target_bitrate_bps


def extinf_duration(duration_seconds: float) -> Decimal:
    """The duration exactly as `#EXTINF` writes it (milliseconds)."""
    return Decimal(f"{duration_seconds:.3f}")


def rounded_duration(duration_seconds: float) -> int:
    """A written `#EXTINF` rounded half up (2.5 s -> 3), the safe side of RFC 8216 4.3.3.1."""
    return int(extinf_duration(duration_seconds).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def target_duration_seconds(segments: Iterable[ListedSegment], min_target_seconds: int = 1) -> int:
    """`EXT-X-TARGETDURATION`: every written `#EXTINF`, rounded to the nearest integer, fits."""
    target = max(1, min_target_seconds)
    for segment in segments:
        target = max(target, rounded_duration(segment.duration_seconds))
    return target


def program_date_time(instant: datetime) -> str:
    """The `EXT-X-PROGRAM-DATE-TIME` value: ISO 8601 with milliseconds and the zone."""
    return instant.isoformat(timespec="milliseconds")


def entry_text(segment: ListedSegment, *, first: bool = False, uri_prefix: str = "") -> str:
    """The lines of one listed segment; `first`: the playlist's first (its date is written).

    `uri_prefix` leads from the playlist's folder to the rendition's (`../` for a part).
    """
    lines = "#EXT-X-DISCONTINUITY\n" if segment.discontinuity else ""
    instant = segment.program_date_time
    if instant is not None and (first or segment.discontinuity):
        lines += f"#EXT-X-PROGRAM-DATE-TIME:{program_date_time(instant)}\n"
    return f"{lines}#EXTINF:{segment.duration_seconds:.3f},\n{uri_prefix}{segment.uri}\n"


def media_playlist_text(
    entries: Iterable[str],
    *,
    media_sequence: int,
    discontinuity_sequence: int,
    target_seconds: int,
    playlist_type: str | None = None,
    ended: bool = False,
) -> str:
    """A media playlist from its entries' text (`entry_text`, the first with `first=True`)."""
    head = ["#EXTM3U\n"]
    if media_sequence:
        head.append(f"#EXT-X-MEDIA-SEQUENCE:{media_sequence}\n")
    if discontinuity_sequence:
        head.append(f"#EXT-X-DISCONTINUITY-SEQUENCE:{discontinuity_sequence}\n")
    head.append(f"#EXT-X-VERSION:{MEDIA_PLAYLIST_VERSION}\n")
    head.append(f"#EXT-X-TARGETDURATION:{target_seconds}\n")
    if playlist_type:
        head.append(f"#EXT-X-PLAYLIST-TYPE:{playlist_type.upper()}\n")
    tail = "#EXT-X-ENDLIST\n" if ended else ""
    return "".join(head) + "".join(entries) + tail


def media_playlist(
    listed: Sequence[ListedSegment],
    *,
    discontinuity_sequence: int = 0,
    target_seconds: int,
    playlist_type: str | None = None,
    ended: bool = False,
    uri_prefix: str = "",
) -> str:
    """A media playlist listing `listed`, its media sequence the first one's."""
    if not listed:
        raise ValueError("a media playlist needs at least one segment")
    entries = [
        entry_text(segment, first=index == 0, uri_prefix=uri_prefix)
        for index, segment in enumerate(listed)
    ]
    return media_playlist_text(
        entries,
        media_sequence=listed[0].sequence,
        discontinuity_sequence=discontinuity_sequence,
        target_seconds=target_seconds,
        playlist_type=playlist_type,
        ended=ended,
    )


def live_playlist(
    history: Sequence[ListedSegment],
    *,
    window_segments: int = DEFAULT_WINDOW_SEGMENTS,
    min_target_seconds: int = 1,
    ended: bool = False,
) -> str:
    """The sliding-window playlist (`index.m3u8`) over the live's published `history`.

    `history` is every published segment of the rendition, in order; the last
    `window_segments` are listed. `EXT-X-MEDIA-SEQUENCE` is the first listed sequence
    and `EXT-X-DISCONTINUITY-SEQUENCE` counts the discontinuities that slid out.
    """
    if window_segments < 1:
        raise ValueError("window_segments must be at least 1")
    if not history:
        raise ValueError("a media playlist needs at least one segment")
    window = history[-window_segments:]
    slid_out = history[: len(history) - len(window)]
    return media_playlist(
        window,
        discontinuity_sequence=sum(1 for s in slid_out if s.discontinuity),
        target_seconds=target_duration_seconds(history, min_target_seconds),
        ended=ended,
    )


def dvr_window_count(history: Sequence[ListedSegment], window_seconds: float) -> int:
    """How many of the latest segments fit in `window_seconds` (at least one)."""
    total = 0.0
    count = 0
    for segment in reversed(history):
        total += segment.duration_seconds
        if count and total > window_seconds:
            break
        count += 1
    return count


def dvr_playlist(
    history: Sequence[ListedSegment],
    *,
    window_seconds: float,
    min_target_seconds: int = 1,
    ended: bool = False,
) -> str:
    """The DVR playlist (`dvr.m3u8`): the latest segments that fit in `window_seconds`
    (at least one), otherwise as the live playlist."""
    if window_seconds <= 0:
        raise ValueError("window_seconds must be positive")
    if not history:
        raise ValueError("a media playlist needs at least one segment")
    return live_playlist(
        history,
        window_segments=dvr_window_count(history, window_seconds),
        min_target_seconds=min_target_seconds,
        ended=ended,
    )


def event_playlist(
    history: Sequence[ListedSegment], *, min_target_seconds: int = 1, ended: bool = False
) -> str:
    """The whole-live playlist (`event.m3u8`): every published segment, type EVENT."""
    return media_playlist(
        history,
        target_seconds=target_duration_seconds(history, min_target_seconds),
        playlist_type="event",
        ended=ended,
    )


def parse_media_playlist(text: str, *, uri_prefix: str = "") -> list[ListedSegment]:
    """The segments a media playlist written here lists (an event playlist, or a part
    whose URIs start with `uri_prefix`), to continue it; each with its date
    (`EXT-X-PROGRAM-DATE-TIME`, or counted on from the last one written).

    Raises `PlaylistError` unless every segment is named as we name them, numbered by
    its media sequence number (consecutive).
    """
    try:
        playlist = m3u8.loads(text)
    except Exception as error:  # m3u8 raises plain exceptions on malformed input
        raise PlaylistError(f"unreadable: {error}") from error
    if playlist.is_variant:
        raise PlaylistError("a master playlist, not a media playlist")
    first = playlist.media_sequence or 0
    listed: list[ListedSegment] = []
    for index, segment in enumerate(playlist.segments):
        sequence = first + index
        expected = uri_prefix + segment_name(sequence)
        if segment.uri != expected:
            raise PlaylistError(f"segment {index} is {segment.uri!r}, not {expected}")
        if segment.duration is None or segment.duration < 0:
            raise PlaylistError(f"segment {index} has no duration")
        instant = segment.current_program_date_time
        listed.append(
            ListedSegment(
                sequence,
                float(segment.duration),
                bool(segment.discontinuity),
                instant if isinstance(instant, datetime) else None,
            )
        )
    return listed


def _stream_order(variant: VariantStream) -> tuple[int, int, int]:
    # The ladder's order (template bitrate), not the measured one, so that the
    # order does not flip between rewrites when two renditions measure close.
    info = variant.info
    return (info.target_bitrate_bps, info.height, info.width)


def master_playlist(
    variants: Sequence[VariantStream], media_playlist: str = LIVE_PLAYLIST_NAME
) -> str:
    """The master playlist: one `EXT-X-STREAM-INF` per variant, highest first.

    Each variant's URI is `{rendition}/{media_playlist}`, relative to the master.
    """
    if not variants:
        raise ValueError("a master playlist needs at least one variant")
    playlist = m3u8.M3U8()
    playlist.is_independent_segments = True
    for variant in sorted(variants, key=_stream_order, reverse=True):
        info = variant.info
        stream_info: dict[str, object] = {
            "bandwidth": variant.bandwidth_bps,
            "codecs": info.codecs,
        }
        if variant.average_bandwidth_bps is not None:
            stream_info["average_bandwidth"] = variant.average_bandwidth_bps
        if info.width > 0 and info.height > 0:
            stream_info["resolution"] = f"{info.width}x{info.height}"
        if info.frame_rate is not None:
            stream_info["frame_rate"] = info.frame_rate
        playlist.add_playlist(
            m3u8.Playlist(
                uri=f"{info.name}/{media_playlist}",
                stream_info=stream_info,
                media=[],
                base_uri=None,
            )
        )
    text: str = playlist.dumps()
    return text
