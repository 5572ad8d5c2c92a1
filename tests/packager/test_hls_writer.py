"""HlsWriter: upload in parallel, publish in order, lose nothing."""

from __future__ import annotations

import math
import posixpath
import subprocess
import threading
from pathlib import Path

import m3u8
import pytest

from media.segments import Segment, VariantInfo
from packager import layout
from packager.bandwidth import ts_ceiling_bps
from packager.hls import (
    FIRST_SEGMENT_PUBLISHED,
    STORAGE_OUTAGE,
    STORAGE_RECOVERED,
    HlsWriter,
    PublishedRendition,
)
from packager.object_store import S3Storage
from packager.s3server import EmbeddedS3
from tests.support.fakes import CheckingStore, MemoryStore
from tests.support.media import LADDER_SEGMENT_SECONDS, Ladder
from tests.support.waiting import wait_until

PREFIX = "live/show"


def make_writer(store, tmp_path: Path, **kwargs) -> HlsWriter:  # type: ignore[no-untyped-def]
    kwargs.setdefault("label", "test")
    return HlsWriter(store, "bucket", PREFIX, tmp_path / "spool", **kwargs)


def listed(text: str) -> list[str]:
    """The names of the segments a playlist lists (a part's URIs lead up a folder)."""
    return [posixpath.basename(uri) for uri in m3u8.loads(text).segments.uri]


def seg_names(first: int, last: int) -> list[str]:
    return [layout.segment_name(i) for i in range(first, last + 1)]


# -- against the real S3 server -----------------------------------------------------------


@pytest.fixture
def s3_storage(s3_server: EmbeddedS3) -> S3Storage:
    return S3Storage(s3_server.endpoint, s3_server.access_key, s3_server.secret_key, "us-east-1")


