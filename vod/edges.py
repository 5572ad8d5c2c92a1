"""The first and last partial segments of a cut: decoded, trimmed to the frame and
re-encoded with the rendition's own x264 settings, their AAC packets copied.

A live segment is one closed GOP starting with an IDR (`encoder.segmenter`), so an
edge is decoded from its own first packet, nothing before it. The frames kept are
those whose presentation time is nearest the cut's instants (`from` is the first
frame shown, `to` the first one not shown), re-encoded by a fresh libx264 opened as
the live's rendition encoders are (`encoder.video.x264_options`: same preset,
profile, bitrate, VBV, keyint and closed GOP, so the same SPS/PPS), starting with an
IDR, with the live's timestamps, so the seams with the copied neighbours need no
discontinuity. AAC packets are copied, cut at the AAC frame nearest each instant.
The muxer is the segmenter's (same PIDs, same options), and the continuity counters
are then fitted to the neighbours (`vod.continuity`).

The edge that opens the video starts audio and video together, as hls.js needs: it
takes the first decode timestamp of either track as time zero (its `initPTS`), so
B-frame reordering (the IDR decoded two frames before it is shown) or an AAC frame
starting before the first picture would put a hole before the first picture, which
hls.js then reports and seeks over (`bufferSeekOverHole`). So that edge's IDR is
decoded when it is shown (its first few decode timestamps closer together, joining
the encoder's from the first one that allows it: `opening_decode_times`), and its
audio starts with the first AAC frame not before that picture.

One core at most: the decoder and x264 run single-threaded.
"""

from __future__ import annotations

import io
import itertools
import logging
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
from av.codec.context import Flags
from av.video.frame import PictureType

from encoder.codecs import CodecStringError, h264_header_sps
from encoder.ladder import BUFSIZE_FACTOR, MAXRATE_FACTOR, RenditionPlan
from encoder.segmenter import MUXER_OPTIONS, TS_PTS_OFFSET, opening_decode_times
from encoder.templates import JobTemplate, all_templates
from encoder.timeline import keyframe_interval_seconds
from encoder.video import x264_options
from media.clock import TICK_TIME_BASE, TICKS_PER_SECOND
from vod.errors import CutError

log = logging.getLogger(__name__)

OFFSET_TICKS = int(TS_PTS_OFFSET * TICKS_PER_SECOND)  # the TS muxer adds it back
AAC_FRAME_SAMPLES = 1024
DEFAULT_FRAME_RATE = Fraction(30)
DEFAULT_SEGMENT_SECONDS = 2.0


@dataclass(frozen=True)
class Edge:
    """A re-encoded edge segment (counters not yet fitted)."""

    data: bytes
    duration_ticks: int
    start_offset_ticks: int  # from the live segment's first frame to this one's
    frames: int
    same_parameter_sets: bool  # its SPS is the live's (an MP4 needs one avcC)


@dataclass(frozen=True)
class _Demuxed:
    container: Any
    video: list[av.Packet]
    audio: list[av.Packet]
    video_stream: Any
    audio_stream: Any
    first_pts: int  # the segment's first frame, on the output timeline (ticks)


def rendition_template(names: tuple[str, ...]) -> JobTemplate | None:
    """The encoding template whose ladder has every one of these renditions."""
    for template in all_templates():
        if template.passthrough:
            continue
        ladder = {spec.name for spec in template.renditions}
        if set(names) <= ladder:
            return template
    return None


PROFILES = {66: "baseline", 77: "main", 100: "high"}  # profile_idc -> x264 profile


def rendition_plan(
    template: JobTemplate | None,
    name: str,
    width: int,
    height: int,
    measured_bps: int,
    live_sps: bytes | None = None,
) -> RenditionPlan:
    """The rendition's x264 plan: the template's (as `encoder.ladder` plans it) or, for a
    rendition no template knows (a copied source), its measured bitrate and its SPS's
    profile at `veryfast`."""
    spec = None
    if template is not None:
        spec = next((s for s in template.renditions if s.name == name), None)
    bitrate = spec.video_bitrate_bps if spec is not None else None
    if bitrate is None:
        bitrate = max(100_000, measured_bps)
    return RenditionPlan(
        name=name,
        width=width,
        height=height,
        video_bitrate_bps=bitrate,
        maxrate_bps=round(bitrate * MAXRATE_FACTOR),
        bufsize_bits=round(bitrate * BUFSIZE_FACTOR),
        profile=spec.profile if spec is not None else _profile(live_sps),
        preset=(template.x264_preset if template is not None else None) or "veryfast",
    )


