"""RFC 6381 `CODECS` strings from real codec headers (pure functions over bytes).

H.264: `avc1.PPCCLL` from the SPS (profile_idc, the constraint-flag byte, level_idc),
found in Annex B bytes (start codes: x264's extradata, a keyframe) or in an `avcC`
record (FLV/MP4 extradata). AAC: `mp4a.40.AOT` from the AudioSpecificConfig.
"""

from __future__ import annotations

from collections.abc import Iterator

H264_NAL_SPS = 7
H264_NAL_PPS = 8
H264_NAL_AUD = 9
H264_NAL_IDR = 5


class CodecStringError(ValueError):
    """The bytes do not hold what a codec string needs."""


def annexb_nal_units(data: bytes) -> Iterator[bytes]:
    """The NAL units of an Annex B byte stream (start codes removed)."""
    starts: list[tuple[int, int]] = []  # (start code offset, payload offset)
    i = 0
    n = len(data)
    while i + 3 <= n:
        j = data.find(b"\x00\x00\x01", i)
        if j < 0:
            break
        code_at = j - 1 if j > 0 and data[j - 1] == 0 else j
        starts.append((code_at, j + 3))
        i = j + 3
    for k, (_, payload_at) in enumerate(starts):
        end = starts[k + 1][0] if k + 1 < len(starts) else n
        nal = data[payload_at:end]
        if nal:
            yield nal


def avcc_nal_units(data: bytes, length_size: int = 4) -> Iterator[bytes]:
    """The NAL units of a length-prefixed (AVCC, as in FLV/MP4) packet."""
    i = 0
    while i + length_size <= len(data):
        size = int.from_bytes(data[i : i + length_size], "big")
        i += length_size
        if size <= 0 or i + size > len(data):
            raise CodecStringError("truncated AVCC NAL unit")
        yield data[i : i + size]
        i += size


def is_annexb(data: bytes) -> bool:
    return data.startswith(b"\x00\x00\x01") or data.startswith(b"\x00\x00\x00\x01")


def h264_nal_units(data: bytes) -> Iterator[bytes]:
    """NAL units of either framing (Annex B if it starts with a start code)."""
    if is_annexb(data):
        return annexb_nal_units(data)
    return avcc_nal_units(data)


def avc1_from_sps(sps: bytes) -> str:
    """`avc1.PPCCLL` from one SPS NAL unit (with its 1-byte NAL header)."""
    if len(sps) < 4 or sps[0] & 0x1F != H264_NAL_SPS:
        raise CodecStringError("not an H.264 SPS NAL unit")
    # profile_idc, constraint_set flags + reserved bits, level_idc: the three bytes
    # after the header. They cannot hold an emulation-prevention byte (that needs
    # two zero bytes first, and profile_idc is never 0).
    return f"avc1.{sps[1]:02x}{sps[2]:02x}{sps[3]:02x}"


def avc1_codec_string(header: bytes) -> str:
    """`avc1.PPCCLL` from H.264 extradata (Annex B or avcC) or a keyframe packet."""
    if not header:
        raise CodecStringError("no H.264 header bytes")
    return avc1_from_sps(h264_header_sps(header))


def aac_object_type(audio_specific_config: bytes) -> int:
    """The audio object type of an AudioSpecificConfig (2 = AAC-LC, 5 = SBR, 29 = PS)."""
    if len(audio_specific_config) < 2:
        raise CodecStringError("AudioSpecificConfig too short")
    aot = audio_specific_config[0] >> 3
    if aot == 31:  # escape: 6 more bits
        aot = 32 + (((audio_specific_config[0] & 0x07) << 3) | (audio_specific_config[1] >> 5))
    return aot


def mp4a_codec_string(codec_name: str, extradata: bytes | None) -> str | None:
    """`mp4a.40.2` for AAC-LC (from the ASC when present), `mp4a.40.34` for MP3.

    None for a codec HLS players cannot be told about this way.
    """
    if codec_name == "aac":
        aot = aac_object_type(extradata) if extradata else 2
        return f"mp4a.40.{aot}"
    if codec_name == "mp3":
        return "mp4a.40.34"
    if codec_name == "ac3":
        return "ac-3"
    if codec_name == "eac3":
        return "ec-3"
    return None


def codecs_attribute(video: str, audio: str | None) -> str:
    """The comma-separated CODECS value."""
    return video if audio is None else f"{video},{audio}"


# -- SPS dimensions (passthrough: a live probe may not know the size) ---------------

_HIGH_PROFILES = {100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135}


