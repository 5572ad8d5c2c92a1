"""One restream of one live: the source's packets, as FLV over RTMP(S), to one platform.

A `Forwarder` is a reader of the live's `source` track (`media.fanout`): it never
slows the track, the ladder or another restream; if it cannot keep up, its own
bounded queue drops (counted), and a destination that made it drop is disconnected
and reconnected. It runs on a thread of its own, connection after connection:

- `connecting` (the first try) or `reconnecting` (after a failure): the destination is
  dialled through the outbound guard; a failure is retried after a jittered
  exponential backoff (BACKOFF_INITIAL_SECONDS doubling to BACKOFF_MAX_SECONDS), which
  starts over once a connection has forwarded for BACKOFF_RESET_SECONDS;
- `forwarding`: each connection's timestamps start at 0, at a keyframe, with the
  codec configuration first (`restream.flv.FlvMuxer`);
- `errored`: the destination refused (a bad key, a wrong application, a certificate it
  cannot prove, an address the guard refuses): retried on the same backoff, the
  reason in `last_error`;
- `idle`: not started, stopped (toggled off, deleted), or the live ended.

When the publisher drops inside the live's reconnect window, the connection stays up:
a slate (the last picture, or a configured image, with silence, at the source's size
and rate; `restream.slate`) is sent in real time until the publisher is back, and the
source then continues on the same connection with continuous timestamps, so the
platform neither ends the broadcast nor splits its recording. After
`slate_max_seconds` without a publisher the connection is closed (`idle`) until
media comes again.

A session whose codecs FLV cannot carry (HEVC over enhanced RTMP) is forwarded as the
ladder's top rendition instead (H.264 and the shared AAC, read from the `encoded`
track through `restream.rendition.RenditionFeed`, subscribed only while it is used),
on the same connection and timeline; a later H.264/AAC session is the source again.

The stream key is a secret: every log line and message carries the URL redacted
(`restream.redact`).
"""

from __future__ import annotations

import collections
import enum
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Protocol

from encoder.encoded import EncodedItem
from ingest.media import SessionEnd, SessionStart, SourceItem, SourcePacket
from media.clock import TICKS_PER_SECOND
from media.fanout import Broadcast, QueueClosed, Reader
from media.outbound import OutboundPolicy
from media.outbound.policy import OutboundError, OutboundRefused

from .flv import FlvMuxer, FlvTag, UnsupportedCodec
from .redact import display_url, redact
from .rendition import RenditionFeed, unsupported
from .rtmp_client import (
    RtmpAddressRefused,
    RtmpCertificateError,
    RtmpError,
    RtmpPublisher,
    RtmpRefused,
)
from .slate import Slate, picture_from_keyframe

logger = logging.getLogger(__name__)

BACKOFF_INITIAL_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 30.0
BACKOFF_RESET_SECONDS = 30.0  # forwarding this long: the next failure starts at 1 s again
# The reader's queue: about 25 s of a 30 fps source with its audio, and 8 MiB (over
# 10 s of a 6 Mb/s source). A destination slower than that is dropped and reconnected.
QUEUE_ITEMS = 2000
QUEUE_BYTES = 8 * 1024 * 1024
POLL_SECONDS = 0.1  # how soon a stop is seen, and a slate's pace
SLATE_LEAD_SECONDS = 0.5  # a slate runs this far ahead of real time
SLATE_STEP_SECONDS = 1.0  # sent a GOP at a time
BITRATE_WINDOW_SECONDS = 5.0
# Forwarding a rendition: after the publisher left, what the ladder still encodes is
# sent until it has been quiet this long (then the slate); a ladder that has no
# rendition to give this long after a session started makes the restream `errored`.
RENDITION_TAIL_SECONDS = 1.0
RENDITION_WAIT_SECONDS = 10.0
RENDITION_SESSIONS = 1 << 20  # a rendition's sessions are numbered from here


class RestreamState(enum.StrEnum):
    IDLE = "idle"
    CONNECTING = "connecting"
    FORWARDING = "forwarding"
    RECONNECTING = "reconnecting"
    ERRORED = "errored"


@dataclass(frozen=True)
class Destination:
    """Where a restream sends: the platform's RTMP(S) URL (server and application)
    and the stream key (a secret)."""

    id: int
    title: str
    stream_url: str
    stream_key: str = field(repr=False)  # a secret: never in a log line

    @property
    def shown(self) -> str:
        """The URL as logs and messages show it: the key redacted."""
        return display_url(self.stream_url, self.stream_key)


