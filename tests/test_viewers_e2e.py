"""WebSocket viewing through the whole service: the ffmpeg CLI publishing in real time,
Python WebSocket clients reading the live as MPEG-TS (ffprobe decodes what they got,
at the rendition asked for, and the source's own packets), a viewer that never reads
dropped while the live and another viewer go on, and the refusals: a stream-key URL,
a token refused, a token expired; the telemetry socket with a token and without the
key header."""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.media import SMALL_TEMPLATE, ffprobe
from tests.support.monitoring import scrape
from tests.support.publishers import publish
from tests.support.service import Live, start_live

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]  # real time, the whole service

TOKEN_SECONDS = 3


@pytest.fixture
async def viewers_live(tmp_path: Path, s3_server: Any, s3_client: Any) -> AsyncIterator[Live]:
    async for running in start_live(
        tmp_path,
        s3_server,
        s3_client,
        viewer_token_seconds=TOKEN_SECONDS,
        viewer_max_pending_bytes=64 * 1024,
    ):
        yield running


async def create_job(live: Live, path: str, **job_fields: Any) -> dict[str, Any]:
    bucket = "view-" + secrets.token_hex(4)
    return await live.create_online_job(SMALL_TEMPLATE, bucket, path, job_fields=job_fields)


def ws_url(live: Live, path: str) -> str:
    return str(live.server.make_url(path)).replace("http://", "ws://", 1)


async def read_for(url: str, seconds: float) -> bytes:
    """What a viewer gets in `seconds`, as one byte string."""
    data = bytearray()
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        while (left := deadline - time.monotonic()) > 0:
            try:
                message = await ws.receive(timeout=left)
            except TimeoutError:
                break
            if message.type != aiohttp.WSMsgType.BINARY:
                break
            data += message.data
    return bytes(data)


async def status_of(url: str) -> int:
    """The HTTP status a WebSocket upgrade to `url` gets."""
    async with aiohttp.ClientSession() as session:
        try:
            async with session.ws_connect(url):
                return 101
        except aiohttp.WSServerHandshakeError as refused:
            return refused.status


def probe(data: bytes, path: Path) -> dict[str, Any]:
    info, errors = ffprobe(path, "-show_streams", "-count_frames", data=data)
    assert errors == "", errors
    return {s["codec_type"]: s for s in info["streams"]}


async def test_a_viewer_reads_the_live_as_mpeg_ts_at_the_rendition_asked_for(
    viewers_live: Live, tmp_path: Path
) -> None:
    live = viewers_live
    job = await create_job(live, "watched")
    assert job["webSocketConnection"] == (
        f"ws://{live.settings.public_host}:{live.settings.http_port}/websocketplay/{job['name']}"
    )
    publisher = asyncio.create_task(publish(live.rtmp_url(job["key"]), 16))
    try:
        await live.wait_status(job, 3)
        await asyncio.sleep(1)
        base = f"/websocketplay/{job['name']}"
        top, small, source = await asyncio.gather(
            read_for(ws_url(live, base), 5),
            read_for(ws_url(live, base + "?rendition=144p"), 5),
            read_for(ws_url(live, base + "?rendition=source"), 5),
        )
        for name, data, size in (
            ("top", top, (320, 180)),
            ("144p", small, (256, 144)),
            ("source", source, (320, 180)),
        ):
            streams = probe(data, tmp_path / f"{name}.ts")
            video = streams["video"]
            assert (video["codec_name"], video["width"], video["height"]) == ("h264", *size)
            assert int(video["nb_read_frames"]) >= 4 * 30 - 40, (name, video["nb_read_frames"])
            assert streams["audio"]["codec_name"] == "aac", name
        assert await status_of(ws_url(live, base + "?rendition=4k")) == 400
        # The stream key is no viewer's URL (whoever has it can publish).
        assert await status_of(ws_url(live, f"/websocketplay/{job['key']}")) == 404
    finally:
        assert (await publisher).returncode == 0


def never_reading_viewer(port: int, path: str) -> socket.socket:
    """A WebSocket client that upgrades, then never reads a byte (a 4 KiB window)."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    return sock


async def test_a_viewer_that_never_reads_is_dropped_and_nobody_else_notices(
    viewers_live: Live, tmp_path: Path
) -> None:
    live = viewers_live
    job = await create_job(live, "stalled")
    publisher = asyncio.create_task(publish(live.rtmp_url(job["key"]), 30))
    stuck: socket.socket | None = None
    try:
        await live.wait_status(job, 3)
        path = f"/websocketplay/{job['name']}?rendition=source"
        port = live.server.port
        assert port is not None
        stuck = never_reading_viewer(port, path)
        deadline = time.monotonic() + 25
        slow = ("onair_viewers_ended_total", (("reason", "slow"),))
        while (await scrape(live)).get(slow, 0) < 1:
            assert time.monotonic() < deadline, "the stuck viewer was never dropped"
            await asyncio.sleep(0.5)
        # The live went on, and another viewer reads it whole.
        data = await read_for(ws_url(live, path), 3)
        streams = probe(data, tmp_path / "other.ts")
        assert int(streams["video"]["nb_read_frames"]) >= 2 * 30 - 30
        assert await live.status(job) == 3
        stats = (await live.call("GET", f"/livejobs/{job['id']}/stats"))["result"][0]
        assert stats["droppedFrames"] == 0
    finally:
        if stuck is not None:
            stuck.close()
        publisher.cancel()
        await asyncio.gather(publisher, return_exceptions=True)


async def test_tokens_open_a_private_live_and_the_telemetry_and_expire(
    viewers_live: Live,
) -> None:
    live = viewers_live
    job = await create_job(live, "private", viewerTokenRequired=True)
    assert job["viewerTokenRequired"] is True
    publisher = asyncio.create_task(publish(live.rtmp_url(job["key"]), 12))
    try:
        await live.wait_status(job, 3)
        base = f"/websocketplay/{job['name']}"
        assert await status_of(ws_url(live, base)) == 403  # no token
        assert await status_of(ws_url(live, base + "?token=1.abc")) == 403  # not one
        made = (await live.call("POST", f"/livejobs/{job['id']}/tokens", json={"purpose": "view"}))[
            "result"
        ]
        assert made["url"].endswith(f"{base}?token={made['token']}")
        assert await status_of(ws_url(live, f"{base}?token={made['token']}")) == 101
        # A telemetry token opens the events socket, with no key header.
        events = (
            await live.call("POST", f"/livejobs/{job['id']}/tokens", json={"purpose": "events"})
        )["result"]
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(
                events["url"].replace(
                    f"ws://{live.settings.public_host}:{live.settings.http_port}",
                    ws_url(live, "").rstrip("/"),
                )
            ) as ws:
                first = await ws.receive_json(timeout=5)
            assert first["status"] == 3
        # A view token is not a telemetry token.
        telemetry = f"/api/v1/projects/{live.project.id}/livejobs/{job['id']}/events"
        assert await status_of(ws_url(live, f"{telemetry}?token={made['token']}")) == 403
        await asyncio.sleep(TOKEN_SECONDS + 0.5)
        assert await status_of(ws_url(live, f"{base}?token={made['token']}")) == 403  # expired
        bad = await live.session.post(
            live.api + f"/livejobs/{job['id']}/tokens",
            json={"purpose": "publish"},
            headers=live.project.headers,
        )
        assert bad.status == 400 and "purpose" in (await bad.json())["errors"][0]
    finally:
        assert (await publisher).returncode == 0