def test_publishes_a_ladder_to_s3(s3_storage, s3_client, bucket, ladder: Ladder, tmp_path) -> None:
    store = CheckingStore(s3_storage, PREFIX)
    writer = HlsWriter(store, bucket, PREFIX, tmp_path / "spool", label="ladder")
    writer.start(ladder.variants, LADDER_SEGMENT_SECONDS)
    for sequence in range(10):
        for variant in ladder.variants:
            writer.add_segment(ladder.segment(variant.name, sequence))
    writer.finish(timeout_seconds=60)

    listing = s3_client.list_objects_v2(Bucket=bucket, Prefix=PREFIX + "/")
    keys = {o["Key"] for o in listing["Contents"]}
    names = [v.name for v in ladder.variants]
    expected = {layout.master_key(PREFIX), layout.dvr_master_key(PREFIX)}
    for name in names:
        expected |= {
            layout.live_playlist_key(PREFIX, name),
            layout.dvr_playlist_key(PREFIX, name),
            layout.part_playlist_key(PREFIX, name, 0),
            layout.event_playlist_key(PREFIX, name),
        }
        expected |= {layout.segment_key(PREFIX, name, i) for i in range(10)}
    assert keys == expected

    for key in keys:
        head = s3_client.head_object(Bucket=bucket, Key=key)
        if key.endswith(".ts"):
            assert head["ContentType"] == "video/mp2t"
            assert head["CacheControl"] == "max-age=31536000, immutable"
        else:
            assert head["ContentType"] == "application/vnd.apple.mpegurl"
            assert head["CacheControl"] == "max-age=3600"  # final playlists

    def get(key: str) -> bytes:
        return bytes(s3_client.get_object(Bucket=bucket, Key=key)["Body"].read())

    # The live ended: the master leads to the whole recording, the DVR master to the
    # DVR window (here all of it).
    master = m3u8.loads(get(layout.master_key(PREFIX)).decode())
    assert [p.uri for p in master.playlists] == [f"{n}/event.m3u8" for n in names]
    dvr_master = m3u8.loads(get(layout.dvr_master_key(PREFIX)).decode())
    assert [p.uri for p in dvr_master.playlists] == [f"{n}/dvr.m3u8" for n in names]
    stats = writer.stats()
    for playlist, variant in zip(master.playlists, ladder.variants, strict=True):
        info = playlist.stream_info
        assert info.bandwidth == stats[variant.name].peak_bandwidth
        assert info.average_bandwidth == stats[variant.name].average_bandwidth
        assert info.resolution == (variant.width, variant.height)
        assert info.frame_rate == 24.0
        assert info.codecs == variant.codecs

    for name in names:
        stored = sorted(k.rsplit("/", 1)[1] for k in keys if k.startswith(f"{PREFIX}/{name}/seg"))
        event = m3u8.loads(get(layout.event_playlist_key(PREFIX, name)).decode())
        assert event.segments.uri == stored == seg_names(0, 9)
        assert event.is_endlist and event.playlist_type == "event"
        durations = [d for _, d in ladder.segments[name]]
        assert event.segments[0].duration == pytest.approx(durations[0], abs=0.0005)
        live = m3u8.loads(get(layout.live_playlist_key(PREFIX, name)).decode())
        assert live.segments.uri == seg_names(4, 9) and live.media_sequence == 4
        assert live.is_endlist
        dvr = m3u8.loads(get(layout.dvr_playlist_key(PREFIX, name)).decode())
        assert dvr.segments.uri == seg_names(0, 9) and dvr.is_endlist
        assert dvr.playlist_type is None  # a sliding window, not an event
        assert stats[name].segments == 10
        assert stats[name].seconds == pytest.approx(sum(durations), abs=0.001)
        assert stats[name].pending_uploads == 0
        size = sum(len(d) for d, _ in ladder.segments[name])
        assert stats[name].average_bandwidth == pytest.approx(size * 8 / sum(durations), abs=1)

    # what a user would check: the published segment is real, playable TS, the media
    # bytes untouched (only the continuity counters, continued from segment 2)
    segment_path = tmp_path / "probe.ts"
    stored_segment = get(layout.segment_key(PREFIX, names[0], 3))
    segment_path.write_bytes(stored_segment)
    original = ladder.segments[names[0]][3][0]
    assert len(stored_segment) == len(original)
    for at in range(0, len(original), 188):
        mine, theirs = stored_segment[at : at + 188], original[at : at + 188]
        assert mine[:3] == theirs[:3] and mine[4:] == theirs[4:]
        assert mine[3] & 0xF0 == theirs[3] & 0xF0
    probe = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name",
            "-of",
            "csv=p=0",
            str(segment_path),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    assert set(probe.stdout.split()) == {"aac", "h264"}

    assert store.violations == []
    assert not any((tmp_path / "spool").rglob("*.ts"))


def test_out_of_order_upload_is_listed_in_order(
    s3_storage, s3_client, bucket, ladder: Ladder, tmp_path
) -> None:
    name = ladder.variants[0].name
    store = CheckingStore(s3_storage, PREFIX)
    slow = store.hold(layout.segment_key(PREFIX, name, 2))
    writer = HlsWriter(store, bucket, PREFIX, tmp_path / "spool", label="order", upload_workers=3)
    writer.start(ladder.variants[:1], LADDER_SEGMENT_SECONDS)
    for sequence in range(5):
        writer.add_segment(ladder.segment(name, sequence))

    def stored(sequence: int) -> bool:
        key = layout.segment_key(PREFIX, name, sequence)
        return s3_client.list_objects_v2(Bucket=bucket, Prefix=key)["KeyCount"] == 1

    index_key = layout.live_playlist_key(PREFIX, name)
    wait_until(lambda: stored(3) and stored(4), what="segments 3 and 4 stored")
    wait_until(
        lambda: listed(stored_text(s3_client, bucket, index_key) or "") == seg_names(0, 1),
        what="playlist listing 0..1",
    )
    # 3 and 4 are stored, 2 is not: the playlist stops at 1 however long 2 takes
    wait_until(lambda: writer.stats()[name].pending_uploads == 1, what="only 2 pending")
    assert not stored(2)
    assert listed(stored_text(s3_client, bucket, index_key) or "") == seg_names(0, 1)
    assert writer.stats()[name].segments == 2
    assert writer.stats()[name].pending_uploads == 1

    slow.set()
    wait_until(
        lambda: listed(stored_text(s3_client, bucket, index_key) or "") == seg_names(0, 4),
        what="playlist listing 0..4",
    )
    writer.finish(timeout_seconds=30)
    assert store.violations == []
    # No playlist ever listed 3 or 4 without 2.
    for text in store.playlists(index_key):
        uris = listed(text)
        assert uris == seg_names(0, len(uris) - 1)


