"""A live's source packets as the FLV tags of one outbound RTMP connection (pure).

`FlvMuxer` turns the source track's items (`ingest.media`: SessionStart, then
SourcePacket) into FLV tags, whatever the source's container was:

- H.264 from FLV/RTMP is AVCC already (length-prefixed NAL units, the avcC record in
  the extradata); from MPEG-TS (SRT, HLS) it is Annex B, with SPS/PPS in band on
  keyframes: it is rewritten to AVCC, and the AVCDecoderConfigurationRecord is built
  from the SPS/PPS (and sent again whenever they change).
- AAC from FLV is raw, its AudioSpecificConfig in the extradata; from MPEG-TS it is
  ADTS-framed: the headers are stripped and the config is built from them.
- Each connection's timestamps start at 0, at a video keyframe preceded only by the
  metadata and the sequence headers, and stay continuous and monotonic across
  publisher sessions (and the slates in between, `restream.slate`): each session's
  own origin is subtracted and the connection's next instant (`next_ms`) added, one
  offset for its audio and its video, so A/V sync is kept.

Only H.264 and AAC go into legacy FLV; another codec raises `UnsupportedCodec`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from fractions import Fraction

from encoder.codecs import H264_NAL_AUD, H264_NAL_PPS, H264_NAL_SPS, annexb_nal_units
from ingest.formats import adts, amf0, flv
from ingest.media import SessionStart, SourcePacket
from media.clock import TICKS_PER_SECOND

VIDEO_CODEC = "h264"
AUDIO_CODEC = "aac"
_AVC_SEQUENCE_HEADER = 0
_AVC_NALU = 1
_FRAME_KEY = 1
_FRAME_INTER = 2
_AAC_HEADER_BYTE = (flv.AUDIO_AAC << 4) | 0x0F  # AAC: always "44 kHz, 16-bit, stereo"
_AAC_SEQUENCE_HEADER = 0
_AAC_RAW = 1
_AAC_LC = 2
# AudioSpecificConfig sampling frequency indexes (ISO/IEC 14496-3 1.6.3.4)
_AAC_RATE_INDEXES = {
    rate: index
    for index, rate in enumerate(
        (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)
    )
}
_AAC_CHANNEL_CONFIGS = {1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 6, 8: 7}
_DEFAULT_FRAME_RATE = Fraction(30)
# Profiles whose avcC has no chroma format / bit depth fields (FFmpeg's rule)
_PROFILES_WITHOUT_AVCC_EXTENSION = (66, 77, 88)


class UnsupportedCodec(ValueError):
    """The source's codec cannot go into (legacy) FLV: only H.264 and AAC can."""


@dataclass(frozen=True)
class FlvTag:
    """One FLV tag, i.e. one RTMP message (kind 8 audio, 9 video, 18 script data)."""

    kind: int
    timestamp_ms: int
    payload: bytes
    keyframe: bool = False  # a video keyframe (a coded picture, not a sequence header)

    @property
    def size_bytes(self) -> int:
        """Its size in an FLV stream: header, payload, previous-tag size."""
        return flv.TAG_HEADER_SIZE + len(self.payload) + 4

    @property
    def is_config(self) -> bool:
        """Whether it is a decoder configuration (AVC/AAC sequence header)."""
        return flv.is_decoder_config(self.kind, self.payload)

    def to_bytes(self) -> bytes:
        """The tag as an FLV stream carries it (after `flv.file_header()`)."""
        return flv.tag(self.kind, self.timestamp_ms, self.payload)


# -- H.264 ---------------------------------------------------------------------------


def nal_type(nal: bytes) -> int:
    return nal[0] & 0x1F


def annexb_to_avcc(data: bytes, drop: Iterable[int] = (H264_NAL_AUD,)) -> bytes:
    """Annex B (start codes) as AVCC (4-byte big-endian lengths), leaving out the NAL
    units whose type is in `drop`."""
    return _avcc(annexb_nal_units(data), set(drop))


