"""Storage outages: a long one in simulated time (an in-memory store, a stepped clock),
and a short one between the writer and a real SeaweedFS (the real peer, its network cut)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from pathlib import Path

import m3u8
import pytest

from packager import layout
from packager.hls import STORAGE_OUTAGE, STORAGE_RECOVERED, HlsWriter
from packager.object_store import S3Storage
from packager.s3server import EmbeddedS3
from tests.support.clocks import FakeClock
from tests.support.fakes import CheckingStore, CountingStore
from tests.support.media import LADDER_SEGMENT_SECONDS, Ladder
from tests.support.waiting import wait_until

BUCKET = "live"
PREFIX = "events/outage"
WORKERS = 4
CADENCE_SECONDS = 0.25  # one segment per rendition, whatever the storage does
OUTAGE_SECONDS = 20.0


def names_listed(text: str) -> list[str]:
    return list(m3u8.loads(text).segments.uri)


def test_a_20_s_outage_in_simulated_time_loses_nothing(tmp_path: Path, ladder: Ladder) -> None:
    clock = FakeClock()
    memory = CountingStore()
    store = CheckingStore(memory, PREFIX)  # no playlist may list what is not stored
    events: list[tuple[float, str, str]] = []

    def record(status: str, message: str, rendition: str | None) -> None:
        if status in (STORAGE_OUTAGE, STORAGE_RECOVERED):
            events.append((clock.monotonic(), status, message))

    writer = HlsWriter(
        store,
        BUCKET,
        PREFIX,
        tmp_path / "spool",
        label="outage",
        on_event=record,
        retry_initial_seconds=0.2,
        retry_max_seconds=1.0,
        upload_workers=WORKERS,
        clock=clock,
    )
    names = [v.name for v in ladder.variants]
    writer.start(ladder.variants, LADDER_SEGMENT_SECONDS)
    count = 0
    slowest_add = 0.0

    def step() -> None:
        """One cadence: a segment of every rendition, then the clock moves on."""
        nonlocal count, slowest_add
        for name in names:
            started = time.monotonic()
            writer.add_segment(ladder.segment(name, count))
            slowest_add = max(slowest_add, time.monotonic() - started)
        count += 1
        clock.step(CADENCE_SECONDS, WORKERS)

    def published() -> list[int]:
        return [s.segments for s in writer.stats().values()]

    wall_started = time.monotonic()
    for _ in range(8):
        step()
    assert min(published()) == 8  # live: every segment listed as it comes

    # -- the outage: 20 simulated seconds ----------------------------------------------
    memory.failing = True
    down_at = clock.monotonic()
    step()  # the uploads of this step fail
    assert writer.outage and [e[1] for e in events] == [STORAGE_OUTAGE]
    frozen = published()
    spool = tmp_path / "spool"
    while clock.monotonic() < down_at + OUTAGE_SECONDS:
        step()
        assert published() == frozen  # nothing is listed while down
        stats = writer.stats()
        pending = sum(s.pending_uploads for s in stats.values())
        assert pending == len(list(spool.rglob("*.ts")))  # everything else waits on disk
    assert writer.outage
    assert sum(s.pending_uploads for s in writer.stats().values()) >= 3 * 80
    # One probe at a time with backoff (0.2 s doubling to 1 s), not a retry storm: the
    # workers' first failures, then about one probe per simulated second.
    assert memory.failed_calls <= WORKERS + 2 + OUTAGE_SECONDS / 1.0 + 3
    added_while_down = (count - 8) * len(names)

    memory.failing = False
    up_at = clock.monotonic()
    while writer.outage:
        step()
        assert clock.monotonic() - up_at <= 1.0 + 2 * CADENCE_SECONDS, "not back in time"
    for _ in range(4):
        step()
    writer.finish(timeout_seconds=60)
    took = time.monotonic() - wall_started
    print(f"{clock.monotonic():.1f} simulated seconds in {took:.2f} s")

    # -- what was listed, and what was reported -----------------------------------------
    assert store.violations == []
    assert slowest_add < 0.5, "add_segment waited on the storage"
    for name in names:
        assert {layout.segment_key(PREFIX, name, i) for i in range(count)} <= memory.objects.keys()
        event = m3u8.loads(memory.text(layout.event_playlist_key(PREFIX, name)))
        assert event.segments.uri == [layout.segment_name(i) for i in range(count)]
        assert event.is_endlist and not any(s.discontinuity for s in event.segments)
        live = m3u8.loads(memory.text(layout.live_playlist_key(PREFIX, name)))
        assert live.media_sequence == count - 6 and live.is_endlist
    assert not any(spool.rglob("*.ts"))
    assert [e[1] for e in events] == [STORAGE_OUTAGE, STORAGE_RECOVERED]
    message = events[1][2]
    delayed = int(message.split()[1])
    seconds = float(message.split()[-2])
    assert message == f"uploaded {delayed} delayed segments after {seconds:.1f} s"
    assert delayed >= added_while_down
    # The outage lasted, in the writer's time, from the first failure to the upload of
    # the last delayed segment: the 20 s and at most one backoff more.
    assert OUTAGE_SECONDS <= seconds <= OUTAGE_SECONDS + 1.0 + 2 * CADENCE_SECONDS
    assert events[1][0] - events[0][0] == pytest.approx(seconds, abs=0.06)
    assert took < 10.0  # simulated: no real outage is waited for (0.8 s measured)


class CuttableLink:
    """A TCP relay to a real server whose link the test can cut: while cut, every
    connection (pooled ones included) is dropped and new ones are closed at once, as a
    network outage does; restored, it relays again."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._cut = threading.Event()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._closed = False
        threading.Thread(target=self._accept, name="link-accept", daemon=True).start()

    def cut(self) -> None:
        self._cut.set()
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            _close(sock)

    def restore(self) -> None:
        self._cut.clear()

    def close(self) -> None:
        self._closed = True
        self.cut()
        _close(self._listener)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._cut.is_set():
                _close(client)
                continue
            try:
                upstream = socket.create_connection(self._target, timeout=2)
            except OSError:
                _close(client)
                continue
            with self._lock:
                self._sockets |= {client, upstream}
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(source, sink), daemon=True).start()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        _close(source)
        _close(sink)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