def stored_text(s3_client, bucket: str, key: str) -> str | None:  # type: ignore[no-untyped-def]
    try:
        return str(s3_client.get_object(Bucket=bucket, Key=key)["Body"].read().decode())
    except s3_client.exceptions.NoSuchKey:
        return None


# -- writer logic with an in-memory store ----------------------------------------------

VARIANTS = [
    VariantInfo("hi", 1280, 720, 30.0, "avc1.64001f,mp4a.40.2", 3_000_000),
    VariantInfo("lo", 640, 360, 30.0, "avc1.64001e,mp4a.40.2", 1_000_000),
]


def segment(
    rendition: str,
    sequence: int,
    size: int = 1000,
    duration: float = 2.0,
    discontinuity: bool = False,
) -> Segment:
    return Segment(
        rendition, sequence, sequence * 2.0, duration, bytes([sequence % 256]) * size, discontinuity
    )


def key(rendition: str, sequence: int) -> str:
    return layout.segment_key(PREFIX, rendition, sequence)


def test_spool_holds_exactly_what_is_pending_and_is_cleaned(tmp_path) -> None:
    memory = MemoryStore()
    store = CheckingStore(memory, PREFIX)
    store.gate_all_segments = threading.Event()
    writer = make_writer(store, tmp_path)
    writer.start(VARIANTS, 2.0)
    spool = tmp_path / "spool"
    for sequence in range(4):
        for variant in VARIANTS:
            writer.add_segment(segment(variant.name, sequence, size=100 + sequence))
    # nothing can be uploaded: every segment is on disk, byte for byte
    files = sorted(p.relative_to(spool).as_posix() for p in spool.rglob("*") if p.is_file())
    assert files == sorted(f"{v.name}/seg_{i:06d}.ts" for v in VARIANTS for i in range(4))
    assert (spool / "hi" / "seg_000002.ts").read_bytes() == bytes([2]) * 102
    assert all(s.pending_uploads == 4 and s.segments == 0 for s in writer.stats().values())

    store.gate_all_segments.set()
    writer.finish(timeout_seconds=10)
    assert list(spool.rglob("*")) == []  # files and rendition folders gone
    assert all(s.pending_uploads == 0 for s in writer.stats().values())
    assert store.violations == []


def test_spool_files_deleted_as_they_upload(tmp_path) -> None:
    memory = MemoryStore()
    writer = make_writer(memory, tmp_path)
    writer.start(VARIANTS[:1], 2.0)
    spool = tmp_path / "spool" / "hi"
    for sequence in range(3):
        writer.add_segment(segment("hi", sequence))
    wait_until(lambda: writer.stats()["hi"].segments == 3)
    assert list(spool.iterdir()) == []
    writer.close()


def test_stats_equal_what_was_published(tmp_path) -> None:
    memory = MemoryStore()
    writer = make_writer(memory, tmp_path)
    writer.start(VARIANTS, 2.0)
    sizes = [(500, 2.0), (750, 2.0), (250, 2.0), (100, 0.5)]
    for sequence, (size, duration) in enumerate(sizes):
        writer.add_segment(segment("hi", sequence, size, duration))
    writer.add_segment(segment("lo", 0, 300, 1.5))
    writer.finish(timeout_seconds=10)
    stats = writer.stats()
    assert stats["hi"] == PublishedRendition(
        segments=4,
        seconds=6.5,
        peak_bandwidth=750 * 8 // 2,  # the 0.5 s tail is not a peak
        average_bandwidth=math.ceil(1600 * 8 / 6.5),
        pending_uploads=0,
    )
    assert stats["lo"].segments == 1 and stats["lo"].peak_bandwidth == 1600


