"""The chunk stream demuxer and muxer, byte for byte (headers written by hand here)."""

from __future__ import annotations

import struct

import pytest

from ingest.rtmp import messages
from ingest.rtmp.chunk import ChunkReader, ChunkWriter, basic_header, split_aggregate
from ingest.rtmp.errors import ProtocolError
from ingest.rtmp.messages import Message


def u24(value: int) -> bytes:
    return value.to_bytes(3, "big")


def type0(csid: int, ts: int, length: int, type_id: int, stream_id: int) -> bytes:
    ext = ts >= 0xFFFFFF
    header = bytes([csid]) + u24(0xFFFFFF if ext else ts) + u24(length) + bytes([type_id])
    header += struct.pack("<I", stream_id)
    return header + (struct.pack(">I", ts) if ext else b"")


def read_all(reader: ChunkReader, data: bytes, *, bytewise: bool = False) -> list[Message]:
    out: list[Message] = []
    pieces = [data[i : i + 1] for i in range(len(data))] if bytewise else [data]
    for piece in pieces:
        reader.feed(piece)
        while (message := reader.next_message()) is not None:
            out.append(message)
    return out


@pytest.mark.parametrize("bytewise", [False, True])
def test_type0_single_chunk(bytewise: bool) -> None:
    data = b"\x03\x00\x03\xe8\x00\x00\x05\x14\x00\x00\x00\x00hello"
    assert read_all(ChunkReader(), data, bytewise=bytewise) == [Message(20, 0, 1000, b"hello")]


@pytest.mark.parametrize("bytewise", [False, True])
def test_message_split_into_chunks_of_128(bytewise: bool) -> None:
    payload = bytes(range(256)) + bytes(44)
    data = type0(4, 10, 300, 9, 1) + payload[:128] + b"\xc4" + payload[128:256]
    data += b"\xc4" + payload[256:]
    assert read_all(ChunkReader(), data, bytewise=bytewise) == [Message(9, 1, 10, payload)]


def test_spec_example_type2_then_type3_new_messages_add_the_delta() -> None:
    body = bytes(32)
    data = type0(4, 1000, 32, 8, 1) + body  # absolute 1000
    data += b"\x84" + u24(20) + body  # type 2: delta 20
    data += b"\xc4" + body  # type 3 starting a new message: delta 20 again
    data += b"\xc4" + body
    timestamps = [m.timestamp for m in read_all(ChunkReader(), data)]
    assert timestamps == [1000, 1020, 1040, 1060]


def test_type3_new_message_after_type0_adds_the_type0_value_as_ffmpeg_writes() -> None:
    data = type0(6, 33, 2, 8, 1) + b"ab" + b"\xc6" + b"cd" + b"\xc6" + b"ef"
    assert [m.timestamp for m in read_all(ChunkReader(), data)] == [33, 66, 99]


def test_type1_changes_length_and_type() -> None:
    data = type0(5, 100, 3, 8, 1) + b"abc" + b"\x45" + u24(40) + u24(2) + b"\x09" + b"xy"
    assert read_all(ChunkReader(), data) == [Message(8, 1, 100, b"abc"), Message(9, 1, 140, b"xy")]


@pytest.mark.parametrize("bytewise", [False, True])
def test_extended_timestamp_repeated_on_continuation_chunks(bytewise: bool) -> None:
    ts = 17_000_000
    ext = struct.pack(">I", ts)
    payload = bytes(range(200))
    data = type0(6, ts, 200, 9, 1) + payload[:128] + b"\xc6" + ext + payload[128:]
    # then a type 2 delta (no extension): continuation chunks carry no extension either
    data += b"\x86" + u24(33) + payload[:128] + b"\xc6" + payload[128:]
    got = read_all(ChunkReader(), data, bytewise=bytewise)
    assert got == [Message(9, 1, ts, payload), Message(9, 1, ts + 33, payload)]


def test_extended_timestamp_omitted_on_continuation_chunks_is_tolerated() -> None:
    ts = 17_000_000
    payload = bytes(range(200))
    data = type0(6, ts, 200, 9, 1) + payload[:128] + b"\xc6" + payload[128:]
    assert read_all(ChunkReader(), data) == [Message(9, 1, ts, payload)]


def test_extended_delta_and_type3_new_message_with_extension() -> None:
    delta = 0x1000000
    ext = struct.pack(">I", delta)
    data = type0(7, 5, 1, 8, 1) + b"a"
    data += b"\x87" + b"\xff\xff\xff" + ext + b"b"  # type 2, extended delta
    data += b"\xc7" + ext + b"c"  # type 3 new message: extension repeated, delta again
    got = [(m.timestamp, m.payload) for m in read_all(ChunkReader(), data)]
    assert got == [(5, b"a"), (5 + delta, b"b"), (5 + 2 * delta, b"c")]


