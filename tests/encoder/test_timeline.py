"""Output timeline and forced-keyframe decisions: pure."""

from __future__ import annotations

import itertools
from fractions import Fraction

import pytest

from encoder.timeline import (
    KeyframeClock,
    SessionClock,
    continuing_at,
    keyframe_interval_seconds,
    keyframe_plan,
)
from media.clock import TICKS_PER_SECOND, seconds_to_ticks


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


def test_a_continued_recording_goes_on_past_its_end_on_the_segment_grid() -> None:
    """A new pipeline of a job (online again, restarted, taken over by another host):
    its timeline starts after the stored recording, with room for the playlists'
    millisecond rounding, on the 2 s grid; a first pipeline starts at 0."""
    assert continuing_at(0.0, 2.0, 0) == 0
    start = continuing_at(13.433, 2.0, 7)
    assert start == 14 and start > Fraction(13433, 1000) + Fraction(7, 2000)
    assert continuing_at(13.95, 2.0, 7) == 16  # no first segment of a few frames
    clock = SessionClock(start=start)
    assert clock.start_session(0) == 14 and clock.to_output(Fraction(5)) == 14
    clock.extend_to(Fraction(16))
    assert clock.start_session(1) == 16


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


def test_a_frame_just_before_a_boundary_is_the_boundarys_keyframe() -> None:
    """Frames a little off the grid (millisecond timestamps, a switch of inputs): the
    one within half a frame before the boundary starts the segment, which so never
    lasts a frame more than the target."""
    keys = KeyframeClock(180_000, tolerance_ticks=1_500)
    ticks = [n * 3_000 - 60 for n in range(1, 200)]  # 30 fps, 60 ticks early
    forced = [t for t in ticks if keys.is_keyframe(t)]
    assert forced[1:4] == [179_940, 359_940, 539_940]
    assert all(b - a == 180_000 for a, b in itertools.pairwise(forced[1:]))
    late = KeyframeClock(180_000, tolerance_ticks=1_500)
    assert [t for t in (0, 176_900, 179_999, 183_000) if late.is_keyframe(t)] == [0, 179_999]


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


NTSC = Fraction(30000, 1001)


def test_the_keyframe_plan_is_whole_frames_never_longer_than_the_template() -> None:
    assert keyframe_plan(2, 2, Fraction(30)) == (180_000, 180_000)  # 60 frames
    assert keyframe_plan(4, 2, Fraction(25)) == (180_000, 360_000)  # two GOPs a segment
    assert keyframe_plan(2, 2, NTSC) == (59 * 3003, 59 * 3003)  # 1.969 s, not 2.002 s
    assert keyframe_plan(2, 1, NTSC) == (29 * 3003, 58 * 3003)  # a GOP divides a segment


@pytest.mark.parametrize("rate", [Fraction(30), NTSC, Fraction(24000, 1001), Fraction(60000, 1001)])
def test_no_segment_is_longer_than_its_target_at_any_common_rate(rate: Fraction) -> None:
    interval, _ = keyframe_plan(2, 2, rate)
    slot = round(TICKS_PER_SECOND / rate)
    keys = KeyframeClock(interval, slot // 2)
    frames = [round(n * TICKS_PER_SECOND / rate) for n in range(int(rate * 3600))]  # an hour
    cuts = [pts for pts in frames if keys.is_keyframe(pts)]
    lengths = {round((b - a) / TICKS_PER_SECOND, 3) for a, b in itertools.pairwise(cuts)}
    assert max(lengths) <= 2.0 and min(lengths) >= 1.9, sorted(lengths)


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
