"""StorageHealth with explicit times: backoff, one probe at a time, events once."""

from __future__ import annotations

import pytest

from packager.storage_health import STORAGE_OUTAGE, STORAGE_RECOVERED, StorageHealth


def test_healthy_storage_lets_every_write_start() -> None:
    health = StorageHealth(0.5, 5.0)
    assert health.wait_seconds(now=0.0) == 0.0
    health.started("a")
    health.started("b")
    health.succeeded("a", now=1.0)
    assert health.take_events() == [] and not health.in_outage


def test_backoff_doubles_up_to_the_maximum_with_one_probe_at_a_time() -> None:
    health = StorageHealth(0.5, 5.0)
    health.started("seg1")
    health.started("seg2")
    assert health.failed("seg1", "refused", now=10.0) == "new"
    assert health.failed("seg2", "refused", now=10.1) == "other"  # was in flight: no backoff
    assert health.wait_seconds(now=10.2) == pytest.approx(0.3)
    assert health.wait_seconds(now=10.5) == 0.0
    now = 10.5
    delays = []
    for _ in range(6):
        health.started("seg1")  # the probe
        assert health.wait_seconds(now) is None  # nobody else while it is out
        health.started("seg2")  # (the writer never does this; it must not replace it)
        assert health.failed("seg1", "refused", now) == "probe"
        delays.append(health.wait_seconds(now))
        now += delays[-1]
    assert delays == [1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
    assert health.take_events() == [(STORAGE_OUTAGE, "refused")]
    assert health.in_outage and health.last_error == "refused"


def test_recovered_once_every_delayed_segment_is_stored() -> None:
    health = StorageHealth(0.5, 5.0)
    health.started("s1")
    health.failed("s1", "timeout", now=100.0)
    for segment in ("s1", "s2", "s3"):
        health.delay(segment)
    health.started("s1")
    health.succeeded("s1", now=120.0)
    assert not health.failing and health.wait_seconds(now=120.0) == 0.0
    health.stored("s1", now=120.0)
    health.stored("s2", now=121.0)
    assert health.in_outage  # s3 still pending
    health.dropped("s3", now=122.0)  # its spool file vanished: it no longer blocks
    assert not health.in_outage
    assert health.take_events() == [
        (STORAGE_OUTAGE, "timeout"),
        (STORAGE_RECOVERED, "uploaded 2 delayed segments after 22.0 s"),
    ]
    assert health.take_events() == []


def test_failing_again_while_catching_up_is_the_same_outage() -> None:
    health = StorageHealth(0.5, 5.0)
    health.failed("a", "down", now=0.0)
    health.delay("a")
    health.delay("b")
    health.succeeded("a", now=5.0)
    health.stored("a", now=5.0)
    assert health.failed("b", "down again", now=6.0) == "new"
    health.succeeded("b", now=8.0)
    health.stored("b", now=8.0)
    assert health.take_events() == [
        (STORAGE_OUTAGE, "down"),
        (STORAGE_RECOVERED, "uploaded 2 delayed segments after 8.0 s"),
    ]


def test_abandoned_probe_frees_the_slot_without_clearing_the_failure() -> None:
    health = StorageHealth(0.5, 5.0)
    health.failed("a", "down", now=0.0)
    health.started("a")
    assert health.wait_seconds(now=1.0) is None
    health.abandoned("a")
    assert health.failing and health.wait_seconds(now=1.0) == 0.0


def test_a_write_from_the_outage_failing_late_starts_no_new_outage() -> None:
    """A connection cut during the outage answers after the storage came back: that
    failure is stale news (the write is retried); a write started afterwards failing
    is a new outage."""
    health = StorageHealth(0.5, 5.0)
    health.started("stuck")  # in flight when the link goes down, answered late
    health.started("a")
    assert health.failed("a", "down", now=0.0) == "new"
    health.delay("a")
    health.started("a")  # the probe
    health.succeeded("a", now=3.0)
    health.stored("a", now=3.0)
    assert not health.in_outage
    assert health.failed("stuck", "connection closed", now=3.5) == "other"
    assert not health.failing and health.wait_seconds(now=3.5) == 0.0
    health.started("b")
    assert health.failed("b", "down again", now=9.0) == "new"
    assert [status for status, _ in health.take_events()] == [
        STORAGE_OUTAGE,
        STORAGE_RECOVERED,
        STORAGE_OUTAGE,
    ]