def test_timestamps_wrap_at_32_bits() -> None:
    data = type0(4, 0xFFFFFFF0, 1, 8, 1) + b"a" + b"\x84" + u24(0x20) + b"b"
    assert [m.timestamp for m in read_all(ChunkReader(), data)] == [0xFFFFFFF0, 0x10]


@pytest.mark.parametrize(
    ("basic", "csid"),
    [(b"\x00\x00", 64), (b"\x00\xff", 319), (b"\x01\x00\x01", 320), (b"\x01\xff\xff", 65599)],
)
def test_two_and_three_byte_basic_headers(basic: bytes, csid: int) -> None:
    assert basic_header(0, csid) == basic
    data = basic + u24(1) + u24(2) + b"\x08" + struct.pack("<I", 1) + b"hi"
    assert read_all(ChunkReader(), data) == [Message(8, 1, 1, b"hi")]


def test_set_chunk_size_applies_to_the_next_chunk() -> None:
    payload = bytes(range(256)) * 2
    data = type0(2, 0, 4, 1, 0) + b"\x00\x00\x02\x00"  # set chunk size 512
    data += type0(4, 0, 512, 9, 1) + payload
    reader = ChunkReader()
    got = read_all(reader, data)
    assert got[1] == Message(9, 1, 0, payload)
    assert reader.chunk_size == 512


@pytest.mark.parametrize(
    ("size", "ok"),
    [(0, False), (1, True), (1 << 24, True), ((1 << 24) + 1, False), (1 << 31, False)],
)
def test_chunk_size_limits(size: int, ok: bool) -> None:
    data = type0(2, 0, 4, 1, 0) + struct.pack(">I", size)
    reader = ChunkReader()
    if ok:
        read_all(reader, data)
        assert reader.chunk_size == size
    else:
        with pytest.raises(ProtocolError, match=f"chunk size {size} out of range"):
            read_all(reader, data)


def test_abort_drops_the_partial_message() -> None:
    reader = ChunkReader()
    data = type0(4, 0, 300, 9, 1) + bytes(128)
    data += type0(2, 0, 4, 2, 0) + b"\x00\x00\x00\x04"  # abort chunk stream 4
    data += type0(4, 50, 2, 9, 1) + b"ok"
    got = read_all(reader, data)
    assert [m.type_id for m in got] == [2, 9]
    assert got[1] == Message(9, 1, 50, b"ok")
    assert reader.buffered_bytes == 0


def test_acknowledgement_at_window_size() -> None:
    reader = ChunkReader()
    window = type0(2, 0, 4, 5, 0) + struct.pack(">I", 1000)  # peer's Window Ack Size
    read_all(reader, window)
    assert reader.window_ack_size == 1000
    assert reader.take_acknowledgement() is None
    read_all(reader, type0(4, 0, 1100, 8, 1) + bytes(128))
    assert reader.take_acknowledgement() is None  # 28 + 12 + 128 bytes so far
    rest = bytes(972)  # rest of the message's bytes, in type 3 chunks
    chunks = b"".join(b"\xc4" + rest[i : i + 128] for i in range(0, len(rest), 128))
    read_all(reader, chunks)
    assert reader.bytes_received > 1000
    assert reader.take_acknowledgement() == reader.bytes_received
    assert reader.take_acknowledgement() is None


def aggregate_payload(units: list[tuple[int, int, bytes]]) -> bytes:
    out = b""
    for type_id, ts, body in units:
        header = bytes([type_id]) + u24(len(body)) + u24(ts & 0xFFFFFF) + bytes([ts >> 24])
        out += header + b"\x00\x00\x00" + body + struct.pack(">I", 11 + len(body))
    return out


def test_aggregate_is_split_into_sub_messages() -> None:
    payload = aggregate_payload([(8, 100, b"audio"), (9, 133, b"video!"), (8, 123, b"a2")])
    data = type0(4, 5000, len(payload), 22, 1) + payload
    assert read_all(ChunkReader(), data) == [
        Message(8, 1, 5000, b"audio"),
        Message(9, 1, 5033, b"video!"),
        Message(8, 1, 5023, b"a2"),
    ]


@pytest.mark.parametrize("cut", [5, 11, 11 + 1 + 2])  # into the 2nd unit's header/body/pointer
def test_truncated_aggregate_is_a_protocol_error(cut: int) -> None:
    payload = aggregate_payload([(8, 0, b"audio"), (9, 0, b"v")])[: 11 + 5 + 4 + cut]
    with pytest.raises(ProtocolError, match="aggregate"):
        split_aggregate(Message(22, 1, 0, payload))


def test_message_length_over_the_limit_fails_at_the_header() -> None:
    reader = ChunkReader(max_message_bytes=1000)
    with pytest.raises(ProtocolError, match="message length 1001 exceeds the limit of 1000"):
        read_all(reader, type0(4, 0, 1001, 9, 1))


