"""One rendition: a worker thread that scales, encodes H.264 (libx264) and segments.

The dispatcher thread hands each rendition the job's decoded frames (already on the
output timeline, with the keyframe decision made once for every rendition) and the
shared AAC packets, through a bounded `Handoff`. PyAV releases the GIL while
swscale and x264 work, so the renditions run in parallel on several cores.
"""

from __future__ import annotations

import collections
import io
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction
from typing import Any

import av
from av.codec.context import Flags
from av.stream import Stream
from av.video.frame import PictureType
from av.video.reformatter import VideoReformatter

from encoder.encoded import RenditionConfig, video_packet
from encoder.errors import EncoderError
from encoder.host import RENDITION_FAILED, EncoderHost
from encoder.ladder import RenditionPlan
from encoder.scaling import Pictures
from encoder.statistics import RenditionStatistics
from media.clock import TICK_TIME_BASE
from media.segments import AudioPacket, VideoPacket

log = logging.getLogger(__name__)

VBV_INIT = 0.4  # initial VBV buffer fullness of every x264 encoder (see x264_options)


def x264_options(plan: RenditionPlan, keyint_frames: int, threads: int) -> dict[str, str]:
    """libx264 options for a rendition: template preset/profile, capped VBR, closed GOPs.

    Keyframes are forced by the dispatcher (`pict_type = I` at segment boundaries,
    made IDR by `forced-idr`); scene-cut keyframes are off so no rendition adds its
    own, and x264's own `keyint` is a safety net at twice the forced interval.
    `force-cfr` makes x264 write the real frame rate in the SPS VUI timing
    (`time_scale / (2 * num_units_in_tick)`), not the 1/90000 time base of the
    timestamps, which pass through unchanged (a variable-rate source keeps its own).
    `vbv-init` starts every encoder's VBV buffer `VBV_INIT` full instead of x264's 0.9:
    the low-latency drain opens a fresh encoder at every segment, and starting full
    let each segment spend the buffer on top of `maxrate` (high-motion 720p measured
    3.67 Mbit/s against a 3.21 Mbit/s cap with audio; at 0.4, 2.92-2.99), so the
    master's BANDWIDTH, which is never below the cap, held for no segment.
    """
    if plan.video_bitrate_bps is None or plan.maxrate_bps is None or plan.bufsize_bits is None:
        raise EncoderError(f"rendition {plan.name} has no bitrate to encode at")
    options = {
        "preset": plan.preset or "veryfast",
        "maxrate": str(plan.maxrate_bps),
        "bufsize": str(plan.bufsize_bits),
        "forced-idr": "1",
        "x264-params": (
            f"keyint={2 * keyint_frames}:scenecut=0:open-gop=0:force-cfr=1:vbv-init={VBV_INIT}"
        ),
        "threads": str(threads),
    }
    if plan.profile:
        options["profile"] = plan.profile
    return options


def frame_bytes(frame: av.VideoFrame) -> int:
    return sum(plane.buffer_size for plane in frame.planes)


@dataclass(frozen=True, slots=True)
class VideoItem:
    pictures: Pictures  # the decoded frame, and its scaled pictures (`encoder.scaling`)
    keyframe: bool
    discontinuity: bool
    drain: bool = False  # a keyframe at which to drain x264 (the job keeps up)
    size_bytes: int = 0  # the picture's planes


class _End:
    pass


END = _End()
HandoffItem = VideoItem | AudioPacket | _End


class Handoff:
    """Bounded hand-off from the dispatcher to one worker: frames (by count and by the
    bytes of their pictures) and audio packets are each capped; `put_frame` may wait
    until a deadline; END is never refused."""

    def __init__(self, max_frames: int, max_audio: int, max_bytes: int | None = None) -> None:
        self.max_frames = max(1, max_frames)
        self.max_audio = max(1, max_audio)
        self.max_bytes = max_bytes
        self._items: collections.deque[HandoffItem] = collections.deque()
        self._frame_bytes = 0
        self._frames = 0
        self._audio = 0
        self._cond = threading.Condition()
        self._aborted = False

    @property
    def frames(self) -> int:
        return self._frames

    def _full(self, size: int) -> bool:
        if self._frames >= self.max_frames:
            return True
        limit = self.max_bytes
        return limit is not None and self._frames > 0 and self._frame_bytes + size > limit

    def put_frame(self, item: VideoItem, deadline: float | None) -> bool:
        """Queue a frame, waiting for room until `deadline` (monotonic; None: no wait)."""
        size = item.size_bytes
        with self._cond:
            while self._full(size) and not self._aborted:
                remaining = 0.0 if deadline is None else deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            if self._aborted:
                return False
            self._items.append(item)
            self._frames += 1
            self._frame_bytes += size
            self._cond.notify_all()
            return True

    def put_audio(self, packet: AudioPacket) -> bool:
        with self._cond:
            if self._aborted or self._audio >= self.max_audio:
                return False
            self._items.append(packet)
            self._audio += 1
            self._cond.notify_all()
            return True

    def put_end(self) -> None:
        with self._cond:
            self._items.append(END)
            self._cond.notify_all()

    def abort(self) -> None:
        """Wake everyone; `get` returns END from now on."""
        with self._cond:
            self._aborted = True
            self._items.clear()
            self._cond.notify_all()

    def get(self) -> HandoffItem:
        with self._cond:
            while not self._items and not self._aborted:
                self._cond.wait()
            if self._aborted:
                return END
            item = self._items.popleft()
            if isinstance(item, VideoItem):
                self._frames -= 1
                self._frame_bytes -= item.size_bytes
            elif isinstance(item, AudioPacket):
                self._audio -= 1
            self._cond.notify_all()
            return item


