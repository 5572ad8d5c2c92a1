"""The input health state machine (`ingest.health`), on a stepped clock: the reasons,
the 2 s to Starving, the 10 s clean back to Healthy, and onair's own drops apart."""

from __future__ import annotations

from ingest.health import (
    Health,
    HealthMonitor,
    HealthState,
    ReasonType,
)

FPS = 30
STEP = 1 / FPS


class Feed:
    """A publisher at `speed` times real time (1: real time), 30 fps video and audio,
    on a clock stepped by the test; evaluates every 0.5 s as the service does."""

    def __init__(self, monitor: HealthMonitor, *, audio: bool = True) -> None:
        self.monitor = monitor
        self.now = 1000.0
        self.media = 0.0
        self.audio = audio
        self.seen: list[Health] = []

    def run(self, seconds: float, speed: float = 1.0, *, video: bool = True) -> Health:
        end = self.now + seconds
        next_check = self.now
        while self.now < end:
            if video:
                self.monitor.on_frame("video", self.now, self.media)
            if self.audio:
                self.monitor.on_frame("audio", self.now, self.media)
            self.media += STEP
            self.now += STEP / speed
            if self.now >= next_check:
                self.seen.append(self.monitor.evaluate(self.now))
                next_check += 0.5
        return self.monitor.evaluate(self.now)

    def idle(self, seconds: float) -> Health:
        """Nothing arrives for `seconds`."""
        end = self.now + seconds
        while self.now < end:
            self.now += 0.5
            self.seen.append(self.monitor.evaluate(self.now))
        return self.seen[-1]

    def states(self) -> list[HealthState]:
        """The states seen, each change once."""
        changes: list[HealthState] = []
        for health in self.seen:
            if not changes or changes[-1] is not health.state:
                changes.append(health.state)
        return changes


def types(health: Health) -> set[ReasonType]:
    return {reason.type for reason in health.reasons}


def test_unknown_before_any_media_even_with_a_session_and_time_passing() -> None:
    monitor = HealthMonitor()
    assert monitor.evaluate(0.0).state is HealthState.UNKNOWN
    monitor.session_started(0.0)
    assert monitor.evaluate(60.0) == Health(HealthState.UNKNOWN)
    monitor.session_ended(61.0)  # a publisher that left before any media
    assert monitor.evaluate(62.0).state is HealthState.UNKNOWN


def test_healthy_from_the_first_media_while_real_time() -> None:
    feed = Feed(HealthMonitor())
    feed.monitor.session_started(feed.now)
    health = feed.run(30)
    assert health == Health(HealthState.HEALTHY)
    assert feed.states() == [HealthState.HEALTHY]


def test_half_speed_starves_after_2_s_of_drift_and_recovers_only_after_10_s_clean() -> None:
    feed = Feed(HealthMonitor())
    feed.run(10)
    slow = feed.run(8, speed=0.5)
    assert slow.state is HealthState.STARVING
    assert ReasonType.DRIFT_GROWING in types(slow)
    # Drift grows 0.5 s per second: past 1 s after 2 s, Starving 2 s later, not before.
    first_bad = next(i for i, h in enumerate(feed.seen) if h.reasons)
    first_starving = next(i for i, h in enumerate(feed.seen) if h.state is HealthState.STARVING)
    assert (first_starving - first_bad) * 0.5 >= 2.0
    # Back to real time: the window forgets the drift after 5 s, then 10 s clean.
    recovered_at = len(feed.seen)
    feed.run(20)
    healthy_again = next(
        i for i in range(recovered_at, len(feed.seen)) if feed.seen[i].state is HealthState.HEALTHY
    )
    assert 10.0 <= (healthy_again - recovered_at) * 0.5 <= 16.0
    assert feed.states() == [HealthState.HEALTHY, HealthState.STARVING, HealthState.HEALTHY]


def test_bad_for_less_than_2_s_does_not_starve() -> None:
    feed = Feed(HealthMonitor())
    feed.run(10)
    feed.run(1.0, video=False)  # audio only for 1 s: not yet noVideo
    feed.run(10)
    assert feed.states() == [HealthState.HEALTHY]


def test_a_stall_is_no_video_and_no_audio_then_starving() -> None:
    feed = Feed(HealthMonitor())
    feed.run(10)
    health = feed.idle(4.5)
    assert health.state is HealthState.STARVING
    assert {ReasonType.NO_VIDEO, ReasonType.NO_AUDIO} <= types(health)


def test_no_audio_only_when_the_source_has_audio() -> None:
    silent = Feed(HealthMonitor(), audio=False)
    assert silent.run(20) == Health(HealthState.HEALTHY)
    with_audio = Feed(HealthMonitor())
    with_audio.run(5)
    with_audio.audio = False  # the sound stops, the picture goes on
    health = with_audio.run(5)
    assert health.state is HealthState.STARVING
    assert types(health) == {ReasonType.NO_AUDIO}


def test_video_below_half_its_declared_rate_is_a_low_frame_rate() -> None:
    monitor = HealthMonitor()
    monitor.set_nominal_fps(90)  # declared 90, arriving 30 in real time: a dropping camera
    feed = Feed(monitor)
    health = feed.run(6)
    assert health.state is HealthState.STARVING
    assert types(health) == {ReasonType.LOW_FRAME_RATE}
    assert "30.0 fps" in health.reasons[0].description


def test_the_publisher_leaving_after_media_starves_at_once_and_a_new_one_must_prove_itself() -> (
    None
):
    feed = Feed(HealthMonitor())
    feed.monitor.session_started(feed.now)
    feed.run(10)
    feed.monitor.session_ended(feed.now)
    health = feed.monitor.evaluate(feed.now)
    assert health.state is HealthState.STARVING
    assert types(health) == {ReasonType.PUBLISHER_GONE}
    # It comes back, its media time from 0: Starving until 10 s clean.
    feed.now += 3
    feed.media = 0.0
    feed.monitor.session_started(feed.now)
    assert feed.run(5).state is HealthState.STARVING
    assert feed.run(6) == Health(HealthState.HEALTHY)


def test_a_new_session_without_media_is_no_video() -> None:
    feed = Feed(HealthMonitor())
    feed.monitor.session_started(feed.now)
    feed.run(10)
    feed.monitor.session_ended(feed.now)
    feed.monitor.session_started(feed.now + 1)
    health = feed.idle(5)
    assert health.state is HealthState.STARVING
    assert types(health) == {ReasonType.NO_VIDEO, ReasonType.NO_AUDIO}


def test_onair_dropping_frames_is_encoder_overloaded_and_never_starving() -> None:
    feed = Feed(HealthMonitor())
    feed.run(5)
    dropped = 0
    for _ in range(40):  # 20 s of onair dropping frames, the input in real time
        dropped += 7
        feed.monitor.on_encoder_dropped(dropped, feed.now)
        health = feed.run(0.5)
        assert health.state is HealthState.HEALTHY
        assert types(health) == {ReasonType.ENCODER_OVERLOADED}
    assert "dropped" in health.reasons[0].description
    assert feed.run(6) == Health(HealthState.HEALTHY)  # 5 s without a drop: no reason


def test_the_summary_names_the_state_and_its_reasons() -> None:
    feed = Feed(HealthMonitor())
    feed.run(5)
    health = feed.idle(5)
    assert health.summary.startswith("Starving: noVideo (no video frame for ")
    assert health.summary.endswith("; noAudio (no audio frame for 5.0 s)")
    assert Health(HealthState.HEALTHY).summary == "Healthy"
