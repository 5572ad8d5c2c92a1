"""Live decode: a publish session's RTMP media, as FLV, demuxed/decoded by PyAV in a thread.

The event loop calls `on_media()` (never blocks: bytes go into a bounded FlvFeed);
one thread per session opens the FLV with PyAV (`probesize=32, analyzeduration=0`:
the container opens at once and frames come out milliseconds after arrival) and
puts SessionStart, frames (or packets in passthrough), SessionEnd into the
MediaQueue. Sessions run one after another: session N+1's thread waits for N's.

PyAV only knows the streams it saw while opening (its demuxer reads about two
packets then; a stream that appears later is lost and breaks the end of
`demux()`). So the start of a session is held back until both an audio and a
video tag arrived, metadata says which kinds exist, or PRIME_WAIT_MS of media
passed; then the first tag of each kind is written first. Tags of a kind that
was not there at the start are ignored for the rest of the session.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import av

from ingest import flv
from ingest.feed import DEFAULT_MAX_BYTES, FlvFeed
from ingest.media import (
    AudioParams,
    MediaQueue,
    SessionEnd,
    SessionStart,
    VideoParams,
    nominal_frame_rate,
)
from ingest.stats import SourceStats

logger = logging.getLogger(__name__)

OPEN_OPTIONS = {"probesize": "32", "analyzeduration": "0"}
PRIME_WAIT_MS = 1000


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
    feed: FlvFeed
    primed: bool = False
    pending: list[tuple[int, int, bytes]] = field(default_factory=list)
    pending_bytes: int = 0
    pending_span: tuple[int, int] | None = None  # (min, max) timestamp held back
    kinds_seen: set[int] = field(default_factory=set)
    kinds: frozenset[int] = frozenset()
    metadata: dict[str, Any] | None = None
    reason: str = ""
    ignored_tags: int = 0
    audio_config: flv.AudioTagInfo | None = None  # the AAC config, truer than tag flags
    thread: threading.Thread | None = None


class LiveDecoder:
    """One job's decoder: each publish session's FLV is demuxed/decoded by PyAV in a
    thread; items go to the MediaQueue.

    `on_error` is called from the decode thread with any exception that ended a
    session early. `max_buffered_bytes` caps each session's feed. A source larger
    than `max_pixels` (declared in onMetaData, or decoded) is refused: its session
    ends and `on_refused(reason)` is called (from the event loop for metadata, from
    the decode thread for a decoded frame), before any frame of it is queued.
    """

    def __init__(
        self,
        queue: MediaQueue,
        *,
        decode: bool = True,
        label: str = "",
        on_error: Callable[[BaseException], None] | None = None,
        on_refused: Callable[[str], None] | None = None,
        max_buffered_bytes: int = DEFAULT_MAX_BYTES,
        max_pixels: int | None = None,
    ) -> None:
        self.queue = queue
        self.decode = decode
        self.label = label
        self.on_error = on_error
        self.on_refused = on_refused
        self.max_buffered_bytes = max_buffered_bytes
        self.max_pixels = max_pixels
        self.prefix = f"[decode {label}]" if label else "[decode]"
        self.video_frames = 0
        self.audio_frames = 0
        self.decode_errors = 0
        self._stats = SourceStats()
        self._session: _Session | None = None
        self._last_thread: threading.Thread | None = None
        self._next_index = 0
        self._dropped_before = 0  # feed drops of finished sessions
        self._feeds: list[FlvFeed] = []
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
    def dropped_bytes_tags(self) -> int:
        """Tags dropped by the byte cap of the sessions' feeds, all sessions."""
        with self._lock:
            return self._dropped_before + sum(feed.dropped_tags for feed in self._feeds)

    def start_session(self) -> int:
        """Begin a publish session (ending any current one); returns its index."""
        if self._stopped:
            raise RuntimeError("decoder stopped")
        if self._session is not None:
            self.end_session("replaced by a new session")
        index = self._next_index
        self._next_index += 1
        session = _Session(index, FlvFeed(self.max_buffered_bytes))
        previous = self._last_thread
        thread = threading.Thread(
            target=self._run,
            args=(session, previous),
            name=f"decode-{self.label or 'live'}-{index}",
            daemon=True,
        )
        session.thread = thread
        with self._lock:
            self._feeds.append(session.feed)
        self._session = session
        self._last_thread = thread
        self._stats.new_session()
        thread.start()
        return index

    def on_metadata(self, metadata: dict[str, Any]) -> None:
        self._stats.on_metadata(metadata)
        problem = pixel_problem(
            _declared_int(metadata, "width"), _declared_int(metadata, "height"), self.max_pixels
        )
        if problem is not None:
            self.end_session(problem)
            self._refuse(problem)
            return
        session = self._session
        if session is not None and not session.primed:
            session.metadata = dict(metadata)
            self._maybe_prime(session)

    def on_media(self, kind: int, timestamp_ms: int, payload: bytes) -> None:
        """One RTMP audio (8) or video (9) message; never blocks."""
        if kind not in (flv.TAG_AUDIO, flv.TAG_VIDEO):
            return
        self._stats.on_media(kind, timestamp_ms, payload)
        session = self._session
        if session is None:
            return
        if kind == flv.TAG_AUDIO and session.audio_config is None:
            audio = flv.audio_info(payload)
            if audio is not None and audio.config and audio.sample_rate:
                session.audio_config = audio
        if session.primed:
            if kind in session.kinds:
                session.feed.write_tag(kind, timestamp_ms, payload)
            else:
                if not session.ignored_tags:
                    logger.warning("%s ignoring a stream that started late", self.prefix)
                session.ignored_tags += 1
            return
        session.pending.append((kind, timestamp_ms, payload))
        session.pending_bytes += len(payload)
        span = session.pending_span or (timestamp_ms, timestamp_ms)
        session.pending_span = (min(span[0], timestamp_ms), max(span[1], timestamp_ms))
        session.kinds_seen.add(kind)
        self._maybe_prime(session)

    def _maybe_prime(self, session: _Session) -> None:
        if not session.pending:
            return
        seen = session.kinds_seen
        ready = seen >= {flv.TAG_AUDIO, flv.TAG_VIDEO}
        if not ready and session.metadata is not None:
            expected = _declared_kinds(session.metadata)
            ready = bool(expected) and seen >= expected
        if not ready and session.pending_span is not None:
            first, last = session.pending_span
            ready = last - first >= PRIME_WAIT_MS
        if ready or session.pending_bytes >= self.max_buffered_bytes // 2:
            self._prime(session)

    def _prime(self, session: _Session) -> None:
        """Write the FLV header and the held tags, the first tag of each kind first."""
        session.primed = True
        session.kinds = frozenset(session.kinds_seen)
        feed = session.feed
        feed.write(
            flv.file_header(
                audio=flv.TAG_AUDIO in session.kinds, video=flv.TAG_VIDEO in session.kinds
            )
        )
        if session.metadata:
            feed.write(flv.tag(flv.TAG_SCRIPT, 0, flv.metadata_payload(session.metadata)))
        firsts: dict[int, int] = {}
        for position, (kind, _, _) in enumerate(session.pending):
            firsts.setdefault(kind, position)
        order = sorted(firsts.values())
        order += [i for i in range(len(session.pending)) if i not in firsts.values()]
        for position in order:
            feed.write_tag(*session.pending[position])
        session.pending = []
        session.pending_bytes = 0

    def end_session(self, reason: str) -> None:
        """End the current session: its thread drains the feed, flushes, puts SessionEnd."""
        session = self._session
        if session is None:
            return
        self._session = None
        if not session.primed and session.pending:
            self._prime(session)
        session.reason = reason
        session.feed.close()

    def _refuse(self, reason: str) -> None:
        logger.warning("%s source refused: %s", self.prefix, reason)
        if self.on_refused is not None:
            try:
                self.on_refused(reason)
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

    def stats(self) -> dict[str, Any]:
        """Snapshot of the source statistics (API keys); thread-safe."""
        return self._stats.snapshot()

    # Decode thread side

    def _run(self, session: _Session, previous: threading.Thread | None) -> None:
        if previous is not None:
            previous.join()
        started = False
        reason = ""
        try:
            if session.feed.wait_readable():
                started = self._demux(session)
        except SourceTooLarge as refused:
            reason = str(refused)
            self._refuse(reason)
        except Exception as exc:  # the thread boundary: PyAV and anything else
            reason = f"decode error: {exc}"
            logger.warning("%s session %d: %s", self.prefix, session.index, reason)
            if self.on_error is not None:
                try:
                    self.on_error(exc)
                except Exception:
                    logger.exception("%s on_error callback failed", self.prefix)
        finally:
            session.feed.abort()
            if not started:
                self.queue.put(SessionStart(session.index, None, None))
            self.queue.put(SessionEnd(session.index, reason or session.reason or "ended"))
            with self._lock:
                self._feeds.remove(session.feed)
                self._dropped_before += session.feed.dropped_tags
            if session.feed.dropped_tags:
                logger.warning(
                    "%s session %d: decoder too slow, dropped %d tags (%d bytes)",
                    self.prefix,
                    session.index,
                    session.feed.dropped_tags,
                    session.feed.dropped_bytes,
                )

    def _demux(self, session: _Session) -> bool:
        """Open the session's FLV and pump it into the queue; True once SessionStart is put.

        The container is not closed explicitly: packets (passthrough) and the
        SessionStart template streams still refer to it; it closes when unreferenced.
        """
        container = av.open(session.feed, mode="r", format="flv", options=OPEN_OPTIONS)
        video_stream = container.streams.video[0] if container.streams.video else None
        audio_stream = container.streams.audio[0] if container.streams.audio else None
        video = audio = None
        if video_stream is not None:
            context = video_stream.codec_context
            rate = video_stream.average_rate
            video = VideoParams(
                codec_name=context.name,
                width=context.width,
                height=context.height,
                frame_rate=nominal_frame_rate(Fraction(rate)) if rate else None,
                time_base=Fraction(video_stream.time_base or Fraction(1, 1000)),
                stream=video_stream,
            )
            if context.width and context.height:
                self._stats.on_video_size(context.width, context.height)
        if audio_stream is not None:
            # Until the first frame is decoded the codec context repeats the FLV tag
            # flags, which for AAC always say 44.1 kHz stereo; the AAC config knows.
            audio_context = audio_stream.codec_context
            config = session.audio_config
            sample_rate = (config and config.sample_rate) or audio_context.sample_rate
            channels = (config and config.channels) or audio_context.channels
            audio = AudioParams(
                codec_name=audio_context.name,
                sample_rate=sample_rate,
                channels=channels,
                time_base=Fraction(audio_stream.time_base or Fraction(1, 1000)),
                stream=audio_stream,
            )
            if config is None and sample_rate:
                self._stats.on_audio_format(sample_rate, channels)
        self.queue.put(SessionStart(session.index, video, audio))
        streams = [s for s in (video_stream, audio_stream) if s is not None]
        if not streams:
            return True
        for packet in container.demux(streams):
            if self.decode:
                self._decode_packet(packet)
            elif packet.size:
                if packet.stream.type == "video":
                    self.video_frames += 1
                else:
                    self.audio_frames += 1
                self.queue.put(packet)
        return True

    def _decode_packet(self, packet: av.Packet) -> None:
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
            self.queue.put(frame)


def _declared_int(metadata: dict[str, Any], key: str) -> int:
    value = metadata.get(key)
    try:
        return max(0, int(value)) if isinstance(value, int | float) else 0
    except (OverflowError, ValueError):
        return 0  # inf, nan


def _declared_kinds(metadata: dict[str, Any]) -> set[int]:
    """Which tag kinds onMetaData says the stream has."""
    kinds = set()
    if any(key in metadata for key in ("videocodecid", "width", "height")):
        kinds.add(flv.TAG_VIDEO)
    if any(key in metadata for key in ("audiocodecid", "audiosamplerate", "audiochannels")):
        kinds.add(flv.TAG_AUDIO)
    return kinds
