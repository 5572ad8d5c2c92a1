"""The bounded byte feed between the event loop and a decode thread."""

from __future__ import annotations

import threading
import time

from ingest.feed import ByteFeed


def test_read_blocks_until_data_and_may_return_fewer_bytes() -> None:
    feed = ByteFeed()
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(feed.read(100)))
    reader.start()
    time.sleep(0.05)
    assert reader.is_alive()  # still blocked: nothing written yet
    feed.write(b"abc")
    reader.join(5)
    assert got == [b"abc"]


def test_reads_span_writes_and_end_with_empty_bytes() -> None:
    feed = ByteFeed()
    feed.write(b"abc")
    feed.write(b"defg")
    assert feed.read(2) == b"ab"
    assert feed.read(4) == b"cdef"
    feed.close()
    assert not feed.write(b"ignored")
    assert feed.read(10) == b"g"
    assert feed.read(10) == b""
    assert feed.read(10) == b""


def test_abort_drops_buffered_bytes() -> None:
    feed = ByteFeed()
    feed.write(b"abc")
    feed.abort()
    assert feed.read(10) == b""
    assert feed.buffered_bytes == 0


def test_over_the_cap_a_write_is_dropped_whole_and_counted() -> None:
    feed = ByteFeed(max_bytes=3000)
    assert feed.write(bytes(1316))
    assert feed.write(bytes(1316))
    assert not feed.fits(1316)
    assert not feed.write(bytes(1316))  # whole, never a partial write
    assert (feed.dropped_writes, feed.dropped_bytes, feed.buffered_bytes) == (1, 1316, 2632)
    assert feed.write(b"header", essential=True)  # essential bytes go in regardless
    feed.drop(50)  # a writer's own policy decided to lose 50 bytes
    assert (feed.dropped_writes, feed.dropped_bytes) == (2, 1366)
    feed.read(10_000)  # the reader catches up: room again
    assert feed.write(bytes(1316))
    assert feed.written_bytes == 3 * 1316 + 6


def test_buffer_never_grows_past_the_cap_under_a_flood() -> None:
    feed = ByteFeed(max_bytes=10_000)
    for _ in range(1000):
        feed.write(bytes(1316))
        assert feed.buffered_bytes <= 10_000
    assert feed.dropped_writes == 1000 - 7


def test_arrivals_map_stream_positions_to_when_their_bytes_came() -> None:
    feed = ByteFeed()
    assert feed.arrival_at(0) is None  # nothing known yet
    feed.write(b"FLVhead", essential=True)  # no arrival: bytes of our own
    feed.write(b"a" * 10, arrived=100.0)  # positions 7..16
    feed.write(b"b" * 10, arrived=100.5)  # 17..26
    assert feed.recording_arrivals
    assert feed.arrival_at(3) == 100.0  # before every stamped write: the first of them
    assert [feed.arrival_at(p) for p in (7, 16, 17, 26, 500)] == [100.0, 100.0, 100.5, 100.5, 100.5]
    assert feed.arrival_at(-1) == 100.5  # unknown position: the latest
    feed.forget_arrivals()
    feed.write(b"c", arrived=101.0)
    assert not feed.recording_arrivals
    assert feed.arrival_at(7) is None


def test_past_half_full_the_writer_is_asked_to_wait_until_a_quarter() -> None:
    """The server stops reading from its publisher (`when_room`) instead of the feed
    dropping: the callback comes once the reader took the feed down to a quarter."""
    feed = ByteFeed(max_bytes=1000)
    called: list[int] = []
    assert feed.write(b"x" * 500)
    assert not feed.when_room(lambda: called.append(feed.buffered_bytes))  # half: room
    assert feed.write(b"x" * 100)
    assert feed.when_room(lambda: called.append(feed.buffered_bytes))
    assert feed.read(200) and called == []  # 400 left: still above a quarter
    assert feed.read(150) and called == [250]
    assert feed.read(10) and called == [250]  # once
    assert feed.dropped_writes == 0


def test_a_writer_waiting_for_room_is_released_when_the_feed_ends() -> None:
    for end in (ByteFeed.close, ByteFeed.abort):
        feed = ByteFeed(max_bytes=100)
        feed.write(b"x" * 90)
        released = threading.Event()
        assert feed.when_room(released.set)
        end(feed)
        assert released.is_set()
        assert not feed.when_room(released.set)  # ended: nothing to wait for