def _profile(sps: bytes | None) -> str:
    return PROFILES.get(sps[1], "main") if sps is not None and len(sps) > 1 else "main"


def _demux(data: bytes) -> _Demuxed:
    """The segment's packets; its container stays open (the streams are the new muxer's
    templates): `_Demuxed.container.close()` when done."""
    video: list[av.Packet] = []
    audio: list[av.Packet] = []
    container = av.open(io.BytesIO(data), mode="r", format="mpegts")
    try:
        if not container.streams.video:
            raise CutError("a recorded segment has no video")
        video_stream = container.streams.video[0]
        audio_stream = container.streams.audio[0] if container.streams.audio else None
        streams = [video_stream] + ([audio_stream] if audio_stream is not None else [])
        for packet in container.demux(streams):
            if not packet.size or packet.pts is None:
                continue
            (video if packet.stream.type == "video" else audio).append(packet)
        if not video:
            raise CutError("a recorded segment has no video packets")
        if video_stream.codec_context.name != "h264":
            raise CutError(f"cutting {video_stream.codec_context.name} video is not supported")
    except BaseException:
        container.close()
        raise
    first = min(_ticks(p.pts) for p in video)
    return _Demuxed(container, video, audio, video_stream, audio_stream, first - OFFSET_TICKS)


