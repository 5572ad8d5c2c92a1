"""What the encoder hands the packager: finished MPEG-TS segments, and the sink they go to.

A neutral module: the encoder produces these, the packager (or a test double, or a
later reader such as a restream) consumes them, and neither imports the other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction
from typing import Protocol

from media.clock import TICKS_PER_SECOND


@dataclass(frozen=True)
class VariantInfo:
    """A rendition as the master playlist describes it (BANDWIDTH is measured later)."""

    name: str  # "720p"
    width: int
    height: int
    frame_rate: float | None
    codecs: str  # "avc1.64001f,mp4a.40.2"
    target_bitrate_bps: int  # the template's video + audio bitrate, before measurement
    # The encoder's VBV cap (maxrate) plus the audio bitrate; None for a copy.
    max_bitrate_bps: int | None = None


@dataclass(frozen=True)
class AudioPacket:
    """One encoded audio access unit, immutable so every rendition can share it."""

    data: bytes
    pts: int
    dts: int
    duration: int
    time_base: Fraction

    @property
    def pts_ticks(self) -> int:
        return round(self.pts * self.time_base * TICKS_PER_SECOND)

    @property
    def dts_ticks(self) -> int:
        return round(self.dts * self.time_base * TICKS_PER_SECOND)

    @property
    def end_ticks(self) -> int:
        """Where the packet's sound ends."""
        return round((self.pts + self.duration) * self.time_base * TICKS_PER_SECOND)


@dataclass(frozen=True)
class VideoPacket:
    """One encoded video access unit, immutable (timestamps in 90 kHz ticks on the job's
    output timeline), so that any number of readers can share it."""

    data: bytes
    pts: int
    dts: int
    duration: int
    keyframe: bool


@dataclass(frozen=True)
class Segment:
    """One MPEG-TS segment of one rendition, starting on a keyframe."""

    rendition: str
    sequence: int  # 0-based, consecutive within the rendition
    start_seconds: float  # media time of its first video frame on the job's output timeline
    duration_seconds: float
    data: bytes
    discontinuity: bool = False  # first segment after a publisher reconnect
    keyframe_pts: Fraction | None = (
        None  # pts (seconds) of the first keyframe, for alignment checks
    )
    # The wall-clock instant (aware, UTC) its first frame arrived: EXT-X-PROGRAM-DATE-TIME.
    # The encoder always sets it; None only from producers that cannot tell.
    arrived_at: datetime | None = None


class SegmentSink(Protocol):
    """Where an encoder hands its segments: the HLS writer (or a test double).

    Called from the encoder's threads, one call at a time. `add_segment` must not block
    on the network: a storage outage spools, it never stalls encoding.

    The end is bounded: `finish(timeout_seconds)` publishes what remains within that
    time or raises `TimeoutError`; the caller then calls `close()`, which stops the
    sink's work without finishing and keeps whatever is not yet stored for later (the
    HLS writer leaves it in its spool with a manifest for the next start). `close()` is
    idempotent and is also the way to tear a sink down after a failure.
    """

    def start(self, variants: Sequence[VariantInfo], segment_seconds: float) -> None:
        """The renditions are known (first publish session); called once, before any segment."""

    def add_segment(self, segment: Segment) -> None:
        """One finished segment; segments of a rendition arrive in sequence order."""

    def finish(self, timeout_seconds: float) -> None:
        """The live ended: publish what remains and close the playlists (EXT-X-ENDLIST),
        within `timeout_seconds`; raise `TimeoutError` when that is not enough."""

    def close(self) -> None:
        """Stop without finishing (after a `finish` timeout, or a failure)."""
