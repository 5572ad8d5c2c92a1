"""Cut one rendition's encoded media into independently decodable MPEG-TS segments.

A `Segmenter` receives the rendition's video packets (pts/dts in 90 kHz ticks on the
job's output timeline, in decode order) and the job's shared audio packets, and emits
a `Segment` each time a video keyframe arrives at or past the next multiple of
`segment_seconds` (or the first keyframe after a publisher reconnect). Each segment
is muxed by its own MPEG-TS muxer in memory, so it starts with PAT/PMT and a
keyframe, carries SPS/PPS in band (the muxer inserts the stream's extradata before
keyframes that lack it, or converts AVCC to Annex B for copied streams). Its
continuity counters start fresh and the first packet of each PID carries the
discontinuity indicator (`initial_discontinuity`): the HLS writer continues the
counters from the rendition's previous segment and keeps the indicators only where
the segment really starts a new run.

Each segment carries the wall-clock instant its first frame arrived (`arrived_at`),
from the encoder's `ArrivalClock` (`encoder.timeline`).

A run's first segment (the live's first, or the first after a discontinuity) starts
its picture and its sound together: hls.js takes a run's time zero from the earliest
of its audio PTS and video *decode* time, and buffers from where both have begun, so
any lead of one over the other is a hole at the start (hls.js reports
`bufferSeekOverHole` and jumps over it). x264's B-frames decode the IDR two frames
(67 ms) before it is shown: the IDR is decoded when it is shown
(`opening_decode_times`). The AAC encoder's priming packet (21 ms), or a source's
audio ahead of its first keyframe, has no picture: it is dropped, and where an audio
packet straddles the IDR the IDR is shown from that packet's start (less than an
audio frame early; the segment's start, its place on the recording's timeline, stays
the keyframe's).

Timestamps in the TS are the output timeline plus `TS_PTS_OFFSET` (1.4 s), exactly
as ffmpeg's own TS/HLS output does (`max_delay` 0.7 s): it leaves room for B-frame
decode timestamps and AAC priming before zero and gives the PCR its lead.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import itertools
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction
from typing import Any

import av
from av.stream import Stream

from media.clock import TICK_TIME_BASE, TICKS_PER_SECOND
from media.segments import AudioPacket, Segment, VideoPacket

log = logging.getLogger(__name__)

TS_PTS_OFFSET = Fraction(7, 5)  # seconds; 2 x max_delay, added by the TS muxer
MUXER_OPTIONS = {
    "max_delay": "700000",
    "avoid_negative_ts": "disabled",
    "mpegts_flags": "initial_discontinuity",
}
RECENT_SEGMENTS = 5  # window for the measured bitrate and frame rate
MAX_SEGMENT_SPANS = 6  # a segment never holds more than 6 x segment_seconds of video


@dataclass
class _Recent:
    duration_seconds: float
    size_bytes: int
    frames: int


class Segmenter:
    """Segments one rendition; used from one thread (stats may be read from any)."""

    def __init__(
        self,
        rendition: str,
        segment_seconds: float,
        video_template: Stream,
        audio_template: Stream | None,
        emit: Callable[[Segment], None],
        *,
        frame_ticks: int,
        max_pending_audio: int = 1000,
        arrival_at: Callable[[int], datetime | None] | None = None,
    ) -> None:
        """`arrival_at(ticks)`: when the media at output timestamp `ticks` arrived."""
        if segment_seconds <= 0:
            raise ValueError("segment_seconds must be positive")
        self.rendition = rendition
        self._segment_ticks = round(Fraction(segment_seconds) * TICKS_PER_SECOND)
        self._max_segment_ticks = MAX_SEGMENT_SPANS * self._segment_ticks
        self._video_template = video_template
        self._audio_template = audio_template
        self._emit = emit
        self._frame_ticks = max(1, frame_ticks)
        self._max_pending_audio = max_pending_audio
        self._arrival_at = arrival_at
        self._start_arrival: datetime | None = None

        self._sequence = 0
        self._video: list[VideoPacket] = []
        self._audio: collections.deque[AudioPacket] = collections.deque()
        self._start_ticks = 0
        self._next_cut_ticks = 0
        self._last_pts_ticks = 0
        self._discontinuity_at: int | None = None  # cut at the first keyframe at/after
        self._early_cut: int | None = None  # video complete up to here: cut once audio is
        self._segment_discontinuity = False
        self._next_templates: tuple[Stream | None, Stream | None] = (None, None)
        self._lock = threading.Lock()
        self._recent: collections.deque[_Recent] = collections.deque(maxlen=RECENT_SEGMENTS)
        self.segments_emitted = 0
        self.dropped_video_packets = 0  # non-keyframes with no segment to start
        self.dropped_audio_packets = 0
        self.unordered_packets = 0  # a decode time not after its stream's last one

    # -- input ---------------------------------------------------------------

    def mark_discontinuity(
        self,
        at_ticks: int,
        video_template: Stream | None = None,
        audio_template: Stream | None = None,
    ) -> None:
        """A new publish session starts at `at_ticks`: its first keyframe starts a new
        segment flagged `discontinuity` (ignored before the job's first segment), muxed
        with the new stream templates if given (a copied source may change its SPS)."""
        if self._video or self.segments_emitted:
            self._discontinuity_at = at_ticks
            self._next_templates = (video_template, audio_template)
        else:
            self._apply_templates((video_template, audio_template))

    def add_video(self, packet: VideoPacket) -> None:
        """One encoded video packet (pts/dts in ticks, decode order)."""
        pts = packet.pts
        if self._video and packet.keyframe and self._should_cut(pts):
            self._cut(pts)
        elif self._video and pts - self._start_ticks > self._max_segment_ticks:
            # No keyframe for far too long (a copied source can do that): bound the
            # memory, end the segment here and drop until the next keyframe.
            log.warning(
                "[segmenter %s] no keyframe for %.1f s: segment cut short",
                self.rendition,
                (pts - self._start_ticks) / TICKS_PER_SECOND,
            )
            self._cut(pts)
        if not self._video:
            if not packet.keyframe:
                self.dropped_video_packets += 1
                return
            self._open_segment(pts)
        self._video.append(packet)
        if pts > self._last_pts_ticks:
            self._last_pts_ticks = pts

    def add_audio(self, packet: AudioPacket) -> None:
        """One audio packet; it goes into the segment whose time span holds its pts."""
        if len(self._audio) >= self._max_pending_audio:
            # Only when video stops for long: keep memory bounded, drop the oldest.
            self._audio.popleft()
            self.dropped_audio_packets += 1
        self._audio.append(packet)
        self._finish_early_cut()

    def cut_before(self, pts: int) -> None:
        """The encoder has output every frame before `pts`, where a keyframe will start
        the next segment: if that keyframe is due to cut, end the segment as soon as
        its audio is complete (an audio packet at or past `pts` has arrived), rather
        than when the keyframe comes out of the encoder. Every rendition thus puts
        the same audio packets in the same segment."""
        if self._video and self._should_cut(pts):
            self._early_cut = pts
            self._finish_early_cut()

    def _finish_early_cut(self) -> None:
        end = self._early_cut
        if end is None:
            return
        if self._audio_template is None or (self._audio and self._audio[-1].pts_ticks >= end):
            self._cut(end)

    def flush(self) -> None:
        """The end: emit the last (short) segment with everything pending."""
        if self._video:
            self._finish_segment(self._last_pts_ticks + self._frame_ticks, final=True)

    # -- stats ---------------------------------------------------------------

    def recent_rates(self) -> tuple[int, float]:
        """(bits per second, frames per second) over the last few segments."""
        with self._lock:
            recent = list(self._recent)
        duration = sum(r.duration_seconds for r in recent)
        if duration <= 0:
            return 0, 0.0
        bits = sum(r.size_bytes for r in recent) * 8
        frames = sum(r.frames for r in recent)
        return round(bits / duration), frames / duration

    # -- internals -----------------------------------------------------------

    def _should_cut(self, pts: int) -> bool:
        if self._discontinuity_at is not None and pts >= self._discontinuity_at:
            return True
        # A keyframe within half a frame before the boundary is the boundary's (the
        # encoder's `KeyframeClock` forces it there: frames a little off the grid).
        return pts >= self._next_cut_ticks - self._frame_ticks // 2

    def _open_segment(self, pts: int) -> None:
        self._start_ticks = pts
        self._start_arrival = self._arrival_at(pts) if self._arrival_at is not None else None
        ahead = pts + self._frame_ticks // 2
        self._next_cut_ticks = (ahead // self._segment_ticks + 1) * self._segment_ticks
        if self._discontinuity_at is not None and pts >= self._discontinuity_at:
            self._segment_discontinuity = True
            self._discontinuity_at = None
            self._apply_templates(self._next_templates)
            self._next_templates = (None, None)

    def _apply_templates(self, templates: tuple[Stream | None, Stream | None]) -> None:
        video, audio = templates
        if video is not None:
            self._video_template = video
        if audio is not None:
            self._audio_template = audio

    def _cut(self, next_start: int) -> None:
        self._finish_segment(next_start, final=False)

    def _finish_segment(self, end_ticks: int, *, final: bool) -> None:
        self._early_cut = None
        video = self._video
        self._video = []
        audio: list[AudioPacket] = []
        while self._audio and (final or self._audio[0].pts_ticks < end_ticks):
            audio.append(self._audio.popleft())
        if self.segments_emitted == 0 or self._segment_discontinuity:
            video, audio = _shown_with_the_sound(video, audio)
            video = _decoded_when_shown(video)
        data = self._mux(video, audio)
        start = self._start_ticks
        duration = max(0, end_ticks - start)
        segment = Segment(
            rendition=self.rendition,
            sequence=self._sequence,
            start_seconds=start / TICKS_PER_SECOND,
            duration_seconds=duration / TICKS_PER_SECOND,
            data=data,
            discontinuity=self._segment_discontinuity,
            keyframe_pts=Fraction(start, TICKS_PER_SECOND),
            arrived_at=self._start_arrival,
        )
        self._sequence += 1
        self._segment_discontinuity = False
        with self._lock:
            self._recent.append(_Recent(duration / TICKS_PER_SECOND, len(data), len(video)))
        self.segments_emitted += 1
        self._emit(segment)

    def _mux(self, video: list[VideoPacket], audio: list[AudioPacket]) -> bytes:
        buffer = io.BytesIO()
        container = av.open(buffer, "w", format="mpegts", options=MUXER_OPTIONS)
        try:
            video_stream = container.add_stream_from_template(self._video_template)
            video_stream.time_base = TICK_TIME_BASE
            audio_stream: Any = None
            if self._audio_template is not None:
                audio_stream = container.add_stream_from_template(self._audio_template)
            # Interleave by decode time: audio packets are built per muxer (the
            # shared AudioPacket is immutable; av.Packet is not).
            queue: list[tuple[int, int, av.Packet]] = []
            for order, frame in enumerate(video):
                packet = _packet(frame.data, video_stream, TICK_TIME_BASE, frame)
                packet.is_keyframe = frame.keyframe
                queue.append((frame.dts, order, packet))
            if audio_stream is not None:
                for order, item in enumerate(audio, start=len(video)):
                    packet = _packet(item.data, audio_stream, item.time_base, item)
                    queue.append((item.dts_ticks, order, packet))
            queue.sort(key=lambda entry: (entry[0], entry[1]))
            last_dts: dict[int, int] = {}
            for dts, _, packet in queue:
                index = packet.stream.index
                if index in last_dts and dts <= last_dts[index]:
                    # The muxer refuses it (and would end the live): never expected.
                    self.unordered_packets += 1
                    log.warning("[segmenter %s] a packet out of order: dropped", self.rendition)
                    continue
                last_dts[index] = dts
                container.mux(packet)
        finally:
            container.close()
        return buffer.getvalue()


def _shown_with_the_sound(
    video: list[VideoPacket], audio: list[AudioPacket]
) -> tuple[list[VideoPacket], list[AudioPacket]]:
    """A run's first segment: its sound from its first picture (see the module)."""
    if not video or not audio:
        return video, audio
    idr = video[0]
    kept = [p for p in audio if p.end_ticks > idr.pts]
    if len(kept) < len(audio):
        log.debug("dropped %d audio packets before the first picture", len(audio) - len(kept))
    if not kept or kept[0].pts_ticks >= idr.pts:
        return video, kept
    start = kept[0].pts_ticks  # less than an audio frame early
    shown = dataclasses.replace(
        idr, pts=start, dts=min(idr.dts, start), duration=idr.duration + idr.pts - start
    )
    return [shown, *video[1:]], kept


def _decoded_when_shown(video: list[VideoPacket]) -> list[VideoPacket]:
    """A run's first segment: its IDR decoded when shown (see the module)."""
    decode_times = opening_decode_times([p.pts for p in video], [p.dts for p in video])
    return [
        p if p.dts == dts else dataclasses.replace(p, dts=dts)
        for p, dts in zip(video, decode_times, strict=True)
    ]


def _packet(
    data: bytes, stream: Stream, time_base: Fraction, timing: VideoPacket | AudioPacket
) -> av.Packet:
    """A packet to mux into `stream`, with `timing`'s pts, dts and duration."""
    packet = av.Packet(data)
    packet.stream = stream
    packet.time_base = time_base
    packet.pts = timing.pts
    packet.dts = timing.dts
    packet.duration = timing.duration
    return packet


def opening_decode_times(pts: Sequence[int], dts: Sequence[int]) -> list[int]:
    """Decode timestamps for packets in decode order (`pts`, `dts` as the encoder gave
    them) such that the first, the IDR, is decoded when it is shown, and the others as
    the encoder said from the first one (the joint) that leaves at least one tick
    per packet before it; those before it are spread evenly from the IDR's. None is
    after its own presentation or after a later packet's. Without such a joint (an
    edge of a few frames) the encoder's timestamps are kept."""
    if not dts or dts[0] >= pts[0]:
        return list(dts)
    start = pts[0]
    latest = list(itertools.accumulate(reversed(pts), min))[::-1]  # min pts from k on
    for joint in range(1, len(dts)):
        if dts[joint] - start < joint:
            continue
        span = dts[joint] - start
        ramp = [start + span * k // joint for k in range(joint)]
        if all(ramp[k] <= latest[k] for k in range(joint)):
            return ramp + list(dts[joint:])
    return list(dts)
