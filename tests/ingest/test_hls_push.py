"""The HLS push ingest server (`ingest.hls.push`), one component: a fake admission
and a recording session, the real ffmpeg CLI (`-f hls -method PUT`) as publisher."""

from __future__ import annotations

import asyncio
import logging
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from http import HTTPStatus
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ingest.hls.push import ENDLIST_REASON, HlsPushServer
from ingest.session import MPEGTS, IngestProtocol, PublishRefused, PublishRequest
from tests.support.media import ffmpeg_warnings
from tests.support.publishers import ffmpeg_publish_cmd
from tests.support.waiting import async_wait_until

KEY = "k3y-0f-the-live-5ecret"

needs_ffmpeg = pytest.mark.skipif(
    shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None,
    reason="ffmpeg CLI not installed",
)


class RecordingSession:
    """A PublishSession that keeps the bytes; `room` (a future) is what wait_for_room
    hands out while it is pending."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.chunks = 0
        self.closes: list[str] = []
        self.closed_at: float | None = None
        self.last_data_at: float | None = None
        self.room: asyncio.Future[None] | None = None

    def on_metadata(self, metadata: Mapping[str, Any]) -> None:
        raise AssertionError("an HLS server calls on_data only")

    def on_media(self, kind: int, timestamp_ms: int, payload: bytes) -> None:
        raise AssertionError("an HLS server calls on_data only")

    def on_data(self, data: bytes) -> None:
        assert not self.closes, "data after on_close"
        self.data += data
        self.chunks += 1
        self.last_data_at = time.monotonic()

    def wait_for_room(self) -> Awaitable[None] | None:
        if self.room is not None and not self.room.done():
            return self.room
        return None

    def on_close(self, reason: str) -> None:
        self.closes.append(reason)
        self.closed_at = time.monotonic()


class FakeAdmit:
    """Records every request; refuses with `refusal` when set, else a new session."""

    def __init__(self) -> None:
        self.requests: list[PublishRequest] = []
        self.sessions: list[RecordingSession] = []
        self.refusal: PublishRefused | None = None
        self.delay_seconds = 0.0

    async def __call__(self, request: PublishRequest) -> RecordingSession:
        self.requests.append(request)
        if self.delay_seconds:
            await asyncio.sleep(self.delay_seconds)  # an admission that takes a while
        if self.refusal is not None:
            raise self.refusal
        session = RecordingSession()
        self.sessions.append(session)
        return session


StartServer = Callable[..., Awaitable[HlsPushServer]]


@pytest.fixture
def admit() -> FakeAdmit:
    return FakeAdmit()


@pytest.fixture
async def start_server(admit: FakeAdmit) -> AsyncIterator[StartServer]:
    servers: list[HlsPushServer] = []

    async def start(**options: Any) -> HlsPushServer:
        server = HlsPushServer(admit, host="127.0.0.1", port=0, **options)
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def _url(server: HlsPushServer, name: str, key: str = KEY) -> str:
    return f"http://127.0.0.1:{server.port}/hls/{key}/{name}"


def _hls_cmd(url: str, seconds: float, *, realtime: bool) -> list[str]:
    output = ["-f", "hls", "-method", "PUT", "-hls_time", "1", "-hls_list_size", "3"]
    output += ["-hls_flags", "delete_segments", url]
    return ffmpeg_publish_cmd(
        url, size="320x180", rate=30, seconds=seconds, realtime=realtime, output=output
    )


async def _raw(port: int, head: str, body: bytes = b"") -> bytes:
    """Send a request as is (no client normalising the path); the answer, to EOF."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head.encode() + body)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()


