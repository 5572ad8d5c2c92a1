"""A writer closed before its uploads are done leaves a manifest; the next one
made from it uploads those segments in order and lists them where they belong."""

from __future__ import annotations

from pathlib import Path

import m3u8

from packager import layout
from packager.hls import HlsWriter
from packager.recovery import MANIFEST_NAME, read_leftover
from tests.support.fakes import MemoryStore
from tests.support.media import LADDER_SEGMENT_SECONDS, Ladder
from tests.support.waiting import wait_until

PREFIX = "live/left"


def names(text: str) -> list[str]:
    return list(m3u8.loads(text).segments.uri)


def test_the_next_start_uploads_what_a_stopped_writer_left(ladder: Ladder, tmp_path: Path) -> None:
    memory = MemoryStore()
    spool = tmp_path / "spool"
    variants = ladder.variants[:2]
    first = HlsWriter(memory, "bucket", PREFIX, spool, label="first", stop_timeout_seconds=1)
    first.start(variants, LADDER_SEGMENT_SECONDS)
    for sequence in range(4):
        for variant in variants:
            first.add_segment(ladder.segment(variant.name, sequence))
    wait_until(lambda: all(s.segments == 4 for s in first.stats().values()))
    memory.failing = True  # the storage hangs up: the service is stopped meanwhile
    for sequence in range(4, 9):
        for variant in variants:
            first.add_segment(ladder.segment(variant.name, sequence))
    first.close()
    leftover = read_leftover(spool)
    assert leftover is not None and leftover.resumed
    assert [(p.rendition, p.number) for p in leftover.pending if p.rendition == "360p"] == [
        ("360p", n) for n in range(4, 9)
    ]
    assert all(p.file is not None and (spool / p.file).exists() for p in leftover.pending)

    memory.failing = False
    second = HlsWriter(memory, "bucket", PREFIX, spool, label="second")
    second.start(leftover.variants, leftover.segment_seconds, leftover=leftover)
    second.finish(timeout_seconds=30)
    assert second.inherited_segments == 10
    for variant in variants:
        event = memory.text(layout.event_playlist_key(PREFIX, variant.name))
        assert names(event) == [layout.segment_name(n) for n in range(9)]
        parsed = m3u8.loads(event)
        assert parsed.is_endlist and not any(s.discontinuity for s in parsed.segments)
        for number in range(9):
            stored = memory.objects[layout.segment_key(PREFIX, variant.name, number)][0]
            assert len(stored) == len(ladder.segments[variant.name][number][0])
    master = m3u8.loads(memory.text(layout.master_key(PREFIX)))
    assert [p.uri for p in master.playlists] == [f"{v.name}/event.m3u8" for v in variants]
    assert not (spool / MANIFEST_NAME).exists()
    assert list(spool.rglob("*.ts")) == []


def test_a_leftover_from_before_the_first_read_is_numbered_after_the_recording(
    ladder: Ladder, tmp_path: Path
) -> None:
    """The old run never reached the storage: its segments follow what is stored."""
    memory = MemoryStore()
    spool = tmp_path / "spool"
    variant = ladder.variants[0]
    earlier = HlsWriter(memory, "bucket", PREFIX, tmp_path / "earlier", label="earlier")
    earlier.start([variant], LADDER_SEGMENT_SECONDS)
    for sequence in range(3):
        earlier.add_segment(ladder.segment(variant.name, sequence))
    earlier.finish(timeout_seconds=30)

    memory.failing = True
    first = HlsWriter(memory, "bucket", PREFIX, spool, label="first", stop_timeout_seconds=1)
    first.start([variant], LADDER_SEGMENT_SECONDS)
    for sequence in range(2):
        first.add_segment(ladder.segment(variant.name, sequence))
    first.close()
    leftover = read_leftover(spool)
    assert leftover is not None and not leftover.resumed
    assert [p.number for p in leftover.pending] == [None, None]

    memory.failing = False
    second = HlsWriter(memory, "bucket", PREFIX, spool, label="second")
    second.start(leftover.variants, leftover.segment_seconds, leftover=leftover)
    second.finish(timeout_seconds=30)
    event = m3u8.loads(memory.text(layout.event_playlist_key(PREFIX, variant.name)))
    assert event.segments.uri == [layout.segment_name(n) for n in range(5)]
    assert [s.discontinuity for s in event.segments] == [False, False, False, True, False]
