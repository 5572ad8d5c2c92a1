"""The bounded FLV byte feed between the event loop and a decode thread."""

from __future__ import annotations

import threading
import time

from ingest import flv
from ingest.feed import FlvFeed

AVC_CONFIG = b"\x17\x00\x00\x00\x00" + bytes(30)


def key(size: int) -> bytes:
    return b"\x17\x01\x00\x00\x00" + bytes(size)


def inter(size: int) -> bytes:
    return b"\x27\x01\x00\x00\x00" + bytes(size)


def test_read_blocks_until_data_and_may_return_fewer_bytes() -> None:
    feed = FlvFeed()
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(feed.read(100)))
    reader.start()
    time.sleep(0.05)
    assert reader.is_alive()  # still blocked: nothing written yet
    feed.write(b"abc")
    reader.join(5)
    assert got == [b"abc"]


def test_reads_span_writes_and_end_with_empty_bytes() -> None:
    feed = FlvFeed()
    feed.write(b"abc")
    feed.write(b"defg")
    assert feed.read(2) == b"ab"
    assert feed.read(4) == b"cdef"
    feed.close()
    feed.write(b"ignored")
    assert feed.read(10) == b"g"
    assert feed.read(10) == b""
    assert feed.read(10) == b""


def test_abort_drops_buffered_bytes() -> None:
    feed = FlvFeed()
    feed.write(b"abc")
    feed.abort()
    assert feed.read(10) == b""
    assert feed.buffered_bytes == 0


def test_over_the_cap_video_is_dropped_until_the_next_keyframe() -> None:
    feed = FlvFeed(max_bytes=1000)
    assert feed.write_tag(9, 0, key(500))
    assert not feed.write_tag(9, 33, inter(600))  # over the cap
    feed.read(10_000)  # the reader catches up: room again
    assert not feed.write_tag(9, 66, inter(10))  # still dropped: its reference is gone
    assert feed.write_tag(8, 70, b"\xaf\x01" + bytes(10))  # audio is independent
    assert feed.write_tag(9, 100, key(100))
    assert feed.write_tag(9, 133, inter(10))
    assert feed.dropped_tags == 2
    assert feed.dropped_bytes == len(flv.tag(9, 0, inter(600))) + len(flv.tag(9, 0, inter(10)))


def test_over_the_cap_audio_drops_one_tag_and_config_is_kept() -> None:
    feed = FlvFeed(max_bytes=100)
    assert feed.write_tag(8, 0, b"\xaf\x01" + bytes(60))
    assert not feed.write_tag(8, 21, b"\xaf\x01" + bytes(60))
    assert feed.write_tag(9, 0, AVC_CONFIG)  # essential: kept over the cap
    assert feed.write_tag(8, 0, b"\xaf\x00\x11\x90")
    assert feed.dropped_tags == 1
    assert feed.buffered_bytes > 100


def test_buffer_never_grows_past_the_cap_under_a_flood() -> None:
    feed = FlvFeed(max_bytes=10_000)
    for i in range(1000):
        feed.write_tag(9, i, key(300) if i % 30 == 0 else inter(300))
        feed.write_tag(8, i, b"\xaf\x01" + bytes(50))
        assert feed.buffered_bytes <= 10_000
    assert feed.dropped_tags > 1500
