"""What the encoder measures of each rendition: typed records the API presents."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SegmentRates:
    """A rendition's recent segments, as its segmenter measured them."""

    bitrate_bps: int = 0
    fps: float = 0.0
    dropped_video_packets: int = 0


@dataclass(frozen=True)
class RenditionStatistics:
    """One rendition of the ladder: its size, recent rates and frame counts.

    `dropped_frames` counts frames the rendition's worker skipped (it fell behind) and
    video packets its segmenter could not place.
    """

    name: str
    width: int
    height: int
    bitrate_bps: int
    fps: float
    frames_encoded: int
    dropped_frames: int
