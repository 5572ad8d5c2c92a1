"""CODECS strings and SPS parsing, checked against real x264 headers."""

from __future__ import annotations

from fractions import Fraction

import av
import pytest

from encoder.codecs import (
    CodecStringError,
    aac_object_type,
    annexb_nal_units,
    avc1_codec_string,
    avcc_nal_units,
    codecs_attribute,
    h264_header_sps,
    h264_sps_dimensions,
    mp4a_codec_string,
)


def x264_extradata(width: int, height: int, profile: str, params: str = "") -> bytes:
    context = av.CodecContext.create("libx264", "w")
    context.width = width
    context.height = height
    context.pix_fmt = "yuv420p"
    context.time_base = Fraction(1, 30)
    context.framerate = Fraction(30)
    context.flags |= av.codec.context.Flags.global_header
    options = {"profile": profile, "preset": "veryfast"}
    if params:
        options["x264-params"] = params
    context.options = options
    context.open()
    assert context.extradata
    return context.extradata


@pytest.mark.parametrize(
    ("width", "height", "profile", "params", "profile_idc"),
    [
        (1920, 1080, "high", "", 0x64),
        (854, 480, "main", "", 0x4D),
        (640, 360, "baseline", "", 0x42),
        (1280, 720, "high", "cqm=jvt", 0x64),  # scaling matrices in the SPS
        (720, 576, "high", "interlaced=1", 0x64),  # field coding: frame_mbs_only = 0
        (202, 360, "main", "", 0x4D),  # odd macroblock crop
    ],
)
def test_sps_from_x264(
    width: int, height: int, profile: str, params: str, profile_idc: int
) -> None:
    extradata = x264_extradata(width, height, profile, params)
    sps = h264_header_sps(extradata)
    assert h264_sps_dimensions(sps) == (width, height)
    codecs = avc1_codec_string(extradata)
    assert codecs.startswith(f"avc1.{profile_idc:02x}")
    assert codecs == f"avc1.{sps[1]:02x}{sps[2]:02x}{sps[3]:02x}"


def test_avcc_record_gives_the_same_answer_as_annexb() -> None:
    extradata = x264_extradata(1280, 720, "high")
    sps, pps = list(annexb_nal_units(extradata))[:2]
    avcc = (
        bytes([1, sps[1], sps[2], sps[3], 0xFF, 0xE1])
        + len(sps).to_bytes(2, "big")
        + sps
        + b"\x01"
        + len(pps).to_bytes(2, "big")
        + pps
    )
    assert avc1_codec_string(avcc) == avc1_codec_string(extradata) == "avc1.64001f"
    assert h264_header_sps(avcc) == sps


def test_nal_unit_framings() -> None:
    annexb = b"\x00\x00\x00\x01\x67\x01\x02\x00\x00\x01\x68\x03\x00\x00\x00\x01\x65\x04"
    assert list(annexb_nal_units(annexb)) == [b"\x67\x01\x02", b"\x68\x03", b"\x65\x04"]
    avcc = b"\x00\x00\x00\x02\x09\xf0\x00\x00\x00\x01\x65"
    assert list(avcc_nal_units(avcc)) == [b"\x09\xf0", b"\x65"]
    with pytest.raises(CodecStringError):
        list(avcc_nal_units(b"\x00\x00\x00\x09\x65"))


def test_no_sps_is_an_error() -> None:
    with pytest.raises(CodecStringError):
        avc1_codec_string(b"\x00\x00\x00\x01\x68\xee")
    with pytest.raises(CodecStringError):
        avc1_codec_string(b"")


def test_aac_codec_strings() -> None:
    assert aac_object_type(bytes([0x12, 0x10])) == 2  # AAC-LC 44.1 kHz stereo
    assert aac_object_type(bytes([0x2B, 0x92, 0x08, 0x00])) == 5  # HE-AAC (SBR)
    assert aac_object_type(bytes([0xF8, 0xE0])) == 39  # escape: 32 + 7
    assert mp4a_codec_string("aac", bytes([0x11, 0x90])) == "mp4a.40.2"
    assert mp4a_codec_string("aac", None) == "mp4a.40.2"
    assert mp4a_codec_string("mp3", None) == "mp4a.40.34"
    assert mp4a_codec_string("opus", None) is None
    assert codecs_attribute("avc1.64001f", "mp4a.40.2") == "avc1.64001f,mp4a.40.2"
    assert codecs_attribute("avc1.64001f", None) == "avc1.64001f"


def test_real_aac_encoder_config() -> None:
    context = av.CodecContext.create("aac", "w")
    context.sample_rate = 48000
    context.layout = "stereo"
    context.format = "fltp"
    context.bit_rate = 128000
    context.open()
    assert mp4a_codec_string("aac", context.extradata) == "mp4a.40.2"
