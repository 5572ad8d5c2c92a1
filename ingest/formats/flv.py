"""FLV, as pure functions: the file header, tags, and what a tag's first bytes say.

An RTMP audio/video message payload IS an FLV tag body, so a live FLV stream is
`file_header()` followed by `tag(kind, timestamp, payload)` per message. Enhanced
RTMP (ex-header bit 0x80 in a video tag's first byte, FourCC `hvc1`/`av01`/`vp09`;
audio SoundFormat 9 with a FourCC) passes through unchanged; the readers here only
look at the bytes to report codecs and keyframes.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ingest.formats import amf0

TAG_AUDIO = 8
TAG_VIDEO = 9
TAG_SCRIPT = 18
TAG_HEADER_SIZE = 11

# FLV video codec ids (legacy) and the ids we report for enhanced-RTMP FourCCs.
VIDEO_AVC = 7
VIDEO_HEVC = 12
VIDEO_AV1 = 13
VIDEO_VP9 = 14
VIDEO_FOURCC_CODEC_IDS = {
    b"avc1": VIDEO_AVC,
    b"hvc1": VIDEO_HEVC,
    b"av01": VIDEO_AV1,
    b"vp09": VIDEO_VP9,
}

# FLV audio SoundFormat values.
AUDIO_MP3 = 2
AUDIO_AAC = 10
AUDIO_EX_HEADER = 9
AUDIO_FOURCC_CODEC_IDS = {b"mp4a": AUDIO_AAC, b".mp3": AUDIO_MP3}

_SOUND_RATES = (5512, 11025, 22050, 44100)
_AAC_RATES = (
    *(96000, 88200, 64000, 48000, 44100, 32000, 24000),
    *(22050, 16000, 12000, 11025, 8000, 7350),
)
_AAC_CHANNELS = (0, 1, 2, 3, 4, 5, 6, 8)

# Enhanced RTMP video packet types.
_EX_SEQUENCE_START = 0
_EX_CODED_FRAMES = 1
_EX_CODED_FRAMES_X = 3
_EX_MPEG2TS_SEQUENCE_START = 5
_FRAME_TYPE_KEY = 1
_FRAME_TYPE_COMMAND = 5


def file_header(*, audio: bool = True, video: bool = True) -> bytes:
    """The 9-byte FLV header plus PreviousTagSize0."""
    flags = (4 if audio else 0) | (1 if video else 0)
    return b"FLV\x01" + bytes([flags]) + struct.pack(">II", 9, 0)


def tag(kind: int, timestamp_ms: int, payload: bytes) -> bytes:
    """One FLV tag: 11-byte header, the payload, the 4-byte tag size."""
    size = len(payload)
    if size > 0xFFFFFF:
        raise ValueError(f"FLV tag body of {size} bytes does not fit 24 bits")
    timestamp = timestamp_ms & 0xFFFFFFFF
    header = bytes(
        [
            kind & 0x1F,
            size >> 16,
            (size >> 8) & 0xFF,
            size & 0xFF,
            (timestamp >> 16) & 0xFF,
            (timestamp >> 8) & 0xFF,
            timestamp & 0xFF,
            timestamp >> 24,
            0,
            0,
            0,
        ]
    )
    return header + payload + struct.pack(">I", TAG_HEADER_SIZE + size)


def metadata_payload(metadata: dict[str, Any]) -> bytes:
    """An onMetaData script tag body with the scalar entries of `metadata`."""
    values = amf0.EcmaArray(
        (key, value)
        for key, value in metadata.items()
        if isinstance(value, bool | int | float | str)
    )
    return amf0.encode("onMetaData", values)


@dataclass(frozen=True)
class Tag:
    kind: int
    timestamp_ms: int
    payload: bytes


def parse(data: bytes) -> tuple[int, list[Tag]]:
    """(header flags, tags) of a complete FLV byte string; ValueError if malformed."""
    if len(data) < 13 or data[:3] != b"FLV":
        raise ValueError("not an FLV stream")
    offset = struct.unpack_from(">I", data, 5)[0] + 4
    return data[4], list(_iter_tags(data, offset))


def _iter_tags(data: bytes, pos: int) -> Iterator[Tag]:
    while pos < len(data):
        if len(data) - pos < TAG_HEADER_SIZE + 4:
            raise ValueError("truncated FLV tag")
        size = int.from_bytes(data[pos + 1 : pos + 4], "big")
        timestamp = int.from_bytes(data[pos + 4 : pos + 7], "big") | (data[pos + 7] << 24)
        end = pos + TAG_HEADER_SIZE + size
        if end + 4 > len(data):
            raise ValueError("truncated FLV tag body")
        yield Tag(data[pos] & 0x1F, timestamp, data[pos + TAG_HEADER_SIZE : end])
        pos = end + 4


@dataclass(frozen=True)
class VideoTagInfo:
    codec_id: int  # FLV codec id; FourCCs mapped (hvc1 12, av01 13, vp09 14); 0 if unknown
    keyframe: bool
    config: bool  # a sequence header / decoder configuration record
    frame: bool  # carries a coded picture (counts toward the frame rate)
    enhanced: bool


def video_info(payload: bytes) -> VideoTagInfo | None:
    """What a video tag body's first bytes say; None for an empty body."""
    if not payload:
        return None
    first = payload[0]
    if first & 0x80:
        frame_type = (first >> 4) & 0x07
        packet_type = first & 0x0F
        codec_id = VIDEO_FOURCC_CODEC_IDS.get(bytes(payload[1:5]), 0)
        config = packet_type in (_EX_SEQUENCE_START, _EX_MPEG2TS_SEQUENCE_START)
        coded = packet_type in (_EX_CODED_FRAMES, _EX_CODED_FRAMES_X)
        frame = coded and frame_type != _FRAME_TYPE_COMMAND
        return VideoTagInfo(codec_id, frame_type == _FRAME_TYPE_KEY, config, frame, True)
    frame_type = first >> 4
    codec_id = first & 0x0F
    if codec_id in (VIDEO_AVC, VIDEO_HEVC):
        packet_type = payload[1] if len(payload) > 1 else -1
        config = packet_type == 0
        frame = packet_type == 1 and frame_type != _FRAME_TYPE_COMMAND
    else:
        config = False
        frame = frame_type != _FRAME_TYPE_COMMAND
    return VideoTagInfo(codec_id, frame_type == _FRAME_TYPE_KEY, config, frame, False)


