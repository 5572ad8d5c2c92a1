"""TS continuity across segments: byte for byte, then as ffmpeg reads a rendition."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from media.segments import Segment, VariantInfo
from packager import layout
from packager.continuity import (
    ContinuityCounters,
    TsFormatError,
    clear_discontinuity,
    discontinuity_pids,
)
from packager.hls import HlsWriter
from tests.support.fakes import MemoryStore
from tests.support.media import LADDER_SEGMENT_SECONDS, Ladder

PREFIX = "live/cc"


def packet(pid: int, cc: int, *, payload: bool = True, indicator: bool = False) -> bytes:
    """One 188-byte TS packet; an adaptation field (with the indicator) when asked."""
    control = (0x10 if payload else 0) | (0x20 if indicator or not payload else 0)
    head = bytes([0x47, (pid >> 8) & 0x1F, pid & 0xFF, control | cc])
    if control & 0x20:
        field_length = 183 if not payload else 1
        flags = 0x80 if indicator else 0
        body = bytes([field_length, flags]) + b"\xff" * (field_length - 1)
        return (head + body + b"\xaa" * 184)[:188]
    return head + b"\xaa" * 184


def counters(data: bytes) -> list[tuple[int, int]]:
    return [
        ((data[i + 1] & 0x1F) << 8 | data[i + 2], data[i + 3] & 0x0F)
        for i in range(0, len(data), 188)
    ]


def test_counters_run_on_from_the_previous_segment() -> None:
    run = ContinuityCounters()
    first = packet(0, 0) + packet(0x100, 0) + packet(0x100, 1) + packet(0x101, 0)
    assert run.carry(first) == first  # the first segment keeps its own counters
    second = packet(0, 0) + packet(0x100, 0) + packet(0x100, 1) + packet(0x101, 0)
    assert counters(run.carry(second)) == [(0, 1), (0x100, 2), (0x100, 3), (0x101, 1)]
    third = b"".join(packet(0x100, i % 16) for i in range(15))
    assert [cc for _, cc in counters(run.carry(third))] == [(4 + i) % 16 for i in range(15)]


def test_an_adaptation_only_packet_does_not_increment() -> None:
    run = ContinuityCounters()
    run.carry(packet(0x100, 0))
    segment = packet(0x100, 0) + packet(0x100, 0, payload=False) + packet(0x100, 1)
    assert [cc for _, cc in counters(run.carry(segment))] == [1, 1, 2]


def test_indicators_are_cleared_unless_kept() -> None:
    run = ContinuityCounters()
    marked = packet(0, 0, indicator=True) + packet(0x100, 0, indicator=True)
    assert discontinuity_pids(run.carry(marked, keep_indicators=True)) == {0, 0x100}
    assert discontinuity_pids(run.carry(marked)) == set()
    kept = run.carry(marked, keep_indicators=True)
    assert discontinuity_pids(kept) == {0, 0x100}
    assert counters(kept) == [(0, 2), (0x100, 2)]  # the counters still run on
    cleared = clear_discontinuity(marked)
    assert discontinuity_pids(cleared) == set()
    # Only the flag changed: the adaptation field stays, with no flag set.
    assert [i for i in range(len(marked)) if cleared[i] != marked[i]] == [5, 188 + 5]
    assert cleared[5] == 0


def test_bytes_that_are_not_ts_are_refused() -> None:
    with pytest.raises(TsFormatError):
        ContinuityCounters().carry(b"x" * 100)
    with pytest.raises(TsFormatError):
        ContinuityCounters().carry(b"x" * 188)


def ffmpeg_continuity_errors(path: Path) -> list[str]:
    """What ffmpeg's TS demuxer says about counters while reading the file as a player."""
    done = subprocess.run(
        ["ffmpeg", "-hide_banner", "-v", "debug", "-i", str(path), "-f", "null", "-"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return [line for line in done.stderr.splitlines() if "Continuity check failed" in line]


def test_ffmpeg_reads_a_published_rendition_without_a_counter_break(
    ladder: Ladder, tmp_path: Path
) -> None:
    name = ladder.variants[0].name
    raw = tmp_path / "raw.ts"
    raw.write_bytes(b"".join(data for data, _ in ladder.segments[name]))
    # Segments muxed one by one restart their counters: this is what players saw.
    assert len(ffmpeg_continuity_errors(raw)) >= 5 * (len(ladder.segments[name]) - 1)

    memory = MemoryStore()
    writer = HlsWriter(memory, "bucket", PREFIX, tmp_path / "spool", label="cc")
    writer.start(ladder.variants[:1], LADDER_SEGMENT_SECONDS)
    for sequence in range(len(ladder.segments[name])):
        writer.add_segment(ladder.segment(name, sequence))
    writer.finish(timeout_seconds=30)
    published = tmp_path / "published.ts"
    published.write_bytes(
        b"".join(
            memory.objects[layout.segment_key(PREFIX, name, i)][0]
            for i in range(len(ladder.segments[name]))
        )
    )
    assert ffmpeg_continuity_errors(published) == []


def muxed(packets_per_pid: int = 3) -> bytes:
    """A segment as the segmenter muxes it: fresh counters, indicators on first packets."""
    return b"".join(
        packet(pid, cc, indicator=cc == 0)
        for pid in (0, 0x1000, 0x100, 0x101)
        for cc in range(packets_per_pid)
    )


def test_indicators_exactly_where_the_playlist_has_a_discontinuity(tmp_path: Path) -> None:
    variant = VariantInfo("hi", 1280, 720, 30.0, "avc1.64001f,mp4a.40.2", 3_000_000)
    memory = MemoryStore()

    def publish(count: int, reconnect_at: int | None) -> None:
        writer = HlsWriter(memory, "bucket", PREFIX, tmp_path / "spool", label="cc")
        writer.start([variant], 2.0)
        for i in range(count):
            writer.add_segment(
                Segment("hi", i, i * 2.0, 2.0, muxed(), discontinuity=i == reconnect_at)
            )
        writer.finish(timeout_seconds=30)

    publish(4, reconnect_at=2)  # a publisher reconnects before segment 2
    publish(2, reconnect_at=None)  # a new pipeline continues the recording: 4, 5
    event = memory.text(layout.event_playlist_key(PREFIX, "hi"))
    marked = [
        layout.segment_numbers(line)[0]
        for before, line in zip(event.splitlines(), event.splitlines()[2:], strict=False)
        if before == "#EXT-X-DISCONTINUITY"
    ]
    assert marked == [2, 4]
    stored = [memory.objects[layout.segment_key(PREFIX, "hi", i)][0] for i in range(6)]
    with_indicators = [i for i, data in enumerate(stored) if discontinuity_pids(data)]
    assert with_indicators == [2, 4]
    assert discontinuity_pids(stored[2]) == {0, 0x1000, 0x100, 0x101}
    # Within a pipeline the counters run on, across the reconnect too.
    run = b"".join(stored[:4])
    for pid in (0, 0x1000, 0x100, 0x101):
        values = [cc for p, cc in counters(run) if p == pid]
        assert values == [i % 16 for i in range(len(values))]
