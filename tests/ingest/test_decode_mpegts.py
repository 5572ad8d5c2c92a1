"""LiveDecoder fed MPEG-TS bytes, as an SRT or HLS server will: a TS made by the
ffmpeg CLI, in chunks of odd sizes, from its first byte or joined mid-stream."""

from __future__ import annotations

import time
from pathlib import Path

import av
import pytest

from ingest.decode import OPEN_OPTIONS, LiveDecoder
from ingest.media import MediaQueue, SessionEnd
from ingest.session import MPEGTS
from tests.support.fakes import Collector
from tests.support.media import decode_file_pts, items_until_a_video_frame

SRT_PAYLOAD = 1316  # 7 TS packets: what a live SRT stream delivers at a time
TS_PACKET = 188


def feed_bytes(decoder: LiveDecoder, data: bytes, chunk: int) -> None:
    for at in range(0, len(data), chunk):
        decoder.on_data(data[at : at + chunk])


def keyframe_pts(path: Path) -> list[int]:
    with av.open(str(path)) as container:
        return [p.pts for p in container.demux(video=0) if p.is_keyframe and p.pts is not None]


@pytest.fixture
def queue() -> MediaQueue:
    return MediaQueue(max_items=100_000)


def test_the_live_probe_is_what_opens_mpegts_too() -> None:
    """One set of options for every container: mpegts opens with a 32-byte probe."""
    assert OPEN_OPTIONS == {"probesize": "32", "analyzeduration": "0"}


def test_every_frame_comes_out_with_its_timestamp(ts_sample: Path, queue: MediaQueue) -> None:
    collector = Collector(queue)
    decoder = LiveDecoder(queue, label="ts")
    try:
        decoder.start_session(MPEGTS)
        feed_bytes(decoder, ts_sample.read_bytes(), SRT_PAYLOAD)
        decoder.end_session("done")
        collector.wait_ends(1)
        video_pts, audio_pts = decode_file_pts(ts_sample)
        assert len(video_pts) == 90
        assert collector.pts("video") == video_pts
        # The demuxer stamps only the first AAC frame of each PES: the rest are filled
        # in from the ADTS sample counts, exactly as a full probe computes them.
        assert collector.pts("audio") == audio_pts
        start = collector.starts[0]
        assert start.video is not None and start.audio is not None
        assert (start.video.codec_name, start.video.width, start.video.height) == ("h264", 320, 240)
        assert start.video.frame_rate == 30  # from the SPS: a TS declares no rate
        assert (start.audio.codec_name, start.audio.sample_rate, start.audio.channels) == (
            "aac",
            48000,
            1,
        )
        assert collector.ends == [SessionEnd(0, "done")]
        assert decoder.decode_errors == 0
        stats = decoder.stats()
        assert (stats.width, stats.height, stats.framerate) == (320, 240, 30)
        assert (stats.video_codec_id, stats.audio_codec_id) == (7, 10)  # as for RTMP
        assert (stats.audio_sample_rate, stats.audio_channels) == (48000, 1)
        assert stats.video_data_rate > 0 and stats.audio_data_rate > 0
    finally:
        decoder.stop()
        collector.stop()


@pytest.mark.parametrize(
    ("offset", "chunk"),
    [
        (1, SRT_PAYLOAD),  # mid-packet, from the first TS packet on
        (5_003, SRT_PAYLOAD),  # mid-packet, mid-GOP, no PAT at the first byte
        (40_000, 997),  # odd chunks that never line up with TS packets
        (77_777, 3 * TS_PACKET + 1),
        (12_345, 7),  # a few bytes at a time
    ],
)
def test_a_stream_joined_mid_packet_without_pat_starts_at_a_keyframe(
    ts_sample: Path, queue: MediaQueue, offset: int, chunk: int
) -> None:
    """The first ~100 ms of an SRT stream may be lost: the demuxer resynchronises on
    the sync bytes, waits for PAT/PMT, and video starts at the next keyframe."""
    data = ts_sample.read_bytes()
    assert data[offset] != 0x47 and offset % TS_PACKET  # not at a TS packet, not at PAT
    collector = Collector(queue)
    decoder = LiveDecoder(queue)
    try:
        decoder.start_session(MPEGTS)
        feed_bytes(decoder, data[offset:], chunk)
        decoder.end_session("done")
        collector.wait_ends(1)
        video_pts, audio_pts = decode_file_pts(ts_sample)
        got_video, got_audio = collector.pts("video"), collector.pts("audio")
        assert got_video and got_audio
        assert got_video[0] in keyframe_pts(ts_sample)
        assert got_video == video_pts[video_pts.index(got_video[0]) :]
        first_audio = audio_pts.index(got_audio[0])
        assert got_audio == audio_pts[first_audio:]  # every timestamp right, to the tick
        assert decoder.decode_errors == 0  # nothing before the keyframe was decoded
        assert decoder.skipped_before_keyframe > 0 or got_video[0] == video_pts[0]
        start = collector.starts[0]
        assert start.audio is not None and start.audio.sample_rate == 48000
    finally:
        decoder.stop()
        collector.stop()


def test_frames_come_out_at_once_not_after_probing(ts_sample: Path, queue: MediaQueue) -> None:
    """No end of stream, no more bytes: the first 400 ms are enough for a frame."""
    data = ts_sample.read_bytes()
    with av.open(str(ts_sample)) as container:
        first = None
        end = 0
        for packet in container.demux():
            if packet.dts is None or packet.pos is None or packet.time_base is None:
                continue
            seconds = float(packet.dts * packet.time_base)
            first = seconds if first is None else first
            if seconds - first <= 0.4:
                end = max(end, packet.pos + packet.size)
    decoder = LiveDecoder(queue)
    try:
        decoder.start_session(MPEGTS)
        started = time.monotonic()
        feed_bytes(decoder, data[:end], SRT_PAYLOAD)
        items_until_a_video_frame(queue, 1.0)
        assert time.monotonic() - started < 1.0
    finally:
        decoder.stop()


def test_passthrough_packets_all_have_timestamps(ts_sample: Path, queue: MediaQueue) -> None:
    collector = Collector(queue)
    decoder = LiveDecoder(queue, decode=False)
    try:
        decoder.start_session(MPEGTS)
        feed_bytes(decoder, ts_sample.read_bytes(), SRT_PAYLOAD)
        decoder.end_session("done")
        collector.wait_ends(1)
        packets = collector.kinds("packet")
        audio = [p[2] for p in packets if p[1] == "audio"]
        assert len([p for p in packets if p[1] == "video"]) == 90
        assert audio and None not in audio
        assert audio == sorted(set(audio))  # strictly increasing
    finally:
        decoder.stop()
        collector.stop()


def test_over_the_cap_whole_chunks_are_lost_and_decoding_goes_on(
    ts_sample: Path, queue: MediaQueue
) -> None:
    collector = Collector(queue)
    decoder = LiveDecoder(queue, max_buffered_bytes=20_000)
    try:
        decoder.start_session(MPEGTS)
        feed_bytes(decoder, ts_sample.read_bytes(), SRT_PAYLOAD)  # far faster than decoding
        decoder.end_session("done")
        collector.wait_ends(1)
        assert decoder.dropped_writes > 0
        assert 0 < len(collector.kinds("video")) < 90
        assert collector.ends[0].reason == "done"
    finally:
        decoder.stop()
        collector.stop()
