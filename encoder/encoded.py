"""The ladder's encoded track: every rendition's packets, fanned out to readers.

Each rendition worker (and the passthrough copy) publishes what it encodes to the
job's `encoded` broadcast (`media.fanout`) as `EncodedItem`s, in its own order: the
rendition's configuration (`start`: its codec parameters, as the stream template a
muxer copies), its video packets (immutable `VideoPacket`s, 90 kHz ticks), the AAC
packets it carries (the same shared `AudioPacket`s in every rendition), and the
segmentation hints the encoder knows first (`cut`: every frame before `at` is out;
`discontinuity`: a new publish session starts at `at`), then `end`.

The HLS writer is one reader of it (`SegmentingReader`: cuts MPEG-TS segments and
hands them to the sink); a restream, a WebSocket viewer or a cut job is another.
A reader joining mid-live gets each rendition's `start` first, then its packets
from the next keyframe on; a reader that falls behind drops for itself only, and
resyncs each rendition at its next keyframe.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import av
from av.stream import Stream

from encoder.host import EncoderHost
from encoder.segmenter import Segmenter
from encoder.statistics import SegmentRates
from media.fanout import Broadcast, QueueClosed, Reader, TrackRules
from media.segments import AudioPacket, Segment, VideoPacket

log = logging.getLogger(__name__)

Kind = Literal["start", "video", "audio", "cut", "discontinuity", "end"]
HLS_READER_ITEMS = 4096  # about 20 s of a 4-rendition ladder with its audio
HLS_READER_BYTES = 128 * 1024 * 1024


@dataclass(frozen=True)
class RenditionConfig:
    """A rendition's codec parameters: what a reader needs before its first packet."""

    segment_seconds: float
    video_template: Stream  # the codec parameters a muxer copies (size, SPS/PPS)
    audio_template: Stream | None
    frame_ticks: int  # one nominal frame
    arrival_at: Callable[[int], datetime | None] | None = None  # output ticks -> arrival
    # Where the HLS writer's segments go, if not to the host's sink as they come (a
    # copy starts its sink with its first segment's measured rate).
    emit: Callable[[Segment], None] | None = None


@dataclass(frozen=True)
class EncodedItem:
    """One item of the encoded track, about one rendition."""

    rendition: str
    kind: Kind
    video: VideoPacket | None = None
    audio: AudioPacket | None = None
    at: int | None = None  # ticks: where a cut or a discontinuity is
    config: RenditionConfig | None = None  # `start`; a `discontinuity` may bring new ones
    next_audio_template: Stream | None = None  # with a discontinuity's new config

    @property
    def size_bytes(self) -> int:
        if self.video is not None:
            return len(self.video.data)
        if self.audio is not None:
            return len(self.audio.data)
        return 0


ENCODED_RULES: TrackRules[EncodedItem] = TrackRules(
    size_of=lambda item: item.size_bytes,
    kind_of=lambda item: item.kind,
    is_control=lambda item: item.kind in ("start", "cut", "discontinuity", "end"),
    is_config=lambda item: item.kind == "start",
    is_keyframe=lambda item: item.video is not None and item.video.keyframe,
    resync_after_drop=True,
    stream_of=lambda item: item.rendition,
)


def video_packet(packet: av.Packet) -> VideoPacket:
    """An encoder's or a demuxer's packet (timestamps already in ticks), immutable."""
    pts = packet.pts
    if pts is None:
        raise ValueError("video packet without pts")
    dts = packet.dts if packet.dts is not None else pts
    return VideoPacket(bytes(packet), pts, dts, packet.duration or 0, bool(packet.is_keyframe))


def encoded_broadcast(label: str) -> Broadcast[EncodedItem]:
    return Broadcast(f"{label} encoded", ENCODED_RULES)


class RenditionOutput:
    """What a rendition worker writes to: the encoded track, for one rendition."""

    def __init__(self, track: Broadcast[EncodedItem], rendition: str) -> None:
        self._track = track
        self.rendition = rendition

    def start(self, config: RenditionConfig) -> None:
        self._track.put(EncodedItem(self.rendition, "start", config=config))

    def add_video(self, packet: VideoPacket) -> None:
        self._track.put(EncodedItem(self.rendition, "video", video=packet))

    def add_audio(self, packet: AudioPacket) -> None:
        self._track.put(EncodedItem(self.rendition, "audio", audio=packet))

    def cut_before(self, pts: int) -> None:
        self._track.put(EncodedItem(self.rendition, "cut", at=pts))

    def mark_discontinuity(
        self,
        at_ticks: int,
        video_template: Stream | None = None,
        audio_template: Stream | None = None,
    ) -> None:
        config = None
        if video_template is not None:
            config = RenditionConfig(0.0, video_template, audio_template, 0)
        item = EncodedItem(
            self.rendition,
            "discontinuity",
            at=at_ticks,
            config=config,
            next_audio_template=audio_template,
        )
        self._track.put(item)

    def flush(self) -> None:
        self._track.put(EncodedItem(self.rendition, "end"))


