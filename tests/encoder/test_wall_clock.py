"""Every segment carries the wall-clock instant its first frame arrived (arrived_at)."""

from __future__ import annotations

import dataclasses
import itertools
import threading
import time
from datetime import datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from encoder.live_encoder import LiveEncoder
from encoder.templates import get_template
from ingest.media import MediaQueue, SessionEnd, WallClockOrigin
from media.clock import utc_instant
from media.segments import Segment
from tests.support.fakes import CollectingSink
from tests.support.media import make_source, open_live, session_start

ORIGIN = 1_795_000_000.0  # when the first session's media began arriving (Unix seconds)
RECONNECT_GAP_SECONDS = 95.5  # wall time between the two sessions


@pytest.fixture(scope="module")
def source_240p(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 s of 320x240@30 + AAC, keyframe every second, FLV."""
    return make_source(tmp_path_factory.mktemp("wall") / "240p.flv", 320, 240, 4)


def feed_session(
    path: Path,
    queue: MediaQueue,
    session: int,
    *,
    wall_clock: WallClockOrigin | None,
    decode: bool = True,
    realtime: bool = False,
    keep: list[Any] | None = None,
) -> None:
    """Demux (and decode) `path` into `queue`; `realtime`: each item when its time comes."""
    container = open_live(path)
    if keep is not None:
        keep.append(container)
    queue.put(dataclasses.replace(session_start(container, session), wall_clock=wall_clock))
    started = time.monotonic()
    streams = [*container.streams.video[:1], *container.streams.audio[:1]]
    for packet in container.demux(streams):
        items = list(packet.decode()) if decode else ([packet] if packet.size else [])
        for item in items:
            if realtime and item.pts is not None and item.time_base is not None:
                due = started + float(item.pts * item.time_base)
                time.sleep(max(0.0, due - time.monotonic()))
            while len(queue) >= queue.max_items:
                time.sleep(0.001)
            queue.put(item)
    queue.put(SessionEnd(session, "end of file"))


def run(template_id: int, sessions: list[WallClockOrigin | None], source: Path) -> list[Segment]:
    sink = CollectingSink()
    queue = MediaQueue()
    encoder = LiveEncoder(get_template(template_id), queue, sink, label="wall")
    encoder.start()
    keep: list[Any] = []
    for session, origin in enumerate(sessions):
        feed_session(source, queue, session, wall_clock=origin, decode=template_id != 3, keep=keep)
    queue.close()
    encoder.stop(timeout_seconds=60)
    assert encoder.failed is None
    [segments] = sink.by_rendition().values()
    return segments


def seconds(instant: datetime | None) -> float:
    assert instant is not None
    return instant.timestamp()


@pytest.mark.parametrize("template_id", [2, 3])  # transcoded, and a copy (passthrough)
def test_segments_map_the_ingests_origin_by_media_time(template_id: int, source_240p: Path) -> None:
    first = WallClockOrigin(ORIGIN, Fraction(0))
    second = WallClockOrigin(ORIGIN + RECONNECT_GAP_SECONDS, Fraction(0))
    segments = run(template_id, [first, second], source_240p)
    reconnect = next(i for i, s in enumerate(segments) if s.discontinuity)
    assert 2 <= reconnect < len(segments) - 1
    offset = segments[reconnect].start_seconds  # where the second session starts
    for index, segment in enumerate(segments):
        origin, session_start_seconds = (first, 0.0) if index < reconnect else (second, offset)
        # The session's own timestamps start near 0 (FLV): arrival = origin + media time.
        expected = origin.at(segment.start_seconds - session_start_seconds)
        assert seconds(segment.arrived_at) == pytest.approx(expected, abs=0.05), index
    # Within a session the instants advance exactly as the media does.
    for a, b in itertools.pairwise(segments[:reconnect]):
        assert seconds(b.arrived_at) - seconds(a.arrived_at) == pytest.approx(
            b.start_seconds - a.start_seconds, abs=1e-5
        )
    assert segments[0].arrived_at == utc_instant(seconds(segments[0].arrived_at))  # UTC


@pytest.mark.slow  # real time or subprocesses: left out of make test-fast
def test_a_live_fed_in_real_time_is_dated_by_when_the_encoder_saw_it(source_240p: Path) -> None:
    """No origin from the ingest: the encoder's own wall clock when it saw the session's
    first media, then media time."""
    emitted: list[float] = []
    lock = threading.Lock()

    def on_segment(segment: Segment) -> None:
        with lock:
            emitted.append(time.time())

    sink = CollectingSink(on_segment=on_segment)
    queue = MediaQueue()
    encoder = LiveEncoder(get_template(2), queue, sink, label="realtime")
    encoder.start()
    fed_at = time.time()
    feed_session(source_240p, queue, 0, wall_clock=None, realtime=True)
    queue.close()
    encoder.stop(timeout_seconds=60)
    assert encoder.failed is None
    segments = sink.segments
    assert len(segments) >= 2
    assert fed_at <= seconds(segments[0].arrived_at) <= fed_at + 0.5
    for segment, emitted_at in zip(segments, emitted, strict=True):
        # Its last frame arrived when the media said; it was emitted soon after.
        arrived_end = seconds(segment.arrived_at) + segment.duration_seconds
        assert arrived_end - 0.25 <= emitted_at <= arrived_end + 1.5, segment.sequence
    for a, b in itertools.pairwise(segments):
        assert seconds(b.arrived_at) - seconds(a.arrived_at) == pytest.approx(
            b.start_seconds - a.start_seconds, abs=1e-5
        )
