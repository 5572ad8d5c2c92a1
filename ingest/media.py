"""The one interface through which a job's decoded media leaves ingest.

A publish session's decode thread `put()`s items into a `MediaQueue`; the job's
encoder thread `get()`s them. The queue is bounded: when the consumer is too slow,
media items are dropped and counted (never memory without limit); control items
(`SessionStart`, `SessionEnd`) are never dropped.

Items, in order, for each publish session:
    SessionStart, then any mix of av.VideoFrame / av.AudioFrame (decoding mode) or
    av.Packet (passthrough mode), then SessionEnd.
Frame and packet timestamps are in the input stream's time base and start anywhere
(RTMP's near zero at each session, a reconnect restarts them; MPEG-TS's wherever
the source's 90 kHz clock is): the consumer keeps its output continuous across
sessions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Protocol

import av

from media.clock import TICKS_PER_SECOND
from media.fanout import Broadcast, TrackRules

# Rates a source declares only approximately (FLV metadata is a double, read back as
# the nearest fraction with a small denominator: 29.97 -> 989/33).
_NTSC_RATES = tuple(Fraction(n * 1000, 1001) for n in (24, 30, 48, 60, 120))
_RATE_TOLERANCE = Fraction(1, 5000)  # relative: a double read back as a small fraction


def nominal_frame_rate(rate: Fraction | None) -> Fraction | None:
    """The exact rate a declared one stands for: an integer, or an NTSC x/1001 rate,
    when within 0.02 %; otherwise the rate as declared (None or <= 0: None)."""
    if rate is None or rate <= 0:
        return None
    candidates = (Fraction(round(rate)), *_NTSC_RATES)
    best = min(candidates, key=lambda c: abs(c - rate))
    if best > 0 and abs(best - rate) <= best * _RATE_TOLERANCE:
        return best
    return Fraction(rate)


@dataclass(frozen=True)
class VideoParams:
    """What the source video is, as the demuxer/decoder saw it."""

    codec_name: str  # "h264", "hevc", ...
    width: int
    height: int
    frame_rate: Fraction | None  # None when the source does not say
    time_base: Fraction
    stream: Any = field(
        default=None, compare=False, repr=False
    )  # av VideoStream (passthrough template)
    # The codec configuration as the demuxer gave it (avcC from FLV; MPEG-TS: usually
    # none, the parameter sets are in the keyframes), copied: safe on any thread.
    extradata: bytes | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class AudioParams:
    codec_name: str  # "aac", ...
    sample_rate: int
    channels: int
    time_base: Fraction
    stream: Any = field(
        default=None, compare=False, repr=False
    )  # av AudioStream (passthrough template)
    extradata: bytes | None = field(default=None, compare=False, repr=False)  # the ASC


@dataclass(frozen=True)
class WallClockOrigin:
    """When the session's media arrived: the wall-clock instant (Unix seconds) at which
    the media at `media_seconds` (in the session's own timestamps, as its frames and
    packets carry them) arrived. Later media maps by its timestamp difference."""

    unix_seconds: float
    media_seconds: Fraction

    def at(self, media_seconds: Fraction | float) -> float:
        """The arrival instant (Unix seconds) of the media at `media_seconds`."""
        return self.unix_seconds + float(Fraction(media_seconds) - self.media_seconds)


@dataclass(frozen=True)
class SessionStart:
    """A publisher's session began (first one, or a reconnect: `session` > 0)."""

    session: int
    video: VideoParams | None
    audio: AudioParams | None
    # The session's first packet and when it arrived (`ingest.packets`); None: the
    # session had no media
    wall_clock: WallClockOrigin | None = None
    # The program goes on (`encoder.program`): another source of the same live, on the
    # same timeline; no new keyframe cadence, no discontinuity (the encoder only
    # starts its audio conversion anew and anchors the wall clock again).
    continues: bool = False


@dataclass(frozen=True)
class SessionEnd:
    """The publisher's session ended (disconnect, error, or job stopped)."""

    session: int
    reason: str


MediaItem = SessionStart | SessionEnd | av.VideoFrame | av.AudioFrame | av.Packet


@dataclass(frozen=True)
class SourcePacket:
    """One demuxed packet of the source, at codec level: the same for an RTMP, an SRT
    or an HLS source (the codec parameters come with the session's SessionStart)."""

    session: int
    kind: str  # "video" or "audio"
    codec: str  # "h264", "aac", ...
    data: bytes
    pts: int | None  # 90 kHz ticks, in the session's own timestamps
    dts: int | None
    keyframe: bool

    @property
    def size_bytes(self) -> int:
        return len(self.data)


SourceItem = SessionStart | SessionEnd | SourcePacket


def source_packet(session: int, packet: av.Packet) -> SourcePacket:
    """A demuxed packet as the source track carries it."""
    time_base = packet.time_base or Fraction(1, 1000)

    def ticks(value: int | None) -> int | None:
        return None if value is None else round(value * time_base * TICKS_PER_SECOND)

    stream = packet.stream
    return SourcePacket(
        session=session,
        kind=stream.type,
        codec=stream.codec_context.name,
        data=bytes(packet),
        pts=ticks(packet.pts),
        dts=ticks(packet.dts),
        keyframe=bool(packet.is_keyframe),
    )


