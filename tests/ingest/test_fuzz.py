"""Property tests and fuzzing of the AMF0 and chunk parsers (hypothesis).

Each test runs `fuzz_examples(default)` examples: about 4,400 in total in the normal
run; `ONAIR_FUZZ_EXAMPLES=N` runs N per test (the `make fuzz` target).
"""

from __future__ import annotations

import dataclasses
import math
import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.formats import amf0, flv
from ingest.formats.amf0 import UNDEFINED, AmfDate, AmfError, EcmaArray
from ingest.rtmp import messages
from ingest.rtmp.chunk import ChunkReader, ChunkWriter, split_aggregate
from ingest.rtmp.errors import ProtocolError
from ingest.rtmp.messages import Message
from ingest.stats import SourceStats
from tests.support.fuzzing import fuzz_examples

pytestmark = pytest.mark.slow  # thousands of generated cases


def fuzz(default: int) -> settings:
    return settings(
        max_examples=fuzz_examples(default),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# AMF0

finite = st.floats(allow_nan=False)
scalars = st.one_of(
    finite,
    st.booleans(),
    st.text(max_size=40),
    st.none(),
    st.just(UNDEFINED),
    st.builds(AmfDate, finite, st.integers(-32768, 32767)),
)
keys = st.text(max_size=12)
amf_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(keys, children, max_size=5),
        st.dictionaries(keys, children, max_size=5).map(EcmaArray),
    ),
    max_leaves=12,
)


