"""The job's output timeline (pure: no PyAV, no threads).

Each publish session restarts its timestamps near zero. The encoder maps every
session onto one continuous, monotonic output timeline: a session's first media
item lands where the previous session ended, and the session's own timestamp
differences are kept (so audio and video stay in sync). Video runs in 90 kHz
ticks (MPEG-TS's clock), audio in samples.
"""

from __future__ import annotations

from fractions import Fraction

TICKS_PER_SECOND = 90_000


def seconds_to_ticks(seconds: Fraction | float) -> int:
    return round(Fraction(seconds) * TICKS_PER_SECOND)


def ticks_to_seconds(ticks: int) -> Fraction:
    return Fraction(ticks, TICKS_PER_SECOND)


class SessionClock:
    """Maps session timestamps (seconds) to output-timeline seconds."""

    def __init__(self) -> None:
        self.session = -1
        self._offset = Fraction(0)
        self._origin: Fraction | None = None
        self._end = Fraction(0)  # the latest end of anything output so far

    def start_session(self, session: int) -> Fraction:
        """A new publish session; returns where it starts on the output timeline."""
        self.session = session
        self._offset = self._end
        self._origin = None
        return self._offset

    def to_output(self, source_seconds: Fraction) -> Fraction:
        """Output seconds of a session timestamp; the session's first item sets its origin."""
        if self._origin is None:
            self._origin = source_seconds
        return self._offset + (source_seconds - self._origin)

    def extend_to(self, output_seconds: Fraction) -> None:
        """Something was output up to `output_seconds` (a frame's or packet's end)."""
        if output_seconds > self._end:
            self._end = output_seconds

    @property
    def end(self) -> Fraction:
        return self._end


class KeyframeClock:
    """Decides which frames are forced keyframes: the first at or past each multiple of
    `interval_ticks` on the output timeline, and the first frame of every session.

    Every rendition gets the same decision for the same frame, so their keyframes (and
    segment cuts) are aligned.
    """

    def __init__(self, interval_ticks: int) -> None:
        if interval_ticks <= 0:
            raise ValueError("keyframe interval must be positive")
        self.interval_ticks = interval_ticks
        self._next: int | None = None

    def next_boundary_after(self, pts_ticks: int) -> int:
        return (pts_ticks // self.interval_ticks + 1) * self.interval_ticks

    def is_keyframe(self, pts_ticks: int, *, session_start: bool = False) -> bool:
        if session_start or self._next is None or pts_ticks >= self._next:
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
