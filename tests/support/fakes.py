"""Test doubles, each for unit tests of one component: storage, a segment sink, and an
admission policy for the RTMP server (integration tests use the real peers instead).

- `MemoryStore`: an in-memory bucket that can be switched off;
- `CheckingStore`: wraps a store, holds chosen puts, checks every playlist put;
- `CountingStore`: an in-memory bucket that counts bytes and calls (simulated days);
- `CollectingSink`: a `SegmentSink` that keeps every segment;
- `Harness`: admits RTMP publishers into real `LiveDecoder`s; `Collector` drains a queue.
"""

from __future__ import annotations

import posixpath
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import av
import m3u8

from ingest.adapter import DecoderSession
from ingest.decode import LiveDecoder
from ingest.media import MediaQueue, SessionEnd, SessionStart
from ingest.session import PublishRefused, PublishRequest, PublishSession
from media.fanout import QueueClosed
from media.segments import Segment, VariantInfo
from packager.object_store import ObjectStore, StorageError
from tests.support.waiting import async_wait_until, wait_until

# Storage


class MemoryStore:
    """An in-memory bucket that can be switched off (unit tests of the writer only)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.objects: dict[str, tuple[bytes, str, str]] = {}
        self.failing = False
        self.calls: list[tuple[str, bool]] = []  # (key, succeeded), in call order

    def put(
        self, bucket: str, key: str, data: bytes, content_type: str, cache_control: str
    ) -> None:
        with self.lock:
            if self.failing:
                self.calls.append((key, False))
                raise StorageError(f"put {key}: connection refused (test)")
            self.objects[key] = (data, content_type, cache_control)
            self.calls.append((key, True))

    def get_text(self, bucket: str, key: str) -> str | None:
        with self.lock:
            if self.failing:
                self.calls.append((key, False))
                raise StorageError(f"get {key}: connection refused (test)")
            found = self.objects.get(key)
            return None if found is None else found[0].decode()

    def keys(self) -> set[str]:
        with self.lock:
            return set(self.objects)

    def text(self, key: str) -> str:
        with self.lock:
            return self.objects[key][0].decode()


class CheckingStore:
    """Wraps a store: holds chosen keys until released, and checks every playlist put.

    Each playlist written is parsed; any segment (or variant playlist) it references that
    was not stored before the put began is recorded in `violations`.
    """

    def __init__(self, inner: ObjectStore, prefix: str) -> None:
        self.inner = inner
        self.prefix = prefix
        self.lock = threading.Lock()
        self.stored: set[str] = set()
        self.playlist_puts: list[tuple[str, str]] = []  # (key, text)
        self.violations: list[str] = []
        self._gates: dict[str, threading.Event] = {}
        self.gate_all_segments: threading.Event | None = None

    def hold(self, key: str) -> threading.Event:
        """Make the put of `key` wait until the returned event is set."""
        gate = threading.Event()
        self._gates[key] = gate
        return gate

    def put(
        self, bucket: str, key: str, data: bytes, content_type: str, cache_control: str
    ) -> None:
        gate = self._gates.get(key)
        if gate is None and key.endswith(".ts"):
            gate = self.gate_all_segments
        if gate is not None:
            gate.wait(60)
        if key.endswith(".m3u8"):
            self._check(key, data.decode())
        self.inner.put(bucket, key, data, content_type, cache_control)
        with self.lock:
            self.stored.add(key)
            if key.endswith(".m3u8"):
                self.playlist_puts.append((key, data.decode()))

    def get_text(self, bucket: str, key: str) -> str | None:
        return self.inner.get_text(bucket, key)

    def _check(self, key: str, text: str) -> None:
        folder = key.rsplit("/", 1)[0]
        parsed = m3u8.loads(text)
        uris = [p.uri for p in parsed.playlists] if parsed.is_variant else parsed.segments.uri
        with self.lock:
            for uri in uris:
                if posixpath.normpath(f"{folder}/{uri}") not in self.stored:
                    self.violations.append(f"{key} lists {uri} before it was stored")

    def playlists(self, key: str) -> list[str]:
        with self.lock:
            return [text for k, text in self.playlist_puts if k == key]


class CountingStore:
    """An in-memory bucket that keeps the latest version of each object and counts the
    bytes of every put; `failing` makes every call fail (an outage)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.objects: dict[str, bytes] = {}
        self.put_bytes = 0
        self.puts: list[tuple[str, int]] = []  # (key, size), in call order
        self.failed_calls = 0
        self.failing = False

    def put(
        self, bucket: str, key: str, data: bytes, content_type: str, cache_control: str
    ) -> None:
        with self.lock:
            if self.failing:
                self.failed_calls += 1
                raise StorageError(f"put {key}: connection refused (test)")
            self.objects[key] = data
            self.put_bytes += len(data)
            self.puts.append((key, len(data)))

    def get_text(self, bucket: str, key: str) -> str | None:
        with self.lock:
            if self.failing:
                self.failed_calls += 1
                raise StorageError(f"get {key}: connection refused (test)")
            data = self.objects.get(key)
        return None if data is None else data.decode()

    def text(self, key: str) -> str:
        with self.lock:
            return self.objects[key].decode()


# A segment sink


