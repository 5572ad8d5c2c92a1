"""The tier's own MPEG-TS continuity checker, on hand-made 188-byte packets."""

from __future__ import annotations

import pytest

from tests.support.mpegts import Segment, TsPacket, check_continuity, parse_packets

pytestmark = pytest.mark.players


def packet(
    pid: int,
    counter: int,
    *,
    payload: bool = True,
    adaptation: bool = False,
    indicator: bool = False,
) -> bytes:
    """One TS packet: header, an optional adaptation field, stuffing as payload."""
    control = (0b10 if adaptation or indicator else 0) | (0b01 if payload else 0)
    header = bytes([0x47, (pid >> 8) & 0x1F, pid & 0xFF, (control << 4) | counter])
    body = b""
    if control & 0b10:
        length = 183 if not payload else 1  # adaptation-only packets fill the packet
        flags = 0x80 if indicator else 0x00
        body = bytes([length, flags]) + b"\xff" * (length - 1)
    return (header + body).ljust(188, b"\xff")


def run(pid: int, counters: range | list[int], **kwargs: bool) -> bytes:
    return b"".join(packet(pid, c % 16, **kwargs) for c in counters)


def test_parse_reads_pid_counter_payload_and_indicator() -> None:
    data = packet(0x100, 7) + packet(0x1000, 3, payload=False, adaptation=True)
    data += packet(0x101, 15, indicator=True) + packet(0x11, 0, adaptation=True)
    assert parse_packets(data) == [
        TsPacket(0x100, 7, True, False),
        TsPacket(0x1000, 3, False, False),
        TsPacket(0x101, 15, True, True),
        TsPacket(0x11, 0, True, False),
    ]


def test_parse_refuses_partial_or_unsynced_packets() -> None:
    with pytest.raises(ValueError, match="whole number"):
        parse_packets(packet(0x100, 0)[:187])
    with pytest.raises(ValueError, match="0x47"):
        parse_packets(b"\x00" + packet(0x100, 0)[1:])


def test_counters_that_go_on_across_segments_are_clean() -> None:
    first = Segment("seg_0.ts", run(0x100, range(0, 20)) + run(0, range(0, 2)))
    # An adaptation-only packet keeps the counter: 19, 19 (no payload), then 20 = 4.
    second = Segment(
        "seg_1.ts",
        packet(0x100, 3, payload=False, adaptation=True) + run(0x100, range(20, 25)) + packet(0, 2),
    )
    report = check_continuity([first, second])
    assert report.ok, report.summary()
    assert report.pids == {0, 0x100} and report.packets == 29
    assert report.indicator_segments == [] and report.playlist_discontinuities == []


def test_counters_restarting_in_every_segment_are_breaks_at_the_joins() -> None:
    segments = [
        Segment(f"seg_{i}.ts", run(0x100, range(0, 5)) + run(0x101, range(0, 3))) for i in range(3)
    ]
    report = check_continuity(segments)
    assert not report.ok
    assert len(report.breaks) == 4  # two PIDs, two joins
    assert report.breaks[0] == (
        "seg_1.ts packet 0 pid 0x0100: counter 0, expected 5 (previous packet in seg_0.ts)"
    )


def test_a_break_inside_a_segment_is_reported() -> None:
    report = check_continuity([Segment("seg_0.ts", run(0x100, [0, 1, 2, 4, 5]))])
    assert report.breaks == ["seg_0.ts packet 3 pid 0x0100: counter 4, expected 3"]


def test_a_playlist_discontinuity_with_indicators_on_each_pid_is_clean() -> None:
    first = Segment("seg_0.ts", run(0x100, range(0, 9)) + run(0x101, range(0, 4)))
    seam = Segment(
        "seg_1.ts",
        packet(0x100, 0, indicator=True) + packet(0x101, 0, indicator=True) + run(0x100, [1, 2]),
        discontinuity=True,
    )
    after = Segment("seg_2.ts", run(0x100, [3, 4]) + run(0x101, [1]))
    report = check_continuity([first, seam, after])
    assert report.ok, report.summary()
    assert report.playlist_discontinuities == ["seg_1.ts"]
    assert report.indicator_segments == ["seg_1.ts"]


def test_indicators_missing_at_the_seam_or_anywhere_else_are_reported() -> None:
    first = Segment("seg_0.ts", packet(0x100, 0, indicator=True) + run(0x100, [1]))
    seam = Segment("seg_1.ts", run(0x100, [0]), discontinuity=True)
    later = Segment("seg_2.ts", packet(0x100, 5, indicator=True))
    report = check_continuity([first, seam, later])
    assert report.missing_indicators == ["seg_1.ts packet 0 pid 0x0100"]
    assert report.stray_indicators == [
        "seg_0.ts packet 0 pid 0x0100",
        "seg_2.ts packet 0 pid 0x0100",
    ]
    assert report.indicator_segments == ["seg_0.ts", "seg_2.ts"]
    assert report.breaks == [
        "seg_1.ts packet 0 pid 0x0100: counter 0, expected 2 (previous packet in seg_0.ts)"
    ]


def test_null_packets_are_ignored() -> None:
    report = check_continuity([Segment("seg_0.ts", run(0x1FFF, [3, 3, 9]) + run(0x100, [0, 1]))])
    assert report.ok and report.pids == {0x100}
