"""The control API holds nothing for a stranger: request-read deadlines, bounded
connections, and a /healthz that cannot be turned against admission.

Servers are started the way `onair run` starts them (`web.AppRunner` + `listen_http`,
see `api.cli.serve`) and, for the deadlines, as the tests do (`TestServer`)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from api.app import DATABASE_KEY, HttpListener, RouteAccessLogger, create_app, listen_http
from api.health import SharedCheck
from api.keys import stream_key_digest
from api.settings import Settings, load_settings
from tests.support.service import Project, make_projects, start_api

pytestmark = pytest.mark.slow  # slow clients held for seconds

HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: onair\r\n\r\n"


def plain_settings(tmp_path: Path) -> Settings:
    """Settings with no S3 (nothing here publishes, so none is asked); the RTMP, SRT and
    HLS push ingests on ports of their own choosing (two apps share these settings)."""
    ingest = {f"{kind}_host": "127.0.0.1" for kind in ("rtmp", "srt", "hls_ingest")}
    ports = {f"{kind}_port": 0 for kind in ("rtmp", "srt", "hls_ingest")}
    return load_settings({}, data_dir=tmp_path / "data", **ingest, **ports)


@asynccontextmanager
async def serving(
    app: web.Application, **limits: Any
) -> AsyncIterator[tuple[web.AppRunner, HttpListener]]:
    """`app` served as `api.cli.serve` serves it, on 127.0.0.1 and a free port."""
    runner = web.AppRunner(
        app, handle_signals=False, access_log=None, access_log_class=RouteAccessLogger
    )
    await runner.setup()
    listener = await listen_http(runner, "127.0.0.1", 0, **limits)
    try:
        yield runner, listener
    finally:
        listener.close()
        await runner.cleanup()


class Raw:
    """A raw TCP client: exactly the bytes the test writes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.received = b""

    @classmethod
    async def connect(cls, port: int, source_ip: str = "127.0.0.1") -> Raw:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source_ip, 0))
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def closed_after(self, within: float) -> float | None:
        """Seconds until the server closes the connection; None if still open after `within`."""
        started = time.monotonic()
        try:
            async with asyncio.timeout(within):
                while chunk := await self.reader.read(65536):
                    self.received += chunk
        except TimeoutError:
            return None
        except ConnectionError:
            pass
        return time.monotonic() - started

    async def read_until(self, marker: bytes, within: float) -> bytes:
        async with asyncio.timeout(within):
            while marker not in self.received:
                chunk = await self.reader.read(65536)
                if not chunk:
                    break
                self.received += chunk
        return self.received

    def close(self) -> None:
        self.writer.transport.abort()


def unfinished_requests(project: Project) -> dict[str, bytes]:
    """What a slow or hostile client may leave hanging."""
    body_start = b'{"jobTemplateId": 2'
    return {
        "nothing": b"",
        "half a request line": b"GET /hea",
        "headers without their end": b"GET /healthz HTTP/1.1\r\nHost: onair\r\n",
        "a body that never comes": (
            f"POST /api/v1/projects/{project.id}/livejobs HTTP/1.1\r\nHost: onair\r\n"
            f"Authorization: Bearer {project.key}\r\nContent-Type: application/json\r\n"
            f"Content-Length: 400\r\n\r\n"
        ).encode()
        + body_start,
    }


async def assert_unfinished_requests_dropped(
    port: int, project: Project, deadline: float, slack: float, with_body: bool = True
) -> None:
    """Each unfinished request is dropped unanswered after about `deadline` seconds; so is
    an idle kept-alive connection; a body that never comes gets a 408 first."""
    requests = unfinished_requests(project)
    if not with_body:
        del requests["a body that never comes"]
    clients = {name: await Raw.connect(port) for name in requests}
    idle = await Raw.connect(port)
    try:
        await idle.send(HEALTHZ)
        await idle.read_until(b'"store": true', 5)
        assert idle.received.startswith(b"HTTP/1.1 200")
        idle.received = b""
        for name, client in clients.items():
            await client.send(requests[name])
        body = clients.get("a body that never comes")
        watched = {**clients, "an idle kept-alive connection": idle}
        # The body's 408 is followed by at most a deadline of lingering before closing.
        results = await asyncio.gather(
            *(c.closed_after(2 * deadline + slack) for c in watched.values())
        )
        for (name, client), after in zip(watched.items(), results, strict=True):
            assert after is not None, f"{name}: still open after {2 * deadline + slack} s"
            assert after >= deadline * 0.8, (name, after)  # not before the deadline
            assert client is body or after <= deadline + slack, (name, after)
            if client is not body:
                assert client.received == b"", (name, client.received)  # dropped unanswered
        if body is not None:
            assert body.received.startswith(b"HTTP/1.1 408"), body.received
            assert b"request body not received within" in body.received
    finally:
        for client in [*clients.values(), idle]:
            client.close()


@pytest.mark.timeout(60)
async def test_unfinished_requests_are_dropped_after_the_default_deadline(
    tmp_path: Path,
) -> None:
    """The defaults, for `onair run` and for the tests' TestServer: about 10 s for the
    headers (the body's deadline, the same constant, is tested with a short one below)."""
    settings = plain_settings(tmp_path)
    [project] = make_projects(settings.db_path, 1)
    test_server = await start_api(settings)
    try:
        async with serving(create_app(settings, storage_ping=lambda: True)) as (_, listener):
            await asyncio.gather(
                assert_unfinished_requests_dropped(listener.port, project, 10, 3, False),
                assert_unfinished_requests_dropped(test_server.port or 0, project, 10, 3, False),
            )
    finally:
        await test_server.close()