def parameter_sets(data: bytes) -> tuple[list[bytes], list[bytes]]:
    """(SPS, PPS) NAL units found in Annex B bytes (a keyframe, or extradata)."""
    return _parameter_sets(annexb_nal_units(data))


def _avcc(nals: Iterable[bytes], drop: set[int]) -> bytes:
    return b"".join(struct.pack(">I", len(nal)) + nal for nal in nals if nal_type(nal) not in drop)


def _parameter_sets(nals: Iterable[bytes]) -> tuple[list[bytes], list[bytes]]:
    sps: list[bytes] = []
    pps: list[bytes] = []
    for nal in nals:
        if nal_type(nal) == H264_NAL_SPS and nal not in sps:
            sps.append(nal)
        elif nal_type(nal) == H264_NAL_PPS and nal not in pps:
            pps.append(nal)
    return sps, pps


def avc_decoder_configuration(sps: list[bytes], pps: list[bytes]) -> bytes:
    """The AVCDecoderConfigurationRecord (`avcC`, ISO/IEC 14496-15 5.3.3.1) of these
    parameter sets, with 4-byte NAL lengths, byte for byte as FFmpeg writes it."""
    if not sps or not pps:
        raise ValueError("an avcC record needs at least one SPS and one PPS")
    first = sps[0]
    if len(first) < 4 or nal_type(first) != H264_NAL_SPS:
        raise ValueError("not an H.264 SPS NAL unit")
    profile_idc, constraints, level_idc = first[1], first[2], first[3]
    out = bytearray([1, profile_idc, constraints, level_idc, 0xFF, 0xE0 | len(sps)])
    for nal in sps:
        out += struct.pack(">H", len(nal)) + nal
    out.append(len(pps))
    for nal in pps:
        out += struct.pack(">H", len(nal)) + nal
    if profile_idc not in _PROFILES_WITHOUT_AVCC_EXTENSION:
        chroma_format, luma_depth_minus8, chroma_depth_minus8 = _sps_format(first)
        out += bytes([0xFC | chroma_format, 0xF8 | luma_depth_minus8, 0xF8 | chroma_depth_minus8])
        out.append(0)  # numOfSequenceParameterSetExt
    return bytes(out)


def _sps_format(sps: bytes) -> tuple[int, int, int]:
    """(chroma_format_idc, bit_depth_luma_minus8, bit_depth_chroma_minus8) of a
    high-profile SPS (with its NAL header): the Exp-Golomb fields after level_idc."""
    rbsp = sps[4:20].replace(b"\x00\x00\x03", b"\x00\x00")  # emulation prevention
    bits = "".join(f"{byte:08b}" for byte in rbsp)
    pos = 0

    def ue() -> int:
        nonlocal pos
        zeros = 0
        while pos < len(bits) and bits[pos] == "0":
            zeros += 1
            pos += 1
        if pos + zeros + 1 > len(bits):
            raise ValueError("SPS ends early")
        value = int(bits[pos : pos + zeros + 1], 2) - 1
        pos += zeros + 1
        return value

    ue()  # seq_parameter_set_id
    chroma_format = ue()
    if chroma_format == 3:
        pos += 1  # separate_colour_plane_flag
    luma = ue()
    return chroma_format & 3, luma & 7, ue() & 7


def avcc_record_parameter_sets(record: bytes) -> tuple[int, list[bytes], list[bytes]]:
    """(NAL length size, SPS, PPS) of an avcC record; ValueError if malformed."""
    if len(record) < 7 or record[0] != 1:
        raise ValueError("not an avcC record")
    pos = 6
    sets: list[list[bytes]] = []
    for count in (record[5] & 0x1F, -1):
        if count < 0:  # the PPS count follows the SPS
            if pos >= len(record):
                raise ValueError("avcC record without its PPS count")
            count, pos = record[pos], pos + 1
        units = []
        for _ in range(count):
            size = int.from_bytes(record[pos : pos + 2], "big")
            if pos + 2 + size > len(record):
                raise ValueError("truncated avcC record")
            units.append(record[pos + 2 : pos + 2 + size])
            pos += 2 + size
        sets.append(units)
    return (record[4] & 0x03) + 1, sets[0], sets[1]


