"""The PROXY protocol: the pure parser byte for byte (`ingest.proxy_protocol`), the
listener front that reads it before the real protocol (`ingest.proxied`), and the RTMP
server behind it (the per-IP limit and the `PublishRequest` see the client)."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import struct

import pytest

from ingest.proxied import ProxyFront
from ingest.proxy_protocol import (
    V2_MAX_LENGTH,
    V2_SIGNATURE,
    ProxiedAddress,
    ProxyProtocolError,
    header_length,
    parse_header,
    parse_v1,
    parse_v2,
    v1_header,
)
from media.outbound import OutboundPolicy
from restream.rtmp_client import RtmpPublisher
from tests.support.fakes import Harness
from tests.support.rtmp_client import RawClient, StartServer, status_info
from tests.support.waiting import async_wait_until

CLIENT = "203.0.113.7"


def v2_header(
    source: str = CLIENT,
    port: int = 51000,
    *,
    command: int = 0x1,
    family: int | None = None,
    tlvs: bytes = b"",
    version: int = 0x2,
) -> bytes:
    """A v2 header for TCP from `source`:`port` to the balancer's 198.51.100.1:1935."""
    ip = ipaddress.ip_address(source)
    destination = ipaddress.ip_address("198.51.100.1" if ip.version == 4 else "2001:db8::1")
    if family is None:
        family = 0x11 if ip.version == 4 else 0x21
    body = ip.packed + destination.packed + struct.pack("!HH", port, 1935) + tlvs
    fixed = V2_SIGNATURE + bytes([version << 4 | command, family])
    return fixed + struct.pack("!H", len(body)) + body


def tlv(kind: int, value: bytes) -> bytes:
    return bytes([kind]) + struct.pack("!H", len(value)) + value


# Version 1


def test_v1_tcp4() -> None:
    line = b"PROXY TCP4 203.0.113.7 198.51.100.1 51000 1935\r\n"
    assert parse_v1(line) == ProxiedAddress(CLIENT, 51000)
    assert parse_header(line + b"\x03rtmp") == (ProxiedAddress(CLIENT, 51000), len(line))


def test_v1_tcp6() -> None:
    line = b"PROXY TCP6 2001:db8:0:0::7 2001:db8::1 443 1935\r\n"
    assert parse_v1(line) == ProxiedAddress("2001:db8::7", 443)


def test_v1_unknown_keeps_the_socket_address() -> None:
    assert parse_v1(b"PROXY UNKNOWN\r\n") is None
    assert parse_v1(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n") is None  # the rest is ignored


def test_the_longest_v1_line_is_accepted() -> None:
    source = "ffff:f...f:ffff".replace("f...f", ":".join(["ffff"] * 6))
    line = f"PROXY TCP6 {source} {source} 65535 65535\r\n".encode()
    assert len(line) == 104  # the spec's worst case is 107 with UNKNOWN
    assert parse_header(line) == (ProxiedAddress(source, 65535), 104)


@pytest.mark.parametrize(
    "line",
    [
        b"PROXY TCP4 203.0.113.7 198.51.100.1 51000\r\n",  # a field missing
        b"PROXY TCP4 2001:db8::7 198.51.100.1 51000 1935\r\n",  # IPv6 said TCP4
        b"PROXY TCP6 203.0.113.7 2001:db8::1 51000 1935\r\n",  # IPv4 said TCP6
        b"PROXY TCP4 203.0.113.777 198.51.100.1 51000 1935\r\n",
        b"PROXY TCP4 203.0.113.7 198.51.100.1 65536 1935\r\n",
        b"PROXY TCP4 203.0.113.7 198.51.100.1 -1 1935\r\n",
        b"PROXY TCP4  203.0.113.7 198.51.100.1 51000 1935\r\n",  # two spaces
        b"PROXY UDP4 203.0.113.7 198.51.100.1 51000 1935\r\n",
        b"PROXY TCP4 203.0.113.7 198.51.100.1 51000 1935\n",  # no CR
        b"PROXY TCP4 \xff.0.113.7 198.51.100.1 51000 1935\r\n",
    ],
)
def test_a_malformed_v1_line_is_refused(line: bytes) -> None:
    with pytest.raises(ProxyProtocolError):
        parse_v1(line)


def test_a_v1_line_too_long_is_refused_before_its_end() -> None:
    start = b"PROXY TCP4 " + b"1" * 96  # 107 bytes and no CRLF
    with pytest.raises(ProxyProtocolError, match="longer than 107"):
        header_length(start)
    assert header_length(start[:106]) is None  # might still end in time
    with pytest.raises(ProxyProtocolError):
        parse_v1(start + b"\r\n")


# Version 2


def test_v2_proxy_tcp4_with_a_tlv() -> None:
    header = v2_header(tlvs=tlv(0x05, b"unique-id-1234"))  # PP2_TYPE_UNIQUE_ID, skipped
    assert parse_v2(header) == ProxiedAddress(CLIENT, 51000)
    assert parse_header(header + b"\x03") == (ProxiedAddress(CLIENT, 51000), len(header))


def test_v2_proxy_tcp6_with_a_tlv() -> None:
    header = v2_header("2001:db8::7", 443, tlvs=tlv(0x04, b""))  # PP2_TYPE_NOOP
    assert parse_v2(header) == ProxiedAddress("2001:db8::7", 443)


def test_v2_local_and_unspec_keep_the_socket_address() -> None:
    local = V2_SIGNATURE + b"\x20\x00\x00\x00"  # a balancer's health check
    assert parse_header(local + b"GET") == (None, 16)
    assert parse_v2(v2_header(command=0x0)) is None  # LOCAL with addresses: ignored
    assert parse_v2(V2_SIGNATURE + b"\x21\x00\x00\x00") is None  # PROXY, UNSPEC
    assert parse_v2(v2_header(family=0x12)) is None  # UDP over IPv4


def test_a_v2_header_is_read_in_pieces() -> None:
    header = v2_header(tlvs=tlv(0x05, b"x" * 20))
    for cut in range(len(header)):
        assert parse_header(header[:cut]) is None, cut
    assert parse_header(header) == (ProxiedAddress(CLIENT, 51000), len(header))


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"\x03" + bytes(1536), "no PROXY protocol header"),  # RTMP's C0/C1 straight away
        (b"GET / HTTP/1.1\r\n", "no PROXY protocol header"),
        (V2_SIGNATURE[:6] + b"X" * 10, "no PROXY protocol header"),  # a bad signature
        (V2_SIGNATURE + b"\x11\x11\x00\x0c", "version 1"),  # wrong version
        (V2_SIGNATURE + b"\x22\x11\x00\x0c", "command 2"),
        (V2_SIGNATURE + b"\x21\x11" + struct.pack("!H", V2_MAX_LENGTH + 1), "limit 512"),
    ],
)
def test_what_is_not_a_header_is_refused_at_once(data: bytes, match: str) -> None:
    with pytest.raises(ProxyProtocolError, match=match):
        parse_header(data)


