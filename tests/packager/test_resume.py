"""A second writer on the same prefix continues the first one's playlists."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import m3u8
import pytest

from packager import layout
from packager.hls import (
    FIRST_SEGMENT_PUBLISHED,
    STORAGE_OUTAGE,
    STORAGE_RECOVERED,
    HlsWriter,
)
from packager.object_store import S3Storage
from packager.playlist import PlaylistError, event_playlist, parse_media_playlist
from packager.s3server import EmbeddedS3
from tests.support.fakes import CheckingStore, MemoryStore
from tests.support.media import LADDER_SEGMENT_SECONDS, Ladder
from tests.support.waiting import wait_until

PREFIX = "live/resume"


def publish_run(
    store: object, bucket: str, ladder: Ladder, tmp_path: Path, count: int, **kwargs: object
) -> HlsWriter:
    writer = HlsWriter(
        store,  # type: ignore[arg-type]
        bucket,
        PREFIX,
        tmp_path / "spool",
        label="resume",
        **kwargs,  # type: ignore[arg-type]
    )
    writer.start(ladder.variants, LADDER_SEGMENT_SECONDS)
    for sequence in range(count):  # each run's encoder numbers from 0
        for variant in ladder.variants:
            writer.add_segment(ladder.segment(variant.name, sequence))
    return writer


def test_a_new_writer_continues_after_the_stored_playlists(
    s3_server: EmbeddedS3, s3_client, bucket: str, ladder: Ladder, tmp_path: Path
) -> None:
    storage = S3Storage(s3_server.endpoint, s3_server.access_key, s3_server.secret_key, "us-east-1")
    publish_run(storage, bucket, ladder, tmp_path, 4).finish(timeout_seconds=60)
    name = ladder.variants[0].name
    first_key = layout.segment_key(PREFIX, name, 0)
    first_digest = hashlib.sha256(
        s3_client.get_object(Bucket=bucket, Key=first_key)["Body"].read()
    ).hexdigest()

    checking = CheckingStore(storage, PREFIX)
    listing = s3_client.list_objects_v2(Bucket=bucket, Prefix=PREFIX + "/")
    checking.stored |= {o["Key"] for o in listing["Contents"]}  # stored by the first live
    second = publish_run(checking, bucket, ladder, tmp_path, 3)
    second.finish(timeout_seconds=60)
    assert checking.violations == []
    # Progress counts the whole recording (the output's counter and progress).
    stats = second.stats()[ladder.variants[0].name]
    assert stats.segments == 7
    assert stats.seconds == pytest.approx(
        sum(ladder.segments[ladder.variants[0].name][i % 10][1] for i in (0, 1, 2, 3, 0, 1, 2)),
        abs=0.01,
    )

    def text(key: str) -> str:
        return s3_client.get_object(Bucket=bucket, Key=key)["Body"].read().decode()

    for variant in ladder.variants:
        event = m3u8.loads(text(layout.event_playlist_key(PREFIX, variant.name)))
        assert event.segments.uri == [layout.segment_name(i) for i in range(7)]
        assert [s.discontinuity for s in event.segments] == [False] * 4 + [True, False, False]
        assert event.is_endlist and (event.media_sequence or 0) == 0
        live = m3u8.loads(text(layout.live_playlist_key(PREFIX, variant.name)))
        assert live.media_sequence == 1 and live.segments.uri == event.segments.uri[1:]
        assert (live.discontinuity_sequence or 0) == 0  # the discontinuity is still listed
        for uri in event.segments.uri:  # every listed segment is stored
            s3_client.head_object(Bucket=bucket, Key=f"{PREFIX}/{variant.name}/{uri}")
    # The first live's segments were not overwritten by the second one's.
    again = s3_client.get_object(Bucket=bucket, Key=first_key)["Body"].read()
    assert hashlib.sha256(again).hexdigest() == first_digest
    assert len(checking.playlists(layout.event_playlist_key(PREFIX, name))) >= 1


def test_no_upload_before_the_history_is_read_through_an_outage(
    ladder: Ladder, tmp_path: Path
) -> None:
    store = MemoryStore()
    publish_run(store, "bucket", ladder, tmp_path, 2).finish(timeout_seconds=30)
    store.failing = True
    store.calls.clear()
    events: list[tuple[str, str]] = []
    writer = publish_run(
        store,
        "bucket",
        ladder,
        tmp_path / "second",
        3,
        on_event=lambda status, message, _: events.append((status, message)),
        retry_initial_seconds=0.05,
        retry_max_seconds=0.1,
    )
    wait_until(lambda: len(store.calls) >= 3, what="retried reads")
    # While the storage fails only the read of the earlier recording is tried.
    read_back = {
        key(PREFIX, v.name)
        for v in ladder.variants
        for key in (layout.event_playlist_key, layout.live_playlist_key)
    } | {layout.part_playlist_key(PREFIX, v.name, i) for v in ladder.variants for i in (0, 1)}
    assert {key for key, _ in store.calls} <= read_back
    store.failing = False
    writer.finish(timeout_seconds=30)
    name = ladder.variants[0].name
    uris = m3u8.loads(store.text(layout.event_playlist_key(PREFIX, name))).segments.uri
    assert uris == [layout.segment_name(i) for i in range(5)]
    assert [s for s, _ in events if s != FIRST_SEGMENT_PUBLISHED] == [
        STORAGE_OUTAGE,
        STORAGE_RECOVERED,
    ]


def test_a_foreign_playlist_is_never_overwritten_segment_wise(
    ladder: Ladder, tmp_path: Path
) -> None:
    store = MemoryStore()
    name = ladder.variants[0].name
    foreign = (
        "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\nseg_000041.ts\n#EXTINF:2.0,\nother.ts\n"
    )
    store.put("bucket", layout.event_playlist_key(PREFIX, name), foreign.encode(), "", "")
    publish_run(store, "bucket", ladder, tmp_path, 2).finish(timeout_seconds=30)
    uris = m3u8.loads(store.text(layout.event_playlist_key(PREFIX, name))).segments.uri
    assert uris == [layout.segment_name(42), layout.segment_name(43)]
    # Another rendition had no playlist: it starts at 0.
    other = ladder.variants[1].name
    assert m3u8.loads(store.text(layout.event_playlist_key(PREFIX, other))).segments.uri[0] == (
        layout.segment_name(0)
    )


def test_parse_media_playlist_reads_back_what_event_playlist_writes() -> None:
    from packager.playlist import ListedSegment

    history = [ListedSegment(5, 2.0), ListedSegment(6, 1.5, True), ListedSegment(7, 2.002)]
    assert parse_media_playlist(event_playlist(history, ended=True)) == history
    with pytest.raises(PlaylistError):
        parse_media_playlist("#EXTM3U\n#EXTINF:2,\nseg_000003.ts\n")  # numbered 3, listed as 0
    with pytest.raises(PlaylistError):
        parse_media_playlist("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\n720p/index.m3u8\n")


def test_concurrent_reads_wait_for_the_resume(ladder: Ladder, tmp_path: Path) -> None:
    """Several upload workers: none uploads a segment while the read is in flight."""
    store = MemoryStore()
    publish_run(store, "bucket", ladder, tmp_path, 3).finish(timeout_seconds=30)
    gate = threading.Event()
    real_get = store.get_text

    def slow_get(bucket: str, key: str) -> str | None:
        gate.wait(10)
        return real_get(bucket, key)

    store.get_text = slow_get  # type: ignore[method-assign]
    store.calls.clear()
    writer = publish_run(store, "bucket", ladder, tmp_path / "b", 2, upload_workers=4)
    threading.Event().wait(0.2)
    assert store.calls == []  # nothing written while the history read is held
    gate.set()
    writer.finish(timeout_seconds=30)
    name = ladder.variants[0].name
    assert layout.segment_key(PREFIX, name, 4) in store.keys()


def test_segments_left_in_the_spool_by_a_dead_run_are_set_aside(
    ladder: Ladder, tmp_path: Path
) -> None:
    store = MemoryStore()
    store.failing = True
    crashed = publish_run(store, "bucket", ladder, tmp_path, 3)
    crashed.close()  # as if the process died: nothing was stored, the spool stays
    name = ladder.variants[0].name
    left = sorted((tmp_path / "spool" / name).glob("seg_*.ts"))
    assert [p.name for p in left] == [layout.segment_name(i) for i in range(3)]
    contents = {p.name: p.read_bytes() for p in left}
    store.failing = False
    publish_run(store, "bucket", ladder, tmp_path, 1).finish(timeout_seconds=30)
    aside = list((tmp_path / "spool").glob(f"orphaned-*/{name}/seg_*.ts"))
    assert {p.name: p.read_bytes() for p in aside} == contents  # not overwritten
