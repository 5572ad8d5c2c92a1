"""What one rendition's playlists list, kept so that the next segment costs the same at
any age of the live (pure: no storage, no threads, no clock).

A rendition's segments are listed by

- the live window (`index.m3u8`, the last `window_segments`) and the DVR window
  (`dvr.m3u8`, the last `dvr_window_seconds`): bounded, rewritten at every segment;
- the recording, in parts of at most `part_seconds` (`parts/part_000000.m3u8`, ...):
  only the current part grows and is rewritten; a part that is complete gets one last
  write with `EXT-X-ENDLIST` and never changes again;
- the whole-live playlist (`event.m3u8`), rendered once, when the live ends.

Every entry is rendered once, when it is listed (`PlaylistWindow`), so rewriting a
playlist is a join of text already made; the first entry of a window is rendered again
because it carries the window's `EXT-X-PROGRAM-DATE-TIME`.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterable, Iterator

from packager.layout import PART_URI_PREFIX
from packager.playlist import (
    ListedSegment,
    entry_text,
    media_playlist,
    media_playlist_text,
    rounded_duration,
)

DEFAULT_PART_SECONDS = 3600.0


def _micros(seconds: float) -> int:
    return round(seconds * 1_000_000)


class PlaylistWindow:
    """The entries of one media playlist, each rendered once: the newest `max_segments`,
    or the newest that fit in `max_seconds` (always at least one), or all of them."""

    def __init__(
        self,
        *,
        max_segments: int | None = None,
        max_seconds: float | None = None,
        uri_prefix: str = "",
        discontinuity_sequence: int = 0,
    ) -> None:
        self._max_segments = max_segments
        self._max_micros = None if max_seconds is None else _micros(max_seconds)
        self._uri_prefix = uri_prefix
        self._segments: deque[ListedSegment] = deque()
        self._texts: deque[str] = deque()
        self._micros = 0
        # Discontinuities before the first listed entry (EXT-X-DISCONTINUITY-SEQUENCE).
        self.discontinuity_sequence = discontinuity_sequence

    def __len__(self) -> int:
        return len(self._segments)

    @property
    def first(self) -> ListedSegment:
        return self._segments[0]

    def append(self, segment: ListedSegment) -> None:
        self._segments.append(segment)
        self._texts.append(entry_text(segment, uri_prefix=self._uri_prefix))
        self._micros += _micros(segment.duration_seconds)
        while len(self._segments) > 1 and self._over():
            gone = self._segments.popleft()
            self._texts.popleft()
            self._micros -= _micros(gone.duration_seconds)
            if gone.discontinuity:
                self.discontinuity_sequence += 1

    def _over(self) -> bool:
        if self._max_segments is not None and len(self._segments) > self._max_segments:
            return True
        return self._max_micros is not None and self._micros > self._max_micros

    def render(
        self, *, target_seconds: int, playlist_type: str | None = None, ended: bool = False
    ) -> str:
        if not self._segments:
            raise ValueError("a media playlist needs at least one segment")
        first = self._segments[0]
        entries = itertools.chain(
            (entry_text(first, first=True, uri_prefix=self._uri_prefix),),
            itertools.islice(self._texts, 1, None),
        )
        return media_playlist_text(
            entries,
            media_sequence=first.sequence,
            discontinuity_sequence=self.discontinuity_sequence,
            target_seconds=target_seconds,
            playlist_type=playlist_type,
            ended=ended,
        )


class Recording:
    """Every segment one rendition's playlists list, and those playlists, rendered."""

    def __init__(
        self,
        *,
        window_segments: int,
        dvr_window_seconds: float,
        part_seconds: float = DEFAULT_PART_SECONDS,
        min_target_seconds: int = 1,
    ) -> None:
        if part_seconds <= 0:
            raise ValueError("part_seconds must be positive")
        self.live = PlaylistWindow(max_segments=window_segments)
        self.dvr = PlaylistWindow(max_seconds=dvr_window_seconds)
        self._part_max_micros = _micros(part_seconds)
        self.parts: list[list[ListedSegment]] = []  # the current part last
        self._part_discontinuities: list[int] = []  # listed before each part
        self._part: PlaylistWindow | None = None  # the current part's entries
        self._part_micros = 0
        self._discontinuities = 0
        self.target_seconds = max(1, min_target_seconds)
        self.count = 0
        self.seconds = 0.0

    @property
    def current_part(self) -> int:
        """The index of the part that grows (-1 before any segment)."""
        return len(self.parts) - 1

    @property
    def last(self) -> ListedSegment | None:
        return self.parts[-1][-1] if self.parts else None

    def segments(self) -> Iterator[ListedSegment]:
        """Every listed segment, in order."""
        return itertools.chain.from_iterable(self.parts)

    def append(self, segment: ListedSegment) -> int | None:
        """List one more segment; the index of the part it completed (the next starts
        because this one would take it past `part_seconds`), if any."""
        micros = _micros(segment.duration_seconds)
        completed = None
        if not self.parts or self._part_micros + micros > self._part_max_micros:
            completed = self.current_part if self.parts else None
            self._open_part()
        self._add(segment, micros)
        return completed

    def load(self, parts: Iterable[list[ListedSegment]]) -> None:
        """Segments listed before, part by part as they are stored (the last part goes
        on growing); only before anything is appended."""
        for part in parts:
            if not part:
                continue
            self._open_part()
            for segment in part:
                self._add(segment, _micros(segment.duration_seconds))

    def _open_part(self) -> None:
        self.parts.append([])
        self._part_discontinuities.append(self._discontinuities)
        self._part = PlaylistWindow(
            uri_prefix=PART_URI_PREFIX, discontinuity_sequence=self._discontinuities
        )
        self._part_micros = 0

    def _add(self, segment: ListedSegment, micros: int) -> None:
        assert self._part is not None
        self.parts[-1].append(segment)
        self._part.append(segment)
        self._part_micros += micros
        self.live.append(segment)
        self.dvr.append(segment)
        self.target_seconds = max(self.target_seconds, rounded_duration(segment.duration_seconds))
        self.count += 1
        self.seconds += segment.duration_seconds
        if segment.discontinuity:
            self._discontinuities += 1

    # -- the playlists -------------------------------------------------------------------

    def render_live(self, *, ended: bool) -> str:
        return self.live.render(target_seconds=self.target_seconds, ended=ended)

    def render_dvr(self, *, ended: bool) -> str:
        return self.dvr.render(target_seconds=self.target_seconds, ended=ended)

    def render_part(self, index: int, *, ended: bool) -> str:
        """Part `index`: the current one as it stands (`ended`: the live ended), an
        earlier one complete."""
        if index == self.current_part and self._part is not None:
            return self._part.render(
                target_seconds=self.target_seconds, playlist_type="event", ended=ended
            )
        return media_playlist(
            self.parts[index],
            discontinuity_sequence=self._part_discontinuities[index],
            target_seconds=self.target_seconds,
            playlist_type="event",
            ended=True,
            uri_prefix=PART_URI_PREFIX,
        )

    def render_event(self, *, ended: bool) -> str:
        """The whole recording (`event.m3u8`): rendered once, when the live ends."""
        return media_playlist(
            list(self.segments()),
            target_seconds=self.target_seconds,
            playlist_type="event",
            ended=ended,
        )
