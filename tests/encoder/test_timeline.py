"""Output timeline and forced-keyframe decisions: pure."""

from __future__ import annotations

from fractions import Fraction

import pytest

from encoder.timeline import KeyframeClock, SessionClock, keyframe_interval_seconds
from media.clock import seconds_to_ticks


def test_sessions_continue_where_the_previous_one_ended() -> None:
    clock = SessionClock()
    assert clock.start_session(0) == 0
    assert clock.to_output(Fraction(5)) == 0  # the first item sets the origin
    assert clock.to_output(Fraction(7)) == 2
    clock.extend_to(Fraction(9, 4))
    assert clock.start_session(1) == Fraction(9, 4)
    assert clock.to_output(Fraction(0)) == Fraction(9, 4)  # restarts at zero: continues
    assert clock.to_output(Fraction(1, 2)) == Fraction(11, 4)
    clock.extend_to(Fraction(2))  # never goes back
    assert clock.end == Fraction(9, 4)


@pytest.mark.parametrize("fps", [Fraction(30), Fraction(30000, 1001), Fraction(25), Fraction(60)])
def test_one_forced_keyframe_per_boundary(fps: Fraction) -> None:
    keys = KeyframeClock(seconds_to_ticks(2))
    ticks = [seconds_to_ticks(n / fps) for n in range(int(fps * 11))]
    forced = [t for t in ticks if keys.is_keyframe(t)]
    assert forced[0] == 0
    for boundary, key in zip(range(0, 11 * 90_000, 180_000), forced, strict=False):
        frame = seconds_to_ticks(1 / fps)
        assert boundary <= key < boundary + frame  # the first frame at/after the boundary
    assert len(forced) == 6


def test_session_start_forces_a_keyframe_and_resets_the_grid() -> None:
    keys = KeyframeClock(180_000)
    assert keys.is_keyframe(0)
    assert not keys.is_keyframe(100_000)
    assert keys.is_keyframe(150_000, session_start=True)
    assert not keys.is_keyframe(170_000)
    assert keys.is_keyframe(180_000)


def test_keyframe_interval() -> None:
    assert keyframe_interval_seconds(2, 2) == 2
    assert keyframe_interval_seconds(4, 2) == 2
    assert keyframe_interval_seconds(2, 3) == 2
    assert keyframe_interval_seconds(6, 4) == 6


def test_arrivals_follow_each_sessions_anchor_by_media_time() -> None:
    from encoder.timeline import ArrivalClock
    from ingest.media import WallClockOrigin
    from media.clock import utc_instant

    arrivals = ArrivalClock()
    assert arrivals.at(0) is None
    now = iter([2000.0])
    clock = SessionClock(arrivals, now_unix=lambda: next(now))
    clock.start_session(0, WallClockOrigin(1000.0, Fraction(3)))
    clock.to_output(Fraction(5))  # the session's first item: source 5 s arrived at 1002
    clock.extend_to(Fraction(10))
    assert arrivals.at(seconds_to_ticks(4)) == utc_instant(1006.0)
    clock.start_session(1)  # no origin from the ingest: when the encoder saw it
    clock.to_output(Fraction(1, 2))
    assert arrivals.at(seconds_to_ticks(10)) == utc_instant(2000.0)
    assert arrivals.at(seconds_to_ticks(12)) == utc_instant(2002.0)
    assert arrivals.at(seconds_to_ticks(9)) == utc_instant(1011.0)  # still the first session