@dataclass(frozen=True)
class AudioTagInfo:
    codec_id: int  # FLV SoundFormat; FourCC mapped (mp4a 10, .mp3 2); 9 if unknown FourCC
    sample_rate: int  # 0 when the tag does not say (AAC frames: only the config says)
    sample_size_bits: int  # 16 or 8; 0 when the tag does not say
    channels: int  # 0 when the tag does not say
    config: bool  # an AAC AudioSpecificConfig / sequence start


def video_codec_from_metadata(value: Any) -> int:
    """onMetaData videocodecid (a number, or a FourCC string in enhanced RTMP) as an id."""
    if isinstance(value, str):
        return VIDEO_FOURCC_CODEC_IDS.get(value.encode("latin-1", "replace")[:4], 0)
    return int(value) if amf0.is_number(value) and 0 <= value < 256 else 0


def audio_codec_from_metadata(value: Any) -> int:
    if isinstance(value, str):
        return AUDIO_FOURCC_CODEC_IDS.get(value.encode("latin-1", "replace")[:4], 0)
    return int(value) if amf0.is_number(value) and 0 <= value < 256 else 0


def audio_info(payload: bytes) -> AudioTagInfo | None:
    """What an audio tag body's first bytes say; None for an empty body."""
    if not payload:
        return None
    first = payload[0]
    sound_format = first >> 4
    if sound_format == AUDIO_EX_HEADER:
        codec_id = AUDIO_FOURCC_CODEC_IDS.get(bytes(payload[1:5]), AUDIO_EX_HEADER)
        return AudioTagInfo(codec_id, 0, 0, 0, (first & 0x0F) == 0)
    size_bits = 16 if first & 0x02 else 8
    if sound_format == AUDIO_AAC:
        # AAC tags always carry "44 kHz stereo" flags; only the config says the truth.
        if len(payload) > 1 and payload[1] == 0:
            rate, channels = aac_config(payload[2:])
            return AudioTagInfo(AUDIO_AAC, rate, size_bits, channels, True)
        return AudioTagInfo(AUDIO_AAC, 0, size_bits, 0, False)
    if sound_format in (4, 5, 6):  # Nellymoser 16 kHz / 8 kHz mono / any
        rate = {4: 16000, 5: 8000}.get(sound_format, _SOUND_RATES[(first >> 2) & 3])
    elif sound_format == 11:  # Speex
        rate = 16000
    else:
        rate = _SOUND_RATES[(first >> 2) & 3]
    return AudioTagInfo(sound_format, rate, size_bits, 2 if first & 0x01 else 1, False)


def aac_config(config: bytes) -> tuple[int, int]:
    """(sample rate, channels) from an AudioSpecificConfig; zeros where it does not say."""
    if len(config) < 2:
        return 0, 0
    bits = int.from_bytes(config[:8].ljust(8, b"\x00"), "big")
    pos = 64

    def take(count: int) -> int:
        nonlocal pos
        pos -= count
        return (bits >> pos) & ((1 << count) - 1) if pos >= 0 else 0

    object_type = take(5)
    if object_type == 31:
        take(6)
    index = take(4)
    rate = take(24) if index == 15 else (_AAC_RATES[index] if index < len(_AAC_RATES) else 0)
    channel_config = take(4)
    channels = _AAC_CHANNELS[channel_config] if channel_config < len(_AAC_CHANNELS) else 0
    return rate, channels


# Losing tags on a live stream

MAX_ESSENTIAL_TAG_BYTES = 64 * 1024


def is_decoder_config(kind: int, payload: bytes) -> bool:
    """Whether a tag is a decoder configuration (AVC/HEVC/... sequence header, AAC
    AudioSpecificConfig): without it nothing after it decodes."""
    if kind == TAG_VIDEO:
        video = video_info(payload)
        return video is not None and video.config
    if kind == TAG_AUDIO:
        audio = audio_info(payload)
        return audio is not None and audio.config
    return False


class LiveTagDropper:
    """Which tags a live FLV stream loses when its reader falls behind.

    `keep(kind, payload, fits)` for each tag in order, `fits` saying whether the tag
    still fits the reader's buffer: audio tags are lost one by one; video tags until
    the next keyframe that fits (a decoder cannot use frames whose reference was
    lost); small decoder configurations never. Pure: no I/O, no clock."""

    def __init__(self) -> None:
        self._skipping_video = False

    def keep(self, kind: int, payload: bytes, fits: bool) -> bool:
        if len(payload) + TAG_HEADER_SIZE + 4 <= MAX_ESSENTIAL_TAG_BYTES and is_decoder_config(
            kind, payload
        ):
            return True
        if kind == TAG_VIDEO:
            info = video_info(payload)
            keyframe = info is not None and info.keyframe and info.frame
            if not fits or (self._skipping_video and not keyframe):
                self._skipping_video = True
                return False
            self._skipping_video = False
            return True
        return fits