def _in_band_parameter_sets(record: bytes | None) -> bytes:
    """An avcC record's SPS and PPS as the NAL units an AVCC access unit starts with."""
    if record is None:
        return b""
    try:
        length_size, sps, pps = avcc_record_parameter_sets(record)
    except ValueError:
        return b""
    return b"".join(len(nal).to_bytes(length_size, "big") + nal for nal in (*sps, *pps))


def avc_sequence_header(record: bytes) -> bytes:
    """A video tag body carrying an avcC record."""
    return bytes([(_FRAME_KEY << 4) | flv.VIDEO_AVC, _AVC_SEQUENCE_HEADER, 0, 0, 0]) + record


def avc_video_payload(avcc: bytes, keyframe: bool, composition_ms: int) -> bytes:
    """A video tag body carrying one AVCC access unit, presented `composition_ms` after
    its decode time."""
    frame_type = _FRAME_KEY if keyframe else _FRAME_INTER
    header = bytes([(frame_type << 4) | flv.VIDEO_AVC, _AVC_NALU])
    return header + (composition_ms & 0xFFFFFF).to_bytes(3, "big") + avcc


# -- AAC -------------------------------------------------------------------------------


def aac_config(sample_rate: int, channels: int, object_type: int = _AAC_LC) -> bytes:
    """A 2-byte AudioSpecificConfig (AAC-LC by default)."""
    index = _AAC_RATE_INDEXES.get(sample_rate)
    channel_config = _AAC_CHANNEL_CONFIGS.get(channels)
    if index is None or channel_config is None:
        raise ValueError(f"no AAC config for {sample_rate} Hz, {channels} channels")
    return ((object_type << 11) | (index << 7) | (channel_config << 3)).to_bytes(2, "big")


def aac_config_from_adts(header: bytes) -> bytes:
    """The AudioSpecificConfig an ADTS header stands for (profile, rate, channels)."""
    if adts.parse_header(header) is None:
        raise ValueError("not an ADTS header")
    object_type = (header[2] >> 6) + 1
    rate_index = (header[2] >> 2) & 0x0F
    channel_config = ((header[2] & 0x01) << 2) | (header[3] >> 6)
    return ((object_type << 11) | (rate_index << 7) | (channel_config << 3)).to_bytes(2, "big")


def adts_frames(data: bytes) -> list[tuple[bytes, bytes]] | None:
    """(ADTS header, raw AAC frame) for each ADTS frame in `data`; None when `data`
    does not start with an ADTS header (raw AAC, as FLV carries it)."""
    frames: list[tuple[bytes, bytes]] = []
    pos = 0
    while pos < len(data):
        header = adts.parse_header(data[pos : pos + adts.HEADER_SIZE])
        if header is None or pos + header.frame_bytes > len(data):
            break
        has_crc = not data[pos + 1] & 0x01  # protection_absent = 0: a 16-bit CRC follows
        start = pos + adts.HEADER_SIZE + (2 if has_crc else 0)
        frames.append((data[pos : pos + adts.HEADER_SIZE], data[start : pos + header.frame_bytes]))
        pos += header.frame_bytes
    return frames or None


def aac_sequence_header(config: bytes) -> bytes:
    """An audio tag body carrying an AudioSpecificConfig."""
    return bytes([_AAC_HEADER_BYTE, _AAC_SEQUENCE_HEADER]) + config


def aac_audio_payload(raw: bytes) -> bytes:
    """An audio tag body carrying one raw AAC frame."""
    return bytes([_AAC_HEADER_BYTE, _AAC_RAW]) + raw