def _rbsp(nal: bytes) -> bytes:
    """The NAL payload without emulation-prevention bytes (00 00 03 -> 00 00)."""
    out = bytearray()
    zeros = 0
    for byte in nal:
        if zeros >= 2 and byte == 3:
            zeros = 0
            continue
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


class _Bits:
    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def u(self, n: int) -> int:
        value = 0
        for _ in range(n):
            byte = self._pos >> 3
            if byte >= len(self._data):
                raise CodecStringError("SPS ends early")
            value = (value << 1) | ((self._data[byte] >> (7 - (self._pos & 7))) & 1)
            self._pos += 1
        return value

    def ue(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > 31:
                raise CodecStringError("bad Exp-Golomb code in SPS")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        code = self.ue()
        return (code + 1) // 2 if code & 1 else -(code // 2)


def _skip_scaling_list(bits: _Bits, size: int) -> None:
    last = next_scale = 8
    for _ in range(size):
        if next_scale != 0:
            next_scale = (last + bits.se() + 256) % 256
        last = next_scale or last


def h264_sps_dimensions(sps: bytes) -> tuple[int, int]:
    """(width, height) in pixels, after cropping, of one SPS NAL unit (with its header)."""
    if len(sps) < 4 or sps[0] & 0x1F != H264_NAL_SPS:
        raise CodecStringError("not an H.264 SPS NAL unit")
    bits = _Bits(_rbsp(sps[1:]))
    profile_idc = bits.u(8)
    bits.u(16)  # constraint flags, level_idc
    bits.ue()  # seq_parameter_set_id
    chroma_format_idc = 1
    separate_colour_plane = 0
    if profile_idc in _HIGH_PROFILES:
        chroma_format_idc = bits.ue()
        if chroma_format_idc == 3:
            separate_colour_plane = bits.u(1)
        bits.ue()  # bit_depth_luma_minus8
        bits.ue()  # bit_depth_chroma_minus8
        bits.u(1)  # qpprime_y_zero_transform_bypass_flag
        if bits.u(1):  # seq_scaling_matrix_present_flag
            for i in range(8 if chroma_format_idc != 3 else 12):
                if bits.u(1):
                    _skip_scaling_list(bits, 16 if i < 6 else 64)
    bits.ue()  # log2_max_frame_num_minus4
    poc_type = bits.ue()
    if poc_type == 0:
        bits.ue()  # log2_max_pic_order_cnt_lsb_minus4
    elif poc_type == 1:
        bits.u(1)  # delta_pic_order_always_zero_flag
        bits.se()  # offset_for_non_ref_pic
        bits.se()  # offset_for_top_to_bottom_field
        for _ in range(bits.ue()):
            bits.se()  # offset_for_ref_frame
    bits.ue()  # max_num_ref_frames
    bits.u(1)  # gaps_in_frame_num_value_allowed_flag
    width_mbs = bits.ue() + 1
    height_map_units = bits.ue() + 1
    frame_mbs_only = bits.u(1)
    if not frame_mbs_only:
        bits.u(1)  # mb_adaptive_frame_field_flag
    bits.u(1)  # direct_8x8_inference_flag
    crop_left = crop_right = crop_top = crop_bottom = 0
    if bits.u(1):  # frame_cropping_flag
        crop_left, crop_right, crop_top, crop_bottom = bits.ue(), bits.ue(), bits.ue(), bits.ue()
    if chroma_format_idc == 0 or separate_colour_plane:
        crop_x, crop_y = 1, 2 - frame_mbs_only
    else:
        sub_width = 1 if chroma_format_idc == 3 else 2
        sub_height = 2 if chroma_format_idc == 1 else 1
        crop_x, crop_y = sub_width, sub_height * (2 - frame_mbs_only)
    width = width_mbs * 16 - crop_x * (crop_left + crop_right)
    height = (2 - frame_mbs_only) * height_map_units * 16 - crop_y * (crop_top + crop_bottom)
    return width, height


def h264_header_sps(header: bytes) -> bytes:
    """The first SPS NAL unit of H.264 extradata (Annex B or avcC) or a keyframe."""
    if header and header[0] == 1 and len(header) >= 8 and not is_annexb(header):
        count = header[5] & 0x1F
        if count:
            size = int.from_bytes(header[6:8], "big")
            if 8 + size <= len(header):
                return header[8 : 8 + size]
        raise CodecStringError("no SPS in the avcC record")
    for nal in h264_nal_units(header):
        if nal[0] & 0x1F == H264_NAL_SPS:
            return nal
    raise CodecStringError("no SPS in the H.264 header bytes")
