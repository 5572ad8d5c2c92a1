"""AMF0 encoding and decoding: the value format of RTMP commands and FLV metadata.

Python mapping: number <-> float (int and bool are accepted when encoding: bool as
boolean), boolean <-> bool, string / long string <-> str, object <-> dict,
ECMA array <-> EcmaArray (a dict), strict array <-> list (tuple encodes too),
null <-> None, undefined <-> UNDEFINED, date <-> AmfDate.

Decoding is defensive: truncated data, unknown markers, nesting deeper than
`max_depth` and counts larger than the data raise AmfError, never anything else.
Invalid UTF-8 in strings is replaced rather than rejected (encoders in the wild
write Latin-1 into metadata).
"""

from __future__ import annotations

import enum
import math
import struct
from dataclasses import dataclass
from typing import Any, TypeGuard

NUMBER = 0x00
BOOLEAN = 0x01
STRING = 0x02
OBJECT = 0x03
NULL = 0x05
UNDEFINED_MARKER = 0x06
ECMA_ARRAY = 0x08
OBJECT_END = 0x09
STRICT_ARRAY = 0x0A
DATE = 0x0B
LONG_STRING = 0x0C

DEFAULT_MAX_DEPTH = 32


class AmfError(ValueError):
    """AMF0 data that cannot be decoded (truncated, unknown marker, too deep, ...)."""


_DOUBLE = struct.Struct(">d")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_DATE = struct.Struct(">dh")


class Undefined(enum.Enum):
    """AMF0 `undefined` (distinct from `null`, which is None)."""

    UNDEFINED = "undefined"

    def __repr__(self) -> str:
        return "UNDEFINED"


UNDEFINED = Undefined.UNDEFINED


class EcmaArray(dict[str, Any]):
    """An AMF0 ECMA array: an associative array, as onMetaData carries."""


@dataclass(frozen=True)
class AmfDate:
    """An AMF0 date: milliseconds since the Unix epoch (UTC) and a timezone (unused)."""

    milliseconds: float
    timezone_minutes: int = 0

    def __eq__(self, other: object) -> bool:  # NaN dates compare by bits, as in the wire
        if not isinstance(other, AmfDate):
            return NotImplemented
        return (
            _DOUBLE.pack(self.milliseconds) == _DOUBLE.pack(other.milliseconds)
            and self.timezone_minutes == other.timezone_minutes
        )

    def __hash__(self) -> int:
        return hash((_DOUBLE.pack(self.milliseconds), self.timezone_minutes))


# Encoding


def encode(*values: Any, max_depth: int = DEFAULT_MAX_DEPTH) -> bytes:
    """Concatenated AMF0 encodings of `values`."""
    out = bytearray()
    for value in values:
        _encode_value(out, value, max_depth)
    return bytes(out)


def _encode_str_body(out: bytearray, text: str) -> None:
    data = text.encode("utf-8")
    if len(data) <= 0xFFFF:
        out.append(STRING)
        out += _U16.pack(len(data))
    else:
        out.append(LONG_STRING)
        out += _U32.pack(len(data))
    out += data


def _encode_key(out: bytearray, key: str) -> None:
    if not isinstance(key, str):
        raise TypeError(f"AMF0 object keys must be str, not {type(key).__name__}")
    data = key.encode("utf-8")
    if len(data) > 0xFFFF:
        raise ValueError("AMF0 object key longer than 65535 bytes")
    out += _U16.pack(len(data))
    out += data


