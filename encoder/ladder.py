"""Plan a template's renditions for one source size (pure: no PyAV, no I/O).

Rules:
- never upscale: a rung taller than the source is skipped (a 640x360 source on the
  1080p ladder yields only "360p"); when every rung is taller than the source, the
  smallest rung is kept at the source's height, so a job always has one rendition;
- keep the source's display aspect ratio (square pixels assumed) and make both
  dimensions even (4:2:0 chroma needs it), as `scale=-2:H` does;
- rate control is capped VBR: the template bitrate as the average, a VBV cap of
  `maxrate = 1.1 x bitrate` and `bufsize = 2 x bitrate` (two seconds of the average
  rate: one segment's worth of smoothing, the usual HLS choice).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from encoder.templates import JobTemplate, RenditionSpec

MAXRATE_FACTOR = 1.1
BUFSIZE_FACTOR = 2.0


@dataclass(frozen=True)
class RenditionPlan:
    """One output of a job: its size and its rate control (None for passthrough)."""

    name: str
    width: int
    height: int
    video_bitrate_bps: int | None  # None = passthrough
    maxrate_bps: int | None
    bufsize_bits: int | None
    profile: str | None  # x264 profile
    preset: str | None  # x264 preset

    @property
    def passthrough(self) -> bool:
        return self.video_bitrate_bps is None

    def describe(self) -> str:
        """`720p 1280x720 2800k` (or `source 1920x1080 copy`)."""
        rate = "copy" if self.video_bitrate_bps is None else f"{self.video_bitrate_bps // 1000}k"
        return f"{self.name} {self.width}x{self.height} {rate}"


def even(value: float) -> int:
    """Nearest even integer (halves up, as ffmpeg's `scale=-2:H`), at least 2."""
    return max(2, 2 * math.floor(value / 2 + 0.5))


def scaled_width(source_width: int, source_height: int, height: int) -> int:
    """The even width that keeps the source's aspect ratio at `height`."""
    return even(source_width * height / source_height)


def plan_ladder(
    template: JobTemplate, source_width: int, source_height: int
) -> list[RenditionPlan]:
    """The renditions to encode for a source of `source_width` x `source_height`.

    Ordered as in the template (tallest first). Raises ValueError on a degenerate size.
    """
    if source_width <= 0 or source_height <= 0:
        raise ValueError(f"bad source size {source_width}x{source_height}")
    if template.passthrough:
        return [
            RenditionPlan(
                name=spec.name,
                width=source_width,
                height=source_height,
                video_bitrate_bps=None,
                maxrate_bps=None,
                bufsize_bits=None,
                profile=None,
                preset=None,
            )
            for spec in template.renditions[:1]
        ]
    sized = [(s, s.height) for s in template.renditions if s.height is not None]
    if not sized:
        raise ValueError(f"template {template.id} has no sized renditions")
    fitting = [(s, h) for s, h in sized if h <= source_height]
    if fitting:
        return [_plan(template, s, source_width, source_height, h) for s, h in fitting]
    smallest, _ = min(sized, key=lambda pair: pair[1])
    height = max(2, source_height - source_height % 2)
    return [_plan(template, smallest, source_width, source_height, height)]


def _plan(
    template: JobTemplate,
    spec: RenditionSpec,
    source_width: int,
    source_height: int,
    height: int,
) -> RenditionPlan:
    height = max(2, height - height % 2)
    bitrate = spec.video_bitrate_bps
    if bitrate is None or bitrate <= 0:
        raise ValueError(f"rendition {spec.name} of template {template.id} has no bitrate")
    return RenditionPlan(
        name=spec.name,
        width=scaled_width(source_width, source_height, height),
        height=height,
        video_bitrate_bps=bitrate,
        maxrate_bps=round(bitrate * MAXRATE_FACTOR),
        bufsize_bits=round(bitrate * BUFSIZE_FACTOR),
        profile=spec.profile,
        preset=template.x264_preset,
    )
