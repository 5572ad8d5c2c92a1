"""One RTMP session's messages as the FLV stream PyAV reads: priming and lost tags."""

from __future__ import annotations

from ingest.feed import ByteFeed
from ingest.flvstream import FlvSessionWriter
from ingest.formats import flv

AVC_CONFIG = b"\x17\x00\x00\x00\x00" + bytes(30)
AAC_CONFIG = b"\xaf\x00\x11\x90"  # 48 kHz mono


def key(size: int) -> bytes:
    return b"\x17\x01\x00\x00\x00" + bytes(size)


def inter(size: int) -> bytes:
    return b"\x27\x01\x00\x00\x00" + bytes(size)


def audio(size: int) -> bytes:
    return b"\xaf\x01" + bytes(size)


def stream_tags(feed: ByteFeed) -> tuple[int, list[flv.Tag]]:
    feed.close()
    return flv.parse(feed.read())


def test_held_until_both_kinds_then_the_first_of_each_kind_first() -> None:
    feed = ByteFeed()
    writer = FlvSessionWriter(feed)
    writer.on_metadata({"encoder": "x"})  # says nothing of the kinds
    for kind, ts, payload in [(9, 0, AVC_CONFIG), (9, 0, key(10)), (9, 33, inter(10))]:
        writer.on_tag(kind, ts, payload, arrived=None)
    assert not writer.primed and feed.buffered_bytes == 0  # video only, so far
    writer.on_tag(8, 0, AAC_CONFIG, arrived=None)
    assert writer.primed and writer.kinds == {8, 9}
    writer.on_tag(9, 66, inter(10), arrived=None)
    flags, tags = stream_tags(feed)
    assert flags == 5
    assert [(t.kind, t.timestamp_ms) for t in tags] == [
        (18, 0),  # onMetaData
        (9, 0),
        (8, 0),  # the first audio tag before the rest of the held video
        (9, 0),
        (9, 33),
        (9, 66),
    ]
    assert writer.audio_config is not None and writer.audio_config.sample_rate == 48000


def test_metadata_saying_video_only_primes_at_the_first_video_tag() -> None:
    feed = ByteFeed()
    writer = FlvSessionWriter(feed)
    writer.on_metadata({"videocodecid": 7.0, "width": 320.0})
    writer.on_tag(9, 0, AVC_CONFIG, arrived=None)
    assert writer.primed and writer.kinds == {9}
    writer.on_tag(8, 10, audio(10), arrived=None)  # a kind that was not there: ignored
    assert writer.ignored_tags == 1
    assert stream_tags(feed)[0] == 1


def test_without_metadata_a_second_of_one_kind_primes() -> None:
    writer = FlvSessionWriter(ByteFeed())
    for ts in range(0, 1000, 100):
        writer.on_tag(8, ts, audio(10), arrived=None)
    assert not writer.primed
    writer.on_tag(8, 1000, audio(10), arrived=None)
    assert writer.primed and writer.kinds == {8}


def test_arrivals_of_held_tags_are_kept() -> None:
    feed = ByteFeed()
    writer = FlvSessionWriter(feed)
    writer.on_tag(9, 0, key(10), arrived=50.0)
    writer.on_tag(8, 5, audio(10), arrived=50.2)
    header = len(flv.file_header())
    assert feed.arrival_at(header) == 50.0  # the first tag came at 50.0, written later
    assert feed.arrival_at(header + len(flv.tag(9, 0, key(10)))) == 50.2


def test_over_the_cap_video_is_dropped_until_the_next_keyframe() -> None:
    feed = ByteFeed(max_bytes=1000)
    writer = FlvSessionWriter(feed)
    writer.on_metadata({"videocodecid": 7.0})  # video only: written at once
    writer.on_tag(9, 0, key(500), arrived=None)
    writer.on_tag(9, 33, inter(600), arrived=None)  # over the cap
    feed.read(10_000)  # the reader catches up: room again
    writer.on_tag(9, 66, inter(10), arrived=None)  # still dropped: its reference is gone
    writer.on_tag(9, 100, key(100), arrived=None)
    writer.on_tag(9, 133, inter(10), arrived=None)
    assert feed.dropped_writes == 2
    assert feed.dropped_bytes == len(flv.tag(9, 0, inter(600))) + len(flv.tag(9, 0, inter(10)))
    assert feed.buffered_bytes == len(flv.tag(9, 0, key(100))) + len(flv.tag(9, 0, inter(10)))


def test_over_the_cap_audio_drops_one_tag_and_config_is_kept() -> None:
    feed = ByteFeed(max_bytes=100)
    writer = FlvSessionWriter(feed)
    writer.on_metadata({"audiocodecid": 10.0})
    writer.on_tag(8, 0, audio(1), arrived=None)  # primes: header, metadata, this tag
    feed.read(10_000)
    writer.on_tag(8, 21, audio(80), arrived=None)  # 97 bytes: fits
    writer.on_tag(8, 42, audio(10), arrived=None)  # over: lost
    writer.on_tag(8, 63, AAC_CONFIG, arrived=None)  # essential: kept over the cap
    assert feed.dropped_writes == 1
    assert feed.buffered_bytes == len(flv.tag(8, 0, audio(80))) + len(flv.tag(8, 0, AAC_CONFIG))
    assert feed.buffered_bytes > 100
