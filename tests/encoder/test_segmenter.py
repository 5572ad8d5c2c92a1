"""The segmenter on its own: where it cuts, where audio goes, what it emits."""

from __future__ import annotations

import io
from fractions import Fraction

import av
import numpy as np
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
        assert times["video"] and min(times["video"]) == segment.start_seconds
        assert len(times["video"]) == round(segment.duration_seconds * 30)
        # Each AAC packet in the segment whose span holds its pts (the first one also
        # holds the encoder's priming packet, just before zero).
        low = -0.03 if segment.sequence == 0 else segment.start_seconds
        assert all(low <= t < end for t in times["audio"])
        audio_seen += len(times["audio"])
    assert audio_seen == len(audio)
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
