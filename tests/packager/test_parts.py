"""The recording in parts, its dates (EXT-X-PROGRAM-DATE-TIME), and reading it back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import m3u8

from media.segments import Segment, VariantInfo
from packager import layout
from packager.hls import HlsWriter
from packager.playlist import ListedSegment, event_playlist
from packager.recovery import read_leftover
from tests.support.fakes import CheckingStore, MemoryStore

PREFIX = "live/parts"
VARIANT = VariantInfo("hi", 1280, 720, 30.0, "avc1.64001f,mp4a.40.2", 3_000_000)
PART_SECONDS = 8.0  # four 2 s segments a part
FIRST_LIVE = datetime(2026, 11, 23, 18, 0, 0, tzinfo=UTC)
SECOND_LIVE = datetime(2026, 11, 24, 9, 30, 0, 500_000, tzinfo=UTC)


def segment(sequence: int, at: datetime, discontinuity: bool = False) -> Segment:
    return Segment(
        "hi",
        sequence,
        sequence * 2.0,
        2.0,
        bytes([sequence % 256]) * 500,
        discontinuity,
        arrived_at=at + timedelta(seconds=2 * sequence),
    )


def writer(store: object, spool: Path, **kwargs: object) -> HlsWriter:
    return HlsWriter(
        store,  # type: ignore[arg-type]
        "bucket",
        PREFIX,
        spool,
        label="parts",
        part_seconds=PART_SECONDS,
        window_segments=3,
        **kwargs,  # type: ignore[arg-type]
    )


def run(store: object, spool: Path, count: int, at: datetime, **kwargs: object) -> HlsWriter:
    """A live of `count` segments (numbered from 0 by its encoder), finished."""
    live = writer(store, spool, **kwargs)
    live.start([VARIANT], 2.0)
    for sequence in range(count):
        live.add_segment(segment(sequence, at, discontinuity=sequence == 5))
    live.finish(timeout_seconds=30)
    return live


def parse(store: MemoryStore, key: str) -> m3u8.M3U8:
    return m3u8.loads(store.text(key))


def dated(playlist: m3u8.M3U8) -> list[tuple[int, datetime]]:
    """(media sequence, date) of every segment that carries EXT-X-PROGRAM-DATE-TIME."""
    return [
        (s.media_sequence, s.program_date_time)
        for s in playlist.segments
        if s.program_date_time is not None
    ]


def at(live: datetime, sequence: int) -> datetime:
    return live + timedelta(seconds=2 * sequence)


def test_every_playlist_dates_its_first_segment_and_each_discontinuity(tmp_path: Path) -> None:
    memory = MemoryStore()
    store = CheckingStore(memory, PREFIX)
    run(store, tmp_path / "spool", 10, FIRST_LIVE)
    assert store.violations == []
    event = parse(memory, layout.event_playlist_key(PREFIX, "hi"))
    assert [s.discontinuity for s in event.segments].index(True) == 5
    assert dated(event) == [(0, at(FIRST_LIVE, 0)), (5, at(FIRST_LIVE, 5))]
    # Every segment's date, counted on from the last one written, is its own.
    for index, listed in enumerate(event.segments):
        assert listed.current_program_date_time == at(FIRST_LIVE, index)
    live = parse(memory, layout.live_playlist_key(PREFIX, "hi"))
    assert dated(live) == [(7, at(FIRST_LIVE, 7))]
    dvr = parse(memory, layout.dvr_playlist_key(PREFIX, "hi"))
    assert dated(dvr) == [(0, at(FIRST_LIVE, 0)), (5, at(FIRST_LIVE, 5))]
    # The recording in parts of four: 0-3, 4-7, 8-9, each a playlist of its own.
    parts = [parse(memory, layout.part_playlist_key(PREFIX, "hi", i)) for i in range(3)]
    assert [p.segments.uri for p in parts] == [
        [f"../{layout.segment_name(n)}" for n in numbers]
        for numbers in ([0, 1, 2, 3], [4, 5, 6, 7], [8, 9])
    ]
    assert all(p.is_endlist and p.playlist_type == "event" for p in parts)
    assert [p.media_sequence or 0 for p in parts] == [0, 4, 8]
    assert [p.discontinuity_sequence or 0 for p in parts] == [0, 0, 1]
    assert dated(parts[0]) == [(0, at(FIRST_LIVE, 0))]
    assert dated(parts[1]) == [(4, at(FIRST_LIVE, 4)), (5, at(FIRST_LIVE, 5))]
    assert dated(parts[2]) == [(8, at(FIRST_LIVE, 8))]
    assert layout.part_playlist_key(PREFIX, "hi", 3) not in memory.keys()


def test_the_event_playlist_is_written_once_when_the_live_ends(tmp_path: Path) -> None:
    memory = MemoryStore()
    live = writer(memory, tmp_path / "spool")
    live.start([VARIANT], 2.0)
    for sequence in range(6):
        live.add_segment(segment(sequence, FIRST_LIVE))
    assert live.wait_idle(10)
    event_key = layout.event_playlist_key(PREFIX, "hi")
    assert event_key not in memory.keys()  # during the live: the parts hold the recording
    assert layout.part_playlist_key(PREFIX, "hi", 1) in memory.keys()
    live.finish(timeout_seconds=10)
    assert [key for key, ok in memory.calls if key == event_key and ok] == [event_key]
    master = parse(memory, layout.master_key(PREFIX))
    assert [p.uri for p in master.playlists] == ["hi/event.m3u8"]


def test_a_new_writer_reads_the_parts_back_and_keeps_their_dates(tmp_path: Path) -> None:
    memory = MemoryStore()
    run(memory, tmp_path / "first", 10, FIRST_LIVE)
    second = writer(memory, tmp_path / "second")
    second.start([VARIANT], 2.0)
    for sequence in range(3):
        second.add_segment(segment(sequence, SECOND_LIVE))
    second.finish(timeout_seconds=30)
    event = parse(memory, layout.event_playlist_key(PREFIX, "hi"))
    assert event.segments.uri == [layout.segment_name(n) for n in range(13)]
    assert [n for n, s in enumerate(event.segments) if s.discontinuity] == [5, 10]
    assert dated(event) == [
        (0, at(FIRST_LIVE, 0)),
        (5, at(FIRST_LIVE, 5)),
        (10, at(SECOND_LIVE, 0)),
    ]
    # Part 2 (8, 9) was reopened and filled up; part 3 holds the last new segment.
    part2 = parse(memory, layout.part_playlist_key(PREFIX, "hi", 2))
    assert part2.segments.uri == [f"../{layout.segment_name(n)}" for n in (8, 9, 10, 11)]
    assert dated(part2) == [(8, at(FIRST_LIVE, 8)), (10, at(SECOND_LIVE, 0))]
    part3 = parse(memory, layout.part_playlist_key(PREFIX, "hi", 3))
    assert dated(part3) == [(12, at(SECOND_LIVE, 2))]
    # The live window starts in the earlier live: its date is that segment's own.
    live = parse(memory, layout.live_playlist_key(PREFIX, "hi"))
    assert dated(live) == [(10, at(SECOND_LIVE, 0))]
    assert second.stats()["hi"].segments == 13


def test_a_recording_from_before_parts_is_continued_and_cut_into_parts(tmp_path: Path) -> None:
    """An ended event.m3u8 with no part (an earlier onair): read back, then cut into parts."""
    memory = MemoryStore()
    earlier = [
        ListedSegment(n, 2.0, n == 3, at(FIRST_LIVE, n) if n in (0, 3) else None) for n in range(6)
    ]
    text = event_playlist(earlier, min_target_seconds=2, ended=True)
    memory.put("bucket", layout.event_playlist_key(PREFIX, "hi"), text.encode(), "", "")
    for number in range(6):
        memory.put("bucket", layout.segment_key(PREFIX, "hi", number), b"old", "", "")
    store = CheckingStore(memory, PREFIX)
    store.stored |= memory.keys()
    run(store, tmp_path / "spool", 3, SECOND_LIVE)
    assert store.violations == []
    event = parse(memory, layout.event_playlist_key(PREFIX, "hi"))
    assert event.segments.uri == [layout.segment_name(n) for n in range(9)]
    assert [n for n, s in enumerate(event.segments) if s.discontinuity] == [3, 6]
    assert dated(event) == [(0, at(FIRST_LIVE, 0)), (3, at(FIRST_LIVE, 3)), (6, at(SECOND_LIVE, 0))]
    parts = [parse(memory, layout.part_playlist_key(PREFIX, "hi", i)) for i in range(3)]
    assert [len(p.segments) for p in parts] == [4, 4, 1]
    assert memory.objects[layout.segment_key(PREFIX, "hi", 0)][0] == b"old"  # not rewritten


def test_a_part_onair_did_not_write_is_not_continued(tmp_path: Path) -> None:
    memory = MemoryStore()
    run(memory, tmp_path / "first", 6, FIRST_LIVE)  # parts 0 (0-3) and 1 (4, 5)
    foreign = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\n../seg_000041.ts\n"
    memory.put("bucket", layout.part_playlist_key(PREFIX, "hi", 1), foreign.encode(), "", "")
    run(memory, tmp_path / "second", 2, SECOND_LIVE)
    event = parse(memory, layout.event_playlist_key(PREFIX, "hi"))
    # What the good part lists is kept; new numbers go past everything named.
    uris = event.segments.uri
    assert uris[:4] == [layout.segment_name(n) for n in range(4)]
    assert uris[4:] == [layout.segment_name(42), layout.segment_name(43)]


def test_the_manifest_of_a_closed_writer_carries_the_dates(tmp_path: Path) -> None:
    memory = MemoryStore()
    spool = tmp_path / "spool"
    first = writer(memory, spool, stop_timeout_seconds=1)
    first.start([VARIANT], 2.0)
    for sequence in range(3):
        first.add_segment(segment(sequence, FIRST_LIVE))
    assert first.wait_idle(10)
    memory.failing = True  # the storage hangs up; the service stops meanwhile
    for sequence in range(3, 7):
        first.add_segment(segment(sequence, FIRST_LIVE, discontinuity=sequence == 5))
    first.close()
    leftover = read_leftover(spool)
    assert leftover is not None and leftover.resumed
    listed = leftover.published["hi"]
    assert [s.program_date_time for s in listed] == [at(FIRST_LIVE, n) for n in range(3)]
    assert [p.arrived_at for p in leftover.pending] == [
        at(FIRST_LIVE, n).isoformat() for n in range(3, 7)
    ]

    memory.failing = False
    second = writer(memory, spool)
    second.start(leftover.variants, leftover.segment_seconds, leftover=leftover)
    second.finish(timeout_seconds=30)
    event = parse(memory, layout.event_playlist_key(PREFIX, "hi"))
    assert event.segments.uri == [layout.segment_name(n) for n in range(7)]
    assert dated(event) == [(0, at(FIRST_LIVE, 0)), (5, at(FIRST_LIVE, 5))]
    part1 = parse(memory, layout.part_playlist_key(PREFIX, "hi", 1))
    assert dated(part1) == [(4, at(FIRST_LIVE, 4)), (5, at(FIRST_LIVE, 5))]
