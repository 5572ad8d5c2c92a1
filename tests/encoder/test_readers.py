"""Readers of a live's tracks: a slow one changes nothing for the others, a late one
starts with the codec configuration and a keyframe, and what it reads decodes."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import av
import pytest

from encoder.encoded import EncodedItem
from encoder.live_encoder import LiveEncoder
from encoder.templates import get_template
from ingest.media import MediaQueue
from media.fanout import QueueClosed, Reader
from tests.support.fakes import CollectingSink
from tests.support.media import feed, make_source
from tests.support.waiting import wait_until

ITEMS_PER_SECOND = 30 + 48_000 / 1024


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 s of 640x360: template 2 encodes its 360p rung."""
    return make_source(tmp_path_factory.mktemp("readers") / "src.flv", 640, 360, 8)


def live_pace(started: float):  # type: ignore[no-untyped-def]
    def pace(offered: int) -> None:
        delay = started + offered / ITEMS_PER_SECOND / 4 - time.monotonic()  # 4x real time
        if delay > 0:
            time.sleep(delay)

    return pace


def collect(reader: Reader[EncodedItem], into: list[EncodedItem], stop: threading.Event) -> None:
    try:
        while not stop.is_set():
            item = reader.get(timeout=0.1)
            if item is not None:
                into.append(item)
    except QueueClosed:
        pass


def test_a_reader_that_never_reads_costs_the_live_nothing(source: Path, caplog) -> None:
    queue = MediaQueue(120)
    sink = CollectingSink()
    encoder = LiveEncoder(get_template(2), queue, sink, label="slow")
    stuck = encoder.encoded.subscribe("stuck viewer", max_items=5)  # nobody reads it
    encoder.start()
    with caplog.at_level(logging.WARNING, logger="media.fanout"):
        feed(source, queue, on_item=live_pace(time.monotonic()))
        queue.close()
        encoder.stop()
    segments = sink.by_rendition()["360p"]
    assert [s.sequence for s in segments] == list(range(len(segments)))
    assert sum(s.duration_seconds for s in segments) == pytest.approx(8.0, abs=0.1)
    assert stuck.dropped_total > 0  # it dropped, for itself only
    assert encoder.stats()[0].dropped_frames == 0
    reports = [r for r in caplog.records if "stuck viewer too slow" in r.getMessage()]
    assert 1 <= len(reports) <= 4  # at the start of the burst, then every 2 s of it


def test_a_reader_joining_mid_live_starts_with_the_configuration_and_a_keyframe(
    source: Path,
) -> None:
    queue = MediaQueue(120)
    sink = CollectingSink()
    encoder = LiveEncoder(get_template(2), queue, sink, label="late")
    encoder.start()
    items: list[EncodedItem] = []
    stop = threading.Event()
    reader_thread: threading.Thread | None = None

    def on_item(offered: int) -> None:
        nonlocal reader_thread
        live_pace(started)(offered)
        if reader_thread is None and sink.segments:  # the live is under way
            reader = encoder.encoded.subscribe("late viewer", max_items=10_000)
            reader_thread = threading.Thread(target=collect, args=(reader, items, stop))
            reader_thread.start()

    started = time.monotonic()
    feed(source, queue, on_item=on_item)
    queue.close()
    encoder.stop()
    assert reader_thread is not None
    reader_thread.join(10)
    stop.set()
    assert items and items[0].kind == "start" and items[0].rendition == "360p"
    assert items[0].config is not None
    video = [i.video for i in items if i.kind == "video" and i.video is not None]
    assert video and video[0].keyframe  # it started at a keyframe
    assert video[0].pts > 0  # joined mid-live, not at the start
    # What a late reader gets decodes from its first packet on, with the configuration.
    decoder = av.CodecContext.create("h264", "r")
    decoder.extradata = items[0].config.video_template.codec_context.extradata
    frames = 0
    for packet in video:
        frames += len(decoder.decode(av.Packet(packet.data)))
    frames += len(decoder.decode(None))
    assert frames == len(video)
    audio = [i for i in items if i.kind == "audio"]
    assert audio  # the shared AAC packets come with each rendition
    wait_until(lambda: sink.finished == 1)
