"""A real S3 outage: SeaweedFS stopped for 20 s while segments keep arriving."""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import m3u8
import pytest
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from packager import layout
from packager.publisher import STORAGE_OUTAGE, STORAGE_RECOVERED, HlsPublisher
from packager.s3server import EmbeddedS3
from packager.storage import S3Storage
from tests.conftest import free_port_block
from tests.packager.conftest import SEGMENT_SECONDS, Ladder, wait_until

OUTAGE_SECONDS = 20.0
BUCKET = "live"
PREFIX = "events/outage"


@dataclass
class Watch:
    """What a player polling the live playlists saw."""

    polls: list[tuple[float, str, int]] = field(default_factory=list)  # (time, rendition, last)
    violations: list[str] = field(default_factory=list)
    unreachable: int = 0


def watch_playlists(
    server: EmbeddedS3, renditions: list[str], stop: threading.Event, watch: Watch
) -> None:
    """Poll every live playlist ~5 times a second; HEAD every segment it lists."""
    client = boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
        region_name="us-east-1",
        config=Config(connect_timeout=0.5, read_timeout=2, retries={"total_max_attempts": 1}),
    )
    while not stop.is_set():
        for name in renditions:
            key = layout.live_playlist_key(PREFIX, name)
            try:
                text = client.get_object(Bucket=BUCKET, Key=key)["Body"].read().decode()
            except client.exceptions.NoSuchKey:
                continue  # not published yet
            except (BotoCoreError, ClientError):
                watch.unreachable += 1
                continue
            playlist = m3u8.loads(text)
            for uri in playlist.segments.uri:
                try:
                    client.head_object(Bucket=BUCKET, Key=f"{PREFIX}/{name}/{uri}")
                except ClientError as error:
                    if error.response["Error"]["Code"] in ("404", "NoSuchKey", "NotFound"):
                        watch.violations.append(f"{key} listed {uri}, not stored")
                except BotoCoreError:
                    pass  # the server went away between the GET and the HEAD
            last = playlist.segments[-1].media_sequence if playlist.segments else -1
            watch.polls.append((time.monotonic(), name, last))
        stop.wait(0.2)


class Producer(threading.Thread):
    """The encoder: one segment per rendition every 0.25 s, whatever the storage does."""

    def __init__(self, publisher: HlsPublisher, ladder: Ladder) -> None:
        super().__init__(name="producer")
        self.publisher = publisher
        self.ladder = ladder
        self.stop = threading.Event()
        self.count = 0
        self.add_times: list[float] = []
        self.slowest_add = 0.0

    def run(self) -> None:
        while not self.stop.is_set():
            for variant in self.ladder.variants:
                started = time.monotonic()
                self.publisher.add_segment(self.ladder.segment(variant.name, self.count))
                self.slowest_add = max(self.slowest_add, time.monotonic() - started)
            self.add_times.append(time.monotonic())
            self.count += 1
            self.stop.wait(0.25)