def test_a_truncated_v2_header_is_refused() -> None:
    header = v2_header()
    with pytest.raises(ProxyProtocolError, match="its length says"):
        parse_v2(header[:-3])
    with pytest.raises(ProxyProtocolError, match="cut short"):
        parse_v2(header[:10])
    short = V2_SIGNATURE + b"\x21\x11\x00\x04" + bytes(4)  # TCP4 with 4 bytes of addresses
    with pytest.raises(ProxyProtocolError, match="addresses cut short"):
        parse_v2(short)
    with pytest.raises(ProxyProtocolError, match="version 3"):
        parse_v2(v2_header(version=0x3))


# The front, on a real socket


Made = asyncio.Queue[tuple[object, bytes]]  # (peername, bytes) as the real protocol got them


class _Recorder(asyncio.Protocol):
    """The real protocol behind the front: what it was given."""

    def __init__(self, made: Made) -> None:
        self.made = made
        self.peer: object = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.peer = transport.get_extra_info("peername")

    def data_received(self, data: bytes) -> None:
        self.made.put_nowait((self.peer, data))


async def _front(seconds: float) -> tuple[asyncio.Server, ProxyFront, Made, list[tuple[str, str]]]:
    """A listener behind a front (`seconds` for the header, 2 connections waiting at
    most) for `_Recorder`s; what they were given; the front's errors."""
    made: Made = asyncio.Queue()
    errors: list[tuple[str, str]] = []
    front = ProxyFront(
        lambda: _Recorder(made),
        lambda peer, reason: errors.append((peer, reason)),
        timeout_seconds=seconds,
        max_waiting=2,
    )
    server = await asyncio.get_running_loop().create_server(front, "127.0.0.1", 0)
    return server, front, made, errors


async def _closed(reader: asyncio.StreamReader, within: float) -> bool:
    try:
        async with asyncio.timeout(within):
            return await reader.read() == b""
    except ConnectionError:
        return True


@pytest.mark.parametrize(
    "header", [v2_header(), b"PROXY TCP4 203.0.113.7 198.51.100.1 51000 1935\r\n"]
)
async def test_the_front_hands_the_bytes_after_the_header_to_the_real_protocol(
    header: bytes,
) -> None:
    server, front, made, errors = await _front(5.0)
    port = server.sockets[0].getsockname()[1]
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(header[:7])  # in pieces, the rest with the client's first bytes
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(header[7:] + b"hello")
        peer, data = await asyncio.wait_for(made.get(), 5)
        assert (peer, data) == ((CLIENT, 51000), b"hello")
        assert front.waiting_count == 0 and not errors
    finally:
        writer.close()
        server.close()
        await server.wait_closed()