# -- the muxer -------------------------------------------------------------------------


@dataclass
class _Session:
    """What the muxer knows of the session it is in."""

    start: SessionStart
    annexb: bool  # H.264 with start codes (MPEG-TS); else AVCC (FLV)
    frame_ticks: int  # one video frame
    video_config: bytes | None = None  # its avcC record, once known
    audio_config: bytes | None = None  # its AudioSpecificConfig, once known
    audio_frame_ticks: int = 1920  # one AAC frame (1024 samples at 48 kHz)
    video_started: bool = False  # its first keyframe was sent
    origin_ticks: int | None = None  # its first packet sent: this decode time ...
    base_ms: int = 0  # ... is sent at this instant
    last_dts: dict[str, int] = field(default_factory=dict)  # per kind, session ticks


class FlvMuxer:
    """A live's source packets as FLV tags, for one outbound connection (see the module).

    `session_start()` at each SessionStart (a publisher's session, or a slate's),
    `packet()` for each SourcePacket; both return the tags to send now, in order.
    Not thread-safe: one connection's thread owns it.
    """

    def __init__(self) -> None:
        self.skipped = 0  # packets left out: video before its keyframe, early audio, ...
        self.tags_emitted = 0
        self._session: _Session | None = None
        self._started = False  # the connection's first video keyframe was sent
        self._first_video_ms = 0
        self._last_ms: dict[str, int] = {}  # the last decode time sent, per kind
        self._end_ms: int | None = None  # where what was sent ends (presentation)
        self._floor_ms = 0  # advance_to()
        self._video_config: bytes | None = None  # the last avcC record sent
        self._audio_config: bytes | None = None  # the last AudioSpecificConfig sent
        self._metadata: dict[str, float | bool] | None = None  # the last onMetaData sent

    @property
    def next_ms(self) -> int:
        """Where the next session (or a slate) continues: just after what was sent
        (the end of its last frame), or where `advance_to()` said if later."""
        end = self._end_ms if self._end_ms is not None else 0
        return max(end, self._floor_ms)

    def advance_to(self, ms: int) -> None:
        """The caller sent other tags up to `ms`: the next session starts there (never
        before what this muxer sent)."""
        self._floor_ms = max(self._floor_ms, ms)

    # -- sessions ------------------------------------------------------------------

    def session_start(
        self,
        start: SessionStart,
        video_extradata: bytes | None,
        audio_extradata: bytes | None,
    ) -> list[FlvTag]:
        """A (new) session: the tags to send now (metadata, the sequence headers the
        extradata gives). UnsupportedCodec if a codec cannot go into FLV."""
        video, audio = start.video, start.audio
        if video is not None and video.codec_name != VIDEO_CODEC:
            raise UnsupportedCodec(f"video codec {video.codec_name} cannot be sent as FLV")
        if audio is not None and audio.codec_name != AUDIO_CODEC:
            raise UnsupportedCodec(f"audio codec {audio.codec_name} cannot be sent as FLV")
        rate = (video.frame_rate if video is not None else None) or _DEFAULT_FRAME_RATE
        session = _Session(start, annexb=True, frame_ticks=round(TICKS_PER_SECOND / rate))
        if video_extradata and video_extradata[0] == 1:  # avcC: the packets are AVCC
            session.video_config, session.annexb = bytes(video_extradata), False
        elif video_extradata:
            sps, pps = parameter_sets(video_extradata)
            if sps and pps:
                session.video_config = avc_decoder_configuration(sps, pps)
        if audio is not None and audio.sample_rate:
            session.audio_frame_ticks = _aac_frame_ticks(audio.sample_rate)
        self._session = session
        at = self.next_ms
        tags: list[FlvTag] = []
        metadata = _metadata(start)
        if metadata != self._metadata:
            self._metadata = metadata
            payload = amf0.encode("@setDataFrame", "onMetaData", amf0.EcmaArray(metadata))
            tags.append(FlvTag(flv.TAG_SCRIPT, at, payload))
        if video is not None and session.video_config is not None:
            tags += self._video_config_tags(session.video_config, at)
        if audio is not None and audio_extradata:
            self._set_audio_config(session, bytes(audio_extradata))
            tags += self._audio_config_tags(session, at)
        return self._emitted(tags)

    # -- packets -------------------------------------------------------------------

    def packet(self, p: SourcePacket) -> list[FlvTag]:
        """The tags for one source packet (none while waiting for a keyframe, ...)."""
        session = self._session
        if session is None or p.session != session.start.session:
            self.skipped += 1  # no session yet, or a stale packet of another one
            return []
        if p.codec not in (VIDEO_CODEC, AUDIO_CODEC):
            raise UnsupportedCodec(f"codec {p.codec} cannot be sent as FLV")
        if p.kind == "video" and session.start.video is not None:
            return self._emitted(self._video(session, p))
        if p.kind == "audio" and session.start.audio is not None:
            return self._emitted(self._audio(session, p))
        self.skipped += 1
        return []

    def _video(self, session: _Session, p: SourcePacket) -> list[FlvTag]:
        data = p.data
        config: bytes | None = None  # a record made of the packet's in-band SPS/PPS
        if session.annexb:
            nals = list(annexb_nal_units(data))
            sps, pps = _parameter_sets(nals)
            if sps and pps:
                config = avc_decoder_configuration(sps, pps)
            # SPS/PPS stay in band too: a decoder (or parser) that keeps the first
            # sequence header it saw still follows a change of session
            data = _avcc(nals, {H264_NAL_AUD})
        if not session.video_started and not (
            p.keyframe and (config or session.video_config) is not None
        ):
            self.skipped += 1  # nothing decodes before a keyframe and its SPS/PPS
            return []
        dts = self._session_dts(session, p)
        if dts is None:
            self.skipped += 1
            return []
        dts_ms = max(self._ms(session, dts), self._last_ms.get("video", -1) + 1, 0)
        pts_ms = self._ms(session, p.pts) if p.pts is not None else dts_ms
        tags: list[FlvTag] = []
        if config is not None:
            session.video_config = config
        if config is not None or not session.video_started:
            assert session.video_config is not None
            tags += self._video_config_tags(session.video_config, dts_ms)
        if not session.video_started:
            session.video_started = True
            if config is None:  # its first keyframe carries its parameter sets in band
                data = _in_band_parameter_sets(session.video_config) + data
            if not self._started:
                self._started, self._first_video_ms = True, dts_ms
        payload = avc_video_payload(data, p.keyframe, max(0, pts_ms - dts_ms))
        tags.append(FlvTag(flv.TAG_VIDEO, dts_ms, payload, keyframe=p.keyframe))
        self._last_ms["video"] = dts_ms
        self._extend_end(max(pts_ms, dts_ms) + _ms_rounded_up(session.frame_ticks))
        return tags

    def _audio(self, session: _Session, p: SourcePacket) -> list[FlvTag]:
        if session.start.video is not None and not self._started:
            self.skipped += 1  # the connection starts at a video keyframe
            return []
        frames = adts_frames(p.data)
        if session.audio_config is None:
            audio = session.start.audio
            assert audio is not None
            if frames is not None:
                self._set_audio_config(session, aac_config_from_adts(frames[0][0]))
            elif audio.sample_rate and audio.channels:
                self._set_audio_config(session, aac_config(audio.sample_rate, audio.channels))
            else:
                self.skipped += 1  # nothing could tell the decoder the format
                return []
        dts = self._session_dts(session, p)
        if dts is None:
            self.skipped += 1
            return []
        tags: list[FlvTag] = []
        raws = [raw for _, raw in frames] if frames is not None else [p.data]
        for index, raw in enumerate(raws):
            ms = self._ms(session, dts + index * session.audio_frame_ticks)
            # Audio that would go backwards (or start before the first picture) is left
            # out: clamped, it would play late and take A/V sync with it.
            if ms < self._last_ms.get("audio", 0) or ms < self._first_video_ms:
                self.skipped += 1
                continue
            tags += self._audio_config_tags(session, ms)
            tags.append(FlvTag(flv.TAG_AUDIO, ms, aac_audio_payload(raw)))
            self._last_ms["audio"] = ms
            self._extend_end(ms + _ms_rounded_up(session.audio_frame_ticks))
        return tags

    # -- helpers -------------------------------------------------------------------

    def _session_dts(self, session: _Session, p: SourcePacket) -> int | None:
        """The packet's decode time (session ticks); the session's first packet sent
        fixes its offset."""
        dts = p.dts if p.dts is not None else p.pts
        if dts is None:  # no timestamp: one frame after the previous one of its kind
            last = session.last_dts.get(p.kind)
            if last is None:
                return None
            dts = last + (session.frame_ticks if p.kind == "video" else session.audio_frame_ticks)
        if session.origin_ticks is None:
            session.origin_ticks, session.base_ms = dts, self.next_ms
        session.last_dts[p.kind] = dts
        return dts

    @staticmethod
    def _ms(session: _Session, ticks: int) -> int:
        assert session.origin_ticks is not None
        return session.base_ms + _ms_of_ticks(ticks - session.origin_ticks)

    def _extend_end(self, ms: int) -> None:
        self._end_ms = ms if self._end_ms is None else max(self._end_ms, ms)

    @staticmethod
    def _set_audio_config(session: _Session, config: bytes) -> None:
        session.audio_config = config
        rate, _ = flv.aac_config(config)
        if rate:
            session.audio_frame_ticks = _aac_frame_ticks(rate)

    def _video_config_tags(self, record: bytes, at: int) -> list[FlvTag]:
        """The AVC sequence header, unless the destination has this one already."""
        if record == self._video_config:
            return []
        self._video_config = record
        return [FlvTag(flv.TAG_VIDEO, max(at, 0), avc_sequence_header(record))]

    def _audio_config_tags(self, session: _Session, at: int) -> list[FlvTag]:
        """The AAC sequence header, unless the destination has this one already."""
        config = session.audio_config
        if config is None or config == self._audio_config:
            return []
        self._audio_config = config
        return [FlvTag(flv.TAG_AUDIO, max(at, 0), aac_sequence_header(config))]

    def _emitted(self, tags: list[FlvTag]) -> list[FlvTag]:
        self.tags_emitted += len(tags)
        return tags


