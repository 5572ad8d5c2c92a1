"""The cut's pure parts, byte for byte and millisecond for millisecond: the counters
fitted to copied neighbours, the opening edge's decode times, and the timeline's
mapping of ranges and date-times."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from encoder.segmenter import opening_decode_times
from tests.support.mpegts import Segment, check_continuity, parse_packets
from vod import CutError, RecordedTimeline
from vod.continuity import counters_after, counters_before, fit_counters
from vod.timeline import RecordedRendition, RecordedSegment

T0 = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)


def ts_packet(pid: int, counter: int, *, payload: bool = True, indicator: bool = False) -> bytes:
    control = 0b11 if payload or indicator else 0b10
    header = bytes([0x47, (pid >> 8) & 0x1F, pid & 0xFF, (control << 4) | counter])
    field = bytes([1, 0x80 if indicator else 0x00])  # adaptation field of length 1
    return (header + field).ljust(188, b"\xff")


def run(pid: int, counters: list[int], **kwargs: bool) -> bytes:
    return b"".join(ts_packet(pid, c, **kwargs) for c in counters)


def test_a_first_edge_ends_where_the_live_segment_ended() -> None:
    live = run(0x100, [3, 4, 5, 6]) + run(0x101, [9, 10])
    edge = run(0x100, [0, 1, 2, 3, 4, 5, 6], indicator=True) + run(0x101, [0])
    fitted = fit_counters(edge, ending=counters_after(live))
    assert counters_after(fitted) == {0x100: 6, 0x101: 10}
    following = run(0x100, [7, 8]) + run(0x101, [11])  # the copied segment after it
    report = check_continuity([Segment("edge", fitted), Segment("next", following)])
    assert report.ok and report.indicator_segments == [], report.summary()


def test_a_last_edge_starts_where_the_live_segment_started() -> None:
    previous = run(0x100, [12, 13, 14])  # the copied segment before it
    live = run(0x100, [15, 0, 1])
    edge = run(0x100, [0, 1, 2, 3, 4])
    fitted = fit_counters(edge, after=counters_before(live))
    assert [p.continuity_counter for p in parse_packets(fitted)] == [15, 0, 1, 2, 3]
    report = check_continuity([Segment("before", previous), Segment("edge", fitted)])
    assert report.ok, report.summary()


def test_adaptation_only_packets_keep_the_counter() -> None:
    live = run(0x100, [5])
    edge = ts_packet(0x100, 0) + ts_packet(0x100, 0, payload=False) + ts_packet(0x100, 1)
    fitted = fit_counters(edge, ending=counters_after(live))
    assert [p.continuity_counter for p in parse_packets(fitted)] == [4, 4, 5]


FRAME = 3000  # 1/90000 ticks at 30 fps


def test_the_opening_idr_is_decoded_when_shown_and_the_rest_join_the_encoders() -> None:
    # x264 with a B-pyramid, decode order I0 P4 B2 B1 B3 P8 ...: the IDR decoded two
    # frames before it is shown (what made hls.js see a 67 ms hole before it).
    shown = [0, 4, 2, 1, 3, 8, 6, 5, 7]
    pts = [1000 + FRAME * f for f in shown]
    dts = [1000 + FRAME * (k - 2) for k in range(len(shown))]
    decoded = opening_decode_times(pts, dts)
    assert decoded[0] == pts[0]
    assert decoded[:4] == [1000, 2000, 3000, 4000]  # spread up to the joint, B1's own
    assert decoded[3:] == dts[3:]
    assert all(a < b for a, b in itertools.pairwise(decoded))
    assert all(d <= p for d, p in zip(decoded, pts, strict=True))


def test_opening_decode_times_keep_what_needs_no_change_or_cannot_change() -> None:
    assert opening_decode_times([500, 3500], [500, 3500]) == [500, 3500]  # no B-frames
    assert opening_decode_times([0, 6000, 3000], [-6000, -3000, 0]) == [-6000, -3000, 0]
    assert opening_decode_times([], []) == []


def timeline() -> RecordedTimeline:
    """Two runs: 0-4 s from T0, then, after a 10 s gap, 4-7 s."""
    segments = (
        RecordedSegment("r/seg_000000.ts", 0, 2000, False, T0),
        RecordedSegment("r/seg_000001.ts", 2000, 2000, False, T0 + timedelta(seconds=2)),
        RecordedSegment("r/seg_000002.ts", 4000, 3000, True, T0 + timedelta(seconds=14)),
    )
    return RecordedTimeline(
        ("r",), 7000, T0, T0 + timedelta(seconds=17), (RecordedRendition("r", segments),)
    )


def test_date_times_map_through_the_program_times_and_skip_the_gap() -> None:
    recorded = timeline()
    at = T0 + timedelta(milliseconds=2500)
    assert recorded.resolve(None, None, at, None) == (2500, 7000)
    assert recorded.resolve(None, None, None, T0 + timedelta(seconds=15)) == (0, 5000)
    in_gap = T0 + timedelta(seconds=8)
    assert recorded.resolve(None, None, in_gap, None) == (4000, 7000)  # the media after it
    assert recorded.resolve(None, None, None, in_gap) == (0, 4000)  # the media before it
    assert recorded.resolve(100, None, None, None) == (100, 7000)


def test_outside_the_recording_says_the_recorded_range() -> None:
    recorded = timeline()
    message = (
        r"the recorded range is 0 to 7000 ms \(2026-12-01T12:00:00.000\+00:00 to "
        r"2026-12-01T12:00:17.000\+00:00\)"
    )
    with pytest.raises(CutError, match=message):
        recorded.resolve(0, 7001, None, None)
    with pytest.raises(CutError, match=message):
        recorded.resolve(None, None, T0 - timedelta(seconds=1), None)
    with pytest.raises(CutError, match="must end after it starts"):
        recorded.resolve(3000, 3000, None, None)
    with pytest.raises(CutError, match="time zone"):
        recorded.resolve(None, None, datetime(2026, 12, 1, 12, 0, 1), None)
