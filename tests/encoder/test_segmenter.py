"""The segmenter on its own: where it cuts, where audio goes, what it emits."""

from __future__ import annotations

import dataclasses
import io
from fractions import Fraction

import av
import numpy as np
import pytest
from av.video.frame import PictureType

from encoder.audio import AacEncoder
from encoder.encoded import video_packet
from encoder.segmenter import TS_PTS_OFFSET, Segmenter
from media.segments import Segment

FRAME = 3000  # ticks at 30 fps


def video_packets(keyframes: set[int], count: int) -> tuple[object, list[av.Packet]]:
    """(template stream, x264 packets) for `count` 160x90 frames, IDR where asked."""
    holder = av.open(io.BytesIO(), "w", format="mpegts")
    stream = holder.add_stream("libx264", rate=30)
    context = stream.codec_context
    context.width, context.height, context.pix_fmt = 160, 90, "yuv420p"
    context.time_base = Fraction(1, 90_000)
    context.flags |= av.codec.context.Flags.global_header
    context.options = {
        "preset": "veryfast",
        "forced-idr": "1",
        "threads": "1",
        "x264-params": "keyint=600:scenecut=0",
    }
    holder.start_encoding()
    packets: list[av.Packet] = []
    for n in range(count):
        frame = av.VideoFrame.from_ndarray(
            np.full((90, 160, 3), n % 255, dtype=np.uint8), format="rgb24"
        ).reformat(format="yuv420p")
        frame.pts = n * FRAME
        frame.time_base = Fraction(1, 90_000)
        frame.pict_type = PictureType.I if n in keyframes else PictureType.NONE
        packets.extend(context.encode(frame))
    packets.extend(context.encode(None))
    return (holder, stream), packets


def silence(seconds: float) -> tuple[AacEncoder, list]:
    encoder = AacEncoder(48000, 2, 128_000)
    encoder.start_session()
    packets = []
    for n in range(int(seconds * 48000 / 960)):
        frame = av.AudioFrame.from_ndarray(
            np.zeros((2, 960), dtype=np.float32), format="fltp", layout="stereo"
        )
        frame.sample_rate = 48000
        packets += encoder.encode(frame, Fraction(n * 960, 48000))
    packets += encoder.flush()
    return encoder, packets


def demux_times(data: bytes) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"video": [], "audio": []}
    with av.open(io.BytesIO(data), format="mpegts") as container:
        for packet in container.demux():
            if packet.size and packet.pts is not None:
                times[packet.stream.type].append(
                    float(packet.pts * packet.time_base) - float(TS_PTS_OFFSET)
                )
    return times


def test_cuts_on_boundary_keyframes_and_splits_audio_by_time() -> None:
    # Keyframes at the boundaries 0, 2, 4 and 6 s, at 2.5 s (not one: no cut), and at
    # 5 s (a reconnect).
    (_holder, template), packets = video_packets({0, 60, 75, 120, 150, 180}, 200)
    audio_encoder, audio = silence(200 / 30)
    segments: list[Segment] = []
    segmenter = Segmenter(
        "test", 2, template, audio_encoder.stream, segments.append, frame_ticks=FRAME
    )
    # Audio runs ahead of video (encoder latency): all of it first is the worst case.
    for packet in audio:
        segmenter.add_audio(packet)
    for packet in packets:
        if packet.pts == 150 * FRAME:
            segmenter.mark_discontinuity(150 * FRAME)
        segmenter.add_video(video_packet(packet))
    segmenter.flush()

    starts = [s.start_seconds for s in segments]
    assert starts == [0, 2, 4, 5, 6]
    assert [round(s.duration_seconds, 3) for s in segments] == [2, 2, 1, 1, 0.667]
    assert [s.discontinuity for s in segments] == [False, False, False, True, False]
    assert [s.sequence for s in segments] == [0, 1, 2, 3, 4]
    audio_seen = 0
    for segment, end in zip(segments, [*starts[1:], 99], strict=True):
        times = demux_times(segment.data)
        assert len(times["video"]) == round(segment.duration_seconds * 30)
        # Each AAC packet in the segment whose span holds its pts; the first segment's
        # sound starts with its picture.
        low = segment.start_seconds
        assert min(times["video"]) == pytest.approx(low, abs=1e-4)
        if segment.sequence == 0:
            assert min(times["audio"]) == pytest.approx(low, abs=1e-4)
        assert all(low - 1e-4 <= t < end for t in times["audio"])
        audio_seen += len(times["audio"])
    # All but the AAC encoder's priming packet (1024 samples before zero: no picture).
    assert audio_seen == len(audio) - 1
    assert segmenter.recent_rates()[1] == 30


