"""One WebSocket viewer's stream: a reader of the live's fan-out, muxed into MPEG-TS.

MPEG-TS rather than fragmented MP4: it is what the live already is (the ladder's
segments, an SRT source), a TS muxer needs no initialization segment and starts at
any keyframe, and mpegts.js plays it from a WebSocket in any browser with Media Source
Extensions, with no plugin. A viewer chooses what it reads:

- a rendition of the ladder (`TrackChoice.rendition`, the top one by default): a
  reader of the `encoded` track, muxed with the rendition's own codec parameters
  (`RenditionConfig`'s stream templates, SPS/PPS in band before each IDR);
- `source`: a reader of the `source` track, the publisher's packets as received (no
  encoder in between: the lowest latency), muxed from the session's codec
  parameters (FLV's AVCC is turned into Annex B by the TS muxer itself).

A viewer joins at the next keyframe with the codec configuration first (the fan-out
does it: `late` readers). Each viewer has a thread of its own, which reads its
bounded reader and muxes; what it muxed goes to `send` (the WebSocket side), which
reports how many bytes wait unsent. A viewer whose reader had to drop (it reads too
slowly) or whose unsent bytes pass `max_pending_bytes` is ended with `too slow`:
nothing it does slows the live or another viewer.
"""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av

from encoder.encoded import EncodedItem
from ingest.media import SessionEnd, SessionStart, SourceItem, SourcePacket
from media.clock import TICK_TIME_BASE
from media.fanout import Broadcast, QueueClosed, Reader

log = logging.getLogger(__name__)

SOURCE = "source"
READER_ITEMS = 2000  # about 10 s of a rendition (video and audio) or of a source
READER_BYTES = 16 * 1024 * 1024
POLL_SECONDS = 0.2
# The TS muxer's options: no muxing delay (the viewer wants the picture now), PCR and
# PAT/PMT often (a player joins fast), flush after every packet.
MUXER_OPTIONS = {"max_delay": "0", "flush_packets": "1", "pcr_period": "40"}
MUXER_BUFFER_BYTES = 188 * 64
_LAYOUTS = {1: "mono", 2: "stereo"}


class ViewerEnded(Exception):
    """Why a viewer's stream ended (the live ended, it was too slow)."""


@dataclass(frozen=True)
class TrackChoice:
    """What a viewer watches: `source`, or a rendition's name."""

    rendition: str

    @property
    def is_source(self) -> bool:
        return self.rendition == SOURCE


class _Chunks(io.RawIOBase):
    """Where the muxer writes: taken after each packet."""

    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        self.data += b
        return len(b)

    def take(self) -> bytes:
        out = bytes(self.data)
        self.data.clear()
        return out


class _Muxer:
    """A continuous MPEG-TS stream of one video and (perhaps) one audio stream."""

    def __init__(self, video: Any, audio: Any) -> None:
        """`video`/`audio`: a stream template (av Stream) or a factory that adds the
        stream to a container."""
        self.sink = _Chunks()
        self.container = av.open(
            self.sink, "w", format="mpegts", options=MUXER_OPTIONS, buffer_size=MUXER_BUFFER_BYTES
        )
        self.video = video(self.container)
        self.video.time_base = TICK_TIME_BASE
        self.audio = audio(self.container) if audio is not None else None
        self.last_dts: dict[str, int] = {}

    def mux(
        self,
        kind: str,
        data: bytes,
        pts: int | None,
        dts: int | None,
        time_base: Fraction,
        keyframe: bool,
    ) -> bytes:
        stream = self.video if kind == "video" else self.audio
        if stream is None or not data:
            return b""
        packet = av.Packet(data)
        packet.stream = stream
        packet.time_base = time_base
        packet.pts = pts
        packet.dts = dts if dts is not None else pts
        if packet.dts is not None:
            ticks = round(packet.dts * time_base / TICK_TIME_BASE)
            if ticks <= self.last_dts.get(kind, -(1 << 62)):
                return b""  # not after the previous one: the muxer would refuse it
            self.last_dts[kind] = ticks
        packet.is_keyframe = keyframe
        self.container.mux(packet)
        return self.sink.take()

    def close(self) -> bytes:
        try:
            self.container.close()
        except (av.FFmpegError, ValueError):
            log.debug("viewer muxer close failed", exc_info=True)
        return self.sink.take()


def _template(stream: Any) -> Callable[[Any], Any]:
    return lambda container: container.add_stream_from_template(stream)


def _h264(width: int, height: int, extradata: bytes | None) -> Callable[[Any], Any]:
    def add(container: Any) -> Any:
        stream = container.add_stream("h264")
        stream.codec_context.width = max(2, width)
        stream.codec_context.height = max(2, height)
        if extradata:
            stream.codec_context.extradata = extradata
        return stream

    return add


