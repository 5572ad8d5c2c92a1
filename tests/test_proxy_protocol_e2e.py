"""Behind a load balancer that sends the PROXY protocol (`ONAIR_PROXY_PROTOCOL=true`),
through the whole service: the ffmpeg CLI publishing RTMP and pushing HLS through a TCP
relay that prepends a v1 or v2 header (as HAProxy or an NLB would) naming 203.0.113.7;
the publisher's timings name that client. A connection without a header is closed and
a publisher straight to the port is refused."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import secrets
import struct
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from ingest.proxy_protocol import V2_SIGNATURE
from packager.s3server import EmbeddedS3
from tests.support.media import SMALL_TEMPLATE
from tests.support.publishers import ffmpeg_publish_cmd, run_process
from tests.support.service import Live, start_live

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]  # the whole service, ffmpeg

CLIENT = "203.0.113.7"
BALANCER = "198.51.100.1"


def v1_header(client_port: int, port: int) -> bytes:
    return f"PROXY TCP4 {CLIENT} {BALANCER} {client_port} {port}\r\n".encode()


def v2_header(client_port: int, port: int) -> bytes:
    addresses = ipaddress.IPv4Address(CLIENT).packed + ipaddress.IPv4Address(BALANCER).packed
    body = addresses + struct.pack("!HH", client_port, port)
    body += b"\x05" + struct.pack("!H", 8) + b"uniqueid"  # a TLV (PP2_TYPE_UNIQUE_ID)
    return V2_SIGNATURE + b"\x21\x11" + struct.pack("!H", len(body)) + body


HEADERS: dict[str, Callable[[int, int], bytes]] = {"v1": v1_header, "v2": v2_header}


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()  # a half-close passed on: ffmpeg's HLS uploads end so
    except ConnectionError:
        writer.transport.abort()


@contextlib.asynccontextmanager
async def proxy_relay(target_port: int, header: Callable[[int, int], bytes]) -> AsyncIterator[int]:
    """A TCP relay to `target_port` that sends `header(client_port, port)` first on each
    connection, as the balancer would; yields its port."""
    tasks: set[asyncio.Task[Any]] = set()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tasks.add(asyncio.current_task())  # type: ignore[arg-type]
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target_port)
        try:
            up_writer.write(header(writer.get_extra_info("peername")[1], target_port))
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            up_writer.close()
            writer.close()

    server = await asyncio.start_server(on_client, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


@pytest.fixture
async def live(tmp_path: Path, s3_server: EmbeddedS3, s3_client: Any) -> AsyncIterator[Live]:
    async for running in start_live(tmp_path, s3_server, s3_client, proxy_protocol=True):
        yield running


async def run(command: list[str], within: float) -> int:
    return (await run_process(command, within))[0]


async def publisher_timings(
    live: Live, job: dict[str, Any], within: float, status: str = "PublisherConnected"
) -> list[str]:
    """The comments of the job's `status` timings, once there is one."""
    deadline = time.monotonic() + within
    while True:
        found = [t["messageComment"] for t in await live.timings(job) if t["childStatus"] == status]
        if found or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.2)


def new_bucket() -> str:
    return "proxy-" + secrets.token_hex(4)


@pytest.mark.parametrize("version", ["v1", "v2"])
async def test_an_rtmp_publisher_through_the_balancer_is_the_client_it_names(
    live: Live, version: str
) -> None:
    job = await live.create_online_job(SMALL_TEMPLATE, new_bucket(), f"rtmp-{version}")
    async with proxy_relay(live.settings.rtmp_port, HEADERS[version]) as port:
        url = f"rtmp://127.0.0.1:{port}/live/{job['key']}"
        assert await run(ffmpeg_publish_cmd(url, size="320x180", seconds=2), within=60) == 0
    connected = await publisher_timings(live, job, within=10)
    assert len(connected) == 1 and connected[0].startswith(f"{CLIENT}:"), connected
    assert await publisher_timings(live, job, within=10, status="MediaStarted")
    await live.call("POST", f"/livejobs/{job['key']}", json={"online": False})


async def test_without_a_header_nothing_is_read_as_rtmp(live: Live) -> None:
    job = await live.create_online_job(SMALL_TEMPLATE, new_bucket(), "straight")
    reader, writer = await asyncio.open_connection("127.0.0.1", live.settings.rtmp_port)
    try:
        writer.write(b"\x03" + bytes(1536))  # C0 + C1, no header: no S0/S1/S2 comes back
        async with asyncio.timeout(10):
            with contextlib.suppress(ConnectionError):
                assert await reader.read() == b""
    finally:
        writer.close()
    url = live.rtmp_url(job["key"])  # a publisher straight to the port
    assert await run(ffmpeg_publish_cmd(url, size="320x180", seconds=2), within=30) != 0
    assert await publisher_timings(live, job, within=0) == []
    assert await live.status(job) == 2  # online, never publishing


async def test_an_hls_push_through_the_balancer_is_the_client_it_names(live: Live) -> None:
    job = await live.create_online_job(SMALL_TEMPLATE, new_bucket(), "pushed", serverType=2)
    hls_port = live.settings.hls_ingest_port
    async with proxy_relay(hls_port, v2_header) as port:
        url = job["ingestUrl"].replace(f":{hls_port}/", f":{port}/")
        push = ffmpeg_publish_cmd(
            url,
            size="320x180",
            seconds=3,
            realtime=True,
            extra=("-pix_fmt", "yuv420p"),
            output=("-f", "hls", "-method", "PUT", "-hls_time", "1", url),
        )
        assert await run(push, within=60) == 0
        connected = await publisher_timings(live, job, within=10)
    assert len(connected) == 1 and connected[0].startswith(f"{CLIENT}:"), connected
    await live.call("POST", f"/livejobs/{job['key']}", json={"online": False})
