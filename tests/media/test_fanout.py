"""The fan-out of a live's track: each reader on its own bounded queue."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import pytest

from media.fanout import Broadcast, QueueClosed, TrackRules


@dataclass(frozen=True)
class Item:
    n: int
    key: bool = True
    control: bool = False
    config: bool = False
    size: int = 1


RULES: TrackRules[Item] = TrackRules(
    size_of=lambda i: i.size,
    kind_of=lambda i: "control" if i.control else "media",
    is_control=lambda i: i.control,
    is_config=lambda i: i.config,
    is_keyframe=lambda i: i.key,
)


def drain(reader) -> list[int]:  # type: ignore[no-untyped-def]
    out = []
    while (item := reader.get(timeout=0)) is not None:
        out.append(item.n)
    return out


def test_a_slow_reader_drops_for_itself_only_and_never_blocks_the_publisher(caplog) -> None:
    drops: list[tuple[str, int, str]] = []
    live = Broadcast("live 1 frames", RULES, on_drop=lambda *a: drops.append(a))
    fast = live.subscribe("ladder", max_items=1000)
    slow = live.subscribe("viewer", max_items=3)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING):
        for n in range(100):
            live.put(Item(n))
            assert drain(fast) == [n]  # the fast reader keeps up: it gets everything
        assert time.monotonic() - started < 1  # nobody waited on the slow one
        assert drain(slow) == [0, 1, 2]
        assert slow.dropped["media"] == 97 and fast.dropped_total == 0
        assert drops == []  # the burst is not over yet
        live.put(Item(100))  # room again: the burst ends, reported once
    assert drain(slow) == [100]
    assert drops == [("viewer", 97, "media")]
    lines = [r.getMessage() for r in caplog.records if "too slow" in r.getMessage()]
    assert lines == ["[live 1 frames] reader viewer too slow, dropped 97 (media first)"]


def test_control_items_are_never_dropped() -> None:
    live = Broadcast("t", RULES)
    reader = live.subscribe("r", max_items=1)
    live.put(Item(0))
    live.put(Item(1))  # dropped
    live.put(Item(2, control=True))
    assert drain(reader) == [0, 2]


def test_the_byte_bound_holds_and_one_item_always_fits() -> None:
    live = Broadcast("t", RULES)
    reader = live.subscribe("r", max_items=100, max_bytes=10)
    live.put(Item(0, size=50))  # an empty queue takes one item whatever its size
    live.put(Item(1, size=1))
    assert drain(reader) == [0]
    for n in range(2, 20):
        live.put(Item(n, size=3))
    assert reader.peak_bytes <= 50 and drain(reader) == [2, 3, 4]


def test_a_late_reader_starts_with_the_configuration_then_at_a_keyframe() -> None:
    live = Broadcast("t", RULES)
    live.put(Item(0, control=True, config=True))
    live.put(Item(1, key=True))
    live.put(Item(2, key=False))
    late = live.subscribe("late", max_items=100)
    live.put(Item(3, key=False))  # not a keyframe: the late reader has not started
    live.put(Item(4, key=True))
    live.put(Item(5, key=False))
    assert drain(late) == [0, 4, 5]
    assert late.dropped_total == 0  # waiting for a keyframe is not dropping


def test_a_packet_reader_resyncs_at_a_keyframe_after_a_drop() -> None:
    rules = TrackRules[Item](is_keyframe=lambda i: i.key, resync_after_drop=True)
    live = Broadcast("packets", rules)
    reader = live.subscribe("restream", max_items=2)
    for n, key in enumerate([True, False, False, False, True, False]):
        live.put(Item(n, key=key))
        if n == 2:
            assert drain(reader) == [0, 1]  # 2 was dropped: its GOP is useless now
    assert drain(reader) == [4, 5]


def test_the_end_of_the_live_drains_every_reader_then_closes_it() -> None:
    live = Broadcast("t", RULES)
    reader = live.subscribe("r", max_items=10)
    got: list[int] = []

    def consume() -> None:
        try:
            while True:
                item = reader.get(timeout=5)
                if item is not None:
                    got.append(item.n)
        except QueueClosed:
            got.append(-1)

    thread = threading.Thread(target=consume)
    thread.start()
    for n in range(3):
        live.put(Item(n))
    live.close()
    thread.join(5)
    assert got == [0, 1, 2, -1]
    assert not live.put(Item(9))
    with pytest.raises(QueueClosed):
        live.subscribe("after", max_items=1).get(timeout=0)


def test_an_unsubscribed_reader_gets_nothing_more() -> None:
    live = Broadcast("t", RULES)
    gone = live.subscribe("gone", max_items=10)
    kept = live.subscribe("kept", max_items=10)
    gone.close()
    live.put(Item(0))
    assert live.readers == [kept] and drain(kept) == [0]
    with pytest.raises(QueueClosed):
        gone.get(timeout=0)


def test_keyframes_resyncs_and_late_starts_are_per_stream() -> None:
    @dataclass(frozen=True)
    class Packet:
        stream: str
        n: int
        key: bool = False
        config: bool = False

    rules = TrackRules[Packet](
        is_keyframe=lambda p: p.key,
        is_config=lambda p: p.config,
        is_control=lambda p: p.config,
        stream_of=lambda p: p.stream,
        resync_after_drop=True,
    )
    live = Broadcast("ladder", rules)
    live.put(Packet("", 0, config=True))
    live.put(Packet("720p", 1, key=True))
    late = live.subscribe("late", max_items=3)
    live.put(Packet("720p", 2))  # 720p has not started for the late reader
    live.put(Packet("360p", 3, key=True))  # 360p starts at once: its keyframe
    live.put(Packet("720p", 4, key=True))  # now 720p starts
    live.put(Packet("360p", 5))  # full (config, 3, 4): dropped, 360p waits again
    assert [p.n for p in iter(lambda: late.get(timeout=0), None)] == [0, 3, 4]
    live.put(Packet("720p", 6))  # 720p did not drop: it goes on
    live.put(Packet("360p", 7))  # 360p waits for a keyframe
    live.put(Packet("360p", 8, key=True))
    assert [p.n for p in iter(lambda: late.get(timeout=0), None)] == [6, 8]


def test_a_reader_that_stopped_reading_is_dropped_from_the_live() -> None:
    live = Broadcast("t", RULES)
    stuck = live.subscribe("stuck", max_items=2)
    kept = live.subscribe("kept", max_items=100_000)
    for n in range(2000):
        live.put(Item(n, control=n % 2 == 0))  # half are control items, never dropped
        drain(kept)
    assert live.readers == [kept]  # memory stays bounded whatever it does not read
    assert len(stuck) < 2 + 300


class SteppedClock:
    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def unix(self) -> float:
        return self.now

    def condition(self) -> threading.Condition:
        return threading.Condition()


def test_a_burst_that_goes_on_is_reported_every_two_seconds() -> None:
    clock = SteppedClock()
    drops: list[int] = []
    live = Broadcast("t", RULES, on_drop=lambda name, count, kind: drops.append(count), clock=clock)
    live.subscribe("stuck", max_items=1)
    live.put(Item(0))
    for n in range(1, 61):  # 60 drops over 6 simulated seconds
        clock.now = n * 0.1
        live.put(Item(n))
    assert drops == [21, 21]  # at 2.1 s and 4.2 s: every 2 s of the burst
    live.close()
    assert drops == [21, 21, 18]  # and what was left, at the end


def test_a_pacing_reader_holds_the_feeder_until_it_has_room_the_others_drop() -> None:
    """A source ahead of real time waits for the ladder (nothing lost); a reader that
    does not pace still drops for itself, and is never waited for."""
    track: Broadcast[Item] = Broadcast("paced", RULES)
    ladder = track.subscribe("ladder", max_items=2, paces=True)
    viewer = track.subscribe("viewer", max_items=2)
    taken: list[int] = []

    def read_slowly() -> None:
        while len(taken) < 6:
            item = ladder.get(timeout=1)
            if item is not None:
                taken.append(item.n)
                time.sleep(0.02)

    reading = threading.Thread(target=read_slowly)
    reading.start()
    for n in range(6):
        assert track.put(Item(n), wait_until=time.monotonic() + 5)
    reading.join(5)
    assert taken == [0, 1, 2, 3, 4, 5]
    assert ladder.dropped_total == 0
    assert drain(viewer) == [0, 1] and viewer.dropped["media"] == 4


def test_past_its_wait_until_an_item_drops_even_for_a_pacing_reader() -> None:
    """A real-time source the ladder cannot follow: no wait (None) or a short one, then
    the item is dropped and counted, as for any reader."""
    track: Broadcast[Item] = Broadcast("late", RULES)
    ladder = track.subscribe("ladder", max_items=1, paces=True)
    track.put(Item(0))
    started = time.monotonic()
    assert not track.put(Item(1))  # no wait_until: never waits
    assert not track.put(Item(2), wait_until=time.monotonic() + 0.05)
    assert time.monotonic() - started >= 0.05
    assert ladder.dropped["media"] == 2
    assert track.put(Item(3, control=True), wait_until=time.monotonic() + 5)  # never held
    ladder.close()
    assert not track.put(Item(4), wait_until=time.monotonic() + 5)  # an ended reader: no wait
    assert time.monotonic() - started < 2
