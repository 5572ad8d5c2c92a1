"""What retrying cannot fix fails at once; the spool's limits give up the oldest."""

from __future__ import annotations

import threading
from pathlib import Path

import m3u8

from media.segments import Segment, VariantInfo
from packager import layout
from packager.hls import (
    SPOOL_FULL,
    STORAGE_OUTAGE,
    STORAGE_REFUSED,
    HlsWriter,
)
from packager.object_store import PermanentStorageError, S3Storage
from packager.s3server import EmbeddedS3
from packager.spool import SpoolBudget
from tests.support.fakes import MemoryStore
from tests.support.waiting import wait_until

VARIANT = VariantInfo("hi", 1280, 720, 30.0, "avc1.64001f,mp4a.40.2", 3_000_000)


def segment(sequence: int, size: int = 1000) -> Segment:
    return Segment("hi", sequence, sequence * 2.0, 2.0, bytes([sequence % 256]) * size)


class CountingStore:
    """The real S3, with every put counted."""

    def __init__(self, inner: S3Storage) -> None:
        self.inner = inner
        self.puts: list[str] = []
        self.lock = threading.Lock()

    def put(self, bucket: str, key: str, data: bytes, content_type: str, cache: str) -> None:
        with self.lock:
            self.puts.append(key)
        self.inner.put(bucket, key, data, content_type, cache)

    def get_text(self, bucket: str, key: str) -> str | None:
        return self.inner.get_text(bucket, key)


def test_a_key_too_long_fails_the_output_at_once(
    s3_server: EmbeddedS3, bucket: str, tmp_path: Path
) -> None:
    storage = CountingStore(
        S3Storage(s3_server.endpoint, s3_server.access_key, s3_server.secret_key, "us-east-1")
    )
    events: list[tuple[str, str, str | None]] = []
    failures: list[BaseException] = []
    prefix = "/".join(["d" * 100] * 10)  # 1,009 bytes: every key onair writes is > 1024
    writer = HlsWriter(
        storage,
        bucket,
        prefix,
        tmp_path / "spool",
        label="long",
        on_event=lambda s, m, r: events.append((s, m, r)),
        on_failure=failures.append,
        retry_initial_seconds=0.05,
    )
    writer.start([VARIANT], 2.0)
    for sequence in range(3):
        writer.add_segment(segment(sequence))
    wait_until(lambda: failures, what="the output failed")
    assert isinstance(failures[0], PermanentStorageError)
    assert "KeyTooLongError" in str(failures[0])
    assert [(s, r) for s, _, r in events] == [(STORAGE_REFUSED, "hi")]
    assert STORAGE_OUTAGE not in [s for s, _, _ in events]  # not an outage: no retry
    writer.add_segment(segment(3))  # after the refusal: dropped, not spooled
    writer.finish(timeout_seconds=5)  # returns at once
    with storage.lock:
        attempts = list(storage.puts)
    assert len(attempts) <= 4  # the first tries of the workers, never a retry loop
    assert len(failures) == 1 and writer.failed is failures[0]
    # What was spooled stays on disk for an operator; nothing new was added.
    assert len(list((tmp_path / "spool").rglob("*.ts"))) <= 3


def test_the_jobs_spool_limit_gives_up_the_oldest_segments(tmp_path: Path) -> None:
    memory = MemoryStore()
    events: list[tuple[str, str, str | None]] = []
    writer = HlsWriter(
        memory,
        "bucket",
        "live/full",
        tmp_path / "spool",
        label="full",
        on_event=lambda s, m, r: events.append((s, m, r)),
        retry_initial_seconds=0.02,
        retry_max_seconds=0.05,
        spool_max_bytes=5 * 1000,
    )
    writer.start([VARIANT], 2.0)
    writer.add_segment(segment(0))
    wait_until(lambda: writer.stats()["hi"].segments == 1)
    memory.failing = True
    for sequence in range(1, 13):  # 12 segments while the storage is down
        writer.add_segment(segment(sequence))
    spooled = sorted(p.name for p in (tmp_path / "spool" / "hi").glob("*.ts"))
    assert len(spooled) <= 5  # the limit holds on disk
    full = [m for s, m, _ in events if s == SPOOL_FULL]
    assert len(full) == 1  # reported at once, not for every segment
    assert "gave up" in full[0] and "hi/seg_000001.ts" in full[0]  # the oldest first
    memory.failing = False
    writer.finish(timeout_seconds=10)
    event = m3u8.loads(memory.text(layout.event_playlist_key("live/full", "hi")))
    listed = [int(u[4:10]) for u in event.segments.uri]
    # The newest segments survive, the live goes on from them; the gap is marked.
    assert listed[0] == 0 and listed[-1] == 12 and len(listed) >= 1 + 4
    kept = listed[1:]
    assert kept == list(range(kept[0], 13))
    assert event.segments[1].discontinuity
    given_up = [m for s, m, _ in events if s == SPOOL_FULL]
    names = " ".join(given_up)
    for number in range(1, kept[0]):
        assert layout.segment_name(number) in names  # every segment given up is named
    assert writer.dropped_segments == kept[0] - 1


def test_the_hosts_spool_limit_is_shared_by_every_job(tmp_path: Path) -> None:
    memory = MemoryStore()
    memory.failing = True
    budget = SpoolBudget(6 * 1000)
    writers = [
        HlsWriter(
            memory,
            "bucket",
            f"live/{name}",
            tmp_path / name,
            label=name,
            spool_budget=budget,
            retry_initial_seconds=0.02,
        )
        for name in ("a", "b")
    ]
    for writer in writers:
        writer.start([VARIANT], 2.0)
    for sequence in range(5):
        for writer in writers:
            writer.add_segment(segment(sequence))
    assert budget.used_bytes <= 6 * 1000
    on_disk = sum(1 for p in tmp_path.rglob("*.ts"))
    assert on_disk * 1000 <= 6 * 1000
    assert sum(p.dropped_segments for p in writers) == 10 - on_disk
    for writer in writers:
        writer.close()


def test_a_segment_bigger_than_the_limit_is_given_up_itself(tmp_path: Path) -> None:
    memory = MemoryStore()
    events: list[str] = []
    writer = HlsWriter(
        memory,
        "bucket",
        "live/big",
        tmp_path / "spool",
        label="big",
        on_event=lambda s, m, r: events.append(s),
        spool_max_bytes=5_000,
    )
    writer.start([VARIANT], 2.0)
    writer.add_segment(segment(0, size=10_000))
    writer.add_segment(segment(1))
    writer.finish(timeout_seconds=10)
    event = m3u8.loads(memory.text(layout.event_playlist_key("live/big", "hi")))
    assert event.segments.uri == [layout.segment_name(1)]
    assert SPOOL_FULL in events