def test_master_waits_for_every_variant_then_follows_bandwidth(tmp_path) -> None:
    memory = MemoryStore()
    store = CheckingStore(memory, PREFIX)
    writer = make_writer(store, tmp_path)
    writer.start(VARIANTS, 2.0)
    master_key = layout.master_key(PREFIX)
    writer.add_segment(segment("hi", 0, size=500_000))
    wait_until(lambda: layout.live_playlist_key(PREFIX, "hi") in memory.keys())
    assert master_key not in memory.keys()  # "lo" has nothing yet
    writer.add_segment(segment("lo", 0, size=200_000))
    wait_until(lambda: master_key in memory.keys(), what="master")
    first = m3u8.loads(memory.text(master_key))
    assert [p.stream_info.bandwidth for p in first.playlists] == [2_000_000, 800_000]

    # The peak grows (even by 4 %): players must never meet a segment above BANDWIDTH.
    writer.add_segment(segment("hi", 1, size=520_000))
    wait_until(lambda: len(store.playlists(master_key)) == 2, what="master rewrite")
    second = m3u8.loads(store.playlists(master_key)[1])
    assert [p.stream_info.bandwidth for p in second.playlists] == [2_080_000, 800_000]
    # Below the peak, the average moves by 1 %: not worth a rewrite.
    writer.add_segment(segment("lo", 1, size=196_000))
    wait_until(lambda: writer.stats()["lo"].segments == 2)
    writer.finish(timeout_seconds=10)
    versions = store.playlists(master_key)
    assert len(versions) == 3  # and the final one, when the live ended
    final = m3u8.loads(versions[-1])
    assert [p.stream_info.bandwidth for p in final.playlists] == [2_080_000, 800_000]
    assert [p.stream_info.average_bandwidth for p in final.playlists] == [2_040_000, 792_000]
    assert store.violations == []


def test_bandwidth_is_never_below_the_encoders_ceiling(tmp_path) -> None:
    capped = VariantInfo(
        "hi", 1280, 720, 30.0, "avc1.64001f,mp4a.40.2", 2_928_000, max_bitrate_bps=3_208_000
    )
    ceiling = ts_ceiling_bps(capped, 2.0)
    assert ceiling is not None
    # The cap, packetized in 188-byte packets, plus headers: a few percent more.
    assert 3_208_000 * 188 / 184 < ceiling < 3_208_000 * 1.1
    memory = MemoryStore()
    store = CheckingStore(memory, PREFIX)
    writer = make_writer(store, tmp_path)
    writer.start([capped], 2.0)
    master_key = layout.master_key(PREFIX)
    writer.add_segment(segment("hi", 0, size=500_000))  # 2 Mbit/s: below the ceiling
    wait_until(lambda: master_key in memory.keys(), what="master")
    info = m3u8.loads(memory.text(master_key)).playlists[0].stream_info
    assert (info.bandwidth, info.average_bandwidth) == (ceiling, 2_000_000)
    writer.add_segment(segment("hi", 1, size=1_000_000))  # 4 Mbit/s: above it
    wait_until(lambda: len(store.playlists(master_key)) == 2, what="master rewrite")
    info = m3u8.loads(store.playlists(master_key)[1]).playlists[0].stream_info
    assert info.bandwidth == 4_000_000
    writer.finish(timeout_seconds=10)


def test_live_playlist_slides_with_discontinuity(tmp_path) -> None:
    memory = MemoryStore()
    writer = make_writer(memory, tmp_path, window_segments=3)
    writer.start(VARIANTS[:1], 2.0)
    for sequence in range(6):
        writer.add_segment(segment("hi", sequence, discontinuity=sequence == 2))
        wait_until(lambda s=sequence: writer.stats()["hi"].segments == s + 1)
    index = layout.live_playlist_key(PREFIX, "hi")
    wait_until(lambda: listed(memory.text(index)) == seg_names(3, 5))
    parsed = m3u8.loads(memory.text(index))
    assert parsed.media_sequence == 3 and parsed.discontinuity_sequence == 1
    assert not parsed.is_endlist and memory.objects[index][2] == "max-age=1"
    writer.finish(timeout_seconds=10)
    assert m3u8.loads(memory.text(index)).is_endlist
    event = m3u8.loads(memory.text(layout.event_playlist_key(PREFIX, "hi")))
    assert event.segments.uri == seg_names(0, 5) and event.is_endlist
    assert [s.discontinuity for s in event.segments] == [False, False, True, False, False, False]


