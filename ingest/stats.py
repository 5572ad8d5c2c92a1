"""What the publisher's stream is, measured: a `SourceStatistics` record.

Three layers per value, first non-zero wins: what the decoder (or the demuxer's
codec context) saw, what the stream's own headers say (FLV tags as they arrive
for RTMP, `on_media`; demuxed packets for a byte-stream container such as
MPEG-TS, `on_packet`), what onMetaData declared.
Declared values are used only while nothing is measured, and nothing is invented:
before media every value is zero/false and the encoder is "".
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ingest.formats import amf0, flv

RATE_WINDOW_SECONDS = 3.0
FPS_WINDOW_MS = 2000


# Codec names (PyAV's canonical_name) as the API's codec ids: FLV's numbering, as for RTMP.
VIDEO_CODEC_IDS = {
    "h264": flv.VIDEO_AVC,
    "hevc": flv.VIDEO_HEVC,
    "av1": flv.VIDEO_AV1,
    "vp9": flv.VIDEO_VP9,
}
AUDIO_CODEC_IDS = {"aac": flv.AUDIO_AAC, "mp3": flv.AUDIO_MP3}


@dataclass(frozen=True)
class SourceStatistics:
    """The publisher's stream as measured (declared values while nothing is measured).

    Frame rate in frames/s, data rates in kbit/s, codec ids FLV's numbering (the API's
    `statistics` object, field for field); every value is zero/false/"" before media.
    """

    width: int = 0
    height: int = 0
    framerate: int = 0
    video_data_rate: int = 0
    audio_data_rate: int = 0
    video_codec_id: int = 0
    audio_codec_id: int = 0
    audio_sample_rate: int = 0
    audio_sample_size: int = 0
    audio_channels: int = 0
    stereo: bool = False
    encoder: str = ""

    @property
    def media_seen(self) -> bool:
        """Something about the picture or the sound is known."""
        return bool(self.width or self.audio_sample_rate)


def _declared_int(metadata: Mapping[str, Any], *keys: str) -> int:
    for key in keys:
        value = metadata.get(key)
        if amf0.is_number(value) and 0 <= value < 1 << 31:
            return round(value)
    return 0


class _RateMeter:
    """Bytes that arrived over the last `window` seconds, as kbit/s."""

    def __init__(self, window_seconds: float) -> None:
        self.window = window_seconds
        self.samples: collections.deque[tuple[float, int]] = collections.deque()
        self.total = 0
        self.first_arrival: float | None = None

    def add(self, now: float, size: int) -> None:
        if self.first_arrival is None:
            self.first_arrival = now
        self.samples.append((now, size))
        self.total += size
        self._prune(now)

    def _prune(self, now: float) -> None:
        while self.samples and self.samples[0][0] < now - self.window:
            self.total -= self.samples.popleft()[1]

    def kbps(self, now: float) -> int:
        self._prune(now)
        if self.first_arrival is None:
            return 0
        span = min(self.window, max(now - self.first_arrival, 1.0))
        return round(self.total * 8 / 1000 / span)


class SourceStats:
    """Thread-safe source statistics: fed from the event loop and the decode thread."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._video_rate = _RateMeter(RATE_WINDOW_SECONDS)
        self._audio_rate = _RateMeter(RATE_WINDOW_SECONDS)
        self._frame_times: collections.deque[int] = collections.deque()
        self._declared: dict[str, Any] = {}
        # measured by the decoder / codec context
        self._width = self._height = 0
        self._decoded_rate = self._decoded_channels = 0
        # from tag headers
        self._video_codec = self._audio_codec = 0
        self._tag_rate = self._tag_size = self._tag_channels = 0

    def new_session(self) -> None:
        """Timestamps restart with a new publish session: restart the frame rate window."""
        with self._lock:
            self._frame_times.clear()

    def on_metadata(self, metadata: Mapping[str, Any]) -> None:
        with self._lock:
            self._declared = dict(metadata)

    def on_media(self, kind: int, timestamp_ms: int, payload: bytes) -> None:
        now = self._clock()
        with self._lock:
            if kind == flv.TAG_VIDEO:
                self._video_rate.add(now, len(payload))
                info = flv.video_info(payload)
                if info is None:
                    return
                if info.codec_id:
                    self._video_codec = info.codec_id
                if info.frame:
                    self._add_frame_time(timestamp_ms)
            elif kind == flv.TAG_AUDIO:
                self._audio_rate.add(now, len(payload))
                audio = flv.audio_info(payload)
                if audio is None:
                    return
                self._audio_codec = audio.codec_id
                self._tag_rate = audio.sample_rate or self._tag_rate
                self._tag_size = audio.sample_size_bits or self._tag_size
                self._tag_channels = audio.channels or self._tag_channels

    def on_packet(self, kind: str, size: int, time_ms: int | None, codec_name: str) -> None:
        """One demuxed packet of a byte-stream container: `kind` "video" or "audio",
        `time_ms` its decode time (None when it has none), `codec_name` canonical
        ("h264", "aac")."""
        now = self._clock()
        with self._lock:
            if kind == "video":
                self._video_rate.add(now, size)
                self._video_codec = VIDEO_CODEC_IDS.get(codec_name, self._video_codec)
                if time_ms is not None:
                    self._add_frame_time(time_ms)
            elif kind == "audio":
                self._audio_rate.add(now, size)
                self._audio_codec = AUDIO_CODEC_IDS.get(codec_name, self._audio_codec)

    def _add_frame_time(self, timestamp_ms: int) -> None:
        times = self._frame_times
        if times and timestamp_ms < times[-1]:  # a discontinuity: start over
            times.clear()
        times.append(timestamp_ms)
        while len(times) > 2 and times[-1] - times[0] > FPS_WINDOW_MS:
            times.popleft()

    def on_video_size(self, width: int, height: int) -> None:
        with self._lock:
            self._width, self._height = width, height

    def on_audio_format(self, sample_rate: int, channels: int) -> None:
        with self._lock:
            self._decoded_rate, self._decoded_channels = sample_rate, channels

    def _measured_fps(self) -> int:
        times = self._frame_times
        if len(times) < 2 or times[-1] <= times[0]:
            return 0
        return round((len(times) - 1) * 1000 / (times[-1] - times[0]))

    def snapshot(self) -> SourceStatistics:
        now = self._clock()
        with self._lock:
            declared = self._declared
            video_seen = self._video_rate.first_arrival is not None
            audio_seen = self._audio_rate.first_arrival is not None
            channels = (
                self._decoded_channels
                or self._tag_channels
                or _declared_int(declared, "audiochannels")
            )
            stereo_declared = declared.get("stereo")
            if channels:
                stereo = channels >= 2
            else:
                stereo = isinstance(stereo_declared, bool) and stereo_declared
            encoder = declared.get("encoder")
            return SourceStatistics(
                width=self._width or _declared_int(declared, "width"),
                height=self._height or _declared_int(declared, "height"),
                framerate=self._measured_fps()
                or _declared_int(declared, "framerate", "videoframerate"),
                video_data_rate=self._video_rate.kbps(now)
                if video_seen
                else _declared_int(declared, "videodatarate"),
                audio_data_rate=self._audio_rate.kbps(now)
                if audio_seen
                else _declared_int(declared, "audiodatarate"),
                video_codec_id=self._video_codec
                or flv.video_codec_from_metadata(declared.get("videocodecid")),
                audio_codec_id=self._audio_codec
                or flv.audio_codec_from_metadata(declared.get("audiocodecid")),
                audio_sample_rate=self._decoded_rate
                or self._tag_rate
                or _declared_int(declared, "audiosamplerate"),
                audio_sample_size=self._tag_size or _declared_int(declared, "audiosamplesize"),
                audio_channels=channels,
                stereo=stereo,
                encoder=encoder if isinstance(encoder, str) else "",
            )
