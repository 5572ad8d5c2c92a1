"""The program: the one continuous live the ladder encodes, made from the job's inputs.

A Single job has one input, a Standard job two (`primary` and `backup`), each a
publisher decoded all the time into a frames track of its own (`media.fanout`). The
`ProgramFeed` reads every input's track and gives the ladder encoder (`LiveEncoder`,
through `MediaSource.get`) one stream on one timeline:

- **the active input's media, on onair's own timestamps.** The program's first video
  frame is at 0; each later frame keeps its input's timestamp differences. When the
  active input changes (a failover, a failback, a publisher back after a loss), the
  new input's next frame is placed one frame interval after the program's last one:
  no gap, no jump, no discontinuity. The ladder is planned once, from the first
  input; an input at another frame rate is converted to the program's (each output
  slot shows the latest input picture due by the middle of that slot, repeated or
  dropped as needed), and one at another size is scaled by the renditions.
- **the fill, when no input is there.** The active input is lost when it ends (its
  publisher left), sends nothing for `loss_threshold_seconds` (a publisher that stays
  connected and sends nothing counts) or its health is Starving for an input reason
  (`ingest.health`; frames onair drops itself never count). Then another ready input
  takes over at once (a failover: its latest picture first, within one frame
  interval of the decision). With none, the program goes on in real time from the
  last frame: that picture repeated for `repeat_seconds`, then the slate (a
  configured image or a plain frame with the job's name), with silence, for at most
  `fill_max_seconds` (the reconnect window). Past it the output stops; an input
  that returns later starts a new session (a discontinuity).
- **primary preferred** (`prefer_primary`): after a failover to the backup, the
  program goes back to the primary once it has been clean (connected, sending, no
  input reason) for `failback_after_seconds`; at the start, a backup that is there
  first waits up to `loss_threshold_seconds` for the primary.

Each source change in the program is a `SessionStart(continues=True)` for the
encoder: the audio resampler starts anew (the inputs' formats may differ) and the
wall clock is anchored again, but the timeline, the keyframe cadence and the
segments go on. Switches and fills are reported as `ProgramEvent`s.

A copy (passthrough template) cannot fill or re-time its packets: the codec
parameters are the publisher's. `relay=True` passes the active input's sessions
through unchanged; a switch ends the old session and starts the new input's (a
discontinuity, at its next keyframe); there is no fill.

One thread (the encoder's dispatcher) calls `get()`; `inputs()` may be read from any.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import av

from encoder.fill import copy_picture, silence, slate_picture
from ingest.media import (
    AudioParams,
    MediaItem,
    MediaSource,
    SessionEnd,
    SessionStart,
    VideoParams,
    WallClockOrigin,
    nominal_frame_rate,
)
from media.clock import SYSTEM_CLOCK, TICK_TIME_BASE, TICKS_PER_SECOND, Clock
from media.fanout import QueueClosed

log = logging.getLogger(__name__)

PRIMARY, BACKUP = "primary", "backup"
INPUT_FAILOVER, INPUT_FAILBACK = "InputFailover", "InputFailback"
FILL_STARTED, FILL_ENDED = "InputLossFillStarted", "InputLossFillEnded"
# Why an input was left, in a word (`ProgramEvent.reason`, the webhook's `reason`).
PUBLISHER_GONE, NO_MEDIA, INPUT_STARVING = "publisherGone", "noMedia", "inputStarving"
PRIMARY_CLEAN, WINDOW_ENDED = "primaryClean", "windowEnded"
DEFAULT_FRAME_RATE = Fraction(30)
POLL_SECONDS = 0.02  # the longest wait on one input before the others are looked at
HEALTH_EVERY_SECONDS = 0.25  # an input's health is asked this often
FILL_BURST_FRAMES = 90  # fill frames made in one call at most (a stalled caller catches up)
STANDBY_VIDEO_FRAMES = 4  # a standby input keeps its session's first frames, then its last
STANDBY_AUDIO_FRAMES = 96  # and the audio since (about 2 s of AAC frames)
AUDIO_FILL_SAMPLES = 1024
# An input's media is due, in real time, as late as its latest-arriving frame of this
# long came (relative to its timestamp): a bursty input (HLS: a segment at a time) is
# not silent between its bursts, and a fast push is not silent until its media's time.
LATENESS_WINDOW_SECONDS = 10.0
PROGRAM_START, FILL = "start", "fill"  # program sources other than an input's session
FILLED_IN_ALL = "frames filled in this live"  # how InputLossFillEnded ends


@dataclass(frozen=True)
class ProgramRules:
    """How the program chooses and fills (the job's input settings)."""

    loss_threshold_seconds: float = 1.0
    repeat_seconds: float = 1.0
    fill_max_seconds: float = 30.0
    failback_after_seconds: float = 30.0
    prefer_primary: bool = True
    slate_title: str = ""
    slate_image: Path | None = None
    relay: bool = False  # a copy: sessions passed through, no fill


@dataclass(frozen=True)
class ProgramInput:
    """One input of the program: its reader of the input's frames track, and whether
    its health is Starving for an input reason now (None: never asked)."""

    name: str
    reader: MediaSource
    starving: Callable[[], str | None] | None = None  # the reasons, None when fine
    bursty: bool = False  # its media comes a segment at a time (HLS)


@dataclass(frozen=True)
class ProgramEvent:
    """A switch (`InputFailover`, `InputFailback`) or a fill (`InputLossFillStarted`,
    `InputLossFillEnded`) in the program: why in a word (`reason`: publisherGone,
    noMedia, inputStarving, primaryClean, windowEnded) and in a sentence (`message`)."""

    kind: str
    message: str
    from_input: str = ""
    to_input: str = ""
    reason: str = ""


@dataclass(frozen=True)
class InputState:
    """One input as the program sees it now (stats)."""

    name: str
    active: bool
    connected: bool  # a publisher session is open
    sending: bool  # media within the loss threshold
    last_media_seconds_ago: float | None


class _Input:
    def __init__(self, spec: ProgramInput) -> None:
        self.name = spec.name
        self.reader = spec.reader
        self.starving_check = spec.starving
        self.closed = False
        self.session: SessionStart | None = None
        self.session_no = 0  # sessions seen (a program source is an input's session)
        self.ended_reason = ""
        self.last_media: float | None = None
        self.video_seen = False  # in this session
        self.clean_since: float | None = None
        self.ready_since: float | None = None
        self.starving: str | None = None
        self.health_at = float("-inf")
        # While not active: what it would start with (see _standby).
        self.standby: collections.deque[MediaItem] = collections.deque()
        self.fresh = False  # standby still holds its session from the start
        self.standby_video = 0
        # (arrival, arrival - timestamp) of its recent pictures, kept as a sliding
        # maximum (a bursty input: as late as its latest-arriving picture) or minimum
        # (a continuous one: as early as its earliest, so media ahead of real time, a
        # fast push, is due when its time comes, and a late picture moves nothing).
        self.bursty = spec.bursty
        self._lateness: collections.deque[tuple[float, float]] = collections.deque()
        self._last_media_seconds: float | None = None  # its latest picture's timestamp

    def new_session(self) -> None:
        self._lateness.clear()
        self._last_media_seconds = None

    def saw_picture(self, now: float, media_seconds: float) -> None:
        lateness = self._lateness
        while lateness and lateness[0][0] < now - LATENESS_WINDOW_SECONDS:
            lateness.popleft()
        late = now - media_seconds
        if self.bursty:
            while lateness and lateness[-1][1] <= late:
                lateness.pop()
        else:
            while lateness and lateness[-1][1] >= late:
                lateness.pop()
        lateness.append((now, late))
        if self._last_media_seconds is None or media_seconds > self._last_media_seconds:
            self._last_media_seconds = media_seconds

    def due_of(self, media_seconds: float) -> float | None:
        """When the picture at `media_seconds` (its own timestamps) is due in real time
        (None before any picture)."""
        return media_seconds + self._lateness[0][1] if self._lateness else None

    @property
    def due(self) -> float | None:
        """When its latest picture is due in real time (None before any)."""
        last = self._last_media_seconds
        return None if last is None else self.due_of(last)


@dataclass
class _Fill:
    anchor_at: float  # monotonic instant of the program's last real frame
    anchor_pts: int  # its program timestamp
    frames: int = 0
    announced: bool = False
    hold_until: float = 0.0  # nothing made before (monotonic)
    over: bool = False
    slate_from: int = 0  # the first slate frame (after the repeats)


class ProgramFeed:
    """The ladder's `MediaSource`: the job's inputs made into one program."""

    def __init__(
        self,
        inputs: Sequence[ProgramInput],
        rules: ProgramRules | None = None,
        *,
        clock: Clock = SYSTEM_CLOCK,
        on_event: Callable[[ProgramEvent], None] | None = None,
        label: str = "",
    ) -> None:
        if not inputs:
            raise ValueError("a program needs an input")
        self._inputs = [_Input(spec) for spec in inputs]
        self._rules = rules or ProgramRules()
        self._clock = clock
        self._on_event = on_event
        self._prefix = f"[program {label}]" if label else "[program]"
        self._lock = threading.Lock()  # inputs() from other threads
        self._out: collections.deque[MediaItem] = collections.deque()
        self._active: _Input | None = None
        self._last_active: _Input | None = None
        self._loss: tuple[str, str] = ("", "")  # why the last active input was lost
        self._started = False
        self._sessions = 0  # the program's sessions (a new one only past a fill's end)
        self._video: VideoParams | None = None
        self._audio: AudioParams | None = None
        self._rate = DEFAULT_FRAME_RATE
        self._slot = round(TICKS_PER_SECOND / DEFAULT_FRAME_RATE)
        self._size: tuple[int, int] | None = None
        self._last_pts: int | None = None
        self._last_at = 0.0
        self._last_picture: av.VideoFrame | None = None
        self._slate: av.VideoFrame | None = None
        self._audio_end: Fraction | None = None  # program seconds
        self._offset = 0  # program ticks minus the active source's ticks
        self._remap = True
        self._convert = False
        self._held: tuple[av.VideoFrame, int] | None = None
        self._held_shown = False
        self._held_source: tuple[object, _Input | None] = (None, None)
        self._next_slot = 0
        self._source: object = None  # what the last media item came from
        self._fill: _Fill | None = None
        self._fill_ended_program = False
        self.switches = 0
        self.fill_frames = 0  # fill pictures given to the encoder, in this live
        self._fill_pending: set[int] = set()  # fill pictures made, not given yet (ids)
        self._ended = False

    # -- MediaSource ---------------------------------------------------------------

    def __len__(self) -> int:
        active = self._active
        return len(self._out) + (len(active.reader) if active is not None else 0)

    def get(self, timeout: float | None = None) -> MediaItem | None:
        """The program's next item; None when there is none within `timeout`;
        `QueueClosed` once every input ended and everything was given."""
        deadline = self._clock.monotonic() + (timeout if timeout is not None else 3600.0)
        while True:
            if self._out:
                return self._give()
            now = self._clock.monotonic()
            with self._lock:
                self._poll_standby(now)
                self._decide(now)
            if self._out:
                return self._give()
            if all(inp.closed for inp in self._inputs):
                with self._lock:
                    self._flush_held()
                    self._end_fill()
                if self._out:
                    return self._give()
                raise QueueClosed("every input of the program ended")
            wait = max(0.0, min(deadline - now, POLL_SECONDS))
            self._wait(wait)
            if self._out:
                return self._give()
            if self._clock.monotonic() >= deadline:
                return None

    def _give(self) -> MediaItem:
        """The next item out (a fill picture counted as given to the encoder)."""
        item = self._out.popleft()
        if self._fill_pending and id(item) in self._fill_pending:
            self._fill_pending.discard(id(item))
            self.fill_frames += 1
        return item

    def _wait(self, seconds: float) -> None:
        """Block up to `seconds` on the active input (or any open one), taking what comes."""
        active = self._active
        source = (
            active
            if active is not None
            else next((inp for inp in self._inputs if not inp.closed), None)
        )
        if source is None:
            return
        try:
            item = source.reader.get(timeout=seconds)
        except QueueClosed:
            source.closed = True
            return
        if item is None:
            return
        with self._lock:
            now = self._clock.monotonic()
            self._note(source, item, now)
            if source is self._active:
                self._take(source, item, now)
            else:
                self._keep(source, item)

    # -- what the inputs say --------------------------------------------------------

    def inputs(self) -> list[InputState]:
        now = self._clock.monotonic()
        with self._lock:
            return [
                InputState(
                    name=inp.name,
                    active=inp is self._active,
                    connected=inp.session is not None,
                    sending=not self._silent(inp, now),
                    last_media_seconds_ago=(
                        None if inp.last_media is None else round(now - inp.last_media, 3)
                    ),
                )
                for inp in self._inputs
            ]

    @property
    def active_input(self) -> str | None:
        active = self._active
        return active.name if active is not None else None

    @property
    def filling(self) -> str | None:
        """ "repeat" or "slate" while the fill runs, None otherwise."""
        fill = self._fill
        if fill is None or fill.over or self._active is not None:
            return None
        return "slate" if fill.frames >= fill.slate_from else "repeat"

    def _note(self, inp: _Input, item: MediaItem, now: float) -> None:
        """Any input's item: its session and the instant of its last media."""
        if isinstance(item, SessionStart):
            inp.session = item
            inp.session_no += 1
            inp.video_seen = False
            inp.ended_reason = ""
            inp.new_session()
        elif isinstance(item, SessionEnd):
            inp.session = None
            inp.ended_reason = item.reason
            inp.clean_since = inp.ready_since = None
        else:
            inp.last_media = now
            if isinstance(item, av.VideoFrame) or (
                isinstance(item, av.Packet) and item.stream.type == "video"
            ):
                inp.video_seen = True
                if item.pts is not None and item.time_base is not None:
                    inp.saw_picture(now, float(item.pts * item.time_base))

    def _poll_standby(self, now: float) -> None:
        """Drain every input but the active one (keeping what it would start with)."""
        for inp in self._inputs:
            if inp is self._active or inp.closed:
                continue
            for _ in range(1024):  # bounded: its reader holds at most a few hundred
                try:
                    item = inp.reader.get(timeout=0)
                except QueueClosed:
                    inp.closed = True
                    break
                if item is None:
                    break
                self._note(inp, item, now)
                self._keep(inp, item)
                if self._active is None and inp.fresh and inp.standby_video:
                    break  # it may start the program (or end a fill): the rest waits

    def _keep(self, inp: _Input, item: MediaItem) -> None:
        """A standby input keeps its session's start and first frames (a publisher that
        just connected loses nothing), then only its latest picture and the audio
        since (a hot standby takes over with its latest picture)."""
        standby = inp.standby
        if isinstance(item, SessionStart):
            standby.clear()
            standby.append(item)
            inp.fresh = True
            inp.standby_video = 0
            return
        if isinstance(item, SessionEnd):
            standby.clear()
            inp.fresh = False
            return
        video = isinstance(item, av.VideoFrame) or (
            isinstance(item, av.Packet)
            and item.stream.type == "video"
            and (not self._rules.relay or item.is_keyframe)
        )
        if video:
            inp.standby_video += 1
            if not inp.fresh or inp.standby_video > STANDBY_VIDEO_FRAMES:
                inp.fresh = False
                standby.clear()
        elif not standby and not inp.fresh:
            return  # nothing to start from yet
        standby.append(item)
        if len(standby) > STANDBY_VIDEO_FRAMES + STANDBY_AUDIO_FRAMES:
            standby.popleft()
            inp.fresh = False

    def _silent(self, inp: _Input, now: float) -> bool:
        """No media for the loss threshold, and none due for as long (none waiting in
        its reader either)."""
        if len(inp.reader) > 0:
            return False
        threshold = self._rules.loss_threshold_seconds
        last, due = inp.last_media, inp.due
        if last is None or now - last < threshold:
            return last is None
        return due is None or now - due >= threshold

    def _starving(self, inp: _Input, now: float) -> str | None:
        if inp.starving_check is None:
            return None
        if now - inp.health_at >= HEALTH_EVERY_SECONDS:
            inp.health_at = now
            try:
                inp.starving = inp.starving_check()
            except Exception:
                log.exception("%s %s: health unavailable", self._prefix, inp.name)
                inp.starving = None
        return inp.starving

    def _lost(self, inp: _Input, now: float) -> tuple[str, str] | None:
        """Why the (active) input is lost, in a word and a sentence; None while it is not."""
        if inp.closed:
            return PUBLISHER_GONE, "input ended"
        if inp.session is None:
            return PUBLISHER_GONE, f"publisher disconnected ({inp.ended_reason or 'gone'})"
        if self._silent(inp, now):  # media waiting for us is not silence: we are behind
            threshold = round(self._rules.loss_threshold_seconds * 1000)
            return NO_MEDIA, f"no media for {threshold} ms"
        if len(inp.reader) > 0:
            return None  # its media waits for us: its health is ahead of what we show
        starving = self._starving(inp, now)
        if starving:
            return INPUT_STARVING, f"input Starving: {starving}"
        return None

    def _ready(self, inp: _Input, now: float) -> bool:
        """Whether the input could take over now; keeps its clean time."""
        ready = (
            not inp.closed
            and inp.session is not None
            and inp.video_seen
            and bool(inp.standby)
            and not self._silent(inp, now)
            and not self._starving(inp, now)
        )
        if not ready:
            inp.clean_since = inp.ready_since = None
        elif inp.ready_since is None:
            inp.ready_since = inp.clean_since = now
        return ready

    # -- choosing -------------------------------------------------------------------

    def _decide(self, now: float) -> None:
        rules = self._rules
        active = self._active
        primary = self._inputs[0]
        if active is not None:
            loss = self._lost(active, now)
            if loss is None:
                if (
                    rules.prefer_primary
                    and active is not primary
                    and self._ready(primary, now)
                    and primary.clean_since is not None
                    and now - primary.clean_since >= rules.failback_after_seconds
                ):
                    clean = now - primary.clean_since
                    why = (PRIMARY_CLEAN, f"the primary clean for {clean:.1f} s")
                    self._activate(primary, now, INPUT_FAILBACK, why)
                return
            self._lose(active, loss, now)
        if self._started and not rules.relay:
            self._fill_step(now)
        candidate = self._choose(now)
        previous = self._last_active
        if candidate is not None:
            if previous is not None and previous is not candidate:
                self._activate(candidate, now, INPUT_FAILOVER, self._loss)
            else:
                self._activate(candidate, now, "", ("", ""))

    def _choose(self, now: float) -> _Input | None:
        ready = [inp for inp in self._inputs if self._ready(inp, now)]
        if not ready:
            return None
        primary = self._inputs[0]
        if primary in ready:
            return primary
        candidate = ready[0]
        if (
            not self._started
            and self._rules.prefer_primary
            and not primary.closed
            and candidate.ready_since is not None
            and now - candidate.ready_since < self._rules.loss_threshold_seconds
        ):
            return None  # at the start, the primary is given a moment
        return candidate

    def _lose(self, inp: _Input, loss: tuple[str, str], now: float) -> None:
        reason = loss[1]
        log.info("%s %s lost: %s", self._prefix, inp.name, reason)
        self._flush_held()
        self._active = None
        self._last_active = inp
        self._loss = loss
        inp.clean_since = inp.ready_since = None
        if self._rules.relay:
            if self._started and self._source is not None:
                self._out.append(SessionEnd(self._sessions, f"{inp.name} lost: {reason}"))
                self._source = None
            return
        ending = all(other.closed for other in self._inputs)  # the live is stopping
        if self._started and self._last_pts is not None and self._fill is None and not ending:
            repeats = round(self._rules.repeat_seconds * self._rate)
            # The output goes on from when the last picture was due; not before the
            # threshold past it (a publisher back at once, or the live put offline at
            # once, needs no fill).
            hold = self._last_at + self._rules.loss_threshold_seconds
            self._fill = _Fill(
                self._last_at, self._last_pts, slate_from=repeats + 1, hold_until=hold
            )

    def _activate(self, inp: _Input, now: float, kind: str, why: tuple[str, str]) -> None:
        """`inp` becomes the active input; `kind` (with `why`: a word, a sentence) says
        what switch this is ("" for none: the program's start, an input back)."""
        reason, sentence = why
        old = self._active
        if old is not None:
            self._flush_held()
            self._keep_from_now(old)
        fill = self._fill
        if kind:
            self.switches += 1
            frm = old or self._last_active
            text = sentence
            if fill is not None and fill.frames:
                text += f" (the last picture held {fill.frames / float(self._rate):.2f} s)"
            self._emit_event(ProgramEvent(kind, text, previous_name(frm), inp.name, reason))
        elif fill is not None and fill.announced:
            seconds = fill.frames / float(self._rate)
            self._emit_event(
                ProgramEvent(
                    FILL_ENDED,
                    f"{inp.name} back: {seconds:.1f} s filled"
                    + (" (the window ended first)" if fill.over else "")
                    + f"; {self.fill_frames} {FILLED_IN_ALL}",
                    to_input=inp.name,
                )
            )
        log.info("%s %s active%s", self._prefix, inp.name, f" ({kind}: {sentence})" if kind else "")
        self._active = inp
        self._last_active = inp
        self._fill = None
        self._remap = True
        self._convert = False
        self._held = None
        items = list(inp.standby)
        inp.standby.clear()
        inp.fresh = False
        if self._rules.relay:
            self._relay_start(inp, items)
            return
        if items and not isinstance(items[0], SessionStart):
            # A hot standby: its latest picture first (the audio before it is gone).
            while items and not isinstance(items[0], av.VideoFrame):
                items.pop(0)
        for item in items:
            self._take(inp, item, now)

    def _keep_from_now(self, inp: _Input) -> None:
        """An input that stops being active keeps only what it sends from now on."""
        inp.standby.clear()
        inp.fresh = False
        inp.standby_video = 0

    # -- the active input's media ---------------------------------------------------

    def _take(self, inp: _Input, item: MediaItem, now: float) -> None:
        """One item of the active input (already `_note`d), into the program."""
        if self._rules.relay:
            self._relay(inp, item)
            return
        if isinstance(item, SessionStart):
            if not self._started:
                self._begin(item)
            self._remap = True  # its timestamps start anew: placed after the program's
            self._flush_held()
            return
        if isinstance(item, SessionEnd):
            self._flush_held()
            return
        if isinstance(item, av.VideoFrame):
            self._video_frame(inp, item, now)
        elif isinstance(item, av.AudioFrame):
            self._audio_frame(inp, item)

    def _begin(self, start: SessionStart) -> None:
        """The program's first session: its formats are the program's."""
        self._started = True
        video = start.video
        rate = nominal_frame_rate(video.frame_rate if video is not None else None)
        self._rate = rate or DEFAULT_FRAME_RATE
        self._slot = max(1, round(TICKS_PER_SECOND / self._rate))
        if video is not None:
            video = replace(video, frame_rate=self._rate)
        self._video = video
        self._audio = start.audio
        self._out.append(replace(start, session=0, video=video))
        self._source = PROGRAM_START

    def _source_changed(
        self, source: object, audio: AudioParams | None, at_seconds: Fraction
    ) -> None:
        """The next media comes from another source than the last: the encoder hears
        it (a continuing session; a new one after a fill that ran out)."""
        if self._source == source:
            return
        previous, self._source = self._source, source
        if previous == PROGRAM_START:
            return  # the program's own start said it all
        new_session, self._fill_ended_program = self._fill_ended_program, False
        if new_session:
            self._sessions += 1
        self._out.append(
            SessionStart(
                self._sessions,
                self._video,
                audio if audio is not None else self._audio,
                WallClockOrigin(self._clock.unix(), at_seconds),
                continues=not new_session,
            )
        )

    def _video_frame(self, inp: _Input, frame: av.VideoFrame, now: float) -> None:
        if frame.pts is not None and frame.time_base is not None:
            ticks = round(frame.pts * frame.time_base * TICKS_PER_SECOND)
        else:
            ticks = (self._last_pts or 0) - self._offset + self._slot
        if self._remap:
            target = 0 if self._last_pts is None else self._on_grid(self._last_pts + self._slot)
            self._offset = target - ticks
            self._remap = False
            session = inp.session
            rate = nominal_frame_rate(
                session.video.frame_rate if session is not None and session.video else None
            )
            self._convert = rate is not None and rate != self._rate
            self._next_slot = target
            self._held = None
        program = self._on_grid(ticks + self._offset)
        source = (inp.name, inp.session_no)
        due = inp.due_of(ticks / TICKS_PER_SECOND)
        now = due if due is not None else now
        if self._size is None:
            self._size = (frame.width, frame.height)
        if not self._convert:
            self._show(frame, program, now, source, inp)
            return
        held = self._held
        if held is not None:
            picture, _ = held
            while self._next_slot + self._slot // 2 < program:
                shown = picture if not self._held_shown else copy_picture(picture)
                self._held_shown = True
                self._show(shown, self._next_slot, now, source, inp)
                self._next_slot += self._slot
        self._held = (frame, program)
        self._held_shown = False
        self._held_source = (source, inp)

    def _on_grid(self, pts: int) -> int:
        """`pts` moved onto the program's frame grid (slot n at n / rate) when it is
        within an eighth of a frame of it: a publisher's millisecond timestamps (FLV)
        are up to 0.5 ms off, and each change of input would otherwise shift the grid by
        that much, so a segment across it would last 2.001 s (players warn: EXTINF
        over the target duration). A picture further off keeps its own time."""
        n = round(pts * self._rate / TICKS_PER_SECOND)
        slot = round(n * TICKS_PER_SECOND / self._rate)
        if abs(slot - pts) > self._slot // 8:
            return pts
        if self._last_pts is not None and slot <= self._last_pts:
            return pts
        return slot

    def _flush_held(self) -> None:
        """A converted input's last picture, for its slot (the input stops here)."""
        held = self._held
        self._held = None
        if held is None or self._held_shown:
            return
        picture, _ = held
        source, inp = self._held_source
        self._show(picture, self._next_slot, self._clock.monotonic(), source, inp)
        self._next_slot += self._slot

    def _show(
        self, frame: av.VideoFrame, pts: int, now: float, source: object, inp: _Input | None
    ) -> bool:
        """Put a picture out at `pts` (`now`: when it is due); False if it went back."""
        if self._last_pts is not None and pts <= self._last_pts:
            return False  # went back (the encoder would drop it)
        audio = inp.session.audio if inp is not None and inp.session is not None else None
        self._source_changed(source, audio, Fraction(pts, TICKS_PER_SECOND))
        if self._last_pts is not None:  # never due before the program's previous picture
            now = max(now, self._last_at + (pts - self._last_pts) / TICKS_PER_SECOND)
        frame.pts = pts
        frame.time_base = TICK_TIME_BASE
        self._last_pts = pts
        self._last_at = now
        if inp is not None:
            self._last_picture = frame
        self._out.append(frame)
        return True

    def _audio_frame(self, inp: _Input, frame: av.AudioFrame) -> None:
        if self._remap or frame.pts is None or frame.time_base is None:
            return  # before the input's first picture in the program
        seconds = frame.pts * frame.time_base + Fraction(self._offset, TICKS_PER_SECOND)
        if seconds < 0:
            return
        rate = frame.sample_rate
        source = (inp.name, inp.session_no)
        self._source_changed(source, inp.session.audio if inp.session else None, seconds)
        frame.pts = round(seconds * rate)
        frame.time_base = Fraction(1, rate)
        end = seconds + Fraction(frame.samples, rate)
        if self._audio_end is None or end > self._audio_end:
            self._audio_end = end
        self._out.append(frame)

    # -- the fill --------------------------------------------------------------------

    def _fill_step(self, now: float) -> None:
        fill = self._fill
        if fill is None or fill.over:
            return
        if now < fill.hold_until:
            return
        if not fill.announced:
            fill.announced = True
            loss = self._loss
            self._emit_event(
                ProgramEvent(
                    FILL_STARTED,
                    f"{loss[1]}: the last picture for {self._rules.repeat_seconds:g} s,"
                    " then the slate",
                    from_input=previous_name(self._last_active),
                    reason=loss[0],
                )
            )
        slot_seconds = 1 / float(self._rate)
        limit = self._rules.fill_max_seconds
        for _ in range(FILL_BURST_FRAMES):
            k = fill.frames + 1
            if fill.anchor_at + k * slot_seconds > now:
                return
            if k * slot_seconds > limit:
                fill.over = True
                self._fill_ended_program = True
                self._emit_event(
                    ProgramEvent(
                        FILL_ENDED,
                        f"no input for {limit:g} s: the output waits for the publisher"
                        f"; {self.fill_frames} {FILLED_IN_ALL}",
                        reason=WINDOW_ENDED,
                    )
                )
                return
            picture = self._fill_picture(k, fill)
            pts = fill.anchor_pts + k * self._slot
            if self._show(picture, pts, fill.anchor_at + k * slot_seconds, FILL, None):
                self._fill_pending.add(id(picture))
            self._silence(
                Fraction(pts, TICKS_PER_SECOND), Fraction(pts + self._slot, TICKS_PER_SECOND)
            )
            fill.frames = k

    def _end_fill(self) -> None:
        """The live ends: say how much was filled in it (once; nothing if nothing was)."""
        if self._ended or not self.fill_frames:
            return
        self._ended = True
        fill = self._fill
        during = fill is not None and fill.announced and not fill.over
        seconds = fill.frames / float(self._rate) if fill is not None else 0.0
        self._emit_event(
            ProgramEvent(
                FILL_ENDED,
                (
                    f"the live ended in the fill: {seconds:.1f} s filled"
                    if during
                    else "the live ended"
                )
                + f"; {self.fill_frames} {FILLED_IN_ALL}",
            )
        )

    def _fill_picture(self, k: int, fill: _Fill) -> av.VideoFrame:
        last = self._last_picture
        if k < fill.slate_from and last is not None:
            return copy_picture(last)
        if self._slate is None:
            width, height = self._size or (1280, 720)
            self._slate = slate_picture(
                width, height, self._rules.slate_title, self._rules.slate_image
            )
        return copy_picture(self._slate)

    def _silence(self, frame_start: Fraction, end: Fraction) -> None:
        """Silence from where the program's audio ends up to `end` (program seconds)."""
        audio = self._audio
        if audio is None:
            return
        rate = audio.sample_rate or 48_000
        start = self._audio_end if self._audio_end is not None else frame_start
        position = round(start * rate)
        stop = round(end * rate)
        while position < stop:
            samples = min(AUDIO_FILL_SAMPLES, stop - position)
            self._out.append(silence(rate, audio.channels or 2, samples, position))
            position += samples
        self._audio_end = max(start, Fraction(stop, rate))

    # -- a copy ----------------------------------------------------------------------

    def _relay_start(self, inp: _Input, items: list[MediaItem]) -> None:
        if items and isinstance(items[0], SessionStart):
            for item in items:
                self._relay(inp, item)
            return
        if inp.session is not None:
            self._relay(inp, inp.session)
        for item in items:
            self._relay(inp, item)

    def _relay(self, inp: _Input, item: MediaItem) -> None:
        if isinstance(item, SessionStart):
            self._started = True
            self._sessions += 1
            self._out.append(replace(item, session=self._sessions - 1))
            self._source = ("relay", id(item))
        elif isinstance(item, SessionEnd):
            if self._source is not None:
                self._out.append(SessionEnd(self._sessions - 1, item.reason))
                self._source = None
        elif self._source is not None:
            self._out.append(item)

    # -- events ----------------------------------------------------------------------

    def _emit_event(self, event: ProgramEvent) -> None:
        log.info("%s %s: %s", self._prefix, event.kind, event.message)
        if self._on_event is None:
            return
        try:
            self._on_event(event)
        except Exception:
            log.exception("%s on_event failed", self._prefix)


def previous_name(inp: _Input | None) -> str:
    return inp.name if inp is not None else ""