def test_outage_retries_in_order_and_reports_once(tmp_path) -> None:
    memory = MemoryStore()
    store = CheckingStore(memory, PREFIX)
    events: list[tuple[str, str, str | None]] = []
    writer = make_writer(
        store,
        tmp_path,
        on_event=lambda s, m, r: events.append((s, m, r)),
        retry_initial_seconds=0.02,
        retry_max_seconds=0.1,
    )
    writer.start(VARIANTS, 2.0)
    for sequence in range(2):
        for variant in VARIANTS:
            writer.add_segment(segment(variant.name, sequence))
    wait_until(lambda: all(s.segments == 2 for s in writer.stats().values()))
    wait_until(lambda: layout.master_key(PREFIX) in memory.keys())
    playlists = [
        key
        for v in VARIANTS
        for key in (
            layout.live_playlist_key(PREFIX, v.name),
            layout.part_playlist_key(PREFIX, v.name, 0),
        )
    ]
    # every playlist is up to date: nothing else is pending when the storage goes away
    wait_until(
        lambda: all(
            k in memory.keys() and listed(memory.text(k)) == seg_names(0, 1) for k in playlists
        )
    )

    # Each rendition said when its first segment was listed, and only then.
    assert sorted((s, r) for s, _, r in events) == [
        (FIRST_SEGMENT_PUBLISHED, "hi"),
        (FIRST_SEGMENT_PUBLISHED, "lo"),
    ]
    events.clear()
    memory.failing = True
    for sequence in range(2, 7):
        for variant in VARIANTS:
            writer.add_segment(segment(variant.name, sequence))
    wait_until(lambda: writer.outage, what="outage")
    wait_until(lambda: sum(not ok for _, ok in memory.calls) >= 10, what="retries")
    assert len(events) == 1 and events[0][0] == STORAGE_OUTAGE
    assert events[0][1].endswith(": connection refused (test)")
    assert events[0][2] in {"hi", "lo"}  # about the rendition whose upload failed
    assert all(s.segments == 2 and s.pending_uploads == 5 for s in writer.stats().values())
    # At most one in-flight upload per worker fails with the first error; after that a
    # single probe retries the oldest pending object, and only it.
    with memory.lock:
        failed = [k for k, ok in memory.calls if not ok]
    assert set(failed[4:]) == {key("hi", 2)}
    assert len(list((tmp_path / "spool").rglob("*.ts"))) == 10

    memory.failing = False
    writer.finish(timeout_seconds=10)
    assert [e[0] for e in events] == [STORAGE_OUTAGE, STORAGE_RECOVERED]
    assert events[1][1].startswith("uploaded 10 delayed segments after ")
    assert events[1][2] is None  # the whole job
    assert not writer.outage
    assert store.violations == []
    for variant in VARIANTS:
        assert {key(variant.name, i) for i in range(7)} <= memory.keys()
        event = memory.text(layout.event_playlist_key(PREFIX, variant.name))
        assert listed(event) == seg_names(0, 6)


def test_finish_times_out_during_outage_and_can_be_retried(tmp_path) -> None:
    memory = MemoryStore()
    events: list[str] = []
    writer = make_writer(
        memory,
        tmp_path,
        on_event=lambda s, m, r: events.append(s),
        retry_initial_seconds=0.02,
        retry_max_seconds=0.05,
    )
    writer.start(VARIANTS[:1], 2.0)
    memory.failing = True
    writer.add_segment(segment("hi", 0))
    with pytest.raises(TimeoutError, match="1 segments pending"):
        writer.finish(timeout_seconds=0.3)
    assert memory.keys() == set()  # no playlist listing a segment that is not stored
    memory.failing = False
    writer.finish(timeout_seconds=10)
    assert key("hi", 0) in memory.keys()
    assert m3u8.loads(memory.text(layout.live_playlist_key(PREFIX, "hi"))).is_endlist
    assert [e for e in events if e != FIRST_SEGMENT_PUBLISHED] == [
        STORAGE_OUTAGE,
        STORAGE_RECOVERED,
    ]
    writer.finish()  # idempotent