@dataclass
class CollectingSink:
    """A SegmentSink that keeps everything (thread-safe)."""

    variants: list[VariantInfo] = field(default_factory=list)
    segment_seconds: float | None = None
    segments: list[Segment] = field(default_factory=list)
    starts: int = 0
    finished: int = 0
    closed: int = 0
    on_segment: Callable[[Segment], None] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, variants: Sequence[VariantInfo], segment_seconds: float) -> None:
        with self.lock:
            assert not self.segments, "start() after a segment"
            self.variants = list(variants)
            self.segment_seconds = segment_seconds
            self.starts += 1

    def add_segment(self, segment: Segment) -> None:
        if self.on_segment is not None:
            self.on_segment(segment)
        with self.lock:
            assert self.starts == 1, "segment before start()"
            self.segments.append(segment)

    def finish(self, timeout_seconds: float) -> None:
        with self.lock:
            self.finished += 1

    def close(self) -> None:
        with self.lock:
            self.closed += 1

    def by_rendition(self) -> dict[str, list[Segment]]:
        out: dict[str, list[Segment]] = {}
        for segment in sorted(self.segments, key=lambda s: (s.rendition, s.sequence)):
            out.setdefault(segment.rendition, []).append(segment)
        return out


# Consuming a MediaQueue


class Collector:
    """Drains a MediaQueue in a thread and records what came out (frames are not kept)."""

    def __init__(self, queue: MediaQueue) -> None:
        self.queue = queue
        self.events: list[tuple[Any, ...]] = []
        self.starts: list[SessionStart] = []
        self.ends: list[SessionEnd] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                item = self.queue.get(0.1)
            except QueueClosed:
                return
            if item is None:
                continue
            with self._lock:
                if isinstance(item, SessionStart):
                    self.starts.append(item)
                    self.events.append(("start", item.session))
                elif isinstance(item, SessionEnd):
                    self.ends.append(item)
                    self.events.append(("end", item.session, item.reason))
                elif isinstance(item, av.VideoFrame):
                    self.events.append(("video", item.pts, item.width, item.height))
                elif isinstance(item, av.AudioFrame):
                    self.events.append(("audio", item.pts, item.sample_rate))
                else:
                    self.events.append(("packet", item.stream.type, item.pts, item.size))

    def kinds(self, kind: str) -> list[tuple[Any, ...]]:
        with self._lock:
            return [e for e in self.events if e[0] == kind]

    def pts(self, kind: str) -> list[int]:
        return [e[1] for e in self.kinds(kind)]

    def wait_ends(self, count: int, timeout_seconds: float = 30.0) -> None:
        wait_until(lambda: len(self.ends) >= count, timeout_seconds, f"{count} SessionEnd")

    async def async_wait_ends(self, count: int, timeout_seconds: float = 30.0) -> None:
        await async_wait_until(
            lambda: len(self.ends) >= count, timeout_seconds, f"{count} SessionEnd"
        )

    def stop(self) -> None:
        self.queue.close()
        self._thread.join(5)


# An admission policy for the tests, with one LiveDecoder per stream key


@dataclass
class Job:
    key: str
    queue: MediaQueue
    decoder: LiveDecoder
    collector: Collector
    media_calls: int = 0
    video_ex_header: bool = False  # a video payload had the enhanced-RTMP bit
    metadata: list[dict[str, Any]] = field(default_factory=list)
    closes: list[str] = field(default_factory=list)
    requests: list[PublishRequest] = field(default_factory=list)


class _TrackedSession(PublishSession):
    def __init__(self, harness: Harness, job: Job, inner: DecoderSession) -> None:
        self.harness, self.job, self.inner = harness, job, inner

    def on_metadata(self, metadata: Mapping[str, Any]) -> None:
        self.job.metadata.append(dict(metadata))
        self.inner.on_metadata(metadata)

    def on_media(self, kind: int, timestamp_ms: int, payload: bytes) -> None:
        self.job.media_calls += 1
        if kind == 9 and payload and payload[0] & 0x80:
            self.job.video_ex_header = True
        self.inner.on_media(kind, timestamp_ms, payload)

    def on_data(self, data: bytes) -> None:
        self.inner.on_data(data)

    def wait_for_room(self) -> Awaitable[None] | None:
        return self.inner.wait_for_room()

    def on_close(self, reason: str) -> None:
        self.job.closes.append(reason)
        self.harness.publishing.discard(self.job.key)
        self.inner.on_close(reason)


class Harness:
    """Admits any key except `refused_keys`, and refuses a key already publishing."""

    def __init__(self, refused_keys: Sequence[str] = ()) -> None:
        self.refused_keys = set(refused_keys)
        self.jobs: dict[str, Job] = {}
        self.publishing: set[str] = set()
        self.requests: list[PublishRequest] = []
        self.refusals: list[str] = []

    def job(self, key: str) -> Job:
        if key not in self.jobs:
            queue = MediaQueue(max_items=100_000)
            self.jobs[key] = Job(key, queue, LiveDecoder(queue, label=key), Collector(queue))
        return self.jobs[key]

    async def admit(self, request: PublishRequest) -> PublishSession:
        self.requests.append(request)
        key = request.stream_key
        if key in self.refused_keys:
            self.refusals.append(key)
            raise PublishRefused("unknown stream key")
        if key in self.publishing:
            self.refusals.append(key)
            raise PublishRefused("stream key already publishing")
        job = self.job(key)
        job.requests.append(request)
        self.publishing.add(key)
        return _TrackedSession(self, job, DecoderSession(job.decoder, request))

    def close(self) -> None:
        for job in self.jobs.values():
            job.decoder.stop()
            job.collector.stop()
