"""A live's recording made in-process: sources fed into a LiveEncoder whose sink is a
real HlsWriter on S3, faster than real time, each session's wall clock given (so the
program date-times, and the gap of a reconnect, are what the test says)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from encoder.live_encoder import LiveEncoder
from encoder.templates import get_template
from ingest.media import MediaQueue, SessionEnd, WallClockOrigin
from packager.hls import HlsWriter
from packager.object_store import S3Storage
from tests.support.media import open_live, session_start

START = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)  # the first session's first frame
GAP_SECONDS = 5.0  # the publisher's absence between the two sessions of a gapped live


@dataclass(frozen=True)
class Recorded:
    """A live recorded into `bucket` under `prefix`, from `source` (each session)."""

    storage: S3Storage
    bucket: str
    prefix: str
    source: Path
    session_seconds: float


def feed_session(
    path: Path, queue: MediaQueue, session: int, unix_seconds: float
) -> av.container.InputContainer:
    """Decode `path` into `queue` as one publish session whose media arrived from
    `unix_seconds` on (its first timestamp then)."""
    container = open_live(path)
    start = session_start(container, session)
    origin = WallClockOrigin(unix_seconds, Fraction(0))
    queue.put(dataclasses.replace(start, wall_clock=origin))
    streams = [*container.streams.video[:1], *container.streams.audio[:1]]
    for packet in container.demux(streams):
        for item in packet.decode():
            while len(queue) >= queue.max_items:
                time.sleep(0.001)
            queue.put(item)
    queue.put(SessionEnd(session, "end of file"))
    # Not closed: the session's stream parameters refer to it while the encoder runs.
    return container


def record_live(
    storage: S3Storage,
    bucket: str,
    prefix: str,
    sessions: Sequence[tuple[Path, float]],
    spool: Path,
    *,
    template_id: int = 4,
) -> None:
    """Encode each (source, wall-clock start) as a session of one live into `prefix`."""
    writer = HlsWriter(storage, bucket, prefix, spool, label="recording")
    queue = MediaQueue(240)
    encoder = LiveEncoder(get_template(template_id), queue, writer, label="recording")
    encoder.start()
    containers = [
        feed_session(path, queue, session, unix_seconds)
        for session, (path, unix_seconds) in enumerate(sessions)
    ]
    queue.close()
    encoder.stop(timeout_seconds=300)
    for container in containers:
        container.close()
    if encoder.failed is not None:
        raise encoder.failed


def decoded_frames(path: Path, width: int | None = None, height: int | None = None) -> list:  # type: ignore[type-arg]
    """Every video frame of a media file as a luma array (scaled to width x height)."""
    frames = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            if width is not None and height is not None:
                frame = frame.reformat(width, height, "yuv420p", interpolation="BICUBIC")
            frames.append(frame.to_ndarray(format="gray").astype(np.float64))
    return frames


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a - b) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)