class RenditionWorker:
    """Scales, encodes and segments one rendition in its own thread."""

    def __init__(
        self,
        plan: RenditionPlan,
        host: EncoderHost,
        *,
        frame_rate: Fraction,
        keyint_frames: int,
        segment_seconds: float,
        audio_template: Stream | None,
        arrival_at: Callable[[int], datetime | None] | None = None,
    ) -> None:
        self.plan = plan
        self._host = host
        self._prefix = f"[encoder {host.label} {plan.name}]"
        tuning = host.tuning
        self._frame_rate = frame_rate
        self._keyint_frames = keyint_frames
        self._holder, stream, self._context = self._open_encoder()
        # The template every segment muxer copies (size, SPS/PPS extradata): a copy of
        # the first encoder's parameters, not the encoder itself, which a drain closes
        # (encoders opened after a drain have identical parameters).
        self._template_holder = av.open(io.BytesIO(), "w", format="mpegts")
        self.stream = self._template_holder.add_stream_from_template(stream)
        self.extradata: bytes = self._context.extradata or b""
        self._in_flight = 0  # frames given to x264 and not yet out as packets
        self.drains = 0
        assert host.output_for is not None
        self.output = host.output_for(plan.name)
        self.output.start(
            RenditionConfig(
                segment_seconds,
                self.stream,
                audio_template,
                frame_ticks=max(1, round(TICK_TIME_BASE.denominator / frame_rate)),
                arrival_at=arrival_at,
            )
        )
        self._handoff = Handoff(
            tuning.rendition_queue_frames,
            tuning.rendition_queue_audio_packets,
            tuning.rendition_queue_bytes,
        )
        self._reformatters: dict[tuple[int, int], VideoReformatter] = {}
        self._interpolation = tuning.interpolation
        self._scale_threads = tuning.scale_threads
        self._congested = False
        self._pending_keyframe = False
        self._pending_discontinuity = False
        self.frames_encoded = 0
        self.dropped_frames = 0
        self.dropped_audio = 0
        self._thread = threading.Thread(
            target=self._run, name=f"encoder-{host.label}-{plan.name}", daemon=True
        )

    def _open_encoder(self) -> tuple[Any, Stream, Any]:
        """A libx264 encoder on a stream of a never-written container."""
        plan = self.plan
        tuning = self._host.tuning
        holder = av.open(io.BytesIO(), "w", format="mpegts")
        stream = holder.add_stream("libx264", rate=self._frame_rate)
        context = stream.codec_context
        context.width = plan.width
        context.height = plan.height
        context.pix_fmt = "yuv420p"
        context.time_base = TICK_TIME_BASE
        context.bit_rate = plan.video_bitrate_bps
        # Global header: SPS/PPS come out at open, so the CODECS string is known before
        # the first frame; the TS muxer puts them back in band before every keyframe.
        context.flags |= Flags.global_header
        threads = tuning.x264_threads if plan.height >= 720 else tuning.x264_threads_sd
        context.options = x264_options(plan, self._keyint_frames, threads)
        holder.start_encoding()
        unused = dict(context.options)
        if unused:
            holder.close()
            raise EncoderError(f"{self._prefix} libx264 ignored options {unused}")
        return holder, stream, context

    # -- dispatcher side -----------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def offer_video(
        self,
        frame: av.VideoFrame | Pictures,
        keyframe: bool,
        discontinuity: bool,
        deadline: float,
        *,
        drain: bool = False,
    ) -> None:
        """Hand a frame over (the job's `Pictures` of it, shared by the renditions, or
        a frame of this rendition alone); drop and count it if the worker is too slow."""
        keyframe = keyframe or self._pending_keyframe
        discontinuity = discontinuity or self._pending_discontinuity
        if self._congested and self._handoff.frames <= self._handoff.max_frames // 2:
            self._congested = False
            log.info("%s caught up", self._prefix)
        pictures = frame if isinstance(frame, Pictures) else Pictures(frame, {})
        item = VideoItem(pictures, keyframe, discontinuity, drain, frame_bytes(pictures.frame))
        if self._handoff.put_frame(item, None if self._congested else deadline):
            self._pending_keyframe = False
            self._pending_discontinuity = False
            return
        self.dropped_frames += 1
        # The next frame that gets through carries what this one had to say.
        self._pending_keyframe = keyframe
        self._pending_discontinuity = discontinuity
        if not self._congested:
            self._congested = True
            log.warning(
                "%s rendition too slow, dropping frames (%d so far)",
                self._prefix,
                self.dropped_frames,
            )

    def offer_audio(self, packet: AudioPacket) -> None:
        if not self._handoff.put_audio(packet):
            self.dropped_audio += 1
            if self.dropped_audio == 1 or self.dropped_audio % 100 == 0:
                log.warning(
                    "%s rendition stuck, dropping audio (%d packets so far)",
                    self._prefix,
                    self.dropped_audio,
                )

    def end_input(self) -> None:
        """No more media: flush the encoder, emit the last segment, end the thread."""
        self._handoff.put_end()

    def abort(self) -> None:
        """End the thread without flushing (failure elsewhere, or stop timed out)."""
        self._handoff.abort()

    def join(self, timeout: float | None) -> bool:
        if self._thread.ident is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def queued_frames(self) -> int:
        """Frames handed over and not yet taken by the worker."""
        return self._handoff.frames

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def close(self) -> None:
        """Release the encoder, unless the thread is still stuck using it."""
        if self._thread.is_alive():
            log.error("%s thread still running: encoder left open", self._prefix)
            return
        for holder in (self._holder, self._template_holder):
            try:
                holder.close()
            except av.FFmpegError:
                log.debug("%s closing an encoder holder failed", self._prefix, exc_info=True)

    def stats(self) -> RenditionStatistics:
        measured = self._host.segment_stats(self.plan.name)
        return RenditionStatistics(
            name=self.plan.name,
            width=self.plan.width,
            height=self.plan.height,
            bitrate_bps=measured.bitrate_bps,
            fps=round(measured.fps, 3),
            frames_encoded=self.frames_encoded,
            dropped_frames=self.dropped_frames + measured.dropped_video_packets,
        )

    # -- worker thread -------------------------------------------------------

    def _run(self) -> None:
        try:
            self._work()
        except BaseException as exc:  # one catch-all: report, and the job's threads end
            log.exception("%s failed", self._prefix)
            self._host.event(RENDITION_FAILED, f"{type(exc).__name__}: {exc}", self.plan.name)
            self._host.fail(exc)

    def _work(self) -> None:
        while True:
            item = self._handoff.get()
            if isinstance(item, _End):
                break
            if isinstance(item, AudioPacket):
                self.output.add_audio(item)
                continue
            self._encode_frame(item)
        if self._host.abort.is_set():
            return
        for packet in self._encode(None):
            self.output.add_video(packet)
        self.output.flush()
        log.debug("%s finished: %d frames", self._prefix, self.frames_encoded)

    def _encode_frame(self, item: VideoItem) -> None:
        frame = item.pictures.frame
        plan = self.plan
        # Shared with other renditions (the frame itself, or a picture a smaller
        # rendition scales from): read-only here but for its picture type. One
        # reformatter per size per thread: VideoFrame.reformat() would cache its
        # SwsContext on the shared frame.
        picture = item.pictures.at(
            (plan.width, plan.height), self._reformatters, self._interpolation, self._scale_threads
        )
        # For the shared source frame this is the value the dispatcher already set,
        # unless an earlier keyframe was dropped for this rendition only. Renditions
        # have distinct sizes, so one thread at most encodes the shared frame itself;
        # the others only copy it while scaling and then set their own picture's type.
        picture.pict_type = PictureType.I if item.keyframe else PictureType.NONE
        if item.discontinuity and frame.pts is not None:
            self.output.mark_discontinuity(frame.pts)
        if item.drain and frame.pts is not None and self._should_drain():
            self._drain(frame.pts)
        for packet in self._encode(picture):
            self.output.add_video(packet)
        item.pictures.done((plan.width, plan.height))
        self.frames_encoded += 1

    def _should_drain(self) -> bool:
        """Drain x264 at a forced keyframe when keeping up with the input.

        x264 holds back `rc-lookahead` + frame-thread + sync-lookahead frames (17 at
        veryfast with 4 threads, over half a second at 30 fps), so the segment before
        a keyframe would otherwise be complete only that much later. Nothing after a
        forced IDR depends on the frames before it (closed GOPs), so flushing the
        encoder there and opening a fresh one costs no lookahead, only a rate-control
        restart per segment. The dispatcher asks for it only when the job's queue is
        nearly empty, and it is skipped when frames wait for this rendition: behind
        real time the backlog dominates the delay, and the drain's pipeline bubble
        (x264's frame threads empty, then refill) would cost speed.
        """
        return (
            self._in_flight > 0
            and self._handoff.frames <= self._host.tuning.drain_max_queued_frames
        )

    def _drain(self, next_pts: int) -> None:
        """Flush the encoder, close the segment ending at `next_pts`, reopen x264."""
        for packet in self._encode(None):
            self.output.add_video(packet)
        self.output.cut_before(next_pts)
        old = self._holder
        self._holder, _, self._context = self._open_encoder()
        old.close()
        self._in_flight = 0
        self.drains += 1

    def _encode(self, frame: av.VideoFrame | None) -> list[VideoPacket]:
        """x264's packets for `frame` (None: flush), as the encoded track carries them."""
        packets: list[av.Packet] = self._context.encode(frame)
        if frame is not None:
            self._in_flight += 1
        self._in_flight -= len(packets)
        return [video_packet(packet) for packet in packets]
