"""Malformed and hostile byte streams end only their own connection, with one log line."""

from __future__ import annotations

import asyncio
import logging
import shutil
import struct
from collections.abc import Awaitable, Callable

import pytest

from ingest.formats import amf0
from ingest.rtmp.messages import Message
from ingest.rtmp.server import RtmpServer
from tests.support.fakes import Harness
from tests.support.publishers import ffmpeg_publish_cmd, run_process
from tests.support.rtmp_client import RawClient, StartServer
from tests.support.waiting import async_wait_until

SERVER_LOGGER = "ingest.rtmp.server"
LIMIT = 1 << 20  # the servers here use max_message_bytes=1 MiB


def type0(csid: int, ts: int, length: int, type_id: int, stream_id: int) -> bytes:
    header = bytes([csid]) + ts.to_bytes(3, "big") + length.to_bytes(3, "big") + bytes([type_id])
    return header + struct.pack("<I", stream_id)


async def garbage_handshake(client: RawClient) -> None:
    client.writer.write(b"GET / HTTP/1.1\r\nHost: example\r\n\r\n")


async def truncated_handshake(client: RawClient) -> None:
    client.writer.write(b"\x03" + bytes(100))
    await client.writer.drain()
    client.writer.write_eof()


async def huge_chunk_size(client: RawClient) -> None:
    await client.handshake()
    client.writer.write(type0(2, 0, 4, 1, 0) + struct.pack(">I", 1 << 31))


async def oversized_message(client: RawClient) -> None:
    await client.handshake()
    client.writer.write(type0(3, 0, 2 * LIMIT, 20, 0) + bytes(100))


async def bad_amf_in_connect(client: RawClient) -> None:
    await client.handshake()
    payload = amf0.encode("connect", 1.0) + b"\x03\x00\x03app\x42garbage"
    client.send(3, Message(20, 0, 0, payload))


async def command_before_connect(client: RawClient) -> None:
    await client.handshake()
    client.command("publish", 1, None, "key", "live", stream_id=1)


async def one_byte_chunk_flood(client: RawClient) -> None:
    await client.handshake()
    client.writer.write(type0(2, 0, 4, 1, 0) + struct.pack(">I", 1))  # chunk size 1
    client.writer.write(type0(4, 0, LIMIT - 1, 9, 1) + b"\x17")
    block = b"\xc4\x00" * 32768
    try:
        for _ in range(64):  # up to 4 MiB; the server gives up long before
            client.writer.write(block)
            await client.writer.drain()
    except ConnectionError:
        pass


async def truncated_stream(client: RawClient) -> None:
    await client.handshake()
    client.command("connect", 1, {"app": "live"})
    client.writer.write(type0(5, 0, 1000, 9, 1) + bytes(50))  # then the peer vanishes
    await client.writer.drain()
    client.writer.write_eof()


Attack = Callable[[RawClient], Awaitable[None]]
ATTACKS: dict[str, tuple[Attack, str]] = {
    "garbage handshake": (
        garbage_handshake,
        "handshake error: unsupported RTMP version 71 (want 3)",
    ),
    "truncated handshake": (
        truncated_handshake,
        "handshake error: connection closed during handshake (100 of 1536 bytes of C1)",
    ),
    "chunk size 2^31": (
        huge_chunk_size,
        "protocol error: chunk size 2147483648 out of range 1..16777216",
    ),
    "oversized message": (
        oversized_message,
        f"protocol error: message length {2 * LIMIT} exceeds the limit of {LIMIT}",
    ),
    "bad AMF in connect": (
        bad_amf_in_connect,
        "protocol error: unsupported AMF0 marker 0x42 at offset 25",
    ),
    "command before connect": (
        command_before_connect,
        "protocol error: command 'publish' before connect",
    ),
    "flood of 1-byte chunks": (
        one_byte_chunk_flood,
        f"protocol error: more than {LIMIT} bytes before publish",
    ),
    "truncated stream": (truncated_stream, "closed by peer"),
}


async def attack(server: RtmpServer, name: str, caplog: pytest.LogCaptureFixture) -> str:
    """Run one attack; return the single log line the server wrote for that connection."""
    run, _ = ATTACKS[name]
    client = await RawClient.connect(server.port)
    try:
        await run(client)
        await client.wait_closed(within=10)

        def lines() -> list[str]:
            return [r.getMessage() for r in caplog.records if client.prefix in r.getMessage()]

        await async_wait_until(lambda: len(lines()) >= 1, 5, f"the log line of {name}")
        await asyncio.sleep(0.05)  # would a second line follow?
        assert len(lines()) == 1, lines()
        return lines()[0].removeprefix(f"{client.prefix} closed: ")
    finally:
        client.close()


@pytest.mark.parametrize("name", list(ATTACKS))
async def test_each_malformed_stream_ends_its_connection_with_one_line(
    start_server: StartServer, caplog: pytest.LogCaptureFixture, name: str
) -> None:
    caplog.set_level(logging.DEBUG, logger=SERVER_LOGGER)
    server = await start_server(max_message_bytes=LIMIT)
    assert await attack(server, name, caplog) == ATTACKS[name][1]
    # the server still accepts and serves
    client = await RawClient.connect(server.port)
    try:
        await client.handshake()
        client.command("connect", 1, {"app": "live"})
        assert (await client.read_command()).name == "_result"
    finally:
        client.close()
    await async_wait_until(lambda: server.connection_count == 0, 5, "connections to end")


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg CLI missing")
async def test_attacks_during_a_live_publish_leave_it_intact(
    start_server: StartServer, harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=SERVER_LOGGER)
    server = await start_server(max_message_bytes=LIMIT)
    url = f"rtmp://127.0.0.1:{server.port}/live/good"
    good = asyncio.create_task(run_process(ffmpeg_publish_cmd(url, seconds=3, realtime=True)))
    await async_wait_until(lambda: "good" in harness.publishing, 20, "the good publisher")
    reasons = await asyncio.gather(*(attack(server, name, caplog) for name in ATTACKS))
    assert reasons == [expected for _, expected in ATTACKS.values()]
    assert "good" in harness.publishing  # still live while every attack ran
    rc, stderr = await good
    assert rc == 0, stderr
    job = harness.jobs["good"]
    await job.collector.async_wait_ends(1)
    assert len(job.collector.kinds("video")) == 90
    assert job.closes == ["unpublished"]


async def test_memory_per_connection_stays_bounded_under_a_slow_drip(
    start_server: StartServer,
) -> None:
    """A message declared big and sent slowly holds at most its bytes so far."""
    server = await start_server(max_message_bytes=LIMIT)
    client = await RawClient.connect(server.port)
    try:
        await client.handshake()
        client.writer.write(type0(2, 0, 4, 1, 0) + struct.pack(">I", 65536))
        client.writer.write(type0(4, 0, LIMIT, 9, 1) + bytes(50_000))
        await client.writer.drain()
        await async_wait_until(lambda: server.connection_count == 1, 5, "the connection")
        [connection] = list(server._connections)
        reader = connection._chunks
        await async_wait_until(lambda: reader.buffered_bytes >= 50_000, 5, "the bytes to arrive")
        assert reader.buffered_bytes <= 50_000 + 65536
    finally:
        client.close()