# The source's packets (`LiveDecoder(source=...)`): what a copy, a restream or a
# viewer of the source reads; it starts at a video keyframe, after its SessionStart.
SOURCE_RULES: TrackRules[SourceItem] = TrackRules(
    size_of=lambda item: item.size_bytes if isinstance(item, SourcePacket) else 0,
    kind_of=lambda item: item.kind if isinstance(item, SourcePacket) else "control",
    is_control=lambda item: isinstance(item, SessionStart | SessionEnd),
    is_config=lambda item: isinstance(item, SessionStart),
    is_keyframe=lambda item: (
        isinstance(item, SourcePacket) and item.kind == "video" and item.keyframe
    ),
    resync_after_drop=True,
)


def source_broadcast(label: str) -> Broadcast[SourceItem]:
    return Broadcast(f"{label} source", SOURCE_RULES)


def media_item_bytes(item: MediaItem) -> int:
    """The memory an item holds: a frame's planes, a packet's payload (control: 0)."""
    if isinstance(item, av.VideoFrame | av.AudioFrame):
        return sum(plane.buffer_size for plane in item.planes)
    if isinstance(item, av.Packet):
        return item.size
    return 0


def media_item_kind(item: MediaItem) -> str:
    if isinstance(item, av.VideoFrame):
        return "video"
    if isinstance(item, av.AudioFrame):
        return "audio"
    if isinstance(item, av.Packet):
        return "packet"
    return "control"


def _starts_a_reader(item: MediaItem) -> bool:
    """Where a reader joining mid-live may start: any decoded frame (each stands on its
    own), a packet only at a video keyframe."""
    if isinstance(item, av.Packet):
        return bool(item.is_keyframe) and item.stream is not None and item.stream.type == "video"
    return True


# A live's decoded frames (or, for a copy, its packets): what the ladder reads.
MEDIA_RULES: TrackRules[MediaItem] = TrackRules(
    size_of=media_item_bytes,
    kind_of=media_item_kind,
    is_control=lambda item: isinstance(item, SessionStart | SessionEnd),
    is_config=lambda item: isinstance(item, SessionStart),
    is_keyframe=_starts_a_reader,
)


def media_broadcast(label: str) -> Broadcast[MediaItem]:
    """The decoded track of a live (`media.fanout`): the decoder `put()`s into it."""
    return Broadcast(label, MEDIA_RULES)


class MediaSink(Protocol):
    """Where a decoder puts its items: a `MediaQueue`, or a live's broadcast.
    `wait_until` (time.monotonic()): how long the decoder may be held for a pacing
    reader's room (`media.fanout`); None: not at all."""

    def put(self, item: MediaItem, wait_until: float | None = None) -> bool: ...


class MediaSource(Protocol):
    """What the encoder reads: a `MediaQueue`, or a reader of a live's broadcast."""

    def get(self, timeout: float | None = None) -> MediaItem | None: ...

    def __len__(self) -> int: ...


class MediaQueue:
    """A broadcast with one reader: the bounded queue a single consumer reads.

    `put()` never blocks, it drops and counts instead. Bounded twice: by items, and
    by the bytes they hold (a 4K frame is 12 MB, a 720p one 1.4 MB): the item that
    would pass either bound is dropped (one item is always let into an empty queue,
    whatever its size). Control items are never dropped.
    """

    def __init__(self, max_items: int = 120, max_bytes: int | None = None) -> None:
        self._broadcast = media_broadcast("media")
        self.reader = self._broadcast.subscribe(
            "consumer", max_items=max_items, max_bytes=max_bytes, late=False, paces=True
        )

    @property
    def max_items(self) -> int:
        return self.reader.max_items

    @property
    def max_bytes(self) -> int | None:
        return self.reader.max_bytes

    @property
    def queued_bytes(self) -> int:
        return self.reader.queued_bytes

    @property
    def peak_bytes(self) -> int:
        return self.reader.peak_bytes

    def put(self, item: MediaItem, wait_until: float | None = None) -> bool:
        """Enqueue `item` (waiting for room up to `wait_until`, if given); False if it
        was dropped (queue full or closed)."""
        return self._broadcast.put(item, wait_until)

    def get(self, timeout: float | None = None) -> MediaItem | None:
        """Next item; None on timeout; raises QueueClosed when closed and empty."""
        return self.reader.get(timeout)

    def close(self) -> None:
        """No more items; the consumer drains what is queued then gets QueueClosed."""
        self._broadcast.close()

    @property
    def dropped_video(self) -> int:
        return self.reader.dropped["video"]

    @property
    def dropped_audio(self) -> int:
        return self.reader.dropped["audio"]

    @property
    def dropped_packets(self) -> int:
        return self.reader.dropped["packet"]

    @property
    def dropped(self) -> int:
        return self.reader.dropped_total

    def __len__(self) -> int:
        return len(self.reader)