async def test_the_read_deadline_is_a_parameter_and_spares_a_slow_but_steady_client(
    tmp_path: Path,
) -> None:
    settings = plain_settings(tmp_path)
    [project] = make_projects(settings.db_path, 1)
    app = create_app(settings, storage_ping=lambda: True, request_read_timeout_seconds=0.6)
    async with serving(app) as (_, listener):
        await assert_unfinished_requests_dropped(listener.port, project, 0.6, 2)
        steady = await Raw.connect(listener.port)
        try:
            for piece in (b"GET /healthz HTTP/1.1\r\n", b"Host: onair\r\n", b"\r\n"):
                await steady.send(piece)
                await asyncio.sleep(0.15)  # 0.45 s in all, within the 0.6 s
            await steady.read_until(b'"store": true', 5)
            assert steady.received.startswith(b"HTTP/1.1 200"), steady.received
        finally:
            steady.close()


async def test_connections_past_the_limits_are_closed_at_once(tmp_path: Path) -> None:
    app = create_app(plain_settings(tmp_path), storage_ping=lambda: True)
    limits = {"max_connections": 5, "max_connections_per_ip": 3, "per_ip_exempt_loopback": False}
    async with serving(app, **limits) as (_, listener):
        held = [await Raw.connect(listener.port, "127.0.0.1") for _ in range(3)]
        try:
            await asyncio.sleep(0.05)
            extra = await Raw.connect(listener.port, "127.0.0.1")  # a 4th from one address
            assert await extra.closed_after(2) is not None
            extra.close()
            held += [await Raw.connect(listener.port, ip) for ip in ("127.0.0.2", "127.0.0.3")]
            await asyncio.sleep(0.05)
            sixth = await Raw.connect(listener.port, "127.0.0.4")  # 5 open in all
            assert await sixth.closed_after(2) is not None
            sixth.close()
            assert listener.limiter.refused_per_address == 1
            assert listener.limiter.refused_total == 1
            await held[3].send(HEALTHZ)  # the admitted ones are served
            await held[3].read_until(b'"store": true', 5)
            assert held[3].received.startswith(b"HTTP/1.1 200")
            held.pop(0).close()  # a freed slot admits again
            await asyncio.sleep(0.05)
            again = await Raw.connect(listener.port, "127.0.0.4")
            held.append(again)
            await again.send(HEALTHZ)
            await again.read_until(b'"store": true', 5)
            assert again.received.startswith(b"HTTP/1.1 200")
        finally:
            for client in held:
                client.close()
        await asyncio.sleep(0.05)
        assert listener.limiter.total == 0


class SlowPing:
    """A storage ping that takes `seconds` on its thread, and counts its calls."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.calls = 0
        self.threads: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self) -> bool:
        with self._lock:
            self.calls += 1
            self.threads.add(threading.current_thread().name)
        time.sleep(self.seconds)
        return True


async def test_a_healthz_flood_pings_storage_once_and_leaves_admission_alone(
    tmp_path: Path,
) -> None:
    ping = SlowPing(0.3)
    server = await start_api(plain_settings(tmp_path), storage_ping=ping)
    database = server.app[DATABASE_KEY]
    try:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def healthz() -> int:
                async with session.get(server.make_url("/healthz")) as response:
                    await response.read()
                    return response.status

            flood = [asyncio.create_task(healthz()) for _ in range(200)]
            await asyncio.sleep(0.05)  # the flood is in flight
            # What admission does meanwhile: a database lookup, and work on the default
            # executor (asyncio.to_thread, e.g. building a pipeline).
            started = time.monotonic()
            job = await database.call(database.get_job_by_digest, stream_key_digest("no-such-key"))
            await asyncio.to_thread(lambda: None)
            admission_seconds = time.monotonic() - started
            statuses = await asyncio.gather(*flood)
        assert statuses == [200] * 200
        assert job is None
        assert admission_seconds < 1.0, admission_seconds  # before: ~10 s behind 200 pings
        assert ping.calls <= 2, ping.calls
        assert all(name.startswith("healthz") for name in ping.threads), ping.threads
    finally:
        await server.close()


class StepClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_shared_check_runs_once_at_a_time_and_reuses_its_result() -> None:
    clock = StepClock()
    release = asyncio.Event()
    answers = iter([True, False])

    async def check() -> bool:
        await release.wait()
        return next(answers)

    shared = SharedCheck(check, max_age_seconds=2.0, timeout_seconds=5.0, clock=clock)
    waiting = [asyncio.create_task(shared.result()) for _ in range(50)]
    await asyncio.sleep(0)
    release.set()
    assert await asyncio.gather(*waiting) == [True] * 50
    assert shared.runs == 1
    clock.now = 1.9
    assert await shared.result() is True and shared.runs == 1  # still fresh
    clock.now = 2.0
    assert await shared.result() is False and shared.runs == 2  # checked again


async def test_shared_check_answers_false_when_the_check_hangs() -> None:
    never = asyncio.Event()
    calls: list[float] = []

    async def hangs() -> bool:
        calls.append(time.monotonic())
        await never.wait()
        return True

    shared = SharedCheck(hangs, timeout_seconds=0.1)
    assert await shared.result() is False
    assert await shared.result() is False
    assert len(calls) == 1  # the hung check is not started again meanwhile
    await shared.close()
