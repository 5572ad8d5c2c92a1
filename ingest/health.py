"""A live's input health, as Amazon IVS names it: Unknown, Healthy or Starving.

`HealthMonitor` is pure and clock-driven: it is fed what arrived and when (`now` is a
monotonic time in seconds, given by the caller), and `evaluate(now)` says what the
input's health is at that instant, with the reasons. It does no I/O and never reads a
clock, so a test steps time instead of sleeping.

- **Unknown**: no media received yet in this live.
- **Starving**: input arriving too slowly or stopped. A reason is present now
  (`publisherGone`: the publisher left after sending media; `driftGrowing`: over
  the last WINDOW_SECONDS wall-clock minus media-time drift grew by more than
  DRIFT_GROWTH_SECONDS; `noVideo` / `noAudio`: no frame of a kind the source has for
  GAP_SECONDS; `lowFrameRate`: video frames arriving at less than half the source's
  nominal rate) and has been for STARVING_AFTER_SECONDS (a publisher gone: at once).
- **Healthy**: otherwise; back from Starving only after HEALTHY_AFTER_SECONDS without
  any starving reason (no flapping).

Frames onair drops itself because its encoder is behind (`on_encoder_dropped`) are
reported as `encoderOverloaded` and never make the input Starving: the input is
fine, the host is overloaded (a failover must not switch inputs for a CPU problem).

Media thread(s) feed it while the event loop evaluates it: every method takes its lock.
"""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass
from enum import StrEnum

WINDOW_SECONDS = 5.0
DRIFT_GROWTH_SECONDS = 1.0
GAP_SECONDS = 2.0
LOW_FRAME_RATE_RATIO = 0.5
STARVING_AFTER_SECONDS = 2.0
HEALTHY_AFTER_SECONDS = 10.0

VIDEO, AUDIO = "video", "audio"


class HealthState(StrEnum):
    """The health's name, as the API says it (`healthStatusName`)."""

    HEALTHY = "Healthy"
    STARVING = "Starving"
    UNKNOWN = "Unknown"


class ReasonType(StrEnum):
    DRIFT_GROWING = "driftGrowing"
    NO_VIDEO = "noVideo"
    NO_AUDIO = "noAudio"
    LOW_FRAME_RATE = "lowFrameRate"
    PUBLISHER_GONE = "publisherGone"
    ENCODER_OVERLOADED = "encoderOverloaded"  # onair's own: never starves the input


@dataclass(frozen=True)
class HealthReason:
    type: ReasonType
    description: str


@dataclass(frozen=True)
class Health:
    """The input's health at one instant, and what is wrong now (may be empty, or only
    `encoderOverloaded`, while Healthy; empty while Starving and recovering)."""

    state: HealthState
    reasons: tuple[HealthReason, ...] = ()

    @property
    def summary(self) -> str:
        """The state and its reasons in words (a timing row's message)."""
        if not self.reasons:
            return self.state.value
        return f"{self.state.value}: " + "; ".join(
            f"{r.type.value} ({r.description})" for r in self.reasons
        )


UNKNOWN = Health(HealthState.UNKNOWN)


class _Track:
    """One kind's arrivals over the window: (arrival, media seconds or None)."""

    def __init__(self) -> None:
        self.arrivals: collections.deque[tuple[float, float | None]] = collections.deque()
        self.last_arrival: float | None = None  # this session's, or its start's
        self.first_arrival: float | None = None  # this session's first frame
        self.seen = False  # ever, in this live: the source has this kind

    def add(self, now: float, media_seconds: float | None) -> None:
        self.arrivals.append((now, media_seconds))
        self.last_arrival = now
        if self.first_arrival is None:
            self.first_arrival = now
        self.seen = True

    def prune(self, now: float) -> None:
        while self.arrivals and self.arrivals[0][0] < now - WINDOW_SECONDS:
            self.arrivals.popleft()

    def new_session(self, now: float) -> None:
        self.arrivals.clear()
        self.first_arrival = None
        self.last_arrival = now  # a gap counts from the session's start


