"""Live decode: each publish session's container bytes, demuxed/decoded by PyAV in a thread.

A session is opened in a container format (`flv` for RTMP, `mpegts` for SRT and
HLS). The event loop feeds it and never blocks: `on_media()` for RTMP's FLV-shaped
messages (`ingest.flvstream` writes them as an FLV stream), `on_data()` for the
bytes of a byte-stream container, as they came. Either way the bytes go into the
session's bounded `ByteFeed`; one thread per session opens it with PyAV
(`probesize=32, analyzeduration=0`: the container opens at once and frames come out
milliseconds after arrival) and puts SessionStart, frames (or packets in
passthrough), SessionEnd into the live's frames track (a `MediaSink`: the job's
`media.fanout` broadcast, or a `MediaQueue`), and every demuxed packet, at codec
level, into its `source` track when there is one. Sessions run one after another:
session N+1's thread waits for N's.

A source faster than real time (a file pushed as fast as it goes, a publisher
catching up) is encoded whole: a frame that finds the ladder full waits for it while
the frame is ahead of its real-time instant (`_hold_until`), the session's feed
fills, and the server stops reading from the publisher (`ByteFeed.when_room`, the
session's `wait_for_room`): TCP slows the publisher. A real-time source the ladder
cannot follow drops at the ladder instead, so its latency stays bounded.

Between the demuxer and the queue, for every container (`ingest.packets`): video
starts at the session's first keyframe, audio timestamps the demuxer left out are
filled in, and SessionStart waits for the first packet: it carries the session's
`WallClockOrigin` (that packet's pts in seconds, and when its first byte arrived:
`wall_clock()`, Unix seconds, stamped on the event loop as the bytes came in).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av

from ingest.feed import DEFAULT_MAX_BYTES, ByteFeed
from ingest.flvstream import FlvSessionWriter
from ingest.formats import amf0, flv
from ingest.health import AUDIO, VIDEO, HealthMonitor
from ingest.media import (
    MediaSink,
    SessionEnd,
    SessionStart,
    SourceItem,
    WallClockOrigin,
    source_packet,
)
from ingest.packets import AudioTimestamps, KeyframeWait, SessionOpening
from ingest.session import CONTAINERS, FLV
from ingest.stats import SourceStatistics, SourceStats
from media.fanout import Broadcast

logger = logging.getLogger(__name__)

OPEN_OPTIONS = {"probesize": "32", "analyzeduration": "0"}
# A frame that finds the ladder full waits for room while its source is ahead of real
# time, and this much past its real-time instant: a file pushed to a ladder a little
# slower than real time (a loaded host) still loses nothing for its first minutes; a
# real-time source the ladder cannot follow drops once 2 s behind...
PACING_SLACK_SECONDS = 2.0
# ... but never longer than this for one item (a ladder that stopped reading).
MAX_HOLD_SECONDS = 5.0


class SourceTooLarge(ValueError):
    """The source's picture is larger than the host accepts (`max_pixels`)."""


def pixel_problem(width: int, height: int, max_pixels: int | None) -> str | None:
    """Why a `width` x `height` source is refused, or None."""
    if max_pixels is None or width * height <= max_pixels:
        return None
    return f"source is {width}x{height}, above the {max_pixels}-pixel limit of this host"


@dataclass
class _Session:
    index: int
    container: str
    feed: ByteFeed
    flv: FlvSessionWriter | None  # FLV sessions: how their messages become bytes
    on_refused: Callable[[str], None] | None
    reason: str = ""
    started: bool = False  # SessionStart was put
    refused: bool = False
    thread: threading.Thread | None = None
    origin: WallClockOrigin | None = None  # when its media arrived (SessionStart's)


