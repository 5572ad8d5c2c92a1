"""The live encoder's host side: its tuning, and the link its parts (the transcode and
passthrough modes, the rendition workers) have to the owning `LiveEncoder`."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING

from encoder.statistics import SegmentRates
from media.clock import SYSTEM_CLOCK, Clock
from media.segments import Segment, VariantInfo

if TYPE_CHECKING:
    from encoder.encoded import RenditionOutput

# Events about one rendition (the `rendition` argument of EncoderHost.event names it).
RENDITION_SKIPPED = "RenditionSkipped"  # a rung the source is too small for
RENDITION_FAILED = "RenditionFailed"


@dataclass(frozen=True)
class EncoderTuning:
    """Knobs measured on 2 cores (see bench/throughput.py); tests shrink the queues.

    `rendition_queue_frames`: frames waiting per rendition worker. The dispatcher waits up
    to `handoff_timeout_seconds` for room (back-pressure onto the job's MediaQueue, which
    then drops and counts upstream, the same frames for every rendition); a rendition
    still full after that is "congested" and drops its own frames (counted in
    `droppedFrames`) without waiting, until its queue is half empty.

    Measured (1080p30 -> 4 renditions, 2 cores): x264's own thread count (3) left the
    cores ~9% idle (utilization 1.81); 4 frame threads for HD renditions reach ~1.87, 6
    or 8 do not help. One x264 thread for SD renditions saves ~2% CPU. Rendition
    queues of 8, 16, 30 or 60 frames made no measurable difference (8 uses least
    memory). Bicubic scaling as ffmpeg's scale filter, in a cascade (`encoder.scaling`).
    """

    rendition_queue_frames: int = 8
    rendition_queue_bytes: int = 32 * 1024 * 1024  # and the bytes of their pictures
    rendition_queue_audio_packets: int = 500
    handoff_timeout_seconds: float = 0.5
    poll_seconds: float = 0.1  # how often idle threads look at stop/abort
    x264_threads: int = 4  # frame threads for renditions of 720 lines and more
    x264_threads_sd: int = 1  # below 720 lines: the renditions already run in parallel
    scale_threads: int = 1  # swscale threads per rendition (renditions already run in parallel)
    interpolation: str = "BICUBIC"  # as ffmpeg's scale filter
    # Low latency: flush x264 at each forced keyframe and open a fresh encoder when the
    # job keeps up with its input: at most `drain_max_backlog_items` decoded items wait
    # in the job's queue and at most `drain_max_queued_frames` for the rendition (see
    # RenditionWorker._should_drain).
    drain_at_keyframes: bool = True
    drain_max_backlog_items: int = 12
    drain_max_queued_frames: int = 1


@dataclass(frozen=True)
class EncoderHost:
    """The owning LiveEncoder, as its parts see it."""

    label: str
    tuning: EncoderTuning
    start_sink: Callable[[Sequence[VariantInfo]], None]
    emit_segment: Callable[[Segment], None]
    # event(status, message, rendition): rendition names the output an event is about
    event: Callable[[str, str, str | None], None]
    fail: Callable[[BaseException], None]
    abort: threading.Event
    backlog: Callable[[], int] = lambda: 0  # decoded items waiting in the job's queue
    # Where a rendition writes what it encodes (the encoded track, `encoder.encoded`),
    # and what the HLS writer's segmenter measured of it.
    output_for: Callable[[str], RenditionOutput] | None = None
    segment_stats: Callable[[str], SegmentRates] = lambda rendition: SegmentRates()
    # The wall clock when the ingest could not say when a session's media arrived.
    clock: Clock = SYSTEM_CLOCK
    # Where the output timeline begins (seconds): past a stored recording it continues.
    timeline_start: Fraction = Fraction(0)
