"""What a live encoder's parts share: its tuning and its link to the owning `LiveEncoder`."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from packager.segments import Segment, VariantInfo


@dataclass(frozen=True)
class EncoderTuning:
    """Knobs measured on 2 cores (see bench/throughput.py); tests shrink the queues.

    `rendition_queue_frames`: frames waiting per rendition worker. The dispatcher waits up
    to `handoff_timeout_seconds` for room (back-pressure onto the job's MediaQueue, which
    then drops and counts upstream, the same frames for every rendition); a rendition
    still full after that is "congested" and drops its own frames (counted in
    `droppedFrames`) without waiting, until its queue is half empty.
    """

    rendition_queue_frames: int = 8
    rendition_queue_audio_packets: int = 500
    handoff_timeout_seconds: float = 0.5
    poll_seconds: float = 0.1  # how often idle threads look at stop/abort
    x264_threads: int = 0  # HD renditions: 0 = x264's own choice (1.5 x cores frame threads)
    x264_threads_sd: int = 1  # below 720 lines: the renditions already run in parallel
    scale_threads: int = 1  # swscale threads per rendition (renditions already run in parallel)
    interpolation: str = "BICUBIC"  # as ffmpeg's scale filter


@dataclass(frozen=True)
class EncoderHost:
    """The owning LiveEncoder, as its parts see it."""

    label: str
    tuning: EncoderTuning
    start_sink: Callable[[Sequence[VariantInfo]], None]
    emit_segment: Callable[[Segment], None]
    event: Callable[[str, str], None]
    fail: Callable[[BaseException], None]
    abort: threading.Event