def _aac(sample_rate: int, channels: int, extradata: bytes | None) -> Callable[[Any], Any]:
    def add(container: Any) -> Any:
        stream = container.add_stream("aac", rate=sample_rate or 48_000)
        stream.codec_context.layout = _LAYOUTS.get(channels, "stereo")
        if extradata:
            stream.codec_context.extradata = extradata
        return stream

    return add


class ViewerStream:
    """One viewer: its reader, its muxer, its thread. `send(chunk)` (from the thread)
    hands the TS bytes on and returns how many bytes wait unsent; `on_end(reason)` is
    called once when the stream ends."""

    def __init__(
        self,
        choice: TrackChoice,
        *,
        source: Broadcast[SourceItem],
        encoded: Broadcast[EncodedItem],
        send: Callable[[bytes], int],
        on_end: Callable[[str], None],
        name: str,
        max_pending_bytes: int = 8 * 1024 * 1024,
    ) -> None:
        self.choice = choice
        self._send = send
        self._on_end = on_end
        self._max_pending = max_pending_bytes
        self._stop = threading.Event()
        self._reader: Reader[Any]
        if choice.is_source:
            self._reader = source.subscribe(name, max_items=READER_ITEMS, max_bytes=READER_BYTES)
        else:
            self._reader = encoded.subscribe(name, max_items=READER_ITEMS, max_bytes=READER_BYTES)
        self._muxer: _Muxer | None = None
        self.bytes_sent = 0
        self._thread = threading.Thread(target=self._run, name=f"viewer {name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """End the stream (any thread); its reader is closed by its thread."""
        self._stop.set()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    # -- its thread ---------------------------------------------------------------------

    def _run(self) -> None:
        reason = "stopped"
        try:
            while not self._stop.is_set():
                try:
                    item = self._reader.get(timeout=POLL_SECONDS)
                except QueueClosed:
                    reason = "the live ended"
                    break
                if self._reader.dropped_total:
                    raise ViewerEnded("too slow: the live went on without it")
                if item is None:
                    continue
                chunk = self._source(item) if self.choice.is_source else self._rendition(item)
                if chunk:
                    self._deliver(chunk)
        except ViewerEnded as ended:
            reason = str(ended)
        except Exception as error:  # a muxing failure ends this viewer only
            log.exception("viewer stream failed")
            reason = f"stream failed: {type(error).__name__}"
        finally:
            self._reader.close()
            muxer, self._muxer = self._muxer, None
            if muxer is not None:
                rest = muxer.close()
                if rest and reason == "the live ended":
                    self._send(rest)
            self._on_end(reason)

    def _deliver(self, chunk: bytes) -> None:
        pending = self._send(chunk)
        self.bytes_sent += len(chunk)
        if pending > self._max_pending:
            raise ViewerEnded(f"too slow: {pending} bytes unsent")

    def _rendition(self, item: EncodedItem) -> bytes:
        if item.rendition != self.choice.rendition:
            return b""
        if item.kind == "start" or (item.kind == "discontinuity" and item.config is not None):
            config = item.config
            assert config is not None
            old = self._muxer.close() if self._muxer is not None else b""
            audio = config.audio_template or item.next_audio_template
            self._muxer = _Muxer(
                _template(config.video_template), _template(audio) if audio is not None else None
            )
            return old
        muxer = self._muxer
        if muxer is None:
            return b""
        if item.kind == "video" and item.video is not None:
            v = item.video
            return muxer.mux("video", v.data, v.pts, v.dts, TICK_TIME_BASE, v.keyframe)
        if item.kind == "audio" and item.audio is not None:
            a = item.audio
            return muxer.mux("audio", a.data, a.pts, a.dts, a.time_base, True)
        if item.kind == "end":
            raise QueueClosed("the rendition ended")
        return b""

    def _source(self, item: SourceItem) -> bytes:
        if isinstance(item, SessionStart):
            old = self._muxer.close() if self._muxer is not None else b""
            self._muxer = None
            video, audio = item.video, item.audio
            if video is None or video.codec_name != "h264":
                return old  # only H.264 goes to the browser; the ladder's renditions do
            audio_add = None
            if audio is not None and audio.codec_name == "aac":
                audio_add = _aac(audio.sample_rate, audio.channels, audio.extradata)
            self._muxer = _Muxer(_h264(video.width, video.height, video.extradata), audio_add)
            return old
        if isinstance(item, SessionEnd):
            return b""
        if isinstance(item, SourcePacket) and self._muxer is not None:
            return self._muxer.mux(
                item.kind, item.data, item.pts, item.dts, TICK_TIME_BASE, item.keyframe
            )
        return b""
