"""SessionStart.wall_clock: when a session's media arrived, for EXT-X-PROGRAM-DATE-TIME.

The origin is the session's first demuxed packet: its timestamp as PyAV reports it
(pts, in seconds) and the instant its first byte was handed to the decoder. Fed in
real time, `at(frame time)` of any later frame is when that frame arrived.
"""

from __future__ import annotations

import time
from fractions import Fraction
from pathlib import Path

import av

from ingest.decode import LiveDecoder
from ingest.formats import flv
from ingest.media import MediaQueue, WallClockOrigin
from ingest.session import MPEGTS
from tests.support.fakes import Collector
from tests.support.media import sample_tags

TOLERANCE_SECONDS = 0.03


def composition_ms(payload: bytes) -> int:
    """An AVC video tag's composition time offset (pts - dts), in ms."""
    return int.from_bytes(payload[2:5], "big", signed=True)


def test_session_start_carries_the_first_packet_and_its_arrival(flv_sample: Path) -> None:
    """With a stepped clock: the origin is exactly the stamp of the first coded frame's
    message (decoder configurations make no packet) and its presentation time."""
    queue = MediaQueue(max_items=100_000)
    collector = Collector(queue)
    now = [0.0]
    decoder = LiveDecoder(queue, wall_clock=lambda: now[0])
    try:
        metadata, tags = sample_tags(flv_sample)
        decoder.start_session()
        decoder.on_metadata(metadata)
        for index, tag in enumerate(tags):
            now[0] = 1_800_000_000.0 + index  # the index of each message, as its arrival
            decoder.on_media(tag.kind, tag.timestamp_ms, tag.payload)
        decoder.end_session("done")
        collector.wait_ends(1)
        first = next(i for i, t in enumerate(tags) if not flv.is_decoder_config(t.kind, t.payload))
        tag = tags[first]
        assert tag.kind == flv.TAG_VIDEO  # the first frame written: the video keyframe
        pts_ms = tag.timestamp_ms + composition_ms(tag.payload)
        assert collector.starts[0].wall_clock == WallClockOrigin(
            1_800_000_000.0 + first, Fraction(pts_ms, 1000)
        )
        assert collector.pts("video")[0] == pts_ms  # the same time base as the frames
    finally:
        decoder.stop()
        collector.stop()


def test_flv_fed_in_real_time_maps_every_frame_to_its_arrival(
    flv_sample_no_b_frames: Path,
) -> None:
    _, tags = sample_tags(flv_sample_no_b_frames)
    tags = [t for t in tags if t.timestamp_ms <= 1500]
    queue = MediaQueue(max_items=100_000)
    collector = Collector(queue)
    decoder = LiveDecoder(queue)
    arrivals: dict[tuple[int, int], float] = {}
    try:
        decoder.start_session()
        started = time.monotonic()
        for tag in tags:  # as a publisher sends: each message at its timestamp
            time.sleep(max(0.0, started + tag.timestamp_ms / 1000 - time.monotonic()))
            arrivals.setdefault((tag.kind, tag.timestamp_ms), time.time())
            decoder.on_media(tag.kind, tag.timestamp_ms, tag.payload)
        decoder.end_session("done")
        collector.wait_ends(1)
        origin = collector.starts[0].wall_clock
        assert origin is not None
        frames = [(9, pts) for pts in collector.pts("video")]
        frames += [(8, pts) for pts in collector.pts("audio")]
        assert len(frames) > 100
        errors = [origin.at(Fraction(pts, 1000)) - arrivals[kind, pts] for kind, pts in frames]
        assert max(map(abs, errors)) < TOLERANCE_SECONDS, max(errors, key=abs)
    finally:
        decoder.stop()
        collector.stop()


def test_mpegts_fed_in_real_time_maps_every_frame_to_its_arrival(
    ts_sample_no_b_frames: Path,
) -> None:
    """TS packets are paced by the timestamps of the video they carry, as a live
    source sends them; each video frame's `at()` is when its first byte came in.
    (Audio rides in PES of several AAC frames that arrive together, before their
    time: a frame's `at()` is its place on the timeline, not its bytes' arrival.)"""
    data = ts_sample_no_b_frames.read_bytes()
    with av.open(str(ts_sample_no_b_frames)) as container:
        video = {
            p.pos: p.pts
            for p in container.demux(video=0)
            if p.pts is not None and p.pos is not None and p.pos >= 0
        }
    first_pts = min(video.values())
    due = 0.0
    queue = MediaQueue(max_items=100_000)
    collector = Collector(queue)
    decoder = LiveDecoder(queue)
    arrivals: dict[int, float] = {}  # video pts -> when its first byte was fed
    try:
        decoder.start_session(MPEGTS)
        started = time.monotonic()
        for at in range(0, len(data), 188):  # one TS packet at a time
            if at in video:
                pts = video[at]
                due = max(due, (pts - first_pts) / 90000)
                if due > 1.5:
                    break
                time.sleep(max(0.0, started + due - time.monotonic()))
                arrivals[pts] = time.time()
            decoder.on_data(data[at : at + 188])
        decoder.end_session("done")
        collector.wait_ends(1)
        origin = collector.starts[0].wall_clock
        assert origin is not None
        got = [pts for pts in collector.pts("video") if pts in arrivals]
        assert len(got) >= 40
        errors = [origin.at(Fraction(pts, 90000)) - arrivals[pts] for pts in got]
        assert max(map(abs, errors)) < TOLERANCE_SECONDS, max(errors, key=abs)
    finally:
        decoder.stop()
        collector.stop()