def same(a: Any, b: Any) -> bool:
    """Equality that also checks dict vs EcmaArray and list types."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


@fuzz(500)
@given(st.lists(amf_values, min_size=1, max_size=3))
def test_amf0_round_trip(values: list[Any]) -> None:
    decoded = amf0.decode_all(amf0.encode(*values))
    assert same(decoded, values)


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "cut", "insert", "truncate"]))
        at = draw(st.integers(0, max(len(out) - 1, 0)))
        if op == "flip" and out:
            out[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and out:
            out[at] = draw(st.integers(0, 255))
        elif op == "cut":
            del out[at : at + draw(st.integers(1, 8))]
        elif op == "insert":
            out[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == "truncate":
            del out[at:]
    return bytes(out)


def decode_or_amf_error(data: bytes) -> list[Any] | None:
    try:
        return amf0.decode_all(data)
    except AmfError:
        return None


@fuzz(1000)
@given(st.data())
def test_amf0_decoder_on_mutated_data_raises_only_amf_error(data: st.DataObject) -> None:
    values = data.draw(st.lists(amf_values, min_size=1, max_size=2))
    blob = data.draw(mutated(amf0.encode(*values)))
    decoded = decode_or_amf_error(blob)
    if decoded is not None:  # whatever decodes re-encodes and decodes the same way
        again = amf0.decode_all(amf0.encode(*decoded))
        assert repr(again) == repr(decoded)


@fuzz(400)
@given(st.binary(max_size=300))
def test_amf0_decoder_on_random_bytes(blob: bytes) -> None:
    decode_or_amf_error(blob)
    decode_or_amf_error(b"\x0a\x00\x00\x00\x03" + blob)  # inside a strict array
    decode_or_amf_error(b"\x03" + blob)  # inside an object


# Chunk stream


@st.composite
def message_lists(draw: st.DrawFn) -> list[tuple[int, Message]]:
    """(csid, message) lists with timestamps that exercise every header type."""
    out: list[tuple[int, Message]] = []
    clocks: dict[int, int] = {}
    for _ in range(draw(st.integers(1, 8))):
        csid = draw(st.sampled_from([3, 4, 6, 63, 64, 319, 320, 65599]))
        step = draw(
            st.one_of(
                st.just(0),
                st.sampled_from([20, 21, 33]),
                st.integers(0, 1 << 32),  # includes extended and backwards (mod 2^32)
            )
        )
        clocks[csid] = (clocks.get(csid, draw(st.integers(0, 1 << 32))) + step) & 0xFFFFFFFF
        length = draw(st.sampled_from([0, 1, 4, 127, 128, 129, 300, 700]))
        payload = bytes([len(out) & 0xFF]) * length
        type_id = draw(st.sampled_from([8, 9, 18, 20]))
        stream_id = draw(st.sampled_from([0, 1, 1, 1, 0x01020304]))
        out.append((csid, Message(type_id, stream_id, clocks[csid], payload)))
    return out


def read_everything(reader: ChunkReader, stream: bytes, cuts: list[int]) -> list[Message]:
    got: list[Message] = []
    previous = 0
    for cut in [*sorted(cuts), len(stream)]:
        reader.feed(stream[previous:cut])
        previous = cut
        while (message := reader.next_message()) is not None:
            got.append(message)
    return got


@fuzz(600)
@given(
    message_lists(),
    st.integers(1, 300),
    st.lists(st.integers(0, 20000), max_size=20),
)
def test_chunk_writer_to_reader_round_trip(
    sent: list[tuple[int, Message]], chunk_size: int, cuts: list[int]
) -> None:
    writer = ChunkWriter()
    stream = writer.set_chunk_size(chunk_size)
    stream += b"".join(writer.write(csid, message) for csid, message in sent)
    reader = ChunkReader()
    got = read_everything(reader, stream, [c % (len(stream) + 1) for c in cuts])
    assert got[0] == messages.set_chunk_size(chunk_size)
    assert got[1:] == [message for _, message in sent]
    assert reader.buffered_bytes == 0
    assert reader.bytes_received == len(stream)


@fuzz(1000)
@given(st.data(), message_lists(), st.integers(1, 300))
def test_chunk_reader_on_mutated_streams_raises_only_protocol_error(
    data: st.DataObject, sent: list[tuple[int, Message]], chunk_size: int
) -> None:
    writer = ChunkWriter()
    stream = writer.set_chunk_size(chunk_size)
    stream += b"".join(writer.write(csid, message) for csid, message in sent)
    blob = data.draw(mutated(stream))
    limit = 1024
    reader = ChunkReader(max_message_bytes=limit, max_chunk_streams=4)
    step = data.draw(st.integers(1, 64))
    try:
        for at in range(0, len(blob), step):
            reader.feed(blob[at : at + step])
            while (message := reader.next_message()) is not None:
                assert len(message.payload) <= limit
            assert reader.buffered_bytes <= limit + step  # memory stays bounded
    except ProtocolError:
        pass


@fuzz(300)
@given(st.binary(max_size=400))
def test_chunk_reader_on_random_bytes(blob: bytes) -> None:
    reader = ChunkReader(max_message_bytes=512)
    try:
        reader.feed(blob)
        while reader.next_message() is not None:
            pass
    except ProtocolError:
        pass
    assert reader.buffered_bytes <= 512 + len(blob)


@fuzz(300)
@given(st.binary(max_size=200), st.integers(0, 0xFFFFFFFF))
def test_split_aggregate_raises_only_protocol_error(blob: bytes, timestamp: int) -> None:
    try:
        parts = split_aggregate(Message(22, 1, timestamp, blob))
    except ProtocolError:
        return
    assert sum(len(p.payload) for p in parts) <= len(blob)
    assert all(p.type_id in (8, 9, 18) for p in parts)


# FLV tag inspection never fails on publisher bytes


@fuzz(300)
@given(st.binary(max_size=24), st.integers(0, 0xFFFFFFFF))
def test_flv_tag_inspection_and_stats_accept_any_payload(payload: bytes, timestamp: int) -> None:
    flv.video_info(payload)
    flv.audio_info(payload)
    rate, channels = flv.aac_config(payload)
    assert rate >= 0 and channels >= 0
    stats = SourceStats(clock=lambda: 1.0)
    stats.on_media(8, timestamp, payload)
    stats.on_media(9, timestamp, payload)
    snapshot = stats.snapshot()
    values = dataclasses.astuple(snapshot)
    assert all(not isinstance(v, float) or math.isfinite(v) for v in values)
    tag = flv.tag(9, timestamp, payload)
    assert struct.unpack(">I", tag[-4:])[0] == 11 + len(payload)
