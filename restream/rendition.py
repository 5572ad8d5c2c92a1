"""One rendition of the ladder as the items a restream forwards, for a source FLV
cannot carry (HEVC over enhanced RTMP, Opus, ...).

A `Forwarder` normally reads the live's `source` track. When a publisher session's
codecs cannot go into legacy FLV (`unsupported()`), it reads the `encoded` track
instead, through a `RenditionFeed`: the ladder's top rendition (its first, tallest,
H.264 rung) and the shared AAC, turned by `RenditionAdapter` (pure) into the same
`SessionStart` / `SourcePacket` / `SessionEnd` items the source track carries, so
`restream.flv.FlvMuxer` muxes them like any source:

- a `SessionStart` (H.264 and AAC, the size and rate of the rendition, the templates'
  extradata: x264 here writes global headers, so the SPS/PPS are only there, in
  Annex B, and the muxer builds the AVC sequence header from them) just before the
  rendition's first keyframe, and again after each `discontinuity` (a new publisher
  session): each is a session of its own number;
- its packets, in 90 kHz ticks of the job's output timeline, the audio interleaved
  with the video by decode time (x264's lookahead holds the video back; FLV wants the
  tags in time order); the packets before a discontinuity's instant that x264's
  lookahead gives after it are the previous session's tail, in that session (after a
  slate the muxer leaves them out: their session is over);
- `end` as a `SessionEnd`.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from fractions import Fraction

import av

from encoder.encoded import EncodedItem, RenditionConfig
from ingest.media import (
    AudioParams,
    SessionEnd,
    SessionStart,
    SourceItem,
    SourcePacket,
    VideoParams,
    nominal_frame_rate,
)
from media.clock import TICKS_PER_SECOND
from media.fanout import Broadcast, Reader

from .flv import AUDIO_CODEC, VIDEO_CODEC

# The reader of the encoded track holds every rendition's items (it keeps one): about
# 25 s of a 4-rendition ladder at 30 fps with its audio, and 16 MiB.
QUEUE_ITEMS = 8000
QUEUE_BYTES = 16 * 1024 * 1024
MAX_HELD_AUDIO = 512  # about 10 s of AAC waiting for the video (never reached: 1 s is)

TICK_TIME_BASE = Fraction(1, TICKS_PER_SECOND)


def unsupported(start: SessionStart) -> str | None:
    """What FLV cannot carry of a session ("hevc", "audio opus"), None if it can all go."""
    video, audio = start.video, start.audio
    parts = []
    if video is not None and video.codec_name != VIDEO_CODEC:
        parts.append(video.codec_name)
    if audio is not None and audio.codec_name != AUDIO_CODEC:
        parts.append(f"audio {audio.codec_name}")
    return ", ".join(parts) or None


def session_start_of(session: int, config: RenditionConfig) -> SessionStart:
    """A rendition's configuration as a source session's start (the codec parameters
    copied out of the templates: safe on any thread)."""
    video_stream = config.video_template
    assert isinstance(video_stream, av.VideoStream)
    video = video_stream.codec_context
    rate = nominal_frame_rate(Fraction(TICKS_PER_SECOND, config.frame_ticks))
    video_params = VideoParams(
        video.codec.canonical_name,  # "h264" (the codec, not the encoder: libx264)
        video.width,
        video.height,
        rate,
        TICK_TIME_BASE,
        extradata=bytes(video.extradata or b"") or None,
    )
    audio_params = None
    if config.audio_template is not None:
        audio_stream = config.audio_template
        assert isinstance(audio_stream, av.AudioStream)
        audio = audio_stream.codec_context
        audio_params = AudioParams(
            audio.codec.canonical_name,
            audio.sample_rate,
            audio.channels,
            TICK_TIME_BASE,
            extradata=bytes(audio.extradata or b"") or None,
        )
    return SessionStart(session, video_params, audio_params)


class RenditionAdapter:
    """The encoded track's items of one rendition as source items (pure; see the module).

    `rendition()` names the rendition to follow; None while the ladder is not planned
    (the items of every rendition are looked at until it is). Session numbers start at
    `first_session`. Used from one thread.
    """

    def __init__(self, rendition: Callable[[], str | None], first_session: int = 0) -> None:
        self._rendition = rendition
        self.name: str | None = None
        self.session = first_session - 1  # the last session started
        self.start: SessionStart | None = None  # the last SessionStart given
        self.keyframe: bytes | None = None  # the last video keyframe given (the slate's)
        self._configs: dict[str, RenditionConfig] = {}
        self._pending = True  # a session starts at the next keyframe
        self._floor: int | None = None  # the discontinuity: earlier packets are stale
        self._audio: collections.deque[SourcePacket] = collections.deque()

    def feed(self, item: EncodedItem) -> list[SourceItem]:
        """The source items this encoded item stands for, in order (often none)."""
        if item.kind == "start" and item.config is not None:
            self._configs[item.rendition] = item.config
            if item.rendition == self.name:
                self._pending = True
            return []
        if self.name is None:
            self.name = self._rendition()
        if item.rendition != self.name or self.name is None:
            return []
        if item.kind == "video" and item.video is not None:
            return self._video(item)
        if item.kind == "audio" and item.audio is not None:
            return self._held_audio(item)
        if item.kind == "discontinuity":
            out = self._release_audio(None)
            config = self._configs.get(item.rendition)
            if item.config is not None and config is not None:
                self._configs[item.rendition] = RenditionConfig(
                    config.segment_seconds,
                    item.config.video_template,
                    item.next_audio_template or config.audio_template,
                    config.frame_ticks,
                )
            self._pending, self._floor = True, item.at
            return out
        if item.kind == "end":
            out = self._release_audio(None)
            if self.start is not None:
                out.append(SessionEnd(self.session, "the rendition ended"))
            return out
        return []  # a cut: nothing for FLV

    def _video(self, item: EncodedItem) -> list[SourceItem]:
        video = item.video
        assert video is not None
        out: list[SourceItem] = []
        tail = self._floor is not None and video.pts < self._floor and self.start is not None
        if self._pending and not tail:
            config = self._configs.get(item.rendition)
            if not video.keyframe or config is None:
                return []  # a session starts at a keyframe, its configuration known
            self._pending = False
            self._audio = collections.deque(  # what this session may still use
                a for a in self._audio if a.pts is not None and a.pts >= video.dts
            )
            self.session += 1
            self.start = session_start_of(self.session, config)
            out.append(self.start)
        out += self._release_audio(video.dts)
        packet = SourcePacket(
            self.session, "video", VIDEO_CODEC, video.data, video.pts, video.dts, video.keyframe
        )
        if video.keyframe:
            self.keyframe = video.data
        out.append(packet)
        return out

    def _held_audio(self, item: EncodedItem) -> list[SourceItem]:
        audio = item.audio
        assert audio is not None
        ticks = audio.pts_ticks
        self._audio.append(
            SourcePacket(self.session, "audio", AUDIO_CODEC, audio.data, ticks, ticks, False)
        )
        if len(self._audio) > MAX_HELD_AUDIO:  # no video coming: do not hold it forever
            return [self._renumbered(self._audio.popleft())]
        return []

    def _release_audio(self, until_ticks: int | None) -> list[SourceItem]:
        """The held audio up to `until_ticks` (None: all of it), in this session."""
        out: list[SourceItem] = []
        while self._audio and (until_ticks is None or (self._audio[0].pts or 0) <= until_ticks):
            out.append(self._renumbered(self._audio.popleft()))
        return out

    def _renumbered(self, packet: SourcePacket) -> SourcePacket:
        if packet.session == self.session:
            return packet
        return SourcePacket(
            self.session, packet.kind, packet.codec, packet.data, packet.pts, packet.dts, False
        )


class RenditionFeed:
    """A reader of the encoded track and its adapter: what a forwarder reads instead of
    the source while the source cannot go into FLV. `close()` unsubscribes (a reader
    that is not read would fill, drop and log)."""

    def __init__(
        self,
        track: Broadcast[EncodedItem],
        rendition: Callable[[], str | None],
        name: str,
        first_session: int = 0,
    ) -> None:
        self._reader: Reader[EncodedItem] = track.subscribe(
            name, max_items=QUEUE_ITEMS, max_bytes=QUEUE_BYTES
        )
        self._adapter = RenditionAdapter(rendition, first_session)
        self._out: collections.deque[SourceItem] = collections.deque()
        self.last_item_at = time.monotonic()

    @property
    def start(self) -> SessionStart | None:
        """The rendition's current session (None until its first keyframe came)."""
        return self._adapter.start

    @property
    def rendition(self) -> str | None:
        return self._adapter.name

    @property
    def keyframe(self) -> bytes | None:
        return self._adapter.keyframe

    @property
    def dropped_total(self) -> int:
        return self._reader.dropped_total

    def take(self, timeout: float) -> SourceItem | None:
        """The next source item (None: none within `timeout`); QueueClosed at the end."""
        deadline = time.monotonic() + timeout
        while not self._out:
            item = self._reader.get(max(0.0, deadline - time.monotonic()))
            if item is None:
                return None
            self.last_item_at = time.monotonic()
            self._out.extend(self._adapter.feed(item))
            if not self._out and time.monotonic() >= deadline:
                return None
        return self._out.popleft()

    def close(self) -> None:
        self._reader.close()
