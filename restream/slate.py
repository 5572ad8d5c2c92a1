"""What a restream sends while its publisher is gone: a still picture and silence.

Inside the live's reconnect window the outbound connection stays up, so that the
platform (YouTube, Twitch) neither ends the broadcast nor splits its recording: it
gets a `Slate`, at the source's size, frame rate, sample rate and channels. The
picture is the last one the source showed (`picture_from_keyframe`), a configured
image, or black.

A slate is cheap: one GOP of about one second (libx264 ultrafast, keyframe first,
no B-frames, Annex B with SPS/PPS in band) and the AAC-LC silence to go with it are
encoded once, when the slate is built; `packets()` then repeats them with shifted
timestamps, as `SourcePacket`s of a session of their own (`session_start()`), which
`restream.flv.FlvMuxer` sends like any other session.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from ingest.media import AudioParams, SessionStart, SourcePacket, VideoParams
from media.clock import TICKS_PER_SECOND

DEFAULT_FRAME_RATE = Fraction(30)
AAC_FRAME_SAMPLES = 1024
_TICK_TIME_BASE = Fraction(1, TICKS_PER_SECOND)
_LAYOUTS = {1: "mono", 2: "stereo", 3: "3.0", 4: "4.0", 5: "5.0", 6: "5.1", 8: "7.1"}
_X264_OPTIONS = {"preset": "ultrafast", "tune": "stillimage", "x264-params": "scenecut=0"}


def picture_from_keyframe(
    codec: str, extradata: bytes | None, keyframe: bytes
) -> av.VideoFrame | None:
    """The picture of one H.264 keyframe (AVCC with its avcC extradata, or Annex B
    with SPS/PPS in band); None if it cannot be decoded."""
    if codec != "h264" or not keyframe:
        return None
    try:
        context = av.CodecContext.create("h264", "r")
        if extradata:
            context.extradata = extradata
        frames = list(context.decode(av.Packet(keyframe)))
        frames += context.decode(None)  # the decoder may hold the frame until flushed
    except (av.FFmpegError, ValueError):
        return None
    pictures = [frame for frame in frames if isinstance(frame, av.VideoFrame)]
    return pictures[0] if pictures else None


@dataclass(frozen=True)
class _Encoded:
    data: bytes
    keyframe: bool


class Slate:
    """A still picture and silence at a source's format, encoded once (see the module).

    `width` x `height` (even: 4:2:0), `frame_rate` (None: 30), `sample_rate` and
    `channels` (None: no audio). The picture: `picture` (the source's last one, as
    decoded), else `image` (a PNG/JPEG file), scaled to the size; neither: black.
    Building it encodes (a fraction of a second of CPU: build it off the event loop);
    after that it is immutable, and `packets()` is cheap.
    """

    def __init__(
        self,
        *,
        width: int,
        height: int,
        frame_rate: Fraction | None = None,
        sample_rate: int | None = None,
        channels: int | None = None,
        picture: av.VideoFrame | None = None,
        image: Path | None = None,
    ) -> None:
        if width <= 0 or height <= 0 or width % 2 or height % 2:
            raise ValueError(f"a slate needs an even size, not {width}x{height}")
        self.width = width
        self.height = height
        self.frame_rate = Fraction(frame_rate) if frame_rate else DEFAULT_FRAME_RATE
        self.sample_rate = sample_rate if sample_rate and channels else None
        self.channels = channels if sample_rate and channels else None
        self.gop_frames = max(1, round(self.frame_rate))  # about one second
        self._video = self._encode_video(self._picture(picture, image))
        self._audio: list[bytes] = []
        self._audio_config: bytes | None = None
        if self.sample_rate is not None and self.channels is not None:
            self._audio, self._audio_config = _encode_silence(self.sample_rate, self.channels)

    # -- what the muxer reads --------------------------------------------------------

    def session_start(self, session: int) -> SessionStart:
        """The slate's own session (its SessionStart; no streams behind it)."""
        video = VideoParams(
            codec_name="h264",
            width=self.width,
            height=self.height,
            frame_rate=self.frame_rate,
            time_base=_TICK_TIME_BASE,
        )
        audio = None
        if self.sample_rate is not None and self.channels is not None:
            audio = AudioParams(
                codec_name="aac",
                sample_rate=self.sample_rate,
                channels=self.channels,
                time_base=_TICK_TIME_BASE,
                extradata=self._audio_config,
            )
        return SessionStart(session, video, audio)

    def extradata(self) -> bytes | None:
        """The audio's AudioSpecificConfig (None without audio). The video has none:
        its SPS/PPS are in band, in each keyframe."""
        return self._audio_config

    @property
    def gop_seconds(self) -> Fraction:
        return self.gop_frames / self.frame_rate

    def span_ticks(self, seconds: float) -> int:
        """How long `packets(..., seconds)` lasts: whole GOPs, at least `seconds`; the
        next call continues at `start_ticks + span_ticks(seconds)`."""
        return self._frame_ticks(self._gops(seconds) * self.gop_frames)

    def packets(self, session: int, start_ticks: int, seconds: float) -> list[SourcePacket]:
        """The slate from `start_ticks` (90 kHz) for whole GOPs covering `seconds`:
        video and audio in decode order. Audio frames sit on a grid from tick 0, so
        that consecutive calls (`start_ticks + span_ticks(seconds)`) tile exactly."""
        frames = self._gops(seconds) * self.gop_frames
        items: list[tuple[int, int, SourcePacket]] = []
        for index in range(frames):
            encoded = self._video[index % len(self._video)]
            ticks = start_ticks + self._frame_ticks(index)
            packet = SourcePacket(
                session, "video", "h264", encoded.data, ticks, ticks, encoded.keyframe
            )
            items.append((ticks, 0, packet))
        if self.sample_rate is not None and self._audio:
            end_ticks = start_ticks + self._frame_ticks(frames)
            first = math.ceil(
                start_ticks * self.sample_rate / (AAC_FRAME_SAMPLES * TICKS_PER_SECOND)
            )
            index = max(0, first)
            while (ticks := self._audio_ticks(index)) < end_ticks:
                data = self._audio[index % len(self._audio)]
                items.append(
                    (ticks, 1, SourcePacket(session, "audio", "aac", data, ticks, ticks, True))
                )
                index += 1
        items.sort(key=lambda item: (item[0], item[1]))
        return [packet for _, _, packet in items]

    # -- building ----------------------------------------------------------------------

    def _gops(self, seconds: float) -> int:
        return max(1, math.ceil(Fraction(seconds) / self.gop_seconds - Fraction(1, 10**6)))

    def _frame_ticks(self, frames: int) -> int:
        return round(frames * TICKS_PER_SECOND / self.frame_rate)

    def _audio_ticks(self, index: int) -> int:
        assert self.sample_rate is not None
        return round(Fraction(index * AAC_FRAME_SAMPLES * TICKS_PER_SECOND, self.sample_rate))

    def _picture(self, picture: av.VideoFrame | None, image: Path | None) -> av.VideoFrame:
        """The slate's picture at its size, in yuv420p."""
        if picture is None and image is not None:
            with av.open(str(image)) as container:
                picture = next(container.decode(video=0))
        if picture is None:
            planes = np.concatenate(
                [
                    np.full((self.height, self.width), 16, np.uint8),  # black: Y 16, U/V 128
                    np.full((self.height // 2, self.width), 128, np.uint8),
                ]
            )
            return av.VideoFrame.from_ndarray(planes, format="yuv420p")
        return picture.reformat(width=self.width, height=self.height, format="yuv420p")

    def _encode_video(self, picture: av.VideoFrame) -> list[_Encoded]:
        """One GOP of the picture: a keyframe, then P-frames that repeat it."""
        context = av.CodecContext.create("libx264", "w")
        context.width = self.width
        context.height = self.height
        context.pix_fmt = "yuv420p"
        context.time_base = 1 / self.frame_rate
        context.framerate = self.frame_rate
        context.gop_size = self.gop_frames
        context.max_b_frames = 0
        context.options = dict(_X264_OPTIONS, keyint_min=str(self.gop_frames))
        pixels = picture.to_ndarray()
        packets: list[av.Packet] = []
        for index in range(self.gop_frames):
            # A new frame each time: no picture type carried over (a decoded keyframe's
            # would make x264 code every frame as one)
            frame = av.VideoFrame.from_ndarray(pixels, format="yuv420p")
            frame.pts = index
            packets += context.encode(frame)
        packets += context.encode(None)
        encoded = [_Encoded(bytes(packet), bool(packet.is_keyframe)) for packet in packets]
        if len(encoded) != self.gop_frames or not encoded[0].keyframe:
            raise RuntimeError(f"the slate's GOP came out as {len(encoded)} packets")
        return encoded


def _encode_silence(sample_rate: int, channels: int) -> tuple[list[bytes], bytes]:
    """A few AAC-LC frames of silence (any of them repeats) and the encoder's config."""
    layout = _LAYOUTS.get(channels)
    if layout is None:
        raise ValueError(f"no AAC layout for {channels} channels")
    context = av.CodecContext.create("aac", "w")
    context.sample_rate = sample_rate
    context.layout = layout
    context.format = "fltp"
    context.time_base = Fraction(1, sample_rate)
    packets: list[av.Packet] = []
    silence = np.zeros((channels, AAC_FRAME_SAMPLES), np.float32)
    for index in range(4):
        frame = av.AudioFrame.from_ndarray(silence, format="fltp", layout=layout)
        frame.sample_rate = sample_rate
        frame.pts = index * AAC_FRAME_SAMPLES
        packets += context.encode(frame)
    packets += context.encode(None)
    config = bytes(context.extradata or b"")
    # The first frames carry the encoder's start-up; the steady ones repeat seamlessly.
    steady = [bytes(packet) for packet in packets[2:]] or [bytes(packets[-1])]
    return steady, config
