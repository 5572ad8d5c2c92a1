"""The passthrough job: repackage the source's packets into HLS segments, bit for bit.

Runs in the LiveEncoder's dispatcher thread (copying packets is cheap). One rendition,
"source"; segments are cut on the source's own keyframes at/after each boundary. The
TS muxer converts AVCC (FLV/MP4) packets to Annex B and puts SPS/PPS before keyframes;
the NAL units themselves are untouched.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import logging
from fractions import Fraction
from typing import cast

import av
from av.audio.codeccontext import AudioCodecContext
from av.container import OutputContainer
from av.stream import Stream

from encoder.codecs import (
    avc1_codec_string,
    codecs_attribute,
    h264_header_sps,
    h264_sps_dimensions,
    mp4a_codec_string,
)
from encoder.encoded import RenditionConfig, RenditionOutput
from encoder.errors import UnsupportedSource
from encoder.host import EncoderHost
from encoder.ladder import plan_ladder
from encoder.statistics import RenditionStatistics
from encoder.templates import JobTemplate
from encoder.timeline import ArrivalClock, SessionClock
from ingest.media import AudioParams, SessionEnd, SessionStart, VideoParams
from media.clock import TICK_TIME_BASE, TICKS_PER_SECOND, seconds_to_ticks
from media.segments import AudioPacket, Segment, VariantInfo, VideoPacket

log = logging.getLogger(__name__)

SUPPORTED_VIDEO = {"h264"}
AUDIO_OVERLAP_TOLERANCE = 90  # ticks: FLV's millisecond rounding
MAX_HELD_AUDIO = 256  # audio packets of a session before its first keyframe (~5 s)


# FFmpeg's default layout for a channel count (AAC's channel configurations 1-8).
CHANNEL_LAYOUTS = {
    1: "mono",
    2: "stereo",
    3: "3.0",
    4: "4.0",
    5: "5.0",
    6: "5.1",
    7: "6.1",
    8: "7.1",
}


class _Templates:
    """Our own copy of a session's stream parameters: the ingest's streams die with
    its session's container, these live as long as segments need them."""

    def __init__(self, video: VideoParams, audio: AudioParams | None) -> None:
        self.holder: OutputContainer = av.open(io.BytesIO(), "w", format="mpegts")
        if video.stream is None:
            raise UnsupportedSource("passthrough needs the source's video stream")
        if video.codec_name not in SUPPORTED_VIDEO:
            raise UnsupportedSource(f"passthrough supports H.264 video, not {video.codec_name}")
        self.video: Stream = self.holder.add_stream_from_template(video.stream)
        self.video_extradata: bytes = video.stream.codec_context.extradata or b""
        self.audio: Stream | None = None
        self.audio_codecs: str | None = None
        if audio is not None and audio.stream is not None:
            codecs = mp4a_codec_string(audio.codec_name, audio.stream.codec_context.extradata)
            if codecs is None:
                log.warning(
                    "passthrough: audio codec %s cannot be announced: audio dropped",
                    audio.codec_name,
                )
            elif not audio.sample_rate or not audio.channels:
                log.warning("passthrough: the audio's rate and channels are unknown: dropped")
            else:
                self.audio = self.holder.add_stream_from_template(audio.stream)
                self.audio_codecs = codecs
                # A live MPEG-TS probe (SRT, HLS) leaves them 0: the ADTS header's,
                # as the ingest read them; the TS muxer refuses a stream without.
                context = cast(AudioCodecContext, self.audio.codec_context)
                if not context.sample_rate or not context.channels:
                    context.sample_rate = context.sample_rate or audio.sample_rate
                    if not context.channels:
                        context.layout = CHANNEL_LAYOUTS.get(audio.channels, "stereo")
                    # Written into the stream's parameters, which its copies are made of.
                    self.holder.start_encoding()

    def close(self) -> None:
        self.holder.close()


