"""The one interface through which a job's decoded media leaves ingest.

A publish session's decode thread `put()`s items into a `MediaQueue`; the job's
encoder thread `get()`s them. The queue is bounded: when the consumer is too slow,
media items are dropped and counted (never memory without limit); control items
(`SessionStart`, `SessionEnd`) are never dropped.

Items, in order, for each publish session:
    SessionStart, then any mix of av.VideoFrame / av.AudioFrame (decoding mode) or
    av.Packet (passthrough mode), then SessionEnd.
Frame and packet timestamps are in the input stream's time base and start anywhere
(RTMP's near zero at each session, a reconnect restarts them; MPEG-TS's wherever
the source's 90 kHz clock is): the consumer keeps its output continuous across
sessions.
"""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import av

# Rates a source declares only approximately (FLV metadata is a double, read back as
# the nearest fraction with a small denominator: 29.97 -> 989/33).
_NTSC_RATES = tuple(Fraction(n * 1000, 1001) for n in (24, 30, 48, 60, 120))
_RATE_TOLERANCE = Fraction(1, 5000)  # relative: a double read back as a small fraction


def nominal_frame_rate(rate: Fraction | None) -> Fraction | None:
    """The exact rate a declared one stands for: an integer, or an NTSC x/1001 rate,
    when within 0.02 %; otherwise the rate as declared (None or <= 0: None)."""
    if rate is None or rate <= 0:
        return None
    candidates = (Fraction(round(rate)), *_NTSC_RATES)
    best = min(candidates, key=lambda c: abs(c - rate))
    if best > 0 and abs(best - rate) <= best * _RATE_TOLERANCE:
        return best
    return Fraction(rate)


@dataclass(frozen=True)
class VideoParams:
    """What the source video is, as the demuxer/decoder saw it."""

    codec_name: str  # "h264", "hevc", ...
    width: int
    height: int
    frame_rate: Fraction | None  # None when the source does not say
    time_base: Fraction
    stream: Any = field(
        default=None, compare=False, repr=False
    )  # av VideoStream (passthrough template)


@dataclass(frozen=True)
class AudioParams:
    codec_name: str  # "aac", ...
    sample_rate: int
    channels: int
    time_base: Fraction
    stream: Any = field(
        default=None, compare=False, repr=False
    )  # av AudioStream (passthrough template)


@dataclass(frozen=True)
class WallClockOrigin:
    """When the session's media arrived: the wall-clock instant (Unix seconds) at which
    the media at `media_seconds` (in the session's own timestamps, as its frames and
    packets carry them) arrived. Later media maps by its timestamp difference."""

    unix_seconds: float
    media_seconds: Fraction

    def at(self, media_seconds: Fraction | float) -> float:
        """The arrival instant (Unix seconds) of the media at `media_seconds`."""
        return self.unix_seconds + float(Fraction(media_seconds) - self.media_seconds)


@dataclass(frozen=True)
class SessionStart:
    """A publisher's session began (first one, or a reconnect: `session` > 0)."""

    session: int
    video: VideoParams | None
    audio: AudioParams | None
    # The session's first packet and when it arrived (`ingest.packets`); None: the
    # session had no media
    wall_clock: WallClockOrigin | None = None


@dataclass(frozen=True)
class SessionEnd:
    """The publisher's session ended (disconnect, error, or job stopped)."""

    session: int
    reason: str


MediaItem = SessionStart | SessionEnd | av.VideoFrame | av.AudioFrame | av.Packet


class QueueClosed(EOFError):
    """Raised by `MediaQueue.get()` once the queue is closed and drained."""


def media_item_bytes(item: MediaItem) -> int:
    """The memory an item holds: a frame's planes, a packet's payload (control: 0)."""
    if isinstance(item, av.VideoFrame | av.AudioFrame):
        return sum(plane.buffer_size for plane in item.planes)
    if isinstance(item, av.Packet):
        return item.size
    return 0


class MediaQueue:
    """Bounded thread-safe queue; `put()` never blocks, it drops and counts instead.

    Bounded twice: by items, and by the bytes they hold (a 4K frame is 12 MB, a
    720p one 1.4 MB): the item that would pass either bound is dropped (one item is
    always let into an empty queue, whatever its size).
    """

    def __init__(self, max_items: int = 120, max_bytes: int | None = None) -> None:
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.queued_bytes = 0
        self.peak_bytes = 0
        self._items: collections.deque[tuple[MediaItem, int]] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self.dropped_video = 0
        self.dropped_audio = 0
        self.dropped_packets = 0

    def put(self, item: MediaItem) -> bool:
        """Enqueue `item`; returns False if it was dropped (queue full or closed)."""
        control = isinstance(item, SessionStart | SessionEnd)
        size = media_item_bytes(item)
        with self._cond:
            if self._closed:
                return False
            over_bytes = (
                self.max_bytes is not None
                and self._items
                and self.queued_bytes + size > self.max_bytes
            )
            if not control and (len(self._items) >= self.max_items or over_bytes):
                if isinstance(item, av.VideoFrame):
                    self.dropped_video += 1
                elif isinstance(item, av.AudioFrame):
                    self.dropped_audio += 1
                else:
                    self.dropped_packets += 1
                return False
            self._items.append((item, size))
            self.queued_bytes += size
            self.peak_bytes = max(self.peak_bytes, self.queued_bytes)
            self._cond.notify()
            return True

    def get(self, timeout: float | None = None) -> MediaItem | None:
        """Next item; None on timeout; raises QueueClosed when closed and empty."""
        with self._cond:
            if not self._items and not self._closed:
                self._cond.wait(timeout)
            if self._items:
                item, size = self._items.popleft()
                self.queued_bytes -= size
                return item
            if self._closed:
                raise QueueClosed("media queue closed")
            return None

    def close(self) -> None:
        """No more items; the consumer drains what is queued then gets QueueClosed."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def dropped(self) -> int:
        return self.dropped_video + self.dropped_audio + self.dropped_packets

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)