def test_close_during_outage_keeps_the_spool(tmp_path) -> None:
    memory = MemoryStore()
    memory.failing = True
    writer = make_writer(memory, tmp_path, retry_initial_seconds=0.02)
    writer.start(VARIANTS[:1], 2.0)
    for sequence in range(3):
        writer.add_segment(segment("hi", sequence))
    wait_until(lambda: writer.outage)
    writer.close()
    writer.close()  # idempotent
    assert sorted(p.name for p in (tmp_path / "spool" / "hi").iterdir()) == seg_names(0, 2)
    writer.add_segment(segment("hi", 3))  # after close: dropped, not spooled
    assert len(list((tmp_path / "spool" / "hi").iterdir())) == 3
    with pytest.raises(RuntimeError):
        writer.finish()


def test_add_segment_does_not_wait_for_storage(tmp_path) -> None:
    memory = MemoryStore()
    store = CheckingStore(memory, PREFIX)
    store.gate_all_segments = threading.Event()  # every upload hangs
    writer = make_writer(store, tmp_path, upload_workers=2)
    writer.start(VARIANTS[:1], 2.0)
    done = threading.Event()

    def encoder() -> None:
        for sequence in range(20):
            writer.add_segment(segment("hi", sequence))
        done.set()

    threading.Thread(target=encoder).start()
    assert done.wait(5), "add_segment blocked on a hung upload"
    store.gate_all_segments.set()
    writer.finish(timeout_seconds=10)
    assert writer.stats()["hi"].segments == 20


def test_out_of_sequence_segments_are_dropped(tmp_path) -> None:
    memory = MemoryStore()
    writer = make_writer(memory, tmp_path)
    writer.start(VARIANTS[:1], 2.0)
    writer.add_segment(segment("hi", 0))
    writer.add_segment(segment("hi", 1))
    writer.add_segment(segment("hi", 1))  # duplicate
    writer.add_segment(segment("hi", 0))  # goes back
    with pytest.raises(ValueError):
        writer.add_segment(segment("nope", 2))
    writer.finish(timeout_seconds=10)
    assert listed(memory.text(layout.event_playlist_key(PREFIX, "hi"))) == seg_names(0, 1)


def test_a_lost_spool_file_is_skipped_with_a_discontinuity(tmp_path) -> None:
    memory = MemoryStore()
    store = CheckingStore(memory, PREFIX)
    store.gate_all_segments = threading.Event()
    writer = make_writer(store, tmp_path, upload_workers=1)
    writer.start(VARIANTS[:1], 2.0)
    for sequence in range(4):
        writer.add_segment(segment("hi", sequence))
    (tmp_path / "spool" / "hi" / "seg_000002.ts").unlink()  # e.g. someone cleaned /tmp
    store.gate_all_segments.set()
    writer.finish(timeout_seconds=10)
    event = m3u8.loads(memory.text(layout.event_playlist_key(PREFIX, "hi")))
    assert event.segments.uri == ["seg_000000.ts", "seg_000001.ts", "seg_000003.ts"]
    assert [s.discontinuity for s in event.segments] == [False, False, True]
    assert store.violations == []


def test_finish_without_segments_and_before_start(tmp_path) -> None:
    memory = MemoryStore()
    writer = make_writer(memory, tmp_path)
    writer.finish()
    writer.close()
    writer = make_writer(memory, tmp_path)
    writer.start(VARIANTS, 2.0)
    writer.finish(timeout_seconds=5)
    assert memory.keys() == set()
    assert writer.stats()["hi"] == PublishedRendition(
        segments=0, seconds=0.0, peak_bandwidth=None, average_bandwidth=None, pending_uploads=0
    )
