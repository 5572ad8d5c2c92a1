"""Protocol control messages and command helpers, byte for byte."""

from __future__ import annotations

import pytest

from ingest.formats import amf0
from ingest.rtmp import messages
from ingest.rtmp.errors import AmfMessageError, ProtocolError
from ingest.rtmp.messages import Message


def test_protocol_control_messages() -> None:
    assert messages.set_chunk_size(4096) == Message(1, 0, 0, b"\x00\x00\x10\x00")
    assert messages.abort(4) == Message(2, 0, 0, b"\x00\x00\x00\x04")
    assert messages.acknowledgement(2**32 + 5) == Message(3, 0, 0, b"\x00\x00\x00\x05")
    assert messages.window_ack_size(2_500_000) == Message(5, 0, 0, b"\x00\x26\x25\xa0")
    assert messages.set_peer_bandwidth(2_500_000) == Message(6, 0, 0, b"\x00\x26\x25\xa0\x02")
    assert messages.stream_begin(1) == Message(4, 0, 0, b"\x00\x00\x00\x00\x00\x01")
    with pytest.raises(ValueError, match="out of range"):
        messages.set_chunk_size(0)


@pytest.mark.parametrize(
    ("payload", "size"), [(b"\x00\x00\x00\x01", 1), (b"\x01\x00\x00\x00", 1 << 24)]
)
def test_parse_chunk_size_bounds(payload: bytes, size: int) -> None:
    assert messages.parse_chunk_size(payload) == size


@pytest.mark.parametrize(
    "payload", [b"\x00\x00\x00\x00", b"\x80\x00\x00\x00", b"\x01\x00\x00\x01", b"\x00\x10"]
)
def test_parse_chunk_size_rejects(payload: bytes) -> None:
    with pytest.raises(ProtocolError):
        messages.parse_chunk_size(payload)


def test_user_control_parsing() -> None:
    assert messages.parse_user_control(b"\x00\x06\x00\x00\x01\x00") == (6, 256)
    assert messages.parse_user_control(b"\x00\x03\x00") == (3, None)
    with pytest.raises(ProtocolError):
        messages.parse_user_control(b"\x00")


def test_connect_result() -> None:
    message = messages.connect_result(1)
    assert (message.type_id, message.stream_id) == (20, 0)
    name, txn, properties, info = amf0.decode_all(message.payload)
    assert (name, txn) == ("_result", 1.0)
    assert properties["fmsVer"].startswith("FMS/")
    assert info["code"] == "NetConnection.Connect.Success"
    assert info["level"] == "status"


def test_on_status_and_results() -> None:
    message = messages.on_status(1, "error", "NetStream.Publish.BadName", "nope")
    assert message.stream_id == 1
    assert message.payload == amf0.encode(
        "onStatus",
        0.0,
        None,
        {"level": "error", "code": "NetStream.Publish.BadName", "description": "nope"},
    )
    assert amf0.decode_all(messages.result(4, None, 1.0).payload) == ["_result", 4.0, None, 1.0]
    error = amf0.decode_all(messages.error_result(7, "no", "NetConnection.Call.Failed").payload)
    assert error[:3] == ["_error", 7.0, None]
    assert error[3]["code"] == "NetConnection.Call.Failed"


def test_parse_command_amf0_and_amf3() -> None:
    payload = amf0.encode("publish", 5.0, None, "key", "live")
    command = messages.parse_command(Message(20, 1, 0, payload))
    assert command == messages.Command("publish", 5.0, None, ["key", "live"], 1)
    assert messages.parse_command(Message(17, 1, 0, b"\x00" + payload)) == command


@pytest.mark.parametrize(
    "payload", [b"", amf0.encode(1.0, 2.0), amf0.encode("connect"), amf0.encode("x", "y")]
)
def test_parse_command_rejects_non_commands(payload: bytes) -> None:
    with pytest.raises(AmfMessageError, match="command message"):
        messages.parse_command(Message(20, 0, 0, payload))


def test_parse_data_set_data_frame() -> None:
    payload = amf0.encode("@setDataFrame", "onMetaData", amf0.EcmaArray(width=640.0))
    assert messages.parse_data(Message(18, 1, 0, payload)) == [
        "@setDataFrame",
        "onMetaData",
        {"width": 640.0},
    ]


@pytest.mark.parametrize("type_id", [20, 18])
def test_undecodable_amf_is_a_protocol_error_of_the_connection(type_id: int) -> None:
    """The AMF0 codec raises its own error; as an RTMP message it ends the connection."""
    parse = messages.parse_command if type_id == 20 else messages.parse_data
    with pytest.raises(AmfMessageError, match="truncated") as raised:
        parse(Message(type_id, 0, 0, b"\x02\x00\x05ab"))
    assert isinstance(raised.value, ProtocolError)
    assert isinstance(raised.value.__cause__, amf0.AmfError)