def _frame_rate(stream: Any, frames: list[av.VideoFrame]) -> Fraction:
    """The live's declared rate: the SPS timing the decoder read, else the pts steps."""
    rate = stream.codec_context.framerate
    if rate:
        return Fraction(rate)
    if len(frames) >= 2:
        steps = sorted(_ticks(b.pts) - _ticks(a.pts) for a, b in itertools.pairwise(frames))
        step = steps[len(steps) // 2]
        if step > 0:
            return Fraction(TICKS_PER_SECOND, step).limit_denominator(1001)
    return DEFAULT_FRAME_RATE


def _ticks(value: int | None) -> int:
    if value is None:
        raise CutError("a recorded frame has no timestamp")
    return int(value)


def _sps(data: bytes) -> bytes | None:
    try:
        return h264_header_sps(data)
    except CodecStringError:
        return None


def reencode_edge(
    data: bytes,
    *,
    segment_ms: int,
    from_offset_ms: int | None,
    to_offset_ms: int | None,
    template: JobTemplate | None,
    rendition: str,
    opens_video: bool = False,
) -> Edge:
    """Re-encode the part of live segment `data` (lasting `segment_ms`) from
    `from_offset_ms` (None: its start) to `to_offset_ms` (None: its end), offsets from
    its first frame. `opens_video`: it is the video's first segment, whose audio and
    video must start together (the module's docstring says why)."""
    demuxed = _demux(data)
    try:
        return _reencode(
            demuxed,
            data,
            segment_ms,
            (from_offset_ms, to_offset_ms),
            template,
            rendition,
            opens_video,
        )
    finally:
        demuxed.container.close()


def _reencode(
    demuxed: _Demuxed,
    data: bytes,
    segment_ms: int,
    offsets_ms: tuple[int | None, int | None],
    template: JobTemplate | None,
    rendition: str,
    opens_video: bool,
) -> Edge:
    from_offset_ms, to_offset_ms = offsets_ms
    first = demuxed.first_pts
    decoder = demuxed.video_stream.codec_context
    decoder.thread_count = 1
    frames: list[av.VideoFrame] = []
    for packet in demuxed.video:
        frames.extend(decoder.decode(packet))
    frames.extend(decoder.decode(None))
    for frame in frames:
        frame.pts = _ticks(frame.pts) - OFFSET_TICKS
    frames.sort(key=lambda f: _ticks(f.pts))
    rate = _frame_rate(demuxed.video_stream, frames)
    frame_ticks = round(TICKS_PER_SECOND / rate)
    begin = None if from_offset_ms is None else first + from_offset_ms * 90
    end = None if to_offset_ms is None else first + to_offset_ms * 90
    half = frame_ticks // 2
    kept = [
        f
        for f in frames
        if (begin is None or _ticks(f.pts) >= begin - half)
        and (end is None or _ticks(f.pts) < end - half)
    ]
    if not kept:
        raise CutError("the range holds no video frame")
    width, height = kept[0].width, kept[0].height
    measured = round(len(data) * 8 * 1000 / max(1, segment_ms))
    live_sps = _sps(bytes(demuxed.video[0]))
    plan = rendition_plan(template, rendition, width, height, measured, live_sps)
    segment_seconds = template.segment_seconds if template else DEFAULT_SEGMENT_SECONDS
    gop_seconds = template.gop_seconds if template else DEFAULT_SEGMENT_SECONDS
    interval = keyframe_interval_seconds(segment_seconds, gop_seconds)
    keyint_frames = max(1, round(interval * rate))

    holder = av.open(io.BytesIO(), "w", format="mpegts")
    try:
        encoded_stream = holder.add_stream("libx264", rate=rate)
        context = encoded_stream.codec_context
        context.width = width
        context.height = height
        context.pix_fmt = "yuv420p"
        context.time_base = TICK_TIME_BASE
        context.bit_rate = plan.video_bitrate_bps
        context.flags |= Flags.global_header
        context.options = x264_options(plan, keyint_frames, threads=1)
        holder.start_encoding()
        packets: list[av.Packet] = []
        for index, frame in enumerate(kept):
            picture = frame if frame.format.name == "yuv420p" else frame.reformat(format="yuv420p")
            picture.pts = frame.pts
            picture.time_base = TICK_TIME_BASE
            picture.pict_type = PictureType.I if index == 0 else PictureType.NONE
            packets.extend(context.encode(picture))
        packets.extend(context.encode(None))
        audio_begin = begin
        if opens_video:
            _decode_idr_when_shown(packets)
            audio_begin = _ticks(kept[0].pts)  # its first picture
        edge_sps = _sps(bytes(context.extradata or b""))
        out = _mux(encoded_stream, packets, demuxed, audio_begin, end, opens_video)
    finally:
        holder.close()
    same = live_sps is not None and live_sps == edge_sps
    if not same:
        log.warning("[vod %s] the re-encoded edge's SPS differs from the live's", rendition)
    start = _ticks(kept[0].pts) if begin is not None else first
    stop = _ticks(kept[-1].pts) + frame_ticks if end is not None else first + segment_ms * 90
    return Edge(out, stop - start, start - first, len(kept), same)


def _decode_idr_when_shown(packets: list[av.Packet]) -> None:
    """The packets' decode timestamps rewritten by `opening_decode_times`."""
    pts = [_ticks(p.pts) for p in packets]
    dts = [_ticks(p.dts) for p in packets]
    for packet, decode_time in zip(packets, opening_decode_times(pts, dts), strict=True):
        packet.dts = decode_time


def _mux(
    video_template: Any,
    packets: list[av.Packet],
    demuxed: _Demuxed,
    begin: int | None,
    end: int | None,
    opens_video: bool = False,
) -> bytes:
    """The edge as TS: the encoded `packets` and the live's AAC packets from `begin`
    to `end` (the nearest AAC frame to each, or from the first one not before `begin`
    when it `opens_video`)."""
    buffer = io.BytesIO()
    container = av.open(buffer, "w", format="mpegts", options=MUXER_OPTIONS)
    try:
        video_stream = container.add_stream_from_template(video_template)
        video_stream.time_base = TICK_TIME_BASE
        queue: list[tuple[int, int, av.Packet]] = []
        for order, encoded in enumerate(packets):
            encoded.stream = video_stream
            encoded.time_base = TICK_TIME_BASE
            assert encoded.dts is not None
            queue.append((int(encoded.dts), order, encoded))
        if demuxed.audio_stream is not None:
            audio_stream = container.add_stream_from_template(demuxed.audio_stream)
            rate = demuxed.audio_stream.codec_context.sample_rate or 48000
            half = AAC_FRAME_SAMPLES * TICKS_PER_SECOND // rate // 2
            for order, source in enumerate(demuxed.audio, start=len(packets)):
                pts = _ticks(source.pts) - OFFSET_TICKS
                if begin is not None and pts < (begin if opens_video else begin - half):
                    continue
                if end is not None and pts >= end - half:
                    continue
                copy = av.Packet(bytes(source))
                copy.stream = audio_stream
                copy.time_base = source.time_base
                copy.pts = pts
                copy.dts = (int(source.dts) if source.dts is not None else pts + OFFSET_TICKS) - (
                    OFFSET_TICKS
                )
                copy.duration = source.duration
                queue.append((int(copy.dts), order, copy))
        queue.sort(key=lambda entry: (entry[0], entry[1]))
        for _, _, packet in queue:
            container.mux(packet)
    finally:
        container.close()
    return buffer.getvalue()