@dataclass(frozen=True)
class ForwarderStatus:
    """What a restream is doing now (the API's extra fields, the metrics)."""

    state: RestreamState = RestreamState.IDLE
    last_error: str | None = None
    connected_since: float | None = None  # Unix seconds, while forwarding
    reconnects: int = 0
    bytes_sent: int = 0
    bitrate: int = 0  # bits per second over the last BITRATE_WINDOW_SECONDS
    dropped_packets: int = 0  # by its queue, the destination too slow
    forwarding: str | None = None  # "source", or "rendition 720p" (the source is HEVC)


class Publisher(Protocol):
    """One outbound connection (`restream.rtmp_client.RtmpPublisher`)."""

    @property
    def bytes_sent(self) -> int: ...

    def send_tags(self, tags: list[FlvTag]) -> None: ...

    def flush(self) -> None: ...

    def poll(self) -> None: ...

    def close(self) -> None: ...


Connect = Callable[["Destination", OutboundPolicy], Publisher]
# (restream id, new state, message): called on the forwarder's thread at each change
OnState = Callable[[int, RestreamState, str], None]


def rtmp_connect(destination: Destination, policy: OutboundPolicy) -> Publisher:
    return RtmpPublisher.connect(destination.stream_url, destination.stream_key, policy)


class _Stopped(Exception):
    """The forwarder was stopped, or the live ended."""


class _Disconnect(Exception):
    """This connection ends (the slate ran out): the next media reconnects."""


class TooSlow(RtmpError):
    """The destination could not take the source as fast as it comes."""


@dataclass
class _Session:
    """The publisher session the source is in, as the forwarder saw it."""

    start: SessionStart
    keyframe: bytes | None = None  # the last video keyframe (for the slate's picture)
    ended_at: float | None = None  # monotonic: the publisher left