class PassthroughMode:
    """Source packets in, one copied rendition out."""

    def __init__(self, template: JobTemplate, host: EncoderHost) -> None:
        self._template = template
        self._host = host
        self._prefix = f"[encoder {host.label} source]"
        self._arrivals = ArrivalClock()
        self._clock = SessionClock(self._arrivals, host.clock.unix, host.timeline_start)
        self._templates: list[_Templates] = []
        self._output: RenditionOutput | None = None
        self._width = 0
        self._height = 0
        self._in_session = False
        self._awaiting_keyframe = True
        self._discontinuity_pending = False
        self._video_index: int | None = None
        self._audio_index: int | None = None
        self._last_video_dts: int | None = None
        self._last_audio_dts: int | None = None
        # Where the copied audio ends (ticks), over every session; a session's audio
        # starts no earlier than the previous one's end (its floor).
        self._audio_end = seconds_to_ticks(host.timeline_start)
        self._audio_floor = self._audio_end
        self._audio_frame_ticks = 1920  # an AAC frame at 48 kHz, until the source says
        self._frame_ticks = 3000
        self._session_templates: _Templates | None = None
        self._variant: VariantInfo | None = None  # until the sink is started
        self._session_video: VideoParams | None = None
        # A session's audio until its first keyframe (which starts its timeline).
        self._held_audio: collections.deque[av.Packet] = collections.deque(maxlen=MAX_HELD_AUDIO)
        self.packets_copied = 0
        self.dropped_packets = 0

    def session_start(self, start: SessionStart) -> None:
        if self._in_session:
            self.session_end(SessionEnd(self._clock.session, "next session started"))
        if start.video is None:
            log.warning("%s session %d has no video: ignored", self._prefix, start.session)
            return
        templates = _Templates(start.video, start.audio if self._audio_wanted(start) else None)
        self._templates.append(templates)
        self._session_templates = templates
        self._session_video = start.video
        if self._output is not None:
            self._discontinuity_pending = True
            self._host.event(
                "EncoderSessionStarted",
                f"session {start.session} continues the output at {float(self._clock.end):.3f} s",
                None,
            )
        self._clock.start_session(start.session, start.wall_clock)
        self._in_session = True
        self._awaiting_keyframe = True
        self._last_video_dts = None
        self._last_audio_dts = None
        self._audio_floor = self._audio_end
        self._held_audio.clear()
        if templates.audio is not None:
            self._audio_frame_ticks = _audio_frame_ticks(templates.audio)
        self._video_index = start.video.stream.index if start.video.stream is not None else None
        self._audio_index = (
            start.audio.stream.index
            if start.audio is not None and start.audio.stream is not None
            else None
        )

    def session_end(self, end: SessionEnd) -> None:
        self._in_session = False

    def video(self, frame: av.VideoFrame) -> None:
        raise UnsupportedSource("the passthrough template needs packets, got a decoded frame")

    def audio(self, frame: av.AudioFrame) -> None:
        raise UnsupportedSource("the passthrough template needs packets, got a decoded frame")

    def packet(self, packet: av.Packet) -> None:
        if not self._in_session:
            return
        kind = packet.stream.type if packet.stream is not None else None
        if kind == "video" or (kind is None and packet.stream_index == self._video_index):
            self._video_packet(packet)
        elif kind == "audio" or (kind is None and packet.stream_index == self._audio_index):
            self._audio_packet(packet)

    def end_of_media(self) -> None:
        if self._output is not None:
            self._output.flush()

    def abort(self) -> None:
        pass

    def join(self, deadline: float) -> bool:
        return True

    def close(self) -> None:
        for templates in self._templates:
            templates.close()
        self._templates.clear()

    def stats(self) -> list[RenditionStatistics]:
        if self._output is None:
            return []
        measured = self._host.segment_stats(self._output.rendition)
        return [
            RenditionStatistics(
                name=self._output.rendition,
                width=self._width,
                height=self._height,
                bitrate_bps=measured.bitrate_bps,
                fps=round(measured.fps, 3),
                frames_encoded=self.packets_copied,
                dropped_frames=self.dropped_packets + measured.dropped_video_packets,
            )
        ]

    # -- internals -----------------------------------------------------------

    def _audio_wanted(self, start: SessionStart) -> bool:
        # The job's track list is fixed by its first session.
        return start.audio is not None and (
            self._output is None or self._templates[0].audio is not None
        )

    def _start_job(self, keyframe: av.Packet) -> RenditionOutput:
        """At the job's first keyframe: size and CODECS from the real SPS (a live probe
        may report 0x0), then the sink and the segmenter."""
        templates = self._session_templates
        video = self._session_video
        assert templates is not None and video is not None
        header = templates.video_extradata or bytes(keyframe)
        width, height = video.width, video.height
        if width <= 0 or height <= 0:
            width, height = h264_sps_dimensions(h264_header_sps(header))
        plan = plan_ladder(self._template, width, height)[0]
        self._width, self._height = plan.width, plan.height
        if video.frame_rate:
            self._frame_ticks = max(1, round(TICKS_PER_SECOND / video.frame_rate))
        codecs = codecs_attribute(avc1_codec_string(header), templates.audio_codecs)
        self._variant = VariantInfo(
            name=plan.name,
            width=plan.width,
            height=plan.height,
            frame_rate=float(video.frame_rate) if video.frame_rate else None,
            codecs=codecs,
            target_bitrate_bps=0,  # a copy: measured on the first segment
        )
        assert self._host.output_for is not None
        output = self._host.output_for(plan.name)
        output.start(
            RenditionConfig(
                self._template.segment_seconds,
                templates.video,
                templates.audio,
                frame_ticks=self._frame_ticks,
                arrival_at=self._arrivals.at,
                emit=self._emit,
            )
        )
        self._output = output
        self._host.event("EncoderStarted", f"1 rendition: {plan.describe()} {codecs}", None)
        return output

    def _emit(self, segment: Segment) -> None:
        """The sink starts with the first segment: a copy's bitrate is whatever the
        publisher sends, so the variant's target is the first segment's measured rate."""
        if self._variant is not None:
            bitrate = round(len(segment.data) * 8 / max(segment.duration_seconds, 0.001))
            self._host.start_sink([dataclasses.replace(self._variant, target_bitrate_bps=bitrate)])
            self._variant = None
        self._host.emit_segment(segment)

    def _ticks(self, value: int | None, time_base: Fraction) -> int | None:
        if value is None:
            return None
        return seconds_to_ticks(self._clock.to_output(value * time_base))

    def _video_packet(self, packet: av.Packet) -> None:
        if self._awaiting_keyframe:
            if not packet.is_keyframe:
                self.dropped_packets += 1
                return
            self._awaiting_keyframe = False
        output = self._output or self._start_job(packet)
        time_base = packet.time_base
        dts = self._ticks(packet.dts if packet.dts is not None else packet.pts, time_base)
        pts = self._ticks(packet.pts, time_base)
        if dts is None:
            self.dropped_packets += 1
            return
        pts = dts if pts is None else pts
        if self._last_video_dts is not None and dts <= self._last_video_dts:
            self.dropped_packets += 1
            return
        self._last_video_dts = dts
        duration = (
            round(packet.duration * time_base * TICKS_PER_SECOND)
            if packet.duration
            else self._frame_ticks
        )
        if self._discontinuity_pending:
            self._discontinuity_pending = False
            templates = self._session_templates
            output.mark_discontinuity(
                pts,
                templates.video if templates is not None else None,
                templates.audio if templates is not None else None,
            )
        self._clock.extend_to(Fraction(pts + duration, TICKS_PER_SECOND))
        output.add_video(VideoPacket(bytes(packet), pts, dts, duration, bool(packet.is_keyframe)))
        self.packets_copied += 1
        while self._held_audio:  # after the keyframe: in its run, never the one before
            self._audio_packet(self._held_audio.popleft())

    def _audio_packet(self, packet: av.Packet) -> None:
        if self._templates[0].audio is None:
            return
        if self._awaiting_keyframe:
            # The session's timeline starts at its first keyframe, and its audio goes
            # to that keyframe's segment: a switched-to input's audio (with its own
            # parameters) never lands in the previous input's last segment.
            self._held_audio.append(packet)  # bounded: the oldest go
            return
        time_base = packet.time_base
        dts = self._ticks(packet.dts if packet.dts is not None else packet.pts, time_base)
        pts = self._ticks(packet.pts, time_base)
        if dts is None:
            return
        pts = dts if pts is None else pts
        if self._last_audio_dts is not None and dts <= self._last_audio_dts:
            return
        if pts < self._audio_floor - AUDIO_OVERLAP_TOLERANCE:
            # Sound before the session's first keyframe, which continues the timeline
            # where the last session ended: the overlap is dropped.
            return
        self._last_audio_dts = dts
        duration = round((packet.duration or 0) * time_base * TICKS_PER_SECOND)
        duration = duration or self._audio_frame_ticks  # a live MPEG-TS probe's are 0
        self._audio_end = max(self._audio_end, pts + duration)
        self._clock.extend_to(Fraction(pts + duration, TICKS_PER_SECOND))
        if self._output is not None:
            self._output.add_audio(AudioPacket(bytes(packet), pts, dts, duration, TICK_TIME_BASE))


def _audio_frame_ticks(audio: Stream) -> int:
    """One audio frame's duration in ticks (AAC: 1024 samples)."""
    context = cast(AudioCodecContext, audio.codec_context)
    rate = context.sample_rate or 48000
    return round((context.frame_size or 1024) * TICKS_PER_SECOND / rate)