class HealthMonitor:
    """The input health of one live (all its publish sessions), fed and evaluated with
    the caller's clock. `nominal_fps`: the source's declared frame rate, if known
    (else measured from the video's media timestamps)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._video = _Track()
        self._audio = _Track()
        self._nominal_fps: float | None = None
        self._media_seen = False
        self._publisher_gone = False
        self._drops: collections.deque[tuple[float, int]] = collections.deque()
        self._dropped_total = 0
        self._state = HealthState.UNKNOWN
        self._bad_since: float | None = None
        self._clean_since: float | None = None

    # -- what arrived ---------------------------------------------------------------

    def session_started(self, now: float) -> None:
        """A publisher began a session: its media time starts anew."""
        with self._lock:
            self._publisher_gone = False
            self._video.new_session(now)
            self._audio.new_session(now)

    def session_ended(self, now: float) -> None:
        """The publisher went away; after media, that is starvation at once."""
        with self._lock:
            if self._media_seen:
                self._publisher_gone = True

    def set_nominal_fps(self, fps: float) -> None:
        """The source's declared frame rate (0 or less: unknown)."""
        with self._lock:
            self._nominal_fps = fps if fps > 0 else None

    def on_frame(self, kind: str, now: float, media_seconds: float | None) -> None:
        """A video or audio frame (or packet) of the current session arrived at `now`,
        with its media time (its dts in seconds) if known."""
        with self._lock:
            track = self._video if kind == VIDEO else self._audio
            track.add(now, media_seconds)
            track.prune(now)
            self._media_seen = True

    def on_encoder_dropped(self, total: int, now: float) -> None:
        """Frames onair itself dropped so far (its encoder behind), a running total."""
        with self._lock:
            if total > self._dropped_total:
                self._drops.append((now, total - self._dropped_total))
            self._dropped_total = max(self._dropped_total, total)

    # -- what it means ----------------------------------------------------------------

    def evaluate(self, now: float) -> Health:
        """The health at `now`: the reasons present now, through the hysteresis."""
        with self._lock:
            if not self._media_seen:
                return UNKNOWN
            reasons = self._reasons(now)
            starving = [r for r in reasons if r.type is not ReasonType.ENCODER_OVERLOADED]
            if starving:
                self._clean_since = None
                if self._bad_since is None:
                    self._bad_since = now
                gone = any(r.type is ReasonType.PUBLISHER_GONE for r in starving)
                if gone or now - self._bad_since >= STARVING_AFTER_SECONDS:
                    self._state = HealthState.STARVING
                elif self._state is HealthState.UNKNOWN:
                    self._state = HealthState.HEALTHY  # media came: healthy until proven not
            else:
                self._bad_since = None
                if self._clean_since is None:
                    self._clean_since = now
                if self._state is not HealthState.STARVING:
                    self._state = HealthState.HEALTHY
                elif now - self._clean_since >= HEALTHY_AFTER_SECONDS:
                    self._state = HealthState.HEALTHY
            return Health(self._state, tuple(reasons))

    def _reasons(self, now: float) -> list[HealthReason]:
        reasons: list[HealthReason] = []
        if self._publisher_gone:
            gone = "the publisher went away after sending media"
            reasons.append(HealthReason(ReasonType.PUBLISHER_GONE, gone))
        else:
            for track in (self._video, self._audio):
                track.prune(now)
            gaps = self._gaps(now)
            reasons.extend(gaps)
            drift = self._drift_growth()
            if drift is not None and drift > DRIFT_GROWTH_SECONDS:
                reasons.append(
                    HealthReason(
                        ReasonType.DRIFT_GROWING,
                        f"input fell {drift:.1f} s behind real time over the last"
                        f" {WINDOW_SECONDS:g} s",
                    )
                )
            low = self._low_frame_rate(now)
            if low is not None and not any(g.type is ReasonType.NO_VIDEO for g in gaps):
                reasons.append(low)
        while self._drops and self._drops[0][0] < now - WINDOW_SECONDS:
            self._drops.popleft()
        if self._drops:
            dropped = sum(count for _, count in self._drops)
            reasons.append(
                HealthReason(
                    ReasonType.ENCODER_OVERLOADED,
                    f"onair dropped {dropped} frames in the last {WINDOW_SECONDS:g} s: its"
                    " encoder is behind (the host is overloaded, the input is fine)",
                )
            )
        return reasons

    def _gaps(self, now: float) -> list[HealthReason]:
        reasons = []
        for track, kind in ((self._video, ReasonType.NO_VIDEO), (self._audio, ReasonType.NO_AUDIO)):
            if not track.seen or track.last_arrival is None:
                continue
            silent = now - track.last_arrival
            if silent >= GAP_SECONDS:
                name = "video" if track is self._video else "audio"
                reasons.append(HealthReason(kind, f"no {name} frame for {silent:.1f} s"))
        return reasons

    def _drift_growth(self) -> float | None:
        """How much wall-clock minus media-time grew over the window: from its lowest
        to its latest (the clock is the video's, or the audio's without video)."""
        track = self._video if self._video.seen else self._audio
        drifts = [wall - media for wall, media in track.arrivals if media is not None]
        if len(drifts) < 2:
            return None
        return drifts[-1] - min(drifts)

    def _low_frame_rate(self, now: float) -> HealthReason | None:
        """Video arriving at less than half its nominal rate, once the session's video
        has come for GAP_SECONDS at least (a gap of all frames is noVideo's)."""
        track = self._video
        if track.first_arrival is None or not track.arrivals:
            return None
        span = min(WINDOW_SECONDS, now - track.first_arrival)
        if span < GAP_SECONDS:
            return None
        arriving = sum(1 for wall, _ in track.arrivals if wall > now - span) / span
        nominal = self._nominal_fps or _media_rate(track)
        if nominal is None or arriving >= nominal * LOW_FRAME_RATE_RATIO:
            return None
        return HealthReason(
            ReasonType.LOW_FRAME_RATE,
            f"video arriving at {arriving:.1f} fps, under half of its {nominal:.1f} fps",
        )


def _media_rate(track: _Track) -> float | None:
    """Frames per media second over the window's frames (None if not measurable)."""
    times = [media for _, media in track.arrivals if media is not None]
    if len(times) < 2:
        return None
    span = max(times) - min(times)
    return (len(times) - 1) / span if span > 0 else None
