"""The unit the encoder hands to the packager: one finished MPEG-TS segment."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Protocol


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


class SegmentSink(Protocol):
    """Where an encoder hands its segments: the HLS publisher (or a test double).

    Called from the encoder's thread. `add_segment` must not block on the network:
    a storage outage spools, it never stalls encoding.
    """

    def start(self, variants: Sequence[VariantInfo], segment_seconds: float) -> None:
        """The renditions are known (first publish session); called once, before any segment."""

    def add_segment(self, segment: Segment) -> None:
        """One finished segment; segments of a rendition arrive in sequence order."""

    def finish(self) -> None:
        """The live ended: publish what remains and close the playlists (EXT-X-ENDLIST)."""