def with_hls_writer(
    host: EncoderHost, track: Broadcast[EncodedItem]
) -> tuple[EncoderHost, SegmentingReader]:
    """`host` wired to write every rendition to `track`, and the HLS writer's reader of
    it (not yet started) whose segments go to `host.emit_segment`."""
    readers: list[SegmentingReader] = []
    wired = dataclasses.replace(
        host,
        output_for=lambda rendition: RenditionOutput(track, rendition),
        segment_stats=lambda rendition: readers[0].stats(rendition),
    )
    readers.append(SegmentingReader(track, wired))
    return wired, readers[0]


class SegmentingReader:
    """The HLS writer's reader of the encoded track: one thread, one `Segmenter` per
    rendition, segments handed to the host (and so to the sink) in order."""

    def __init__(self, track: Broadcast[EncodedItem], host: EncoderHost) -> None:
        self._host = host
        self._prefix = f"[encoder {host.label} hls]"
        self._reader: Reader[EncodedItem] = track.subscribe(
            "hls", max_items=HLS_READER_ITEMS, max_bytes=HLS_READER_BYTES, late=False
        )
        self._segmenters: dict[str, Segmenter] = {}
        self._lock = threading.Lock()
        self._applied = 0  # items read and applied
        self._thread = threading.Thread(
            target=self._run, name=f"encoder-{host.label}-hls", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float | None) -> bool:
        if self._thread.ident is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def abort(self) -> None:
        """End the thread without flushing (the encoder failed or gave up)."""
        self._reader.close()

    def segmenter(self, rendition: str) -> Segmenter | None:
        with self._lock:
            return self._segmenters.get(rendition)

    @property
    def dropped(self) -> int:
        return self._reader.dropped_total

    @property
    def caught_up(self) -> bool:
        """Every item the track gave this reader so far has been applied."""
        return self._applied >= self._reader.received

    def _run(self) -> None:
        try:
            while True:
                item = self._reader.get(timeout=self._host.tuning.poll_seconds)
                if item is not None:
                    self._apply(item)
                    self._applied += 1
        except QueueClosed:
            log.debug("%s ended", self._prefix)
        except BaseException as exc:  # the one catch-all: report, the job's threads end
            log.exception("%s failed", self._prefix)
            self._host.fail(exc)
        finally:
            self._reader.close()

    def _apply(self, item: EncodedItem) -> None:
        if item.kind == "start":
            assert item.config is not None
            self._open(item.rendition, item.config)
            return
        segmenter = self.segmenter(item.rendition)
        if segmenter is None:
            return  # a rendition that never started (a late reader would wait)
        if item.kind == "video" and item.video is not None:
            segmenter.add_video(item.video)
        elif item.kind == "audio" and item.audio is not None:
            segmenter.add_audio(item.audio)
        elif item.kind == "cut" and item.at is not None:
            segmenter.cut_before(item.at)
        elif item.kind == "discontinuity" and item.at is not None:
            config = item.config
            segmenter.mark_discontinuity(
                item.at,
                config.video_template if config is not None else None,
                item.next_audio_template,
            )
        elif item.kind == "end":
            if not self._host.abort.is_set():
                segmenter.flush()

    def _open(self, rendition: str, config: RenditionConfig) -> None:
        segmenter = Segmenter(
            rendition,
            config.segment_seconds,
            config.video_template,
            config.audio_template,
            config.emit or self._host.emit_segment,
            frame_ticks=config.frame_ticks,
            arrival_at=config.arrival_at,
        )
        with self._lock:
            self._segmenters[rendition] = segmenter

    def stats(self, rendition: str) -> SegmentRates:
        segmenter = self.segmenter(rendition)
        if segmenter is None:
            return SegmentRates()
        bitrate_bps, fps = segmenter.recent_rates()
        return SegmentRates(bitrate_bps, fps, segmenter.dropped_video_packets)
