"""Media helpers for the encoder tests: make sources, feed a MediaQueue, probe output."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from ingest.media import (
    AudioParams,
    MediaQueue,
    SessionEnd,
    SessionStart,
    VideoParams,
    nominal_frame_rate,
)
from media.segments import Segment, VariantInfo

LIVE_PROBE = {"probesize": "32", "analyzeduration": "0"}  # as ingest opens a live FLV


def make_source(
    path: Path,
    width: int,
    height: int,
    seconds: float,
    *,
    fps: int = 30,
    gop: int = 30,
    fmt: str = "flv",
    audio: bool = True,
) -> Path:
    """testsrc2 + sine, H.264 (ultrafast) + AAC, like a publisher's RTMP stream."""
    cmd = [
        "ffmpeg",
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
        f"testsrc2=size={width}x{height}:rate={fps}",
    ]
    if audio:
        cmd += ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]
    cmd += [
        "-t",
        str(seconds),
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-g",
        str(gop),
        "-pix_fmt",
        "yuv420p",
    ]
    if audio:
        cmd += ["-c:a", "aac", "-b:a", "96k", "-ac", "2"]
    cmd += ["-f", fmt, str(path)]
    subprocess.run(cmd, check=True)
    return path


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


def open_live(path: Path) -> av.container.InputContainer:
    return av.open(str(path), options=LIVE_PROBE)


def session_start(container: av.container.InputContainer, session: int) -> SessionStart:
    """The SessionStart ingest would put for this container (live probe: size may be 0)."""
    video = audio = None
    if container.streams.video:
        v = container.streams.video[0]
        rate = v.average_rate
        video = VideoParams(
            v.codec_context.name,
            v.codec_context.width,
            v.codec_context.height,
            nominal_frame_rate(Fraction(rate)) if rate else None,
            Fraction(v.time_base),
            v,
        )
    if container.streams.audio:
        a = container.streams.audio[0]
        audio = AudioParams(
            a.codec_context.name,
            a.codec_context.sample_rate,
            a.codec_context.channels,
            Fraction(a.time_base),
            a,
        )
    return SessionStart(session, video, audio)


def feed(
    path: Path,
    queue: MediaQueue,
    session: int = 0,
    *,
    decode: bool = True,
    block: bool = True,
    on_item: Callable[[int], None] | None = None,
    keep: list[Any] | None = None,
) -> int:
    """Demux (and decode) `path` into `queue` as ingest does; returns media items offered.

    block=True waits while the queue is full (nothing dropped); False drops like live.
    """
    container = open_live(path)
    if keep is not None:
        keep.append(container)  # passthrough packets refer to it
    queue.put(session_start(container, session))
    offered = 0
    streams = [s for s in (*container.streams.video[:1], *container.streams.audio[:1])]
    for packet in container.demux(streams):
        items: list[Any]
        if decode:
            items = list(packet.decode())
        elif packet.size:
            items = [packet]
        else:
            items = []
        for item in items:
            while block and len(queue) >= queue.max_items:
                time.sleep(0.001)
            queue.put(item)
            offered += 1
            if on_item is not None:
                on_item(offered)
    queue.put(SessionEnd(session, "end of file"))
    return offered


def ffprobe(data: bytes, path: Path, *entries: str) -> tuple[dict[str, Any], str]:
    """ffprobe (CLI) a TS in memory: (JSON, stderr at -v error)."""
    path.write_bytes(data)
    result = subprocess.run(
        ["ffprobe", "-v", "error", "-of", "json", "-show_streams", *entries, str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout), result.stderr.strip()


def wait_until(predicate: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()