class LiveDecoder:
    """One job's decoder: each publish session's container is demuxed/decoded by PyAV
    in a thread; items go to the frames track (`queue`), packets to `source`.

    `on_error` is called from the decode thread with any exception that ended a
    session early. `max_buffered_bytes` caps each session's feed. A source larger
    than `max_pixels` (declared in metadata, or decoded) is refused: its session
    ends and `on_refused(reason)` is called, then the session's own `on_refused`
    (from the event loop for metadata, from the decode thread for a decoded frame),
    before any frame of it is queued. `wall_clock` stamps arrivals (Unix seconds).
    `health` (`ingest.health`) is fed every frame's arrival on `health_clock`
    (monotonic seconds): RTMP's tags on the event loop as they come, a byte-stream
    container's packets as demuxed.
    """

    def __init__(
        self,
        queue: MediaSink,
        *,
        decode: bool = True,
        label: str = "",
        on_error: Callable[[BaseException], None] | None = None,
        on_refused: Callable[[str], None] | None = None,
        max_buffered_bytes: int = DEFAULT_MAX_BYTES,
        max_pixels: int | None = None,
        wall_clock: Callable[[], float] = time.time,
        source: Broadcast[SourceItem] | None = None,
        health_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.queue = queue
        self.source = source  # every demuxed packet, at codec level (`media.fanout`)
        self.decode = decode
        self.label = label
        self.on_error = on_error
        self.on_refused = on_refused
        self.max_buffered_bytes = max_buffered_bytes
        self.max_pixels = max_pixels
        self.wall_clock = wall_clock
        self.health_clock = health_clock
        self.health = HealthMonitor()
        self.prefix = f"[decode {label}]" if label else "[decode]"
        self.video_frames = 0
        self.audio_frames = 0
        self.decode_errors = 0
        self.skipped_before_keyframe = 0  # video packets of a session before its keyframe
        self._stats = SourceStats()
        self._session: _Session | None = None
        self._last_thread: threading.Thread | None = None
        self._next_index = 0
        self._dropped_before = 0  # feed drops of finished sessions
        self._feeds: list[ByteFeed] = []
        self._stopped = False
        self._lock = threading.Lock()
        self._last_video_size = (0, 0)  # decode thread only
        self._last_audio_format = (0, 0)

    # Event loop side

    @property
    def current_session(self) -> int | None:
        """Index of the session receiving media, or None."""
        session = self._session
        return None if session is None else session.index

    @property
    def dropped_writes(self) -> int:
        """Writes (FLV tags, byte chunks) the sessions' feeds dropped at their cap."""
        with self._lock:
            return self._dropped_before + sum(feed.dropped_writes for feed in self._feeds)

    def start_session(
        self, container: str = FLV, *, on_refused: Callable[[str], None] | None = None
    ) -> int:
        """Begin a publish session in `container` (ending any current one); its index.

        `on_refused(reason)`: this session's source was refused (see the class)."""
        if self._stopped:
            raise RuntimeError("decoder stopped")
        if container not in CONTAINERS:
            raise ValueError(f"unknown container {container!r}")
        if self._session is not None:
            self.end_session("replaced by a new session")
        index = self._next_index
        self._next_index += 1
        feed = ByteFeed(self.max_buffered_bytes)
        label = f"{self.label} {index}".strip()
        writer = FlvSessionWriter(feed, label=label) if container == FLV else None
        session = _Session(index, container, feed, writer, on_refused)
        previous = self._last_thread
        thread = threading.Thread(
            target=self._run,
            args=(session, previous),
            name=f"decode-{self.label or 'live'}-{index}",
            daemon=True,
        )
        session.thread = thread
        with self._lock:
            self._feeds.append(feed)
        self._session = session
        self._last_thread = thread
        self._stats.new_session()
        self.health.session_started(self.health_clock())
        thread.start()
        return index

    def on_metadata(self, metadata: Mapping[str, Any]) -> None:
        """What the publisher declares (RTMP onMetaData): statistics, the pixel limit."""
        self._stats.on_metadata(metadata)
        declared_fps = metadata.get("framerate")
        if amf0.is_number(declared_fps) and 0 < declared_fps < 1000:
            self.health.set_nominal_fps(float(declared_fps))
        session = self._session
        problem = pixel_problem(
            _declared_int(metadata, "width"), _declared_int(metadata, "height"), self.max_pixels
        )
        if problem is not None:
            self.end_session(problem)
            if session is not None:
                self._refuse(session, problem)
            return
        if session is not None and session.flv is not None:
            session.flv.on_metadata(metadata)

    def on_media(self, kind: int, timestamp_ms: int, payload: bytes) -> None:
        """One RTMP audio (8) or video (9) message of an FLV session; never blocks."""
        if kind not in (flv.TAG_AUDIO, flv.TAG_VIDEO):
            return
        self._stats.on_media(kind, timestamp_ms, payload)
        session = self._session
        if session is None:
            return
        if session.flv is None:
            raise ValueError(f"session {session.index} reads {session.container} bytes, not tags")
        kind_name = VIDEO if kind == flv.TAG_VIDEO else AUDIO
        self.health.on_frame(kind_name, self.health_clock(), timestamp_ms / 1000)
        arrived = self.wall_clock() if session.feed.recording_arrivals else None
        session.flv.on_tag(kind, timestamp_ms, payload, arrived)

    def on_data(self, data: bytes) -> None:
        """The next bytes of a byte-stream session (MPEG-TS), any size; never blocks.
        Over the feed's cap the write is lost whole (the demuxer resynchronises)."""
        session = self._session
        if session is None or not data:
            return
        if session.flv is not None:
            raise ValueError(f"session {session.index} is FLV: feed it tags (on_media)")
        arrived = self.wall_clock() if session.feed.recording_arrivals else None
        session.feed.write(data, arrived=arrived)

    def when_room(self, callback: Callable[[], None]) -> bool:
        """False if the current session's feed takes more now; else True, and
        `callback()` comes (from the decode thread) once it does again (`ByteFeed`)."""
        session = self._session
        return session is not None and session.feed.when_room(callback)

    def end_session(self, reason: str) -> None:
        """End the current session: its thread drains the feed, flushes, puts SessionEnd."""
        session = self._session
        if session is None:
            return
        self._session = None
        self.health.session_ended(self.health_clock())
        if session.flv is not None:
            session.flv.finish()
        session.reason = reason
        session.feed.close()

    def _refuse(self, session: _Session, reason: str) -> None:
        if session.refused:
            return
        session.refused = True
        logger.warning("%s source refused: %s", self.prefix, reason)
        for callback in (self.on_refused, session.on_refused):
            if callback is None:
                continue
            try:
                callback(reason)
            except Exception:
                logger.exception("%s on_refused callback failed", self.prefix)

    def stop(self, timeout: float = 5.0) -> None:
        """End any session and wait for the decode thread; idempotent."""
        self._stopped = True
        self.end_session("stopped")
        thread = self._last_thread
        if thread is None:
            return
        thread.join(timeout)
        if thread.is_alive():
            logger.warning(
                "%s decode thread still busy after %gs: dropping input", self.prefix, timeout
            )
            with self._lock:
                feeds = list(self._feeds)
            for feed in feeds:
                feed.abort()
            thread.join(min(timeout, 1.0))

    def stats(self) -> SourceStatistics:
        """Snapshot of the source statistics; thread-safe."""
        return self._stats.snapshot()

    # Decode thread side

    def _run(self, session: _Session, previous: threading.Thread | None) -> None:
        if previous is not None:
            previous.join()
        reason = ""
        try:
            if session.feed.wait_readable():
                self._demux(session)
        except SourceTooLarge as refused:
            reason = str(refused)
            self._refuse(session, reason)
        except Exception as exc:  # the thread boundary: PyAV and anything else
            reason = f"decode error: {exc}"
            logger.warning("%s session %d: %s", self.prefix, session.index, reason)
            if self.on_error is not None:
                try:
                    self.on_error(exc)
                except Exception:
                    logger.exception("%s on_error callback failed", self.prefix)
        finally:
            feed = session.feed
            feed.abort()
            if not session.started:
                self._publish(SessionStart(session.index, None, None))
            self._publish(SessionEnd(session.index, reason or session.reason or "ended"))
            with self._lock:
                self._feeds.remove(feed)
                self._dropped_before += feed.dropped_writes
            if feed.dropped_writes:
                logger.warning(
                    "%s session %d: decoder too slow, dropped %d writes (%d bytes)",
                    self.prefix,
                    session.index,
                    feed.dropped_writes,
                    feed.dropped_bytes,
                )

    def _demux(self, session: _Session) -> None:
        """Open the session's container and pump it into the queue.

        The container is not closed explicitly: packets (passthrough) and the
        SessionStart template streams still refer to it; it closes when unreferenced.
        """
        container = av.open(session.feed, mode="r", format=session.container, options=OPEN_OPTIONS)
        video_stream = container.streams.video[0] if container.streams.video else None
        audio_stream = container.streams.audio[0] if container.streams.audio else None
        streams = [s for s in (video_stream, audio_stream) if s is not None]
        start = SessionOpening(session.index, session.feed, video_stream, audio_stream, session.flv)
        if not streams:
            self._put_start(start, session)
            return
        keyframe = KeyframeWait() if video_stream is not None else None
        audio_times = AudioTimestamps() if audio_stream is not None else None
        for packet in container.demux(streams):
            if packet.size:
                if packet.stream.type == "video":
                    if keyframe is not None and not keyframe.passes(packet):
                        self.skipped_before_keyframe += 1
                        continue
                elif audio_times is not None:
                    audio_times.fill(packet)
                if not session.started:
                    start.held.append(packet)
                    if not start.ready():
                        continue
            if not session.started:
                self._put_start(start, session)
                for held in start.held:
                    self._take(session, held)
                start.held = []
                if packet.size:
                    continue  # it was held: taken above
            self._take(session, packet)
        if not session.started:
            self._put_start(start, session)
            for held in start.held:
                self._take(session, held)

    def _put_start(self, start: SessionOpening, session: _Session) -> None:
        item = start.session_start()
        video, audio = item.video, item.audio
        if video is not None and video.width and video.height:
            self._stats.on_video_size(video.width, video.height)
        flv_config = session.flv is not None and session.flv.audio_config is not None
        if audio is not None and audio.sample_rate and not flv_config:
            self._stats.on_audio_format(audio.sample_rate, audio.channels)
        session.feed.forget_arrivals()
        session.origin = item.wall_clock
        self._publish(item)
        session.started = True

    def _publish(self, control: SessionStart | SessionEnd) -> None:
        """A session's start or end, on every track."""
        self.queue.put(control)
        if self.source is not None:
            self.source.put(control)

    def _take(self, session: _Session, packet: av.Packet) -> None:
        if packet.size and session.flv is None:  # FLV sessions are measured from their tags
            time_base = packet.time_base or Fraction(1, 1000)
            dts = packet.dts if packet.dts is not None else packet.pts
            time_ms = None if dts is None else int(dts * time_base * 1000)
            self._stats.on_packet(
                packet.stream.type,
                packet.size,
                time_ms,
                packet.stream.codec_context.codec.canonical_name,
            )
            media_seconds = None if time_ms is None else time_ms / 1000
            self.health.on_frame(packet.stream.type, self.health_clock(), media_seconds)
        if packet.size and self.source is not None:
            self.source.put(source_packet(session.index, packet))
        if self.decode:
            self._decode_packet(session, packet)
        elif packet.size:
            if packet.stream.type == "video":
                self.video_frames += 1
            else:
                self.audio_frames += 1
            self.queue.put(packet, self._hold_until(session, packet.pts, packet.time_base))

    def _hold_until(
        self, session: _Session, pts: int | None, time_base: Fraction | None
    ) -> float | None:
        """How long the frames track's pacing reader (the ladder) may hold this item
        (time.monotonic()): while the source is ahead of real time (the item came
        before the instant a real-time publisher would have sent it), and
        PACING_SLACK_SECONDS past that; None for media late already (a real-time
        source the ladder cannot follow drops: its latency stays bounded)."""
        origin = session.origin
        if origin is None or pts is None or time_base is None:
            return None
        lead = origin.at(pts * time_base) - self.wall_clock()
        hold = lead + PACING_SLACK_SECONDS
        return time.monotonic() + min(hold, MAX_HOLD_SECONDS) if hold > 0 else None

    def _decode_packet(self, session: _Session, packet: av.Packet) -> None:
        try:
            frames = packet.decode()
        except av.InvalidDataError as exc:  # one bad packet must not end a live session
            self.decode_errors += 1
            if self.decode_errors == 1 or self.decode_errors % 100 == 0:
                logger.warning(
                    "%s undecodable packet (%d so far): %s", self.prefix, self.decode_errors, exc
                )
            return
        for frame in frames:
            if isinstance(frame, av.VideoFrame):
                size = (frame.width, frame.height)
                if size != self._last_video_size:
                    problem = pixel_problem(frame.width, frame.height, self.max_pixels)
                    if problem is not None:
                        raise SourceTooLarge(problem)
                    self._last_video_size = size
                    self._stats.on_video_size(*size)
                self.video_frames += 1
            elif isinstance(frame, av.AudioFrame):
                self.audio_frames += 1
                channels = len(frame.layout.channels)
                if (frame.sample_rate, channels) != self._last_audio_format:
                    self._last_audio_format = (frame.sample_rate, channels)
                    self._stats.on_audio_format(frame.sample_rate, channels)
            else:
                continue
            self.queue.put(frame, self._hold_until(session, frame.pts, frame.time_base))


def _declared_int(metadata: Mapping[str, Any], key: str) -> int:
    value = metadata.get(key)
    try:
        return max(0, int(value)) if isinstance(value, int | float) else 0
    except (OverflowError, ValueError):
        return 0  # inf, nan