def _encode_value(out: bytearray, value: Any, depth: int) -> None:
    if depth <= 0:
        raise ValueError("AMF0 value nested too deeply")
    if value is None:
        out.append(NULL)
    elif value is UNDEFINED:
        out.append(UNDEFINED_MARKER)
    elif isinstance(value, bool):
        out.append(BOOLEAN)
        out.append(1 if value else 0)
    elif isinstance(value, int | float):
        out.append(NUMBER)
        out += _DOUBLE.pack(float(value))
    elif isinstance(value, str):
        _encode_str_body(out, value)
    elif isinstance(value, AmfDate):
        out.append(DATE)
        out += _DATE.pack(value.milliseconds, value.timezone_minutes)
    elif isinstance(value, dict):
        if isinstance(value, EcmaArray):
            out.append(ECMA_ARRAY)
            out += _U32.pack(len(value))
        else:
            out.append(OBJECT)
        for key, item in value.items():
            _encode_key(out, key)
            _encode_value(out, item, depth - 1)
        out += b"\x00\x00"
        out.append(OBJECT_END)
    elif isinstance(value, list | tuple):
        out.append(STRICT_ARRAY)
        out += _U32.pack(len(value))
        for item in value:
            _encode_value(out, item, depth - 1)
    else:
        raise TypeError(f"cannot encode {type(value).__name__} as AMF0")


# Decoding


def decode_all(data: bytes, *, max_depth: int = DEFAULT_MAX_DEPTH) -> list[Any]:
    """Every AMF0 value in `data`, in order; raises AmfError on any malformed byte."""
    reader = _Reader(data, max_depth)
    values = []
    while reader.pos < len(reader.data):
        values.append(reader.value(0))
    return values


def decode_value(
    data: bytes, offset: int = 0, *, max_depth: int = DEFAULT_MAX_DEPTH
) -> tuple[Any, int]:
    """One AMF0 value at `offset`: (value, offset after it)."""
    reader = _Reader(data, max_depth)
    reader.pos = offset
    value = reader.value(0)
    return value, reader.pos


class _Reader:
    def __init__(self, data: bytes, max_depth: int) -> None:
        self.data = bytes(data)
        self.pos = 0
        self.max_depth = max_depth

    def take(self, size: int) -> bytes:
        end = self.pos + size
        if end > len(self.data):
            raise AmfError(
                f"truncated AMF0 data: need {size} bytes at offset {self.pos}, "
                f"have {len(self.data) - self.pos}"
            )
        chunk = bytes(self.data[self.pos : end])
        self.pos = end
        return chunk

    def text(self, size: int) -> str:
        return self.take(size).decode("utf-8", errors="replace")

    def value(self, depth: int) -> Any:
        if depth >= self.max_depth:
            raise AmfError(f"AMF0 data nested deeper than {self.max_depth}")
        marker = self.take(1)[0]
        if marker == NUMBER:
            return _DOUBLE.unpack(self.take(8))[0]
        if marker == BOOLEAN:
            return self.take(1)[0] != 0
        if marker == STRING:
            return self.text(_U16.unpack(self.take(2))[0])
        if marker == LONG_STRING:
            return self.text(_U32.unpack(self.take(4))[0])
        if marker == OBJECT:
            return self.properties({}, depth)
        if marker == ECMA_ARRAY:
            self.take(4)  # the count is only a hint; the end marker ends the array
            return self.properties(EcmaArray(), depth)
        if marker == STRICT_ARRAY:
            count = _U32.unpack(self.take(4))[0]
            if count > len(self.data) - self.pos:  # every value takes at least one byte
                raise AmfError(f"AMF0 strict array count {count} exceeds the data")
            return [self.value(depth + 1) for _ in range(count)]
        if marker == NULL:
            return None
        if marker == UNDEFINED_MARKER:
            return UNDEFINED
        if marker == DATE:
            milliseconds, timezone = _DATE.unpack(self.take(10))
            return AmfDate(milliseconds, timezone)
        if marker == OBJECT_END:
            raise AmfError(f"unexpected AMF0 object end at offset {self.pos - 1}")
        raise AmfError(f"unsupported AMF0 marker 0x{marker:02x} at offset {self.pos - 1}")

    def properties(self, target: dict[str, Any], depth: int) -> dict[str, Any]:
        while True:
            key = self.text(_U16.unpack(self.take(2))[0])
            if not key and self.pos < len(self.data) and self.data[self.pos] == OBJECT_END:
                self.pos += 1
                return target
            target[key] = self.value(depth + 1)


def is_number(value: Any) -> TypeGuard[float | int]:
    """True for a finite AMF0 number (bools excluded)."""
    return isinstance(value, float | int) and not isinstance(value, bool) and math.isfinite(value)