async def test_the_front_closes_a_connection_without_a_header_in_time() -> None:
    server, front, made, errors = await _front(0.3)
    port = server.sockets[0].getsockname()[1]
    quiet = await asyncio.open_connection("127.0.0.1", port)
    bad = await asyncio.open_connection("127.0.0.1", port)
    try:
        bad[1].write(b"\x03" + bytes(100))  # RTMP straight away
        assert await _closed(bad[0], 2)
        assert await _closed(quiet[0], 2)  # nothing: closed at the deadline
        assert made.empty() and front.waiting_count == 0 and front.refused == 2
        reasons = sorted(reason for _peer, reason in errors)
        assert reasons == ["no PROXY header within 0.3 s", "no PROXY protocol header"]
    finally:
        for _, writer in (quiet, bad):
            writer.close()
        server.close()
        await server.wait_closed()


async def test_the_front_bounds_connections_waiting_and_closes_them_at_stop() -> None:
    server, front, _made, errors = await _front(30.0)
    port = server.sockets[0].getsockname()[1]
    waiting = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
    try:
        await async_wait_until(lambda: front.waiting_count == 2, 5, "2 waiting")
        extra = await asyncio.open_connection("127.0.0.1", port)
        assert await _closed(extra[0], 2)
        extra[1].close()
        assert "2 connections awaiting their PROXY header" in errors[0][1]
        front.close()
        for reader, _ in waiting:
            assert await _closed(reader, 2)
    finally:
        for _, writer in waiting:
            writer.close()
        server.close()
        await server.wait_closed()


# The RTMP server behind it


async def _rtmp_via(port: int, header: bytes, source_ip: str = "127.0.0.1") -> RawClient:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source_ip, 0))
    writer.write(header)
    return RawClient(reader, writer)


async def test_rtmp_counts_pending_connections_per_proxied_client(
    start_server: StartServer, harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """Every connection comes from the balancer (127.0.0.1 here, not exempt): the per-IP
    limit counts the clients its headers name, and the publisher is the client."""
    caplog.set_level(logging.INFO, logger="ingest.rtmp.server")
    server = await start_server(
        max_pending=10, max_pending_per_ip=2, per_ip_exempt_loopback=False, proxy_protocol=True
    )
    first = [await _rtmp_via(server.port, v2_header(port=5000 + i)) for i in range(2)]
    try:
        await async_wait_until(lambda: server.pending_count == 2, 5, "2 pending connections")
        assert server.pending.held_by(CLIENT) == 2 and server.pending.held_by("127.0.0.1") == 0
        third = await _rtmp_via(server.port, v2_header(port=5002))
        await third.wait_closed(within=2)  # a third from that client
        third.close()
        other = await _rtmp_via(server.port, v2_header("198.51.100.9", 6000))
        try:
            await other.handshake()
            status = await other.publish("key1")
            assert status_info(status)["code"] == "NetStream.Publish.Start"
            assert harness.requests[-1].remote == "198.51.100.9:6000"
        finally:
            other.close()
        lines = [r.getMessage() for r in caplog.records]
        assert any(line.startswith(f"[rtmp {CLIENT}:5002] refused") for line in lines), lines
    finally:
        for client in first:
            client.close()


async def test_rtmp_without_a_header_is_never_read_as_rtmp(
    start_server: StartServer, harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ingest.rtmp.server")
    server = await start_server(proxy_protocol=True, proxy_header_timeout_seconds=0.5)
    client = await RawClient.connect(server.port)
    try:
        client.writer.write(b"\x03" + bytes(1536))  # C0 + C1: no S0/S1/S2 comes back
        await client.wait_closed(within=2)
        assert server.connection_count == 0 and harness.requests == []
        line = f"{client.prefix} closed: no PROXY protocol header"
        assert line in [r.getMessage() for r in caplog.records]
    finally:
        client.close()


# What onair itself sends: a relay to another host names its publisher


@pytest.mark.parametrize(
    ("client", "named"),
    [
        ("203.0.113.7:4000", ProxiedAddress("203.0.113.7", 4000)),
        ("[2001:db8::7]:4000", ProxiedAddress("2001:db8::7", 4000)),
        ("not an address", None),
        ("203.0.113.7:70000", None),
    ],
)
def test_a_v1_header_made_for_a_client_names_it(client: str, named: ProxiedAddress | None) -> None:
    header = v1_header(client)
    assert parse_header(header + b"rest") == (named, len(header))


async def test_the_rtmp_client_s_preamble_names_the_publisher_to_a_proxied_server(
    start_server: StartServer, harness: Harness
) -> None:
    """onair's RTMP client (a relay) with a PROXY header first: the server behind the
    PROXY protocol sees the publisher it names, and the stream name's query."""
    server = await start_server(proxy_protocol=True)
    policy = OutboundPolicy(allow_private=True)
    publisher = await asyncio.to_thread(
        RtmpPublisher.connect,
        f"rtmp://127.0.0.1:{server.port}/relay-backup",
        "key1?token=abc",
        policy,
        preamble=v1_header("198.51.100.20:7000"),
    )
    try:
        request = harness.requests[-1]
        assert request.remote == "198.51.100.20:7000"
        assert (request.app, request.stream_key, request.query) == (
            "relay-backup",
            "key1",
            "token=abc",
        )
    finally:
        publisher.close()
