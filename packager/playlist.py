"""HLS playlists as pure functions over what has been published (RFC 8216), rendered with `m3u8`.

Nothing here touches storage or clocks; the publisher decides *what* is listed (only
segments already stored) and these functions decide *how* it is written.

Choices worth knowing:

- `EXT-X-VERSION:3` on media playlists: the lowest version that allows the decimal
  `#EXTINF` durations we write (RFC 8216 section 7). The master playlist uses nothing
  beyond version 1 (`AVERAGE-BANDWIDTH`, `FRAME-RATE`, `EXT-X-INDEPENDENT-SEGMENTS`
  carry no version requirement), so it has no `EXT-X-VERSION` tag.
- `m3u8` omits `EXT-X-MEDIA-SEQUENCE` and `EXT-X-DISCONTINUITY-SEQUENCE` when they
  are 0; RFC 8216 4.3.3.2 and 4.3.3.3 define that absence as 0.
- `EXT-X-TARGETDURATION` is the largest `#EXTINF` *as written* (milliseconds) rounded
  half up, over every segment of the live so far and never below `min_target_seconds`
  (the publisher passes the configured segment length): it never decreases while the
  live goes on, and in practice stays constant, as RFC 8216 6.2.1 asks.
- When the live ends the event playlist keeps `EXT-X-PLAYLIST-TYPE:EVENT` and gains
  `EXT-X-ENDLIST`: players treat that as VOD, and the type tag never changes.
- The master's `BANDWIDTH` is never below the rendition's ceiling (its VBV cap with
  audio and TS overhead, `packager.bandwidth.ts_ceiling_bps`) nor below the peak
  measured on any complete segment so far; `AVERAGE-BANDWIDTH` is measured.
- The DVR playlist (`dvr.m3u8`) is the live playlist with a window counted in
  seconds (`ONAIR_DVR_WINDOW_SECONDS`) instead of segments.
- `FRAME-RATE` is rounded to three decimal places by `m3u8` and printed without
  trailing zeros (`30`, `29.97`, `23.976`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

import m3u8

from packager.layout import LIVE_PLAYLIST_NAME, segment_name
from packager.segments import VariantInfo

MEDIA_PLAYLIST_VERSION = 3
DEFAULT_WINDOW_SEGMENTS = 6


class PlaylistError(ValueError):
    """A stored playlist is not one this module wrote."""


@dataclass(frozen=True)
class ListedSegment:
    """A stored segment as a media playlist lists it."""

    sequence: int
    duration_seconds: float
    discontinuity: bool = False

    @property
    def uri(self) -> str:
        """Relative to the playlist, which sits in the rendition's folder."""
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


def target_duration_seconds(segments: Sequence[ListedSegment], min_target_seconds: int = 1) -> int:
    """`EXT-X-TARGETDURATION`: every written `#EXTINF`, rounded to the nearest integer, fits.

    Rounding is half up (2.5 s -> 3), the safe side of RFC 8216 4.3.3.1.
    """
    target = max(1, min_target_seconds)
    for segment in segments:
        rounded = int(
            extinf_duration(segment.duration_seconds).quantize(Decimal(1), rounding=ROUND_HALF_UP)
        )
        target = max(target, rounded)
    return target


def _media_playlist(
    listed: Sequence[ListedSegment],
    *,
    media_sequence: int,
    discontinuity_sequence: int,
    target_seconds: int,
    playlist_type: str | None,
    ended: bool,
) -> str:
    playlist = m3u8.M3U8()
    playlist.version = MEDIA_PLAYLIST_VERSION
    playlist.target_duration = target_seconds
    playlist.media_sequence = media_sequence
    playlist.discontinuity_sequence = discontinuity_sequence
    playlist.playlist_type = playlist_type
    playlist.is_endlist = ended
    for segment in listed:
        playlist.add_segment(
            m3u8.Segment(
                uri=segment.uri,
                duration=segment.duration_seconds,
                discontinuity=segment.discontinuity,
            )
        )
    text: str = playlist.dumps(infspec="milliseconds")
    return text


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
    return _media_playlist(
        window,
        media_sequence=window[0].sequence,
        discontinuity_sequence=sum(1 for s in slid_out if s.discontinuity),
        target_seconds=target_duration_seconds(history, min_target_seconds),
        playlist_type=None,
        ended=ended,
    )


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
    total = 0.0
    count = 0
    for segment in reversed(history):
        total += segment.duration_seconds
        if count and total > window_seconds:
            break
        count += 1
    return live_playlist(
        history, window_segments=count, min_target_seconds=min_target_seconds, ended=ended
    )


def event_playlist(
    history: Sequence[ListedSegment], *, min_target_seconds: int = 1, ended: bool = False
) -> str:
    """The whole-live playlist (`event.m3u8`): every published segment, type EVENT."""
    if not history:
        raise ValueError("a media playlist needs at least one segment")
    return _media_playlist(
        history,
        media_sequence=history[0].sequence,
        discontinuity_sequence=0,
        target_seconds=target_duration_seconds(history, min_target_seconds),
        playlist_type="event",
        ended=ended,
    )


def parse_history(text: str) -> list[ListedSegment]:
    """The segments an event playlist written by `event_playlist` lists, to continue it.

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
        if segment.uri != segment_name(sequence):
            raise PlaylistError(f"segment {index} is {segment.uri!r}, not {segment_name(sequence)}")
        if segment.duration is None or segment.duration < 0:
            raise PlaylistError(f"segment {index} has no duration")
        listed.append(ListedSegment(sequence, float(segment.duration), bool(segment.discontinuity)))
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
