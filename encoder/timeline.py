"""The job's output timeline, and when its media arrived (pure: no PyAV).

Each publish session restarts its timestamps near zero. The encoder maps every
session onto one continuous, monotonic output timeline: a session's first media
item lands where the previous session ended, and the session's own timestamp
differences are kept (so audio and video stay in sync). Video runs in 90 kHz
ticks (MPEG-TS's clock, `media.clock`), audio in samples.

A recording continued by a new pipeline (the job put online again, a restart, another
host taking the live over) goes on where the stored one ends (`continuing_at`): its
timestamps only go forward, so players that ignore `EXT-X-DISCONTINUITY` (ffmpeg's
HLS reader) read it clean.

The wall clock rides along: each session's first media item anchors its place on the
output timeline to the instant it arrived (the ingest's `WallClockOrigin`, or, when the
ingest could not tell, the instant the encoder saw it), and later media maps by its
media time from there. `ArrivalClock` answers "when did the media at output timestamp
T arrive" for every segment's `arrived_at` (EXT-X-PROGRAM-DATE-TIME).
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections.abc import Callable
from datetime import datetime
from fractions import Fraction

from ingest.media import WallClockOrigin
from media.clock import TICKS_PER_SECOND, seconds_to_ticks, utc_instant

MAX_ARRIVAL_ANCHORS = 64  # sessions remembered (a lookup is always about recent media)


class ArrivalClock:
    """Output ticks -> the wall-clock instant the media there arrived (thread-safe: the
    dispatcher anchors each session, the rendition workers read)."""

    def __init__(self, max_anchors: int = MAX_ARRIVAL_ANCHORS) -> None:
        self._max_anchors = max(1, max_anchors)
        self._ticks: list[int] = []
        self._unix: list[float] = []
        self._lock = threading.Lock()

    def anchor(self, output_ticks: int, unix_seconds: float) -> None:
        """The media at `output_ticks` arrived at `unix_seconds`; later media follows by
        its media time (until the next anchor)."""
        with self._lock:
            while self._ticks and self._ticks[-1] >= output_ticks:
                self._ticks.pop()  # a session that output nothing: replaced
                self._unix.pop()
            self._ticks.append(output_ticks)
            self._unix.append(unix_seconds)
            if len(self._ticks) > self._max_anchors:
                del self._ticks[0], self._unix[0]

    def at(self, output_ticks: int) -> datetime | None:
        """When the media at `output_ticks` arrived (aware, UTC); None before any anchor."""
        with self._lock:
            if not self._ticks:
                return None
            index = max(0, bisect.bisect_right(self._ticks, output_ticks) - 1)
            ticks, unix = self._ticks[index], self._unix[index]
        return utc_instant(unix + (output_ticks - ticks) / TICKS_PER_SECOND)


class SessionClock:
    """Maps session timestamps (seconds) to output-timeline seconds, and anchors each
    session's arrival on `arrivals`."""

    def __init__(
        self,
        arrivals: ArrivalClock | None = None,
        now_unix: Callable[[], float] = time.time,
        start: Fraction = Fraction(0),
    ) -> None:
        """`start`: where the timeline begins (a recording continued: past its end)."""
        self.session = -1
        self.arrivals = arrivals
        self._now_unix = now_unix
        self._offset = start
        self._origin: Fraction | None = None
        self._wall_clock: WallClockOrigin | None = None
        self._end = start  # the latest end of anything output so far

    def start_session(self, session: int, wall_clock: WallClockOrigin | None = None) -> Fraction:
        """A new publish session (`wall_clock`: when its media arrived, if the ingest
        knows); returns where it starts on the output timeline."""
        self.session = session
        self._offset = self._end
        self._origin = None
        self._wall_clock = wall_clock
        return self._offset

    def anchor_again(self, wall_clock: WallClockOrigin) -> None:
        """The session goes on from another source (`SessionStart.continues`): its media
        at `wall_clock.media_seconds` arrived at `wall_clock.unix_seconds`."""
        if self._origin is None or self.arrivals is None:
            return
        output = self.to_output(Fraction(wall_clock.media_seconds))
        self.arrivals.anchor(seconds_to_ticks(output), wall_clock.unix_seconds)

    def to_output(self, source_seconds: Fraction) -> Fraction:
        """Output seconds of a session timestamp; the session's first item sets its origin
        (and its arrival anchor)."""
        if self._origin is None:
            self._origin = source_seconds
            if self.arrivals is not None:
                wall = self._wall_clock
                unix = wall.at(source_seconds) if wall is not None else self._now_unix()
                self.arrivals.anchor(seconds_to_ticks(self._offset), unix)
        return self._offset + (source_seconds - self._origin)

    def extend_to(self, output_seconds: Fraction) -> None:
        """Something was output up to `output_seconds` (a frame's or packet's end)."""
        if output_seconds > self._end:
            self._end = output_seconds

    @property
    def end(self) -> Fraction:
        return self._end


