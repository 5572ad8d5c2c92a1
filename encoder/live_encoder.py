"""`LiveEncoder`: one job's encoder, from its decoded media (a reader of the live's
frames, `media.fanout`) to its encoded track, which the HLS writer reads.

Threads: one dispatcher reads the decoded media (timestamps, keyframe decisions,
AAC, or packet copying for passthrough); one worker per rendition scales and encodes
(PyAV releases the GIL in swscale and x264, so they use every core) and publishes its
packets to the encoded track (`LiveEncoder.encoded`, see `encoder.encoded`), where
the HLS writer's reader cuts the segments and any other reader (a restream, a
viewer) takes what it needs. Every hand-off is bounded. Any exception in any of them
marks the encoder failed, calls `on_failure` once, and ends all its threads; nothing
else in the process is touched.

`sink.start()` is called once, before any segment: when the first session's first
video frame arrives (a live probe often reports 0x0 at SessionStart, so the ladder is
planned on the real frame size), or for passthrough with the first segment (its
measured bitrate is the variant's target). The sink is called from several threads,
one call at a time. `stop()` ends it: `sink.finish(remaining)` with what is left of
the stop's bounds, and `sink.close()` if that was not enough.

Every segment carries the wall-clock instant its first frame arrived: the ingest's
`SessionStart.wall_clock` mapped by media time, or, when the ingest could not tell,
when the encoder saw the session's first media item (`clock`), then by media time
(`encoder.timeline.ArrivalClock`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import Protocol

import av

from encoder.encoded import SegmentingReader, encoded_broadcast, with_hls_writer
from encoder.host import EncoderHost, EncoderTuning
from encoder.passthrough import PassthroughMode
from encoder.statistics import RenditionStatistics
from encoder.templates import JobTemplate
from encoder.transcode import TranscodeMode
from ingest.media import MediaSource, SessionEnd, SessionStart
from media.clock import SYSTEM_CLOCK, Clock
from media.fanout import QueueClosed
from media.segments import Segment, SegmentSink, VariantInfo

log = logging.getLogger(__name__)

__all__ = ["EncoderTuning", "LiveEncoder"]


class _Mode(Protocol):
    def session_start(self, start: SessionStart) -> None: ...
    def session_end(self, end: SessionEnd) -> None: ...
    def video(self, frame: av.VideoFrame) -> None: ...
    def audio(self, frame: av.AudioFrame) -> None: ...
    def packet(self, packet: av.Packet) -> None: ...
    def end_of_media(self) -> None: ...
    def abort(self) -> None: ...
    def join(self, deadline: float) -> bool: ...
    def close(self) -> None: ...
    def stats(self) -> list[RenditionStatistics]: ...


class LiveEncoder:
    """Consumes one job's MediaQueue in worker thread(s), encodes the template's ladder,
    hands Segments to the sink.

    `tuning`: the measured defaults (bench/throughput.py) unless given; `clock`: the wall
    clock for segments whose session did not say when its media arrived.
    """

    def __init__(
        self,
        template: JobTemplate,
        queue: MediaSource,
        sink: SegmentSink,
        *,
        tuning: EncoderTuning | None = None,
        clock: Clock = SYSTEM_CLOCK,
        label: str = "",
        on_event: Callable[[str, str, str | None], None] | None = None,
        on_failure: Callable[[BaseException], None] | None = None,
        timeline_start: Fraction = Fraction(0),
    ) -> None:
        self._template = template
        self._timeline_start = timeline_start
        self._tuning = tuning or EncoderTuning()
        self._clock = clock
        self._queue = queue
        self._sink = sink
        self._label = label or f"template-{template.id}"
        self._prefix = f"[encoder {self._label}]"
        self._on_event = on_event
        self._on_failure = on_failure
        self._lock = threading.Lock()  # start/stop/failure state
        self._sink_lock = threading.Lock()  # the sink is called from several threads
        self._abort = threading.Event()
        self._stopping = threading.Event()
        self._failed: BaseException | None = None
        self._started = False
        self._stopped = False
        self._sink_started = False
        self._first_segment = True
        self._mode: _Mode | None = None
        self._dispatcher: threading.Thread | None = None
        # Every rendition's packets, for any number of readers; the HLS writer is one.
        self.encoded = encoded_broadcast(self._label)
        self._hls: SegmentingReader | None = None

    # -- public API ----------------------------------------------------------

    def start(self) -> None:
        """Start the dispatcher thread (renditions start with the first session)."""
        with self._lock:
            if self._started:
                return
            self._started = True
            host = EncoderHost(
                label=self._label,
                tuning=self._tuning,
                start_sink=self._start_sink,
                emit_segment=self._emit_segment,
                event=self._event,
                fail=self._fail,
                abort=self._abort,
                backlog=self._queue.__len__,
                clock=self._clock,
                timeline_start=self._timeline_start,
            )
            host, self._hls = with_hls_writer(host, self.encoded)
            self._hls.start()
            mode: _Mode
            if self._template.passthrough:
                mode = PassthroughMode(self._template, host)
            else:
                mode = TranscodeMode(self._template, host)
            self._mode = mode
            self._dispatcher = threading.Thread(
                target=self._run, name=f"encoder-{self._label}-dispatch", daemon=True
            )
            self._dispatcher.start()

    def stop(self, timeout_seconds: float = 30.0, finish_timeout_seconds: float = 3600.0) -> None:
        """Drain the (closed) queue, flush the encoders, emit the last segments and finish
        the sink. Idempotent; blocking.

        Bounded twice: the flush takes at most `timeout_seconds` (then the rest of the work
        is abandoned), and the sink gets what remains of `timeout_seconds +
        finish_timeout_seconds` for its `finish()`; past that it is closed (the HLS
        writer keeps what is not uploaded in its spool, for the next start).
        """
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            dispatcher = self._dispatcher
            mode = self._mode
        self._stopping.set()
        deadline = time.monotonic() + timeout_seconds
        finish_deadline = deadline + finish_timeout_seconds
        finished = True
        if dispatcher is not None:
            dispatcher.join(max(0.0, deadline - time.monotonic()))
            finished = not dispatcher.is_alive()
        if mode is not None and finished:
            finished = mode.join(deadline)
        self.encoded.close()  # every rendition said `end`: the readers drain and end
        hls = self._hls
        if hls is not None and finished:
            finished = hls.join(max(0.0, deadline - time.monotonic()))
        if not finished:
            log.warning(
                "%s did not finish within %.1f s: abandoning the rest",
                self._prefix,
                timeout_seconds,
            )
            self._abort.set()
            if mode is not None:
                mode.abort()
                mode.join(time.monotonic() + 1.0)
            if hls is not None:
                hls.abort()
                hls.join(1.0)
            if dispatcher is not None:
                dispatcher.join(1.0)
        if mode is not None:
            mode.close()
        self._finish_sink(finish_deadline)
        self._event("EncoderStopped", self._summary())

    @property
    def tuning(self) -> EncoderTuning:
        return self._tuning

    def stats(self) -> list[RenditionStatistics]:
        """Per rendition: its size, rates measured over the last segments, frame counts."""
        mode = self._mode
        return mode.stats() if mode is not None else []

    def top_rendition(self) -> str | None:
        """The ladder's first (tallest) H.264 rendition, once planned (the first video
        frame); None before, and for a copy (its codec is the source's)."""
        mode = self._mode
        if isinstance(mode, TranscodeMode) and mode.workers:
            return mode.workers[0].plan.name
        return None

    @property
    def failed(self) -> BaseException | None:
        return self._failed

    @property
    def drains(self) -> int:
        """x264 drains at segment boundaries so far, all renditions (see EncoderTuning)."""
        mode = self._mode
        return sum(w.drains for w in mode.workers) if isinstance(mode, TranscodeMode) else 0

    # -- dispatcher thread ---------------------------------------------------

    def _run(self) -> None:
        try:
            self._dispatch()
        except BaseException as exc:  # the one catch-all: report and end every thread
            log.exception("%s dispatcher failed", self._prefix)
            self._fail(exc)
        finally:
            log.debug("%s dispatcher ended", self._prefix)

    def _dispatch(self) -> None:
        mode = self._mode
        assert mode is not None
        poll = self._tuning.poll_seconds
        while not self._abort.is_set():
            try:
                item = self._queue.get(timeout=poll)
            except QueueClosed:
                break
            if item is None:
                if self._stopping.is_set() and len(self._queue) == 0:
                    break  # stop() without closing the queue: what is queued is drained
                continue
            if isinstance(item, av.VideoFrame):
                mode.video(item)
            elif isinstance(item, av.AudioFrame):
                mode.audio(item)
            elif isinstance(item, av.Packet):
                mode.packet(item)
            elif isinstance(item, SessionStart):
                log.info("%s session %d started", self._prefix, item.session)
                mode.session_start(item)
            elif isinstance(item, SessionEnd):
                log.info("%s session %d ended: %s", self._prefix, item.session, item.reason)
                mode.session_end(item)
        if not self._abort.is_set():
            mode.end_of_media()

    # -- host callbacks (any thread) -----------------------------------------

    def _start_sink(self, variants: Sequence[VariantInfo]) -> None:
        with self._sink_lock:
            if self._sink_started:
                return
            self._sink.start(variants, self._template.segment_seconds)
            self._sink_started = True

    def _emit_segment(self, segment: Segment) -> None:
        if self._abort.is_set():
            return
        with self._sink_lock:
            self._sink.add_segment(segment)
            first = self._first_segment
            self._first_segment = False
        if first:
            self._event(
                "EncoderFirstSegment",
                f"{segment.rendition} #{segment.sequence} {segment.duration_seconds:.3f} s",
            )

    def _finish_sink(self, deadline: float) -> None:
        """`sink.finish()` with the time left until `deadline` (monotonic); `sink.close()`
        when that was not enough."""
        # A thread stuck inside sink.add_segment() holds the lock: do not hang on it.
        wait = max(1.0, deadline - time.monotonic())
        if not self._sink_lock.acquire(timeout=wait):
            log.error("%s sink busy for %.1f s: finish() not called", self._prefix, wait)
            return
        try:
            if not self._sink_started:
                return
            self._sink_started = False
            remaining = max(0.0, deadline - time.monotonic())
            try:
                self._sink.finish(remaining)
            except TimeoutError as error:
                log.error("%s not finished within %.1f s: %s", self._prefix, remaining, error)
                self._close_sink()  # what is not uploaded stays in the spool
            except Exception:
                log.exception("%s sink.finish() failed", self._prefix)
                self._close_sink()
        finally:
            self._sink_lock.release()

    def _close_sink(self) -> None:
        try:
            self._sink.close()
        except Exception:
            log.exception("%s sink.close() failed", self._prefix)

    def _event(self, status: str, message: str, rendition: str | None = None) -> None:
        """Report an event; `rendition` when it is about one output."""
        log.info("%s %s%s: %s", self._prefix, status, f" {rendition}" if rendition else "", message)
        if self._on_event is None:
            return
        try:
            self._on_event(status, message, rendition)
        except Exception:
            log.exception("%s on_event callback failed", self._prefix)

    def _fail(self, exc: BaseException) -> None:
        with self._lock:
            if self._failed is not None:
                return
            self._failed = exc
        self._abort.set()
        mode = self._mode
        if mode is not None:
            mode.abort()
        if self._hls is not None:
            self._hls.abort()
        if self._on_failure is not None:
            try:
                self._on_failure(exc)
            except Exception:
                log.exception("%s on_failure callback failed", self._prefix)

    def _summary(self) -> str:
        parts = [
            f"{s.name} {s.frames_encoded} frames, {s.dropped_frames} dropped" for s in self.stats()
        ]
        state = f"failed: {self._failed!r}" if self._failed is not None else "finished"
        return f"{state}; " + ("; ".join(parts) if parts else "no media")
