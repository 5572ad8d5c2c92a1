"""The simple handshake, byte for byte."""

from __future__ import annotations

import pytest

from ingest.rtmp import handshake
from ingest.rtmp.errors import HandshakeError

RANDOM = bytes(range(256)) * 5 + bytes(range(248))  # 1528 bytes


def test_server_response_is_s0_s1_with_zero_version_and_s2_echoing_c1() -> None:
    c1 = bytes([7]) * handshake.HANDSHAKE_SIZE
    response = handshake.server_response(c1, time_ms=0x01020304, random_bytes=RANDOM)
    assert response == b"\x03" + b"\x01\x02\x03\x04" + b"\x00\x00\x00\x00" + RANDOM + c1
    assert len(response) == handshake.S0S1S2_SIZE


def test_default_s1_has_zero_version_bytes_and_random_filler() -> None:
    c1 = bytes(handshake.HANDSHAKE_SIZE)
    first = handshake.server_response(c1)
    second = handshake.server_response(c1)
    assert first[5:9] == b"\x00\x00\x00\x00"
    assert first[9:1537] != second[9:1537]


def test_parse_c0c1_returns_c1() -> None:
    c0c1 = handshake.client_c0c1(time_ms=5, random_bytes=RANDOM)
    assert c0c1[:9] == b"\x03\x00\x00\x00\x05\x00\x00\x00\x00"
    assert handshake.parse_c0c1(c0c1) == c0c1[1:]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ((b"GET / HTTP/1.1\r\n" * 100)[: handshake.C0C1_SIZE], "unsupported RTMP version 71"),
        (b"\x06" + bytes(handshake.HANDSHAKE_SIZE), "unsupported RTMP version 6"),
        (b"\x03" + bytes(100), "must be 1537 bytes, got 101"),
        (b"", "must be 1537 bytes, got 0"),
    ],
)
def test_garbage_or_short_c0c1_is_a_handshake_error(data: bytes, message: str) -> None:
    with pytest.raises(HandshakeError, match=message):
        handshake.parse_c0c1(data)


def test_check_c0_and_c2() -> None:
    handshake.check_c0(b"\x03")
    with pytest.raises(HandshakeError, match="version 255"):
        handshake.check_c0(b"\xff")
    handshake.check_c2(bytes(handshake.HANDSHAKE_SIZE))
    with pytest.raises(HandshakeError, match="C2 must be 1536 bytes, got 1535"):
        handshake.check_c2(bytes(handshake.HANDSHAKE_SIZE - 1))


def test_client_side_round_trip() -> None:
    c1 = handshake.parse_c0c1(handshake.client_c0c1(random_bytes=RANDOM))
    s1, s2 = handshake.parse_s0s1s2(handshake.server_response(c1, random_bytes=RANDOM[::-1]))
    assert s2 == c1
    assert s1[8:] == RANDOM[::-1]
    assert handshake.client_c2(s1) == s1
    with pytest.raises(HandshakeError, match="version 4"):
        handshake.parse_s0s1s2(b"\x04" + bytes(2 * handshake.HANDSHAKE_SIZE))