def test_partial_messages_are_bounded_in_total() -> None:
    reader = ChunkReader(max_message_bytes=1000)
    data = type0(4, 0, 600, 9, 1) + bytes(128) + (b"\xc4" + bytes(128)) * 3
    data += type0(5, 0, 600, 8, 1) + bytes(128) + (b"\xc5" + bytes(128)) * 3
    with pytest.raises(ProtocolError, match="partial messages exceed"):
        read_all(reader, data)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x44" + bytes(7), "chunk stream 4 starts with a type 1 header"),
        (b"\xc4", "chunk stream 4 starts with a type 3 header"),
        (type0(4, 0, 300, 9, 1) + bytes(128) + b"\x84" + bytes(3), "while a message is incomplete"),
    ],
)
def test_header_protocol_errors(data: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        read_all(ChunkReader(), data)


def test_chunk_stream_count_is_limited() -> None:
    reader = ChunkReader(max_chunk_streams=3)
    data = b"".join(type0(csid, 0, 1, 8, 1) + b"x" for csid in (3, 4, 5, 6))
    with pytest.raises(ProtocolError, match="more than 3 chunk streams"):
        read_all(reader, data)


def test_zero_length_message() -> None:
    data = type0(4, 7, 0, 8, 1) + type0(4, 8, 1, 8, 1) + b"z"
    assert read_all(ChunkReader(), data) == [Message(8, 1, 7, b""), Message(8, 1, 8, b"z")]


# Muxer


def test_writer_header_compression_byte_for_byte() -> None:
    writer = ChunkWriter()
    m = [Message(8, 1, ts, b"abcd") for ts in (1000, 1020, 1040, 1070)]
    assert writer.write(4, m[0]) == type0(4, 1000, 4, 8, 1) + b"abcd"
    assert writer.write(4, m[1]) == b"\x84" + u24(20) + b"abcd"  # type 2
    assert writer.write(4, m[2]) == b"\xc4abcd"  # type 3: same delta
    assert writer.write(4, m[3]) == b"\x84" + u24(30) + b"abcd"
    assert writer.write(4, Message(9, 1, 1080, b"xy")) == b"\x44" + u24(10) + u24(2) + b"\x09xy"
    assert writer.write(4, Message(9, 1, 500, b"xy")) == type0(4, 500, 2, 9, 1) + b"xy"
    assert writer.write(4, Message(9, 2, 600, b"xy")) == type0(4, 600, 2, 9, 2) + b"xy"


def test_writer_compresses_only_against_the_same_chunk_stream() -> None:
    writer = ChunkWriter()
    writer.write(3, Message(20, 0, 0, b"abc"))
    # Same everything on another chunk stream: still a full type 0 header.
    assert writer.write(5, Message(20, 0, 0, b"abc")) == type0(5, 0, 3, 20, 0) + b"abc"
    assert writer.write(3, Message(20, 0, 0, b"abc")) == b"\x83\x00\x00\x00abc"


def test_writer_never_uses_type3_for_a_new_message_right_after_type0() -> None:
    writer = ChunkWriter()
    writer.write(4, Message(8, 1, 33, b"a"))
    assert writer.write(4, Message(8, 1, 66, b"b")) == b"\x84" + u24(33) + b"b"


def test_writer_extended_timestamp_on_every_chunk() -> None:
    writer = ChunkWriter()
    payload = bytes(range(200))
    ts = 17_000_000
    ext = struct.pack(">I", ts)
    expected = type0(6, ts, 200, 9, 1) + payload[:128] + b"\xc6" + ext + payload[128:]
    assert writer.write(6, Message(9, 1, ts, payload)) == expected
    assert read_all(ChunkReader(), expected) == [Message(9, 1, ts, payload)]


def test_set_chunk_size_is_sent_at_the_old_size() -> None:
    writer = ChunkWriter()
    assert writer.set_chunk_size(4096) == type0(2, 0, 4, 1, 0) + b"\x00\x00\x10\x00"
    payload = bytes(5000)
    out = writer.write(3, Message(9, 1, 0, payload))
    assert out == type0(3, 0, 5000, 9, 1) + payload[:4096] + b"\xc3" + payload[4096:]


def test_writer_then_reader_round_trip_with_interleaving() -> None:
    writer = ChunkWriter(chunk_size=100)
    reader = ChunkReader()
    read_all(reader, type0(2, 0, 4, 1, 0) + struct.pack(">I", 100))
    sent = [Message(9 - i % 2, 1, i * 21, bytes([i]) * (50 + 37 * i)) for i in range(12)]
    data = b"".join(writer.write(4 + i % 2, m) for i, m in enumerate(sent))
    assert read_all(reader, data, bytewise=True) == sent
    assert messages.DEFAULT_CHUNK_SIZE == 128