class Forwarder:
    """One restream of one live, on its own thread (see the module)."""

    def __init__(
        self,
        destination: Destination,
        source: Broadcast[SourceItem],
        policy: OutboundPolicy,
        *,
        on_state: OnState | None = None,
        connect: Connect = rtmp_connect,
        slate_image: Path | None = None,
        slate_max_seconds: float = 30.0,
        ladder: Broadcast[EncodedItem] | None = None,
        rendition: Callable[[], str | None] | None = None,
        backoff_initial_seconds: float = BACKOFF_INITIAL_SECONDS,
        backoff_max_seconds: float = BACKOFF_MAX_SECONDS,
        label: str = "",
    ) -> None:
        self.destination = destination
        self._source = source
        self._policy = policy
        self._on_state = on_state
        self._connect = connect
        self._slate_image = slate_image
        self._slate_max_seconds = slate_max_seconds
        self._backoff_initial = backoff_initial_seconds
        self._backoff_max = max(backoff_max_seconds, backoff_initial_seconds)
        self._prefix = f"[{label} restream {destination.id}]" if label else "[restream]"
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._status = ForwarderStatus()
        self._sent: collections.deque[tuple[float, int]] = collections.deque()
        self._reader: Reader[SourceItem] | None = None
        self._session: _Session | None = None
        self._thread: threading.Thread | None = None
        self._counted: Publisher | None = None  # the connection `_count_sent` last read
        self._counted_bytes = 0
        # The encoded track and its top rendition's name, for a source FLV cannot carry.
        self._ladder = ladder
        self._rendition = rendition
        self._feed: RenditionFeed | None = None  # while the rendition is forwarded
        self._feed_dropped = 0  # by the feeds closed so far
        self._feed_opened_at = 0.0
        self._feed_late_reported = False
        self._why = ""  # what the source is that FLV cannot carry ("hevc")
        self._announced: int | None = None  # the source session last logged about
        self._source_closed = False  # the live ended; a feed still drains

    # -- control (any thread) -------------------------------------------------------

    def start(self) -> None:
        """Subscribe to the source now (a live under way: from its next keyframe) and
        start forwarding on the forwarder's thread."""
        if self._thread is not None:
            return
        self._reader = self._source.subscribe(
            f"restream {self.destination.id}", max_items=QUEUE_ITEMS, max_bytes=QUEUE_BYTES
        )
        self._thread = threading.Thread(
            target=self._run, name=f"onair-restream-{self.destination.id}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop sending (the connection closes within about POLL_SECONDS)."""
        self._stop.set()
        if self._reader is not None:
            self._reader.close()
        feed = self._feed
        if feed is not None:
            feed.close()

    def join(self, timeout_seconds: float) -> bool:
        """Wait for the thread to end; False if it is still running."""
        if self._thread is None:
            return True
        self._thread.join(timeout_seconds)
        return not self._thread.is_alive()

    def status(self) -> ForwarderStatus:
        with self._lock:
            status = self._status
            now = time.monotonic()
            while self._sent and self._sent[0][0] < now - BITRATE_WINDOW_SECONDS:
                self._sent.popleft()
            sent = sum(size for _, size in self._sent)
        dropped = self._dropped()
        bitrate = int(sent * 8 / BITRATE_WINDOW_SECONDS)
        return replace(status, bitrate=bitrate, dropped_packets=dropped)

    # -- the thread -----------------------------------------------------------------

    def _run(self) -> None:
        failures = 0
        try:
            while not self._stop.is_set():
                if not self._wait_for_media():
                    break
                state = RestreamState.CONNECTING if failures == 0 else RestreamState.RECONNECTING
                if self._status.state is not RestreamState.ERRORED:  # errored until it works
                    self._set(state, f"connecting to {self.destination.shown}")
                forwarded = 0.0
                try:
                    publisher = self._connect(self.destination, self._policy)
                except (RtmpRefused, RtmpAddressRefused, RtmpCertificateError) as error:
                    self._failed(RestreamState.ERRORED, str(error))
                except OutboundRefused as error:
                    self._failed(RestreamState.ERRORED, str(error))
                except (RtmpError, OutboundError, OSError) as error:
                    self._failed(RestreamState.RECONNECTING, str(error))
                else:
                    began = time.monotonic()
                    try:
                        self._forward(publisher)
                    except _Disconnect as done:
                        failures = 0
                        self._set(RestreamState.IDLE, str(done))
                        continue
                    except (RtmpRefused, UnsupportedCodec) as error:
                        self._failed(RestreamState.ERRORED, str(error))
                    except (RtmpError, OutboundError, OSError) as error:
                        self._failed(RestreamState.RECONNECTING, str(error))
                    finally:
                        publisher.close()
                        self._count_sent(publisher)
                        with self._lock:
                            self._status = replace(self._status, connected_since=None)
                    forwarded = time.monotonic() - began
                if self._stop.is_set():
                    break
                if forwarded >= BACKOFF_RESET_SECONDS:
                    failures = 0
                failures += 1
                with self._lock:
                    self._status = replace(self._status, reconnects=self._status.reconnects + 1)
                self._backoff(failures)
        except _Stopped:
            pass
        except Exception:
            logger.exception("%s forwarder crashed", self._prefix)
            self._set(RestreamState.ERRORED, "internal error (see the service log)")
            return
        finally:
            if self._reader is not None:
                self._reader.close()
            self._close_feed()
        self._set(RestreamState.IDLE, "stopped")

    def _failed(self, state: RestreamState, message: str) -> None:
        message = redact(message, self.destination.stream_key)
        logger.warning("%s %s: %s", self._prefix, self.destination.shown, message)
        with self._lock:
            self._status = replace(self._status, last_error=message)
        self._set(state, message)

    def _backoff(self, failures: int) -> None:
        """Wait before the next try; the source is drained meanwhile (it is live)."""
        delay = min(self._backoff_max, self._backoff_initial * 2 ** (failures - 1))
        delay = delay / 2 + random.uniform(0, delay / 2)  # jitter: hosts do not retry in step
        deadline = time.monotonic() + delay
        while not self._stop.is_set() and (left := deadline - time.monotonic()) > 0:
            self._take(min(left, POLL_SECONDS))

    def _wait_for_media(self) -> bool:
        """Until a publisher session is on (False: stopped, or the live ended)."""
        while not self._stop.is_set():
            session = self._session
            if session is not None and session.ended_at is None:
                feed = self._feed
                if feed is None or feed.start is not None:
                    return True
                self._rendition_late()
            try:
                self._take(POLL_SECONDS)
            except _Stopped:
                return False
        return False

    def _take(self, timeout: float) -> SourceItem | None:
        """The next item to forward: the source's, or its top rendition's while the
        source cannot go into FLV (`_Stopped`: the live ended, or the forwarder was
        stopped)."""
        if self._feed is None:
            item = self._take_source(timeout)
            if isinstance(item, SessionStart) and self._use_rendition(item):
                return None  # the rendition's own SessionStart comes from the feed
            return item
        while not self._source_closed:  # the source now only says when sessions change
            item = self._take_source(0)
            if item is None or isinstance(item, SessionEnd):
                break
            if isinstance(item, SessionStart) and not self._use_rendition(item):
                return item  # H.264/AAC again: the source
        feed = self._feed
        assert feed is not None
        try:
            item = feed.take(timeout)
        except QueueClosed:
            raise _Stopped() from None
        if isinstance(item, SessionStart):
            self._announce(feed)
        return item

    def _take_source(self, timeout: float) -> SourceItem | None:
        """The next item of the source, noting sessions and keyframes."""
        assert self._reader is not None
        try:
            item = self._reader.get(timeout)
        except QueueClosed:
            if self._feed is None:
                raise _Stopped() from None
            self._source_closed = True  # the rendition's last packets still come
            return None
        if isinstance(item, SessionStart):
            self._session = _Session(item)
        elif isinstance(item, SessionEnd):
            if self._session is not None:
                self._session.ended_at = time.monotonic()
        elif isinstance(item, SourcePacket) and item.keyframe and item.kind == "video":
            if self._session is not None:
                self._session.keyframe = item.data
        return item

    # -- the rendition, for a source FLV cannot carry ------------------------------------

    def _use_rendition(self, start: SessionStart) -> bool:
        """At a source session's start: whether its top rendition is forwarded instead
        (the feed opened if it was not); False: the source (the feed closed)."""
        what = unsupported(start)
        if what is None or self._ladder is None or self._rendition is None:
            if self._feed is not None:
                logger.info("%s source is H.264/AAC again: forwarding the source", self._prefix)
                self._close_feed()
            with self._lock:
                self._status = replace(self._status, forwarding="source")
            return False
        self._why = what
        if self._feed is None:
            self._feed = RenditionFeed(
                self._ladder,
                self._rendition,
                f"restream {self.destination.id}",
                first_session=RENDITION_SESSIONS,
            )
            self._feed_opened_at = time.monotonic()
            self._feed_late_reported = False
        return True

    def _announce(self, feed: RenditionFeed) -> None:
        """The rendition started a session: said once per source session."""
        session = self._session
        number = session.start.session if session is not None else None
        if number != self._announced:
            self._announced = number
            logger.info(
                "%s source is %s: forwarding rendition %s (H.264)",
                self._prefix,
                self._why,
                feed.rendition,
            )
        with self._lock:
            self._status = replace(self._status, forwarding=f"rendition {feed.rendition}")

    def _rendition_late(self) -> None:
        """A source FLV cannot carry, and still no rendition to send: say so once."""
        waited = time.monotonic() - self._feed_opened_at
        if waited >= RENDITION_WAIT_SECONDS and not self._feed_late_reported:
            self._feed_late_reported = True
            self._failed(
                RestreamState.ERRORED,
                f"the source is {self._why} (not FLV) and the ladder has no H.264 rendition",
            )

    def _close_feed(self) -> None:
        feed, self._feed = self._feed, None
        if feed is not None:
            feed.close()
            self._feed_dropped += feed.dropped_total

    def _dropped(self) -> int:
        """Items the forwarder's queues dropped (the source's, the feeds')."""
        dropped = self._reader.dropped_total if self._reader is not None else 0
        feed = self._feed
        return dropped + self._feed_dropped + (feed.dropped_total if feed is not None else 0)

    def _current_start(self) -> SessionStart | None:
        """What the connection forwards now: the rendition's session, or the source's."""
        if self._feed is not None:
            return self._feed.start
        session = self._session
        return session.start if session is not None else None

    def _tail_sent(self) -> bool:
        """The publisher left: whether what the ladder still had to give was sent."""
        feed = self._feed
        return feed is None or time.monotonic() - feed.last_item_at >= RENDITION_TAIL_SECONDS

    # -- one connection -----------------------------------------------------------------

    def _forward(self, publisher: Publisher) -> None:
        assert self._reader is not None
        muxer = FlvMuxer()
        with self._lock:
            self._status = replace(self._status, last_error=None, connected_since=time.time())
        feed = self._feed
        note = f" (rendition {feed.rendition}: the source is {self._why})" if feed else ""
        self._set(RestreamState.FORWARDING, f"forwarding to {self.destination.shown}{note}")
        dropped = self._dropped()
        session, start = self._session, self._current_start()
        if session is not None and session.ended_at is None and start is not None:
            self._send(publisher, muxer.session_start(*_configuration(start)))
        while True:
            if self._stop.is_set():
                raise _Stopped()
            session = self._session
            if session is not None and session.ended_at is not None and self._tail_sent():
                self._slate(publisher, muxer, session)
                continue
            item = self._take(POLL_SECONDS)
            now_dropped = self._dropped()
            if now_dropped > dropped:
                raise TooSlow(
                    f"the destination is too slow: {now_dropped - dropped} packets dropped"
                )
            if isinstance(item, SessionStart):
                self._send(publisher, muxer.session_start(*_configuration(item)))
            elif isinstance(item, SourcePacket):
                self._send(publisher, muxer.packet(item))
            elif item is None:
                publisher.poll()
            self._count_sent(publisher)

    def _send(self, publisher: Publisher, tags: list[FlvTag]) -> None:
        if tags:
            publisher.send_tags(tags)
            publisher.flush()

    def _slate(self, publisher: Publisher, muxer: FlvMuxer, session: _Session) -> None:
        """The publisher left: keep the connection with a slate, in real time, until
        the next session starts (returns), or for slate_max_seconds (`_Disconnect`;
        at once, with no slate sent, when it is 0)."""
        if self._slate_max_seconds <= 0:
            raise _Disconnect("the publisher left")
        feed = self._feed
        if feed is not None and feed.start is not None:  # at the rendition's format
            slate = self._make_slate(feed.start, feed.keyframe)
        else:
            slate = self._make_slate(session.start, session.keyframe)
        logger.info("%s publisher gone: sending the slate", self._prefix)
        began = time.monotonic()
        slate_session = -1 - session.start.session  # its own number, never a source's
        opening = muxer.session_start(slate.session_start(slate_session), None, slate.extradata())
        self._send(publisher, opening)
        sent_ticks = 0
        while True:
            elapsed = time.monotonic() - began
            if elapsed >= self._slate_max_seconds:
                raise _Disconnect(f"no publisher for {self._slate_max_seconds:g} s: disconnected")
            if sent_ticks < (elapsed + SLATE_LEAD_SECONDS) * TICKS_PER_SECOND:
                tags: list[FlvTag] = []
                for packet in slate.packets(slate_session, sent_ticks, SLATE_STEP_SECONDS):
                    tags.extend(muxer.packet(packet))
                self._send(publisher, tags)
                sent_ticks += slate.span_ticks(SLATE_STEP_SECONDS)
                self._count_sent(publisher)
            item = self._take(POLL_SECONDS)
            if self._stop.is_set():
                raise _Stopped()
            if isinstance(item, SessionStart):
                what = "its rendition" if self._feed is not None else "the source"
                logger.info("%s publisher back: forwarding %s again", self._prefix, what)
                self._send(publisher, muxer.session_start(*_configuration(item)))
                return
            publisher.poll()

    def _make_slate(self, start: SessionStart, keyframe: bytes | None) -> Slate:
        """The slate at the source's format: the last picture unless an image is set."""
        video, audio = start.video, start.audio
        picture = None
        if video is not None and keyframe is not None and self._slate_image is None:
            picture = picture_from_keyframe(video.codec_name, video.extradata, keyframe)
        return Slate(
            width=video.width if video is not None else 1280,
            height=video.height if video is not None else 720,
            frame_rate=(video.frame_rate if video is not None else None) or Fraction(30),
            sample_rate=audio.sample_rate if audio is not None else None,
            channels=audio.channels if audio is not None else None,
            picture=picture,
            image=self._slate_image,
        )

    # -- state -----------------------------------------------------------------------------

    def _count_sent(self, publisher: Publisher) -> None:
        """Add what `publisher` wrote since the last count (its connection's own total)."""
        with self._lock:
            sent = publisher.bytes_sent
            if publisher is not self._counted:
                self._counted, self._counted_bytes = publisher, 0
            grown = max(0, sent - self._counted_bytes)
            if not grown:
                return
            self._counted_bytes = sent
            self._sent.append((time.monotonic(), grown))
            self._status = replace(self._status, bytes_sent=self._status.bytes_sent + grown)

    def _set(self, state: RestreamState, message: str) -> None:
        with self._lock:
            changed = self._status.state is not state
            self._status = replace(self._status, state=state)
        if changed and self._on_state is not None:
            try:
                self._on_state(self.destination.id, state, message)
            except Exception:
                logger.exception("%s on_state failed", self._prefix)


def _configuration(start: SessionStart) -> tuple[SessionStart, bytes | None, bytes | None]:
    return (
        start,
        start.video.extradata if start.video is not None else None,
        start.audio.extradata if start.audio is not None else None,
    )
