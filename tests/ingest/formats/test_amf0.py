"""AMF0 encode/decode, byte for byte, and its errors."""

from __future__ import annotations

import struct

import pytest

from ingest.formats import amf0
from ingest.formats.amf0 import UNDEFINED, AmfDate, AmfError, EcmaArray

ONE = b"\x00\x3f\xf0\x00\x00\x00\x00\x00\x00"
TWO = b"\x00\x40\x00\x00\x00\x00\x00\x00\x00"

CASES = [
    (1.0, ONE),
    (True, b"\x01\x01"),
    (False, b"\x01\x00"),
    ("abc", b"\x02\x00\x03abc"),
    ("é", b"\x02\x00\x02\xc3\xa9"),
    (None, b"\x05"),
    (UNDEFINED, b"\x06"),
    ({"a": 1.0}, b"\x03\x00\x01a" + ONE + b"\x00\x00\x09"),
    ({}, b"\x03\x00\x00\x09"),
    (EcmaArray(w=2.0), b"\x08\x00\x00\x00\x01\x00\x01w" + TWO + b"\x00\x00\x09"),
    ([1.0, "x"], b"\x0a\x00\x00\x00\x02" + ONE + b"\x02\x00\x01x"),
    (AmfDate(1.5e12, 60), b"\x0b" + struct.pack(">d", 1.5e12) + b"\x00\x3c"),
    ({"o": {"n": None}}, b"\x03\x00\x01o\x03\x00\x01n\x05\x00\x00\x09\x00\x00\x09"),
]


@pytest.mark.parametrize(("value", "encoded"), CASES)
def test_encode_and_decode_byte_for_byte(value: object, encoded: bytes) -> None:
    assert amf0.encode(value) == encoded
    decoded = amf0.decode_all(encoded)
    assert decoded == [value]
    assert type(decoded[0]) is type(value)


def test_long_string() -> None:
    text = "a" * 70000
    encoded = amf0.encode(text)
    assert encoded[:5] == b"\x0c" + (70000).to_bytes(4, "big")
    assert amf0.decode_all(encoded) == [text]
    assert amf0.decode_all(b"\x0c\x00\x00\x00\x02hi") == ["hi"]


def test_integers_encode_as_numbers_and_tuples_as_strict_arrays() -> None:
    assert amf0.encode(1) == ONE
    assert amf0.encode((1, 2)) == amf0.encode([1.0, 2.0])


def test_a_connect_command_as_ffmpeg_writes_it() -> None:
    obj = {"app": "live", "type": "nonprivate", "tcUrl": "rtmp://h/live", "flashVer": "FMLE/3.0"}
    data = amf0.encode("connect", 1.0, obj)
    name, offset = amf0.decode_value(data)
    assert (name, offset) == ("connect", 10)
    assert amf0.decode_all(data) == ["connect", 1.0, obj]


def test_ecma_array_count_is_only_a_hint() -> None:
    data = b"\x08\x00\x00\x00\x07\x00\x01w" + TWO + b"\x00\x00\x09"
    assert amf0.decode_all(data) == [{"w": 2.0}]


def test_invalid_utf8_is_replaced() -> None:
    assert amf0.decode_all(b"\x02\x00\x02\xff\xfe") == ["\ufffd\ufffd"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x00\x3f", "truncated"),
        (b"\x02\x00\x05ab", "truncated"),
        (b"\x03\x00\x01a" + ONE, "truncated"),  # object without its end marker
        (b"\x11\x01", "unsupported AMF0 marker 0x11"),
        (b"\x07\x00\x01", "unsupported AMF0 marker 0x07"),
        (b"\x09", "unexpected AMF0 object end"),
        (b"\x0a\xff\xff\xff\xff", "count 4294967295 exceeds"),
        (b"\x0c\xff\xff\xff\xff", "truncated"),
        (b"\x01", "truncated"),
    ],
)
def test_bad_data_raises_amf_error(data: bytes, message: str) -> None:
    with pytest.raises(AmfError, match=message):
        amf0.decode_all(data)
    assert issubclass(AmfError, ValueError)  # a format error: no protocol in it


def test_depth_limit() -> None:
    def nested(depth: int) -> bytes:
        return b"\x0a\x00\x00\x00\x01" * depth + b"\x05"

    amf0.decode_all(nested(amf0.DEFAULT_MAX_DEPTH - 1))
    with pytest.raises(AmfError, match="nested deeper than 32"):
        amf0.decode_all(nested(amf0.DEFAULT_MAX_DEPTH))
    with pytest.raises(AmfError, match="nested deeper than 3"):
        amf0.decode_all(nested(3), max_depth=3)
    objects = b"\x03\x00\x01k" * 40 + b"\x05" + b"\x00\x00\x09" * 40
    with pytest.raises(AmfError, match="nested deeper"):
        amf0.decode_all(objects)
    with pytest.raises(ValueError, match="nested too deeply"):
        amf0.encode([[[1]]], max_depth=2)


def test_encoding_unsupported_values() -> None:
    with pytest.raises(TypeError, match="cannot encode set"):
        amf0.encode({1, 2})
    with pytest.raises(TypeError, match="keys must be str"):
        amf0.encode({1: 2})