def test_waits_for_a_keyframe_and_bounds_a_keyframeless_segment() -> None:
    (_holder, template), packets = video_packets({100}, 120)  # and 0: x264 starts with one
    segments: list[Segment] = []
    segmenter = Segmenter("test", 0.5, template, None, segments.append, frame_ticks=FRAME)
    for packet in packets:
        segmenter.add_video(video_packet(packet))
    segmenter.flush()
    # A segment never holds more than 6 x 0.5 s: cut at the first frame past 3 s, then
    # frames are dropped (counted) until a keyframe can start the next one.
    # (Packets come in decode order: the cut lands a few B-frames later.)
    first, second = segments
    assert first.start_seconds == 0 and 3.0 < first.duration_seconds <= 3.0 + 5 / 30
    assert (second.start_seconds, round(second.duration_seconds, 3)) == (100 / 30, 0.667)
    assert segmenter.dropped_video_packets == 100 - 91
    kept = [len(demux_times(s.data)["video"]) for s in segments]
    assert kept == [91, 20]


def first_times(data: bytes) -> dict[str, tuple[float, float]]:
    """Each stream's first (pts, dts) in seconds on the output timeline."""
    firsts: dict[str, tuple[float, float]] = {}
    with av.open(io.BytesIO(data), format="mpegts") as container:
        for packet in container.demux():
            if packet.size and packet.pts is not None and packet.stream.type not in firsts:
                pts, dts = (
                    float(t * packet.time_base) - float(TS_PTS_OFFSET)
                    for t in (packet.pts, packet.dts)
                )
                firsts[packet.stream.type] = (pts, dts)
    return firsts


@pytest.mark.parametrize("video_at", [0, 0.01, 0.3])
def test_a_runs_first_picture_and_sound_start_together(video_at: float) -> None:
    # The sound begins before the first keyframe (the AAC encoder's priming, a
    # source's audio ahead of its video): hls.js would buffer from the later of the
    # two and find a hole at the start.
    (_holder, template), packets = video_packets({0}, 60)
    audio_encoder, audio = silence(2.5)
    segments: list[Segment] = []
    segmenter = Segmenter(
        "test", 2, template, audio_encoder.stream, segments.append, frame_ticks=FRAME
    )
    shift = round(video_at * 90_000)
    for packet in audio:
        segmenter.add_audio(packet)
    for packet in packets:
        timed = video_packet(packet)
        segmenter.add_video(
            dataclasses.replace(timed, pts=timed.pts + shift, dts=timed.dts + shift)
        )
    segmenter.flush()
    first = first_times(segments[0].data)
    audio_start, _ = first["audio"]
    # The sound before the picture is dropped; a packet that straddles the first
    # picture is kept, and the picture shown (and decoded) from its start.
    aac_frame = 1024 / 48000
    assert video_at - aac_frame < audio_start <= video_at
    assert first["video"] == (pytest.approx(audio_start, abs=1e-4),) * 2
    assert segments[0].start_seconds == video_at  # the recording's timeline: the keyframe's
    assert len(demux_times(segments[0].data)["video"]) == 60


def test_a_packet_out_of_order_is_dropped_not_the_live() -> None:
    # The muxer refuses a decode time that does not go forward; the segmenter drops
    # that packet (counted) and the segment is made.
    (_holder, template), packets = video_packets({0}, 30)
    audio_encoder, audio = silence(1)
    segments: list[Segment] = []
    segmenter = Segmenter(
        "test", 2, template, audio_encoder.stream, segments.append, frame_ticks=FRAME
    )
    for packet in [*audio[:10], audio[5], *audio[10:]]:
        segmenter.add_audio(packet)
    for packet in packets:
        segmenter.add_video(video_packet(packet))
    segmenter.flush()
    (segment,) = segments
    assert segmenter.unordered_packets == 1
    times = demux_times(segment.data)
    assert len(times["video"]) == 30 and len(times["audio"]) == len(audio) - 1
