"""A session's demuxed packets on their way to the queue (`ingest.decode`'s thread).

- `SessionOpening`: SessionStart waits for the session's first packet (at most
  PRIME_WAIT_SECONDS of media, or MAX_HELD_PACKETS, for an audio track whose format
  the opening could not tell: MPEG-TS's AAC, told by its ADTS headers). It carries
  the session's `WallClockOrigin`: the first packet's timestamp as PyAV reports it
  (pts, in seconds; dts when it has none) and the instant its first byte arrived
  (`ByteFeed.arrival_at(packet.pos)`, stamped by the event loop as the bytes came).
  Fed in real time, `origin.at(t)` of any later frame at presentation time t is
  when that frame arrived: exactly without B-frames (the tests hold it to 30 ms),
  within the stream's reorder delay (pts - dts: a frame or two) with them.
- `KeyframeWait`: a session's video starts at its first keyframe (a stream joined
  mid-GOP, as SRT is when its first packets are lost, has nothing decodable before).
- `AudioTimestamps`: audio packets the demuxer left without a timestamp (MPEG-TS
  stamps only the first AAC frame of a PES) get the previous one's plus its duration.
"""

from __future__ import annotations

from fractions import Fraction

import av
from av.audio.stream import AudioStream
from av.video.stream import VideoStream

from ingest.feed import ByteFeed
from ingest.flvstream import FlvSessionWriter
from ingest.formats import adts
from ingest.media import (
    AudioParams,
    SessionStart,
    VideoParams,
    WallClockOrigin,
    nominal_frame_rate,
)

PRIME_WAIT_SECONDS = 1.0  # media held back at most, waiting for the audio format
MAX_HELD_PACKETS = 256
KEYFRAME_WAIT_SECONDS = 10.0  # video skipped waiting for a keyframe at most
KEYFRAME_WAIT_PACKETS = 600  # the same, for packets without timestamps


class SessionOpening:
    """A session between the opening of its container and its SessionStart: the
    streams PyAV found, and the first packets, held until they say enough."""

    def __init__(
        self,
        index: int,
        feed: ByteFeed,
        video: VideoStream | None,
        audio: AudioStream | None,
        flv_writer: FlvSessionWriter | None = None,
    ) -> None:
        self.index = index
        self.feed = feed
        self.video = video
        self.audio = audio
        self.flv_writer = flv_writer
        self.held: list[av.Packet] = []

    def _audio_format(self, audio: AudioStream) -> tuple[int, int]:
        """(sample rate, channels): FLV's AAC config, the codec context, or the ADTS
        header of the first audio packet held; zeros while none says."""
        config = self.flv_writer.audio_config if self.flv_writer is not None else None
        if config is not None:
            return config.sample_rate, config.channels
        context = audio.codec_context
        if context.sample_rate:
            return context.sample_rate, context.channels
        for packet in self.held:
            if packet.stream.type == "audio":
                header = adts.parse_header(_head(packet))
                return (header.sample_rate, header.channels) if header is not None else (0, 0)
        return 0, 0

    def ready(self) -> bool:
        """Whether the held packets say enough: the audio format is known, or waited for
        as long as allowed."""
        if self.audio is None or self._audio_format(self.audio)[0]:
            return True
        if any(packet.stream.type == "audio" for packet in self.held):
            return True  # its format is not in the packet either: waiting cannot help
        if len(self.held) >= MAX_HELD_PACKETS:
            return True
        times = [t for t in map(packet_seconds, self.held) if t is not None]
        return bool(times) and max(times) - min(times) >= PRIME_WAIT_SECONDS

    def session_start(self) -> SessionStart:
        """The session's SessionStart: its streams' parameters and its wall-clock origin."""
        video, audio = self.params()
        return SessionStart(self.index, video, audio, self.origin())

    def params(self) -> tuple[VideoParams | None, AudioParams | None]:
        video = audio = None
        if self.video is not None:
            context = self.video.codec_context
            rate = self.video.average_rate or context.framerate
            video = VideoParams(
                codec_name=context.name,
                width=context.width,
                height=context.height,
                frame_rate=nominal_frame_rate(Fraction(rate)) if rate else None,
                time_base=Fraction(self.video.time_base or Fraction(1, 1000)),
                stream=self.video,
                extradata=bytes(context.extradata) if context.extradata else None,
            )
        if self.audio is not None:
            # Until the first frame is decoded the FLV codec context repeats the tag
            # flags, which for AAC always say 44.1 kHz stereo; the AAC config knows.
            sample_rate, channels = self._audio_format(self.audio)
            audio = AudioParams(
                codec_name=self.audio.codec_context.name,
                sample_rate=sample_rate,
                channels=channels,
                time_base=Fraction(self.audio.time_base or Fraction(1, 1000)),
                stream=self.audio,
                extradata=(
                    bytes(self.audio.codec_context.extradata)
                    if self.audio.codec_context.extradata
                    else None
                ),
            )
        return video, audio

    def origin(self) -> WallClockOrigin | None:
        """The first held packet with a timestamp, and when its first byte arrived."""
        for packet in self.held:
            seconds = packet_seconds(packet, presentation=True)
            if seconds is None:
                continue
            arrived = self.feed.arrival_at(packet.pos if packet.pos is not None else -1)
            return None if arrived is None else WallClockOrigin(arrived, seconds)
        return None


class KeyframeWait:
    """Passes video packets from the first keyframe on (or once waited too long)."""

    def __init__(self) -> None:
        self.waiting = True
        self._skipped = 0
        self._first: Fraction | None = None

    def passes(self, packet: av.Packet) -> bool:
        if self.waiting and not packet.is_keyframe:
            self._skipped += 1
            seconds = packet_seconds(packet)
            if self._first is None:
                self._first = seconds
            waited_too_long = self._skipped >= KEYFRAME_WAIT_PACKETS or (
                seconds is not None
                and self._first is not None
                and seconds - self._first >= KEYFRAME_WAIT_SECONDS
            )
            if not waited_too_long:
                return False
        self.waiting = False
        return True


class AudioTimestamps:
    """Fills in the audio timestamps a demuxer leaves out: MPEG-TS gives one per PES,
    which holds several AAC frames. The next frame starts where the previous one
    ends (its duration, or its ADTS sample count), to the tick; a packet with a
    timestamp of its own starts over from it."""

    def __init__(self) -> None:
        self._next: Fraction | None = None  # in the stream's time base

    def fill(self, packet: av.Packet) -> None:
        if packet.pts is not None:
            start = Fraction(packet.pts)
        elif self._next is not None:
            start = self._next
            packet.pts = packet.dts = round(start)
        else:
            return
        duration: Fraction | None = Fraction(packet.duration) if packet.duration else None
        time_base = packet.time_base
        if duration is None and time_base:
            header = adts.parse_header(_head(packet))
            if header is not None:
                duration = Fraction(header.samples, header.sample_rate) / Fraction(time_base)
        self._next = start + duration if duration else None


def _head(packet: av.Packet) -> bytes:
    return bytes(memoryview(packet)[: adts.HEADER_SIZE])


def packet_seconds(packet: av.Packet, presentation: bool = False) -> Fraction | None:
    """A packet's decode (or presentation) time in seconds, whichever it has."""
    first, second = (packet.pts, packet.dts) if presentation else (packet.dts, packet.pts)
    ticks = first if first is not None else second
    if ticks is None or not packet.time_base:
        return None
    return ticks * Fraction(packet.time_base)
