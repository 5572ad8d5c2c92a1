"""RTMP messages: type constants, protocol control messages and command helpers.

Pure functions over bytes. A `Message` is what the chunk layer reassembles or
splits; builders here return Messages for `ChunkWriter.write()`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

from ingest.formats import amf0
from ingest.rtmp.errors import AmfMessageError, ProtocolError

# Message type ids
SET_CHUNK_SIZE = 1
ABORT = 2
ACKNOWLEDGEMENT = 3
USER_CONTROL = 4
WINDOW_ACK_SIZE = 5
SET_PEER_BANDWIDTH = 6
AUDIO = 8
VIDEO = 9
DATA_AMF3 = 15
SHARED_OBJECT_AMF3 = 16
COMMAND_AMF3 = 17
DATA_AMF0 = 18
SHARED_OBJECT_AMF0 = 19
COMMAND_AMF0 = 20
AGGREGATE = 22

# User control event types
STREAM_BEGIN = 0
STREAM_EOF = 1
STREAM_DRY = 2
SET_BUFFER_LENGTH = 3
STREAM_IS_RECORDED = 4
PING_REQUEST = 6
PING_RESPONSE = 7

# Set Peer Bandwidth limit types
LIMIT_HARD = 0
LIMIT_SOFT = 1
LIMIT_DYNAMIC = 2

DEFAULT_CHUNK_SIZE = 128
MAX_CHUNK_SIZE = 1 << 24  # larger values are refused (no message can be longer anyway)

# Chunk stream ids the server writes on
CONTROL_CHUNK_STREAM = 2  # protocol control and user control messages
COMMAND_CHUNK_STREAM = 3  # NetConnection command responses
STATUS_CHUNK_STREAM = 5  # NetStream onStatus

_U32 = struct.Struct(">I")


@dataclass(frozen=True, slots=True)
class Message:
    """One RTMP message: a type, a message stream id, a 32-bit ms timestamp, a payload."""

    type_id: int
    stream_id: int
    timestamp: int
    payload: bytes = field(repr=False)


def _control(type_id: int, payload: bytes) -> Message:
    return Message(type_id, 0, 0, payload)


def set_chunk_size(size: int) -> Message:
    if not 1 <= size <= MAX_CHUNK_SIZE:
        raise ValueError(f"chunk size {size} out of range 1..{MAX_CHUNK_SIZE}")
    return _control(SET_CHUNK_SIZE, _U32.pack(size))


def abort(chunk_stream_id: int) -> Message:
    return _control(ABORT, _U32.pack(chunk_stream_id))


def acknowledgement(sequence_number: int) -> Message:
    return _control(ACKNOWLEDGEMENT, _U32.pack(sequence_number & 0xFFFFFFFF))


def window_ack_size(size: int) -> Message:
    return _control(WINDOW_ACK_SIZE, _U32.pack(size))


def set_peer_bandwidth(size: int, limit_type: int = LIMIT_DYNAMIC) -> Message:
    return _control(SET_PEER_BANDWIDTH, _U32.pack(size) + bytes([limit_type]))


def user_control(event: int, *values: int) -> Message:
    payload = struct.pack(">H", event) + b"".join(_U32.pack(v & 0xFFFFFFFF) for v in values)
    return _control(USER_CONTROL, payload)


def stream_begin(stream_id: int) -> Message:
    return user_control(STREAM_BEGIN, stream_id)


def parse_u32(payload: bytes, what: str) -> int:
    """The leading big-endian u32 of a control message."""
    if len(payload) < 4:
        raise ProtocolError(f"{what} message too short ({len(payload)} bytes)")
    return int(_U32.unpack_from(payload)[0])


def parse_chunk_size(payload: bytes) -> int:
    """A Set Chunk Size payload's size, validated: 1..2^24, else ProtocolError."""
    size = parse_u32(payload, "set chunk size")
    if not 1 <= size <= MAX_CHUNK_SIZE:
        raise ProtocolError(f"chunk size {size} out of range 1..{MAX_CHUNK_SIZE}")
    return size


def parse_user_control(payload: bytes) -> tuple[int, int | None]:
    """(event type, first u32 value or None) of a User Control message."""
    if len(payload) < 2:
        raise ProtocolError(f"user control message too short ({len(payload)} bytes)")
    event = int(struct.unpack_from(">H", payload)[0])
    value = int(_U32.unpack_from(payload, 2)[0]) if len(payload) >= 6 else None
    return event, value


# Commands


@dataclass(frozen=True)
class Command:
    """A decoded command message: name, transaction id, command object, arguments."""

    name: str
    transaction_id: float
    command_object: Any
    args: list[Any]
    stream_id: int = 0


def amf0_body(message: Message) -> bytes:
    """The AMF0 bytes of a command or data message (AMF3 variants start with a 0 byte)."""
    payload = message.payload
    if message.type_id in (COMMAND_AMF3, DATA_AMF3) and payload[:1] == b"\x00":
        return payload[1:]
    return payload


def parse_command(message: Message) -> Command:
    """Decode a command message; AmfMessageError if it is not `name, txn, object, ...`."""
    values = _decode(message)
    if len(values) < 2 or not isinstance(values[0], str) or not amf0.is_number(values[1]):
        raise AmfMessageError("command message does not start with a name and a transaction id")
    command_object = values[2] if len(values) > 2 else None
    return Command(values[0], float(values[1]), command_object, values[3:], message.stream_id)


def parse_data(message: Message) -> list[Any]:
    """Decode a data message (e.g. `@setDataFrame`, `onMetaData`, {...});
    AmfMessageError if its AMF0 does not decode."""
    return _decode(message)


def _decode(message: Message) -> list[Any]:
    try:
        return amf0.decode_all(amf0_body(message))
    except amf0.AmfError as exc:
        raise AmfMessageError(str(exc)) from exc


def command(
    name: str, transaction_id: float, command_object: Any, *args: Any, stream_id: int = 0
) -> Message:
    payload = amf0.encode(name, float(transaction_id), command_object, *args)
    return Message(COMMAND_AMF0, stream_id, 0, payload)


def result(transaction_id: float, properties: Any, *info: Any, stream_id: int = 0) -> Message:
    """A `_result` answer to the command with `transaction_id`."""
    return command("_result", transaction_id, properties, *info, stream_id=stream_id)


def error_result(transaction_id: float, description: str, code: str) -> Message:
    """An `_error` answer to the command with `transaction_id`."""
    info = {"level": "error", "code": code, "description": description}
    return command("_error", transaction_id, None, info)


def connect_result(transaction_id: float) -> Message:
    """The `_result` of a successful `connect`."""
    properties = {"fmsVer": "FMS/3,0,1,123", "capabilities": 31.0}
    info = {
        "level": "status",
        "code": "NetConnection.Connect.Success",
        "description": "Connection succeeded.",
        "objectEncoding": 0.0,
    }
    return result(transaction_id, properties, info)


def on_status(stream_id: int, level: str, code: str, description: str) -> Message:
    """A NetStream `onStatus` (transaction id 0) on message stream `stream_id`."""
    info = {"level": level, "code": code, "description": description}
    return command("onStatus", 0, None, info, stream_id=stream_id)