def _status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def _frames(path: Path) -> int:
    probe = subprocess.run(
        [
            *("ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0"),
            *("-show_entries", "stream=nb_read_frames", "-of", "csv=p=0", str(path)),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    # MPEG-TS: the stream is shown under its program too
    return int(probe.stdout.split()[-1].rstrip(","))


# ffmpeg as the publisher


@needs_ffmpeg
async def test_ffmpeg_publishes_every_frame(
    start_server: StartServer, admit: FakeAdmit, tmp_path: Path
) -> None:
    server = await start_server()
    process = await asyncio.create_subprocess_exec(
        *_hls_cmd(_url(server, "index.m3u8"), 6, realtime=False),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, stderr.decode()
    await async_wait_until(lambda: admit.sessions and admit.sessions[0].closes, 10)

    assert len(admit.requests) == 1
    request = admit.requests[0]
    assert (request.protocol, request.app, request.stream_key) == (IngestProtocol.HLS, "hls", KEY)
    assert request.container == MPEGTS
    assert request.remote.startswith("127.0.0.1:")
    session = admit.sessions[0]
    assert session.closes == [ENDLIST_REASON]
    assert server.publisher_count == 0

    recorded = tmp_path / "recorded.ts"
    recorded.write_bytes(session.data)
    assert await asyncio.to_thread(_frames, recorded) == 180
    assert await asyncio.to_thread(ffmpeg_warnings, recorded) == ""


@needs_ffmpeg
@pytest.mark.slow
async def test_a_publisher_that_stops_is_gone_after_three_target_durations(
    start_server: StartServer, admit: FakeAdmit
) -> None:
    server = await start_server()
    process = await asyncio.create_subprocess_exec(
        *_hls_cmd(_url(server, "index.m3u8"), 30, realtime=True),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        # Two segments in: the playlist said its target duration (1 s) by now.
        await async_wait_until(lambda: admit.sessions and admit.sessions[0].chunks >= 2, 20)
        await async_wait_until(lambda: len(admit.sessions[0].data) > 60_000, 20)
    finally:
        process.kill()
        await process.wait()
    killed_at = time.monotonic()
    session = admit.sessions[0]
    await async_wait_until(lambda: session.closes, 3 + 3)
    assert session.closes == ["publisher gone: no upload for 3 s"]
    assert session.closed_at is not None and session.last_data_at is not None
    assert session.closed_at - session.last_data_at >= 2.0
    assert session.closed_at - killed_at <= 3 + 3
    assert server.publisher_count == 0


# Admission


@pytest.mark.parametrize(
    "refusal",
    [
        PublishRefused("unknown stream key", HTTPStatus.NOT_FOUND),
        PublishRefused("the live job is offline", HTTPStatus.FORBIDDEN),
    ],
)
async def test_a_refused_key_is_answered_before_its_body_is_read(
    start_server: StartServer,
    admit: FakeAdmit,
    refusal: PublishRefused,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    admit.refusal = refusal
    server = await start_server()
    declared = 16 * 1024 * 1024
    for attempt in range(2):  # each request is refused, each asks admission again
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        head = (
            f"PUT /hls/{KEY}/index{attempt}.ts HTTP/1.1\r\nHost: x\r\n"
            f"Content-Length: {declared}\r\n\r\n"
        )
        writer.write(head.encode() + b"\x47" * 65536)  # 64 KiB of the 16 MiB declared
        await writer.drain()
        answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert _status(answer) == refusal.status
        assert b"connection: close" in answer.lower()
        body = await asyncio.wait_for(reader.read(), 5)  # closed after a short linger
        assert refusal.description.encode() in body
        writer.close()
    assert len(admit.requests) == 2
    assert server.publisher_count == 0
    secret = KEY[3:]
    assert caplog.records
    assert [r.getMessage() for r in caplog.records if secret in r.getMessage()] == []


async def test_a_refused_ffmpeg_publisher_is_refused_at_every_request(
    start_server: StartServer, admit: FakeAdmit, http: aiohttp.ClientSession
) -> None:
    admit.refusal = PublishRefused("unknown stream key", HTTPStatus.NOT_FOUND)
    server = await start_server()
    for name in ("index0.ts", "index.m3u8"):
        async with http.put(_url(server, name), data=b"\x47" * 188) as response:
            assert response.status == HTTPStatus.NOT_FOUND
            assert await response.text() == "unknown stream key\n"
    assert [r.stream_key for r in admit.requests] == [KEY, KEY]


async def test_concurrent_requests_of_a_refused_key_each_ask_admission(
    start_server: StartServer, admit: FakeAdmit, http: aiohttp.ClientSession
) -> None:
    admit.refusal = PublishRefused("already publishing", HTTPStatus.CONFLICT)
    admit.delay_seconds = 0.05
    server = await start_server()

    async def put(n: int) -> int:
        async with http.put(_url(server, f"seg{n}.ts"), data=bytes(188)) as response:
            return response.status

    assert await asyncio.gather(*(put(n) for n in range(3))) == [HTTPStatus.CONFLICT] * 3
    assert len(admit.requests) == 3
    assert server.publisher_count == 0


async def test_100_continue_is_sent_only_once_admitted(
    start_server: StartServer, admit: FakeAdmit, http: aiohttp.ClientSession
) -> None:
    server = await start_server()
    admit.refusal = PublishRefused("unknown stream key", HTTPStatus.NOT_FOUND)
    async with http.put(_url(server, "a.ts"), data=bytes(188), expect100=True) as response:
        assert response.status == HTTPStatus.NOT_FOUND
    admit.refusal = None
    async with http.put(_url(server, "a.ts"), data=bytes(188), expect100=True) as response:
        assert response.status == HTTPStatus.CREATED
    assert len(admit.sessions[0].data) == 188


async def test_a_request_in_flight_is_told_why_onair_rejected_the_stream(
    start_server: StartServer, admit: FakeAdmit
) -> None:
    server = await start_server()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    head = f"PUT /hls/{KEY}/a.ts HTTP/1.1\r\nHost: x\r\nContent-Length: 1880\r\n\r\n"
    writer.write(head.encode() + b"\x47" * 376)
    await async_wait_until(lambda: admit.sessions and len(admit.sessions[0].data) == 376, 5)
    admit.requests[0].reject("the source is too large")
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert _status(answer) == HTTPStatus.FORBIDDEN
    assert answer.endswith(b"the source is too large\n")
    assert admit.sessions[0].closes == ["publish rejected: the source is too large"]


async def test_one_session_per_key_across_connections_and_requests(
    start_server: StartServer, admit: FakeAdmit, http: aiohttp.ClientSession
) -> None:
    server = await start_server()
    packets = [bytes([0x47, n]) + bytes(186) for n in range(8)]

    async def put(n: int) -> int:
        async with http.put(_url(server, f"seg{n}.ts"), data=packets[n]) as response:
            return response.status

    assert await asyncio.gather(*(put(n) for n in range(8))) == [HTTPStatus.CREATED] * 8
    assert len(admit.requests) == 1
    assert server.publisher_count == 1
    session = admit.sessions[0]
    # Whole segments, none interleaved (each one TS packet here), in arrival order.
    fed = [bytes(session.data[i : i + 188]) for i in range(0, len(session.data), 188)]
    assert sorted(fed) == packets
    async with http.delete(_url(server, "seg0.ts")) as response:
        assert response.status == HTTPStatus.NO_CONTENT
    async with http.get(_url(server, "seg0.ts")) as response:
        assert response.status == HTTPStatus.METHOD_NOT_ALLOWED
    async with http.put(f"http://127.0.0.1:{server.port}/other/{KEY}/a.ts") as response:
        assert response.status == HTTPStatus.NOT_FOUND
    assert len(admit.requests) == 1


async def test_a_backup_publisher_of_the_same_key_is_a_session_of_its_own(
    start_server: StartServer, admit: FakeAdmit, http: aiohttp.ClientSession
) -> None:
    server = await start_server()
    packet = bytes([0x47, 1]) + bytes(186)
    base = f"http://127.0.0.1:{server.port}"
    for app in ("hls", "hls-backup"):
        async with http.put(f"{base}/{app}/{KEY}/seg0.ts", data=packet) as response:
            assert response.status == HTTPStatus.CREATED, app
    assert [r.app for r in admit.requests] == ["hls", "hls-backup"]
    assert {r.stream_key for r in admit.requests} == {KEY}
    assert server.publisher_count == 2
    assert [bytes(s.data) for s in admit.sessions] == [packet, packet]


async def test_a_close_from_onair_ends_the_session_and_the_key_is_admitted_again(
    start_server: StartServer, admit: FakeAdmit, http: aiohttp.ClientSession
) -> None:
    server = await start_server()
    async with http.put(_url(server, "a.ts"), data=b"\x47" + bytes(187)) as response:
        assert response.status == HTTPStatus.CREATED
    admit.requests[0].close("the live job went offline")
    assert admit.sessions[0].closes == ["the live job went offline"]
    assert server.publisher_count == 0
    async with http.put(_url(server, "b.ts"), data=b"\x47" + bytes(187)) as response:
        assert response.status == HTTPStatus.CREATED
    assert len(admit.requests) == 2
    assert len(admit.sessions[1].data) == 188
    admit.requests[1].reject("the source is too large")
    assert admit.sessions[1].closes == ["publish rejected: the source is too large"]


async def test_stop_closes_every_session(start_server: StartServer, admit: FakeAdmit) -> None:
    server = await start_server()
    async with aiohttp.ClientSession() as http:
        for key in ("key-number-one", "key-number-two"):
            async with http.put(_url(server, "a.ts", key), data=bytes(188)) as response:
                assert response.status == HTTPStatus.CREATED
    assert server.publisher_count == 2
    await server.stop()
    assert [s.closes for s in admit.sessions] == [["server stopping"]] * 2
    with pytest.raises(aiohttp.ClientConnectionError):
        async with aiohttp.ClientSession() as http:
            await http.put(_url(server, "a.ts"), data=b"")


# Limits


async def test_a_too_large_segment_is_413_and_not_fed(
    start_server: StartServer, admit: FakeAdmit, http: aiohttp.ClientSession
) -> None:
    server = await start_server(max_segment_bytes=100_000)
    declared = bytes(200_000)
    async with http.put(_url(server, "big.ts"), data=declared) as response:
        assert response.status == HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    assert admit.requests == []  # refused on its Content-Length, before admission

    async def chunked() -> AsyncIterator[bytes]:
        for _ in range(20):
            yield bytes(10_000)

    async with http.put(_url(server, "big.ts"), data=chunked()) as response:
        assert response.status == HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    fed = len(admit.sessions[0].data)
    assert fed <= 100_000 and fed % 188 == 0  # cut at the limit, on a TS packet
    async with http.put(_url(server, "index.m3u8"), data=bytes(300 * 1024)) as response:
        assert response.status == HTTPStatus.REQUEST_ENTITY_TOO_LARGE


@pytest.mark.parametrize(
    "path",
    [
        f"/hls/{KEY}/..%2F..%2Fetc%2Fpasswd.ts",
        f"/hls/{KEY}/%2e%2e",
        f"/hls/{KEY}/../index.m3u8",
        f"/hls/{KEY}/a/b.ts",
        f"/hls/{KEY}/.hidden.ts",
        f"/hls/{KEY}/" + "a" * 200 + ".ts",
        f"/hls/{KEY}/index.txt",
        "/hls/../index.m3u8",
        "/hls/%2e%2e/index.m3u8",
    ],
)
async def test_names_that_are_not_one_path_component_are_404(
    start_server: StartServer, admit: FakeAdmit, path: str
) -> None:
    server = await start_server()
    head = f"PUT {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\n"
    assert _status(await _raw(server.port, head, b"\x47abc")) == HTTPStatus.NOT_FOUND
    assert admit.requests == []


async def test_too_many_requests_per_key_and_per_ip_are_429(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    server = await start_server(max_requests_per_second=3)
    statuses = []
    for n in range(6):
        async with http.put(_url(server, f"s{n}.ts"), data=bytes(188)) as response:
            statuses.append(response.status)
    assert statuses[:3] == [HTTPStatus.CREATED] * 3
    assert HTTPStatus.TOO_MANY_REQUESTS in statuses[3:]

    by_ip = await start_server(max_requests_per_second=3, per_ip_exempt_loopback=False)
    statuses = []
    for n in range(6):  # a key each: the IP's bucket is what runs out
        async with http.put(_url(by_ip, "s.ts", f"key-number-{n}"), data=b"") as response:
            statuses.append(response.status)
    assert statuses[:3] == [HTTPStatus.CREATED] * 3
    assert HTTPStatus.TOO_MANY_REQUESTS in statuses[3:]


async def test_publishers_past_the_limit_are_503(
    start_server: StartServer, admit: FakeAdmit, http: aiohttp.ClientSession
) -> None:
    server = await start_server(max_publishers=1)
    async with http.put(_url(server, "a.ts", "key-number-one"), data=b"") as response:
        assert response.status == HTTPStatus.CREATED
    async with http.put(_url(server, "a.ts", "key-number-two"), data=b"") as response:
        assert response.status == HTTPStatus.SERVICE_UNAVAILABLE
    assert [r.stream_key for r in admit.requests] == ["key-number-one"]


async def test_a_slow_body_times_out(start_server: StartServer, admit: FakeAdmit) -> None:
    server = await start_server(request_timeout_seconds=0.5)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    head = f"PUT /hls/{KEY}/a.ts HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"
    writer.write(head.encode() + b"\x47" * 10)
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert _status(answer) == HTTPStatus.REQUEST_TIMEOUT
    assert admit.sessions[0].data == b""  # not even one whole TS packet came


# Backpressure


async def test_nothing_more_is_read_while_the_session_has_no_room(
    start_server: StartServer, admit: FakeAdmit
) -> None:
    server = await start_server()
    body = b"\x47" * (24 * 1024 * 1024)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    head = f"PUT /hls/{KEY}/a.ts HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
    writer.write(head.encode())
    await writer.drain()
    await async_wait_until(lambda: admit.sessions, 5)
    session = admit.sessions[0]
    session.room = asyncio.get_running_loop().create_future()
    sending = asyncio.create_task(_send(writer, body))
    await async_wait_until(lambda: session.data, 5)
    held = len(session.data)
    await asyncio.sleep(0.5)  # asserting that nothing happens: nothing to wait for
    assert len(session.data) == held
    assert not sending.done()  # TCP holds the publisher back
    session.room.set_result(None)
    await asyncio.wait_for(sending, 10)
    answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    writer.close()
    assert _status(answer) == HTTPStatus.CREATED
    assert bytes(session.data) == body


async def _send(writer: asyncio.StreamWriter, body: bytes) -> None:
    writer.write(body)
    await writer.drain()
