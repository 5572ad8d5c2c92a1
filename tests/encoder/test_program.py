"""The program (`encoder.program`): one continuous timeline from the job's inputs, the
fill while none is there, failover and failback. Synthetic frames, a stepped clock."""

from __future__ import annotations

import itertools
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from encoder.program import (
    FILL_ENDED,
    FILL_STARTED,
    INPUT_FAILBACK,
    INPUT_FAILOVER,
    ProgramEvent,
    ProgramFeed,
    ProgramInput,
    ProgramRules,
)
from ingest.media import AudioParams, SessionEnd, SessionStart, VideoParams, media_broadcast
from media.clock import TICKS_PER_SECOND
from media.fanout import Broadcast, QueueClosed
from tests.support.clocks import FakeClock
from tests.support.media import make_source, open_live, session_start

FPS = 30
SLOT = TICKS_PER_SECOND // FPS


class Publisher:
    """One input's decoded track, fed like the decoder feeds it."""

    def __init__(
        self, name: str, fps: int = FPS, size: tuple[int, int] = (64, 36), shade: int = 80
    ):
        self.track: Broadcast = media_broadcast(name)
        self.reader = self.track.subscribe("ladder", max_items=500, late=False)
        self.fps = fps
        self.size = size
        self.shade = shade
        self.session = -1
        self.frame_no = 0
        self.samples = 0

    def connect(self) -> None:
        self.session += 1
        self.frame_no = 0
        self.samples = 0
        width, height = self.size
        video = VideoParams("h264", width, height, Fraction(self.fps), Fraction(1, 1000))
        audio = AudioParams("aac", 48_000, 2, Fraction(1, 48_000))
        self.track.put(SessionStart(self.session, video, audio))

    def disconnect(self) -> None:
        self.track.put(SessionEnd(self.session, "closed"))

    def send(self, seconds: float) -> None:
        """`seconds` of frames and audio (timestamps from the session's start)."""
        for _ in range(round(seconds * self.fps)):
            width, height = self.size
            frame = av.VideoFrame.from_ndarray(
                np.full((height * 3 // 2, width), self.shade, np.uint8), format="yuv420p"
            )
            frame.pts = round(self.frame_no * 1000 / self.fps)
            frame.time_base = Fraction(1, 1000)
            self.track.put(frame)
            self.frame_no += 1
            while self.samples < self.frame_no * 48_000 / self.fps:
                audio = av.AudioFrame.from_ndarray(
                    np.zeros((2, 1024), np.float32), format="fltp", layout="stereo"
                )
                audio.sample_rate = 48_000
                audio.pts = self.samples
                audio.time_base = Fraction(1, 48_000)
                self.track.put(audio)
                self.samples += 1024


class Harness:
    def __init__(self, *publishers: Publisher, **rules: object) -> None:
        self.clock = FakeClock()
        self.events: list[ProgramEvent] = []
        self.items: list[object] = []
        names = ["primary", "backup"]
        self.program = ProgramFeed(
            [ProgramInput(names[i], p.reader) for i, p in enumerate(publishers)],
            ProgramRules(slate_title="test live", **rules),  # type: ignore[arg-type]
            clock=self.clock,
            on_event=self.events.append,
        )

    def run(self, seconds: float, step: float = 1 / FPS) -> None:
        """Read the program while the clock moves `seconds` on."""
        steps = round(seconds / step)
        for _ in range(max(1, steps)):
            self.drain()
            self.clock.advance(step)
        self.drain()

    def drain(self) -> None:
        while True:
            try:
                item = self.program.get(timeout=0)
            except QueueClosed:
                return
            if item is None:
                return
            self.items.append(item)

    @property
    def video(self) -> list[av.VideoFrame]:
        return [i for i in self.items if isinstance(i, av.VideoFrame)]

    @property
    def starts(self) -> list[SessionStart]:
        return [i for i in self.items if isinstance(i, SessionStart)]

    def kinds(self) -> list[str]:
        return [e.kind for e in self.events]


def in_real_time(harness: Harness, publishers: list[Publisher], seconds: float) -> None:
    """The publishers send `seconds` in real time, the program read as it goes."""
    for _ in range(round(seconds * FPS)):
        for publisher in publishers:
            publisher.send(1 / FPS)
        harness.run(1 / FPS)


def shade(frame: av.VideoFrame) -> int:
    return int(frame.to_ndarray()[0, 0])


def assert_continuous(frames: list[av.VideoFrame]) -> None:
    pts = [f.pts for f in frames]
    assert pts[0] == 0
    steps = {b - a for a, b in itertools.pairwise(pts)}
    # exactly one frame interval each: the publishers' millisecond timestamps are put on
    # the program's grid, across every switch too (a segment lasts 2.000 s, not 2.001)
    assert steps == {SLOT}, sorted(steps)


def test_a_single_input_passes_through_on_its_own_timestamps() -> None:
    live = Publisher("live")
    harness = Harness(live)
    live.connect()
    live.send(2)
    harness.run(0.1)
    assert len(harness.video) == 60  # every frame, the first one included
    assert_continuous(harness.video)
    assert len(harness.starts) == 1 and not harness.starts[0].continues
    assert harness.starts[0].video is not None and harness.starts[0].video.frame_rate == FPS
    assert harness.events == []


def test_a_publisher_gone_is_filled_in_real_time_then_resumes_with_no_discontinuity() -> None:
    live = Publisher("live", shade=200)
    harness = Harness(live, repeat_seconds=1.0)
    live.connect()
    in_real_time(harness, [live], 1)
    before = len(harness.video)
    live.disconnect()
    harness.run(0.5)
    assert len(harness.video) == before  # within the threshold: gone for a moment only
    harness.run(2.5)
    filled = harness.video[before:]
    assert 85 <= len(filled) <= 92  # 3 s of frames since the last: the gap at once, then on
    assert FILL_STARTED in harness.kinds()
    repeats = [f for f in filled if shade(f) == 200]
    assert 29 <= len(repeats) <= 31  # the last picture for 1 s, then the slate
    assert all(shade(f) != 200 for f in filled[len(repeats) :])
    audio = [i for i in harness.items if isinstance(i, av.AudioFrame)]
    end = max(a.pts + a.samples for a in audio) / 48_000
    assert end == pytest.approx(harness.video[-1].pts / TICKS_PER_SECOND, abs=0.05)  # silence
    live.connect()  # back: its timestamps start at 0 again
    live.send(1)
    harness.run(0.2)
    assert_continuous(harness.video)
    assert [s.continues for s in harness.starts] == [False, True, True]  # fill, then input
    assert harness.kinds()[-1] == FILL_ENDED
    assert shade(harness.video[-1]) == 200


def test_a_publisher_that_stays_connected_and_sends_nothing_is_lost_after_the_threshold() -> None:
    live = Publisher("live")
    harness = Harness(live, loss_threshold_seconds=0.5)
    live.connect()
    in_real_time(harness, [live], 1)
    count = len(harness.video)
    harness.run(0.4)
    assert len(harness.video) == count  # within the threshold: waiting
    harness.run(0.2)
    assert FILL_STARTED in harness.kinds()
    assert len(harness.video) > count + 15  # the gap since the last frame, at once
    assert_continuous(harness.video)


def test_the_fill_ends_with_the_window_and_a_later_return_is_a_new_session() -> None:
    live = Publisher("live")
    harness = Harness(live, fill_max_seconds=2.0)
    live.connect()
    in_real_time(harness, [live], 1)
    live.disconnect()
    harness.run(4)
    assert harness.kinds() == [FILL_STARTED, FILL_ENDED]
    assert len(harness.video) == 30 + 60
    live.connect()
    live.send(1)
    harness.run(0.2)
    last = harness.starts[-1]
    assert not last.continues and last.session == 1  # the encoder marks a discontinuity
    assert_continuous(harness.video)


def test_failover_to_the_backup_within_a_frame_and_failback_when_the_primary_is_clean() -> None:
    primary, backup = Publisher("p", shade=50), Publisher("b", shade=150)
    harness = Harness(primary, backup, failback_after_seconds=3.0)
    primary.connect()
    backup.connect()
    for _ in range(60):  # 2 s, both sending in real time
        primary.send(1 / FPS)
        backup.send(1 / FPS)
        harness.run(1 / FPS)
    assert {shade(f) for f in harness.video} == {50}
    primary.disconnect()
    for _ in range(30):
        backup.send(1 / FPS)
        harness.run(1 / FPS)
    assert harness.kinds() == [INPUT_FAILOVER]
    event = harness.events[0]
    assert (event.from_input, event.to_input) == ("primary", "backup")
    assert event.reason == "publisherGone" and "disconnected" in event.message
    shades = [shade(f) for f in harness.video]
    switch = shades.index(150)
    assert set(shades[switch:]) == {150}
    assert switch <= 62  # the frame after the primary's last, or the one after
    assert_continuous(harness.video)
    primary.connect()
    for _ in range(150):  # the primary back, clean for 5 s
        primary.send(1 / FPS)
        backup.send(1 / FPS)
        harness.run(1 / FPS)
    assert harness.kinds() == [INPUT_FAILOVER, INPUT_FAILBACK]
    back = [shade(f) for f in harness.video].index(50, switch)
    assert 3.0 <= (back - switch) / FPS - 1.0 <= 3.2  # back 1 s after the switch, then clean 3 s
    assert_continuous(harness.video)
    assert harness.program.switches == 2


def test_equal_preference_stays_on_the_backup() -> None:
    primary, backup = Publisher("p", shade=50), Publisher("b", shade=150)
    harness = Harness(primary, backup, failback_after_seconds=1.0, prefer_primary=False)
    primary.connect()
    backup.connect()
    for _ in range(30):
        primary.send(1 / FPS)
        backup.send(1 / FPS)
        harness.run(1 / FPS)
    primary.disconnect()
    primary.connect()
    for _ in range(90):
        primary.send(1 / FPS)
        backup.send(1 / FPS)
        harness.run(1 / FPS)
    assert harness.kinds() == [INPUT_FAILOVER]
    assert shade(harness.video[-1]) == 150


def test_a_backup_at_another_rate_and_size_comes_out_at_the_programs() -> None:
    primary = Publisher("p", fps=30, size=(64, 36), shade=50)
    backup = Publisher("b", fps=25, size=(32, 18), shade=150)
    harness = Harness(primary, backup)
    primary.connect()
    backup.connect()
    for _ in range(30):
        primary.send(1 / 30)
        harness.run(1 / 30)
    primary.disconnect()
    for _ in range(50):  # 2 s at 25 fps
        backup.send(1 / 25)
        harness.run(1 / 25, step=1 / 25)
    backup_frames = [f for f in harness.video if shade(f) == 150]
    assert 55 <= len(backup_frames) <= 61  # 2 s at 30 fps
    assert_continuous(harness.video)
    assert {(f.width, f.height) for f in backup_frames} == {(32, 18)}  # scaled by the ladder


def test_a_bursty_input_is_not_lost_between_its_bursts_nor_before_its_media_time() -> None:
    """An HLS input: its media a segment at a time. Between two segments it sends
    nothing for longer than the threshold, but its media is not due yet: no loss;
    once it left, the fill starts from when its media's time has passed."""
    live = Publisher("live")
    clock = FakeClock()
    events: list[ProgramEvent] = []
    program = ProgramFeed(
        [ProgramInput("primary", live.reader, bursty=True)],
        ProgramRules(loss_threshold_seconds=1.0),
        clock=clock,
        on_event=events.append,
    )
    harness = Harness(live)
    harness.program, harness.clock, harness.events = program, clock, events
    live.connect()
    for _ in range(3):  # three 2 s segments, each arriving whole, 2 s apart
        live.send(2)
        harness.run(2.0)
    assert len(harness.video) == 180 and events == []
    live.disconnect()
    harness.run(0.5)  # its last segment's time is not over yet (and the threshold)
    assert len(harness.video) == 180 and events == []
    harness.run(2.0)
    assert len(harness.video) > 180 and harness.kinds() == [FILL_STARTED]
    assert_continuous(harness.video)


def test_a_fast_push_then_gone_is_filled_once_its_media_time_passed() -> None:
    """A continuous input (RTMP) pushed faster than real time, then gone: viewers have
    its media until its real-time end; the output goes on from there (a threshold on),
    not from when the push ended."""
    live = Publisher("live")
    harness = Harness(live)
    live.connect()
    live.send(4)  # 4 s of media at once
    harness.run(0.1)
    live.disconnect()
    harness.run(4.3)  # before its media's end (4 s) and the threshold (1 s)
    assert len(harness.video) == 120 and harness.events == []
    harness.run(1.0)
    assert len(harness.video) > 120 and harness.kinds() == [FILL_STARTED]
    assert_continuous(harness.video)


def test_every_input_ending_ends_the_program() -> None:
    live = Publisher("live")
    harness = Harness(live)
    live.connect()
    live.send(0.5)
    live.track.close()
    harness.run(0.1)
    assert len(harness.video) == 15
    with pytest.raises(QueueClosed):
        harness.program.get(timeout=0)


def relay_packets(container: av.container.InputContainer, track: Broadcast, session: int) -> int:
    """A copy's input: the container's SessionStart and its packets, as ingest puts them
    (the container stays open while its packets are used, as the decoder keeps it)."""
    track.put(session_start(container, session))
    count = 0
    for packet in container.demux():
        if packet.size:
            track.put(packet)
            count += 1
    return count


def test_a_copy_relays_sessions_and_switches_at_the_backups_keyframe(tmp_path: Path) -> None:
    """Passthrough: no fill and no re-timing (the codec parameters are the publisher's);
    a switch ends the old session and starts the backup's, at its next keyframe."""
    source = make_source(tmp_path / "in.flv", 64, 36, 2, gop=15)
    primary, backup = Publisher("p"), Publisher("b")
    harness = Harness(primary, backup, relay=True)
    with open_live(source) as first, open_live(source) as second:
        relay(first, second, primary, backup, harness)


def relay(
    first: av.container.InputContainer,
    second: av.container.InputContainer,
    primary: Publisher,
    backup: Publisher,
    harness: Harness,
) -> None:
    sent = relay_packets(first, primary.track, 0)
    relay_packets(second, backup.track, 0)
    harness.run(0.1)
    packets = [i for i in harness.items if isinstance(i, av.Packet)]
    assert len(packets) == sent  # the primary's, untouched
    primary.disconnect()
    harness.run(0.1)
    assert harness.kinds() == [INPUT_FAILOVER]
    starts = harness.starts
    assert [s.continues for s in starts] == [False, False]  # a new session: a discontinuity
    assert any(isinstance(i, SessionEnd) for i in harness.items)
    video_after = [
        i
        for i in harness.items[harness.items.index(starts[1]) :]
        if isinstance(i, av.Packet) and i.stream.type == "video"
    ]
    assert not video_after or video_after[0].is_keyframe
    assert harness.program.fill_frames == 0  # a copy is never filled