def _aac_frame_ticks(sample_rate: int) -> int:
    return round(adts.SAMPLES_PER_BLOCK * TICKS_PER_SECOND / sample_rate)


def _ms_of_ticks(ticks: int) -> int:
    """90 kHz ticks as the nearest millisecond."""
    return (ticks * 1000 + TICKS_PER_SECOND // 2) // TICKS_PER_SECOND


def _ms_rounded_up(ticks: int) -> int:
    return max(1, -(-ticks * 1000 // TICKS_PER_SECOND))


def _metadata(start: SessionStart) -> dict[str, float | bool]:
    """onMetaData's entries for a session (what the destination shows before decoding)."""
    metadata: dict[str, float | bool] = {"duration": 0.0}
    video, audio = start.video, start.audio
    if video is not None:
        if video.width and video.height:
            metadata["width"] = float(video.width)
            metadata["height"] = float(video.height)
        if video.frame_rate:
            metadata["framerate"] = float(video.frame_rate)
        metadata["videocodecid"] = float(flv.VIDEO_AVC)
    if audio is not None:
        if audio.sample_rate:
            metadata["audiosamplerate"] = float(audio.sample_rate)
        if audio.channels:
            metadata["stereo"] = audio.channels >= 2
        metadata["audiocodecid"] = float(flv.AUDIO_AAC)
    return metadata