@pytest.mark.slow
def test_s3_outage_loses_nothing(tmp_path: Path, ladder: Ladder) -> None:
    server = EmbeddedS3(
        tmp_path / "s3",
        free_port_block(),
        "outage-" + secrets.token_hex(4),
        secrets.token_urlsafe(24),
    )
    server.start()
    stop_watch = threading.Event()
    watcher: threading.Thread | None = None
    producer: Producer | None = None
    publisher: HlsPublisher | None = None
    try:
        storage = S3Storage(server.endpoint, server.access_key, server.secret_key, "us-east-1")
        storage.ensure_bucket(BUCKET)
        # A fresh SeaweedFS allocates its volumes on the first write (seconds): do it now,
        # so that the only outage the publisher sees is the one this test makes.
        storage.put(BUCKET, "warm-up", b"x", "text/plain", "no-store")
        events: list[tuple[float, str, str]] = []

        def record(status: str, message: str, rendition: str | None) -> None:
            if status in (STORAGE_OUTAGE, STORAGE_RECOVERED):
                events.append((time.monotonic(), status, message))

        publisher = HlsPublisher(
            storage,
            BUCKET,
            PREFIX,
            tmp_path / "spool",
            label="outage",
            on_event=record,
            retry_initial_seconds=0.2,
            retry_max_seconds=1.0,
        )
        names = [v.name for v in ladder.variants]
        publisher.start(ladder.variants, SEGMENT_SECONDS)
        watch = Watch()
        watcher = threading.Thread(target=watch_playlists, args=(server, names, stop_watch, watch))
        watcher.start()
        producer = Producer(publisher, ladder)
        producer.start()

        def published() -> list[int]:
            return [s["segments"] for s in publisher.stats().values()]

        wait_until(lambda: min(published()) >= 6 and len(watch.polls) >= 6, what="live")

        # -- the outage ------------------------------------------------------------------
        server.stop()
        down_at = time.monotonic()
        wait_until(lambda: publisher.outage, timeout=10, what="StorageOutage")
        assert [e[1] for e in events] == [STORAGE_OUTAGE]
        time.sleep(0.5)  # let uploads that were in flight when it died fail
        frozen = published()
        spool = tmp_path / "spool"
        while time.monotonic() < down_at + OUTAGE_SECONDS:
            # nothing is published while down; everything else waits on disk
            stats = publisher.stats()
            assert published() == frozen
            pending = sum(s["pendingUploads"] for s in stats.values())
            spooled = len(list(spool.rglob("*.ts")))
            assert pending <= spooled <= pending + len(names)  # the producer may be mid-add
            time.sleep(0.5)
        assert publisher.outage
        assert sum(s["pendingUploads"] for s in publisher.stats().values()) >= 3 * 60
        assert producer.slowest_add < 0.5, "add_segment waited on the storage"
        added_while_down = sum(1 for t in producer.add_times if t > down_at) * len(names)

        server.start()  # same directory, same ports
        up_at = time.monotonic()
        wait_until(lambda: not publisher.outage, timeout=30, what="StorageRecovered")
        wait_until(lambda: any(t > up_at for t, _, _ in watch.polls), what="watcher sees it")
        producer.stop.set()
        producer.join()
        publisher.finish(timeout=60)
        stop_watch.set()
        watcher.join()

        # -- what was published ----------------------------------------------------------
        total = producer.count
        assert total >= 90  # 0.25 s cadence over > 25 s
        client = storage.client
        keys: set[str] = set()
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
            keys |= {o["Key"] for o in page.get("Contents", [])}
        for name in names:
            assert {layout.segment_key(PREFIX, name, i) for i in range(total)} <= keys
            body = client.get_object(Bucket=BUCKET, Key=layout.event_playlist_key(PREFIX, name))
            event = m3u8.loads(body["Body"].read().decode())
            assert event.segments.uri == [layout.segment_name(i) for i in range(total)]
            assert event.is_endlist
            body = client.get_object(Bucket=BUCKET, Key=layout.live_playlist_key(PREFIX, name))
            live = m3u8.loads(body["Body"].read().decode())
            assert live.media_sequence == total - 6 and live.is_endlist
        assert publisher.stats()[names[0]]["segments"] == total
        assert not any(spool.rglob("*.ts"))

        # -- what the player saw, and what was reported ----------------------------------
        assert watch.violations == []
        assert any(t < down_at for t, _, _ in watch.polls)
        assert any(t > up_at for t, _, _ in watch.polls)
        assert watch.unreachable > 0  # it did poll through the outage
        assert [e[1] for e in events] == [STORAGE_OUTAGE, STORAGE_RECOVERED]
        message = events[1][2]
        delayed = int(message.split()[1])
        seconds = float(message.split()[-2])
        assert message == f"uploaded {delayed} delayed segments after {seconds:.1f} s"
        assert delayed >= added_while_down
        assert OUTAGE_SECONDS - 1 <= seconds <= events[1][0] - events[0][0] + 0.5
    finally:
        if producer is not None:
            producer.stop.set()
            producer.join()
        if publisher is not None:
            publisher.close()
        stop_watch.set()
        if watcher is not None:
            watcher.join()
        server.stop()