class Producer(threading.Thread):
    """The encoder: one segment per rendition every 0.25 s, whatever the storage does."""

    def __init__(self, writer: HlsWriter, ladder: Ladder) -> None:
        super().__init__(name="producer")
        self.writer = writer
        self.ladder = ladder
        self.stop = threading.Event()
        self.count = 0
        self.slowest_add = 0.0

    def run(self) -> None:
        while not self.stop.is_set():
            for variant in self.ladder.variants:
                started = time.monotonic()
                self.writer.add_segment(self.ladder.segment(variant.name, self.count))
                self.slowest_add = max(self.slowest_add, time.monotonic() - started)
            self.count += 1
            self.stop.wait(CADENCE_SECONDS)


@pytest.mark.slow  # real time or subprocesses: left out of make test-fast
def test_a_real_s3_cut_off_mid_live_loses_nothing(
    s3_server: EmbeddedS3, bucket: str, tmp_path: Path, ladder: Ladder
) -> None:
    """The real peer: SeaweedFS behind a link that goes down for a while."""
    link = CuttableLink("127.0.0.1", s3_server.ports.s3)
    producer: Producer | None = None
    writer: HlsWriter | None = None
    try:
        endpoint = f"http://127.0.0.1:{link.port}"
        storage = S3Storage(endpoint, s3_server.access_key, s3_server.secret_key, "us-east-1")
        events: list[str] = []
        store = CheckingStore(storage, PREFIX)
        writer = HlsWriter(
            store,
            bucket,
            PREFIX,
            tmp_path / "spool",
            label="outage",
            on_event=lambda status, message, rendition: events.append(status),
            retry_initial_seconds=0.1,
            retry_max_seconds=0.5,
        )
        writer.start(ladder.variants, LADDER_SEGMENT_SECONDS)
        producer = Producer(writer, ladder)
        producer.start()
        published = lambda: [s.segments for s in writer.stats().values()]  # noqa: E731
        wait_until(lambda: min(published()) >= 4, what="live")

        link.cut()
        wait_until(lambda: writer.outage, timeout_seconds=10, what="StorageOutage")
        during = producer.count
        wait_until(lambda: producer.count >= during + 8, what="segments while down")
        assert [s.pending_uploads for s in writer.stats().values()] != [0, 0, 0]
        link.restore()
        wait_until(lambda: not writer.outage, timeout_seconds=30, what="StorageRecovered")
        producer.stop.set()
        producer.join()
        writer.finish(timeout_seconds=60)

        total = producer.count
        assert producer.slowest_add < 0.5, "add_segment waited on the storage"
        assert store.violations == []
        assert [e for e in events if e in (STORAGE_OUTAGE, STORAGE_RECOVERED)] == [
            STORAGE_OUTAGE,
            STORAGE_RECOVERED,
        ]
        for variant in ladder.variants:
            key = layout.event_playlist_key(PREFIX, variant.name)
            text = storage.get_text(bucket, key)
            assert text is not None
            assert names_listed(text) == [layout.segment_name(i) for i in range(total)]
            for index in range(total):
                storage.client.head_object(
                    Bucket=bucket, Key=layout.segment_key(PREFIX, variant.name, index)
                )
        assert not any((tmp_path / "spool").rglob("*.ts"))
    finally:
        if producer is not None:
            producer.stop.set()
            producer.join()
        if writer is not None:
            writer.close()
        link.close()
