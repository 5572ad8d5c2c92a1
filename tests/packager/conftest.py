"""Packager test helpers: a real TS ladder made once with ffmpeg, storage doubles, waiting."""

from __future__ import annotations

import csv
import posixpath
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import m3u8
import pytest

from media.segments import Segment, VariantInfo
from packager.object_store import ObjectStore, StorageError

SEGMENT_SECONDS = 0.5

# name, width, height, video kb/s
_RUNGS = [("360p", 320, 180, 400), ("240p", 256, 144, 200), ("144p", 160, 96, 100)]


@dataclass(frozen=True)
class Ladder:
    """Ten real MPEG-TS segments (video + audio) per rendition."""

    variants: list[VariantInfo]
    segments: dict[str, list[tuple[bytes, float]]]  # rendition -> [(data, duration)]

    def segment(self, rendition: str, sequence: int, **kwargs: object) -> Segment:
        """Segment `sequence` of `rendition`, cycling through the ten real ones."""
        data, duration = self.segments[rendition][sequence % len(self.segments[rendition])]
        return Segment(
            rendition=rendition,
            sequence=sequence,
            start_seconds=sequence * SEGMENT_SECONDS,
            duration_seconds=duration,
            data=data,
            **kwargs,  # type: ignore[arg-type]
        )


@pytest.fixture(scope="session")
def ladder(tmp_path_factory: pytest.TempPathFactory) -> Ladder:
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg CLI not installed")
    root = tmp_path_factory.mktemp("ladder")
    variants = []
    segments: dict[str, list[tuple[bytes, float]]] = {}
    for name, width, height, kbps in _RUNGS:
        out = root / name
        out.mkdir()
        subprocess.run(
            [
                "ffmpeg",
                "-hide_banner",
                "-loglevel",
                "error",
                "-f",
                "lavfi",
                "-i",
                f"testsrc2=size={width}x{height}:rate=24",
                "-f",
                "lavfi",
                "-i",
                "sine=frequency=440:sample_rate=48000",
                "-t",
                "5",
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-g",
                "12",
                "-keyint_min",
                "12",
                "-sc_threshold",
                "0",
                "-b:v",
                f"{kbps}k",
                "-c:a",
                "aac",
                "-b:a",
                "32k",
                "-f",
                "segment",
                "-segment_time",
                str(SEGMENT_SECONDS),
                "-segment_list",
                str(out / "list.csv"),
                "-segment_list_type",
                "csv",
                str(out / "seg_%06d.ts"),
            ],
            check=True,
            timeout=60,
        )
        with open(out / "list.csv", newline="") as f:
            rows = list(csv.reader(f))
        segments[name] = [
            ((out / row[0]).read_bytes(), float(row[2]) - float(row[1])) for row in rows
        ]
        variants.append(
            VariantInfo(name, width, height, 24.0, "avc1.42c00d,mp4a.40.2", (kbps + 32) * 1000)
        )
    return Ladder(variants, segments)


def wait_until(condition: Callable[[], bool], timeout: float = 20.0, what: str = "") -> None:
    """Poll `condition` until true; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        time.sleep(0.01)


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