def continuing_at(recorded_seconds: float, grid_seconds: float, segments: int) -> Fraction:
    """Where a new pipeline's timeline starts after a stored recording of
    `recorded_seconds` in `segments` segments: past its end (with room for the
    playlists' millisecond rounding), on the segment grid; 0 for no recording."""
    if recorded_seconds <= 0:
        return Fraction(0)
    grid = max(1, seconds_to_ticks(Fraction(grid_seconds)))
    past = seconds_to_ticks(Fraction(recorded_seconds)) + TICKS_PER_SECOND // 10 + 90 * segments
    return Fraction(-(-past // grid) * grid, TICKS_PER_SECOND)


class KeyframeClock:
    """Decides which frames are forced keyframes: the first at or past each multiple of
    `interval_ticks` on the output timeline, and the first frame of every session.

    Every rendition gets the same decision for the same frame, so their keyframes (and
    segment cuts) are aligned.
    """

    def __init__(self, interval_ticks: int, tolerance_ticks: int = 0) -> None:
        if interval_ticks <= 0:
            raise ValueError("keyframe interval must be positive")
        self.interval_ticks = interval_ticks
        # A frame this close before a boundary is the boundary's (half a frame: a
        # publisher's millisecond timestamps, or a program that changed inputs, put frames
        # a little off the grid; waiting for the next frame would make the segment one
        # frame longer than the target duration).
        self.tolerance_ticks = max(0, min(tolerance_ticks, interval_ticks // 2))
        self._next: int | None = None

    def next_boundary_after(self, pts_ticks: int) -> int:
        ahead = pts_ticks + self.tolerance_ticks
        return (ahead // self.interval_ticks + 1) * self.interval_ticks

    def is_keyframe(self, pts_ticks: int, *, session_start: bool = False) -> bool:
        due = self._next is None or pts_ticks >= self._next - self.tolerance_ticks
        if session_start or due:
            self._next = self.next_boundary_after(pts_ticks)
            return True
        return False


def keyframe_interval_seconds(segment_seconds: float, gop_seconds: float) -> Fraction:
    """The forced-keyframe interval: the template GOP when it divides the segment
    duration (several GOPs per segment), else the segment duration (one GOP each)."""
    segment = Fraction(segment_seconds).limit_denominator(1000)
    gop = Fraction(gop_seconds).limit_denominator(1000)
    if gop > 0 and gop <= segment and (segment / gop).denominator == 1:
        return gop
    return segment


def keyframe_plan(
    segment_seconds: float, gop_seconds: float, frame_rate: Fraction
) -> tuple[int, int]:
    """(forced-keyframe interval, segment length) in ticks, each a whole number of
    frames at `frame_rate` and never longer than the template asks.

    At an integer rate this is the template's own (2 s: 60 frames at 30 fps). At 29.97
    fps 2 s is not a whole number of frames: cutting on a 2 s grid would make most
    segments 60 frames, 2.002 s, longer than the playlist's target duration (players
    warn), so a segment is 59 frames (1.969 s) instead.
    """
    interval = keyframe_interval_seconds(segment_seconds, gop_seconds)
    per_segment = Fraction(segment_seconds).limit_denominator(1000) / interval
    frames = max(1, math.floor(interval * frame_rate)) if frame_rate > 0 else 0
    interval_ticks = seconds_to_ticks(frames / frame_rate) if frames else seconds_to_ticks(interval)
    return interval_ticks, round(interval_ticks * per_segment)
