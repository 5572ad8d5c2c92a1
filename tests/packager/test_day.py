"""A 24-hour live costs, per segment, what its first hour did (simulated: no real time,
no real S3, tiny segments)."""

from __future__ import annotations

import time
from pathlib import Path

import m3u8
import pytest

from media.clock import utc_instant
from media.segments import Segment, VariantInfo
from packager import layout
from packager.hls import HlsWriter
from tests.support.clocks import START_UNIX, FakeClock
from tests.support.fakes import CountingStore

pytestmark = pytest.mark.slow  # a simulated day of segments

PREFIX = "day/live"
SEGMENT_SECONDS = 2.0
DAY_SEGMENTS = 86_400 // 2  # 43,200
PART_SEGMENTS = 1_800  # an hour of 2 s segments
DVR_WINDOW_SECONDS = 600.0  # full after 300 segments, within the first part
VARIANT = VariantInfo("360p", 640, 360, 30.0, "avc1.64001e,mp4a.40.2", 900_000)
NULL_TS_PACKET = b"\x47\x1f\xff\x10" + b"\xff" * 184  # one packet: the smallest valid TS


def test_a_day_of_segments_costs_at_its_end_what_it_cost_at_its_start(tmp_path: Path) -> None:
    clock = FakeClock()
    store = CountingStore()
    writer = HlsWriter(
        store,
        "bucket",
        PREFIX,
        tmp_path / "spool",
        label="day",
        dvr_window_seconds=DVR_WINDOW_SECONDS,
        upload_workers=1,
        clock=clock,
    )
    writer.start([VARIANT], SEGMENT_SECONDS)
    last_part = DAY_SEGMENTS // PART_SEGMENTS - 1  # 23
    # Each segment of the first hour and of the last two is added alone, and what its
    # listing wrote is counted; the hours between are added a hundred at a time (the
    # writer's state after a segment does not depend on how its writes were grouped).
    measured = {0, last_part - 1, last_part}
    started = time.monotonic()
    costs: dict[int, tuple[int, int]] = {}  # per segment measured: (bytes put, puts)
    for sequence in range(DAY_SEGMENTS):
        alone = sequence // PART_SEGMENTS in measured
        before = store.put_bytes, len(store.puts)
        writer.add_segment(
            Segment(
                "360p",
                sequence,
                sequence * SEGMENT_SECONDS,
                SEGMENT_SECONDS,
                NULL_TS_PACKET,
                arrived_at=utc_instant(START_UNIX + sequence * SEGMENT_SECONDS),
            )
        )
        clock.advance(SEGMENT_SECONDS)
        if alone or sequence % 100 == 99:
            assert writer.wait_idle(10), f"segment {sequence} not listed"
        if alone:
            costs[sequence] = (store.put_bytes - before[0], len(store.puts) - before[1])
    writer.finish(timeout_seconds=60)
    print(f"{DAY_SEGMENTS} segments in {time.monotonic() - started:.1f} s")

    last = last_part * PART_SEGMENTS
    # Every segment of the last hour: as many writes as the same segment of the first
    # hour, and as many bytes but for the widths of the numbers in the playlists'
    # headers (the first part's media sequence, 0, is not even written), once the DVR
    # window is full.
    for phase in range(int(DVR_WINDOW_SECONDS / SEGMENT_SECONDS), PART_SEGMENTS):
        first_bytes, first_puts = costs[phase]
        last_bytes, last_puts = costs[last + phase]
        assert last_puts == first_puts, phase
        assert 0 <= last_bytes - first_bytes <= 48, (phase, first_bytes, last_bytes)
    # Where every number written has five digits, byte for byte: hour 23 as hour 22.
    for phase in range(PART_SEGMENTS):
        assert costs[last + phase] == costs[last - PART_SEGMENTS + phase], phase
    # The segment itself, index.m3u8, dvr.m3u8 and the current part; at each new hour,
    # the part just completed once more (with EXT-X-ENDLIST).
    assert costs[DAY_SEGMENTS - 1][1] == 4 and costs[last][1] == 5
    # The last one: the hour-long part (58 KB) and the DVR window (9 KB), at most.
    assert costs[DAY_SEGMENTS - 1][0] < 72 * 1024

    event = m3u8.loads(store.text(layout.event_playlist_key(PREFIX, "360p")))
    assert len(event.segments) == DAY_SEGMENTS and event.is_endlist
    assert event.segments[-1].uri == layout.segment_name(DAY_SEGMENTS - 1)
    assert event.segments[0].program_date_time == utc_instant(START_UNIX)
    assert [s.program_date_time is not None for s in event.segments].count(True) == 1
    assert event.segments[-1].current_program_date_time == utc_instant(
        START_UNIX + (DAY_SEGMENTS - 1) * SEGMENT_SECONDS
    )
    for index in range(last_part + 1):
        part = m3u8.loads(store.text(layout.part_playlist_key(PREFIX, "360p", index)))
        assert len(part.segments) == PART_SEGMENTS and part.is_endlist
        assert part.media_sequence == index * PART_SEGMENTS
        assert part.segments[0].program_date_time == utc_instant(
            START_UNIX + index * PART_SEGMENTS * SEGMENT_SECONDS
        )
    assert layout.part_playlist_key(PREFIX, "360p", last_part + 1) not in store.objects
    assert writer.stats()["360p"].segments == DAY_SEGMENTS
