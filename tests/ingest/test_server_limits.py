"""What a stranger can hold on the RTMP port is bounded, and what they cause is logged
rate-limited: pending-connection limits (total and per IP), the handshake deadline,
no leaked file descriptor or task, and log floods (`ingest.ratelog`)."""

from __future__ import annotations

import asyncio
import logging
import os

import pytest

from api.settings import ConfigError, load_settings
from ingest.connlimit import ConnectionLimiter, is_loopback
from ingest.ratelog import RateLimitedLog
from ingest.rtmp.server import RtmpServer
from tests.support.fakes import Harness
from tests.support.rtmp_client import RawClient, StartServer, status_info
from tests.support.waiting import async_wait_until

SERVER_LOGGER = "ingest.rtmp.server"


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def connect_from(port: int, source_ip: str = "127.0.0.1") -> RawClient:
    """A raw client bound to `source_ip` (any 127.x.y.z is this host's loopback)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source_ip, 0))
    return RawClient(reader, writer)


async def closed_by_server(client: RawClient, within: float) -> bool:
    """Whether the server closes the connection (EOF or reset) within `within` seconds."""
    try:
        async with asyncio.timeout(within):
            while await client.reader.read(65536):
                pass
    except TimeoutError:
        return False
    except ConnectionError:
        pass
    return True


def server_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == SERVER_LOGGER]


# The rate-limited log, with an injected clock


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_ratelog_writes_the_first_lines_then_one_summary_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="test.ratelog")
    clock = FakeClock()
    log = RateLimitedLog(
        logging.getLogger("test.ratelog"),
        lines_per_interval=3,
        interval_seconds=10,
        clock=clock,
        prefix="[x] ",
    )
    written = [log.log("refused", logging.INFO, "line %d", i) for i in range(100)]
    assert written == [True] * 3 + [False] * 97
    assert log.suppressing
    other = [log.log("handshake", logging.WARNING, "other %d", i) for i in range(5)]
    assert other == [True] * 3 + [False] * 2  # each reason has its own budget
    clock.now += 9.9
    log.flush()  # not over yet: nothing written
    assert [r.getMessage() for r in caplog.records][-1] == "other 2"
    clock.now += 0.1
    assert log.log("refused", logging.INFO, "after")  # a new window; the old one summed up
    messages = [r.getMessage() for r in caplog.records]
    assert messages[-2:] == ["[x] suppressed 97 similar lines (refused) in the last 10 s", "after"]
    log.flush()
    summary = caplog.records[-1]
    assert summary.getMessage() == "[x] suppressed 2 similar lines (handshake) in the last 10 s"
    assert summary.levelno == logging.WARNING
    assert not log.suppressing
    assert log.suppressed_total == 99
    assert len(caplog.records) == 3 + 3 + 2 + 1  # 105 calls, 9 lines


def test_ratelog_bounds_its_keys_and_skips_disabled_levels(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="test.ratelog")
    clock = FakeClock()
    log = RateLimitedLog(
        logging.getLogger("test.ratelog"), lines_per_interval=1, clock=clock, max_keys=4
    )
    for i in range(1000):
        log.log(f"key {i}", logging.INFO, "line %d", i)
    assert len(log._windows) == 4  # 3 keys, then every other key shares "(other)"
    assert len(caplog.records) == 4
    assert not log.log("anything", logging.DEBUG, "not enabled")
    log.flush(force=True)
    assert caplog.records[-1].getMessage().startswith("suppressed 996 similar lines ((other))")


def test_connection_limiter_counts_per_address_and_in_total() -> None:
    limiter = ConnectionLimiter(max_total=3, max_per_address=2)
    a1, a2 = limiter.acquire("a"), limiter.acquire("a")
    assert a1 is not None and a2 is not None
    assert limiter.acquire("a") is None  # per address
    b1 = limiter.acquire("b")
    assert b1 is not None
    assert limiter.acquire("c") is None  # in total
    assert (limiter.refused_per_address, limiter.refused_total) == (1, 1)
    assert limiter.refusal_reason("c") == "3 connections (limit 3)"
    a1.release()
    a1.release()  # idempotent
    assert limiter.total == 2 and limiter.held_by("a") == 1
    assert limiter.refusal_reason("b", "x") == "1 x from b (limit 2)"
    c1 = limiter.acquire("c")
    assert c1 is not None
    for slot in (a2, b1, c1):
        slot.release()
    assert limiter.total == 0 and limiter._per_address == {}


def test_loopback_peers_have_only_the_total_limit() -> None:
    assert all(map(is_loopback, ["127.0.0.1", "127.0.1.9", "::1", "::ffff:127.0.0.1"]))
    assert not any(map(is_loopback, ["10.0.0.1", "2001:db8::1", "::ffff:10.0.0.1", "", "x"]))
    limiter = ConnectionLimiter(max_total=10, max_per_address=2, per_address_exempt=is_loopback)
    assert all(limiter.acquire("127.0.0.1") for _ in range(10))  # a local proxy's peers
    assert limiter.acquire("127.0.0.1") is None and limiter.refused_total == 1


def test_pending_limit_settings_are_validated() -> None:
    assert (load_settings({}).rtmp_max_pending, load_settings({}).rtmp_max_pending_per_ip) == (
        64,
        8,
    )
    env = {"ONAIR_RTMP_MAX_PENDING": "200", "ONAIR_RTMP_MAX_PENDING_PER_IP": "16"}
    settings = load_settings(env)
    assert (settings.rtmp_max_pending, settings.rtmp_max_pending_per_ip) == (200, 16)
    for name in ("ONAIR_RTMP_MAX_PENDING", "ONAIR_RTMP_MAX_PENDING_PER_IP"):
        for bad in ("0", "-3", "many", "1.5"):
            with pytest.raises(ConfigError, match=name):
                load_settings({name: bad})


# The server's limits


async def test_a_connection_over_the_pending_limit_is_closed_at_once(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=SERVER_LOGGER)
    server = await start_server(max_pending=4, max_pending_per_ip=100)
    idle = [await connect_from(server.port) for _ in range(4)]
    try:
        await async_wait_until(lambda: server.pending_count == 4, 5, "4 pending connections")
        extra = await connect_from(server.port)
        try:
            extra.writer.write(b"\x03" + bytes(1536))  # a handshake that is never read
            assert await closed_by_server(extra, within=2)  # long before any deadline
        finally:
            extra.close()
        assert server.refused_over_limit == 1
        assert (
            f"[rtmp {extra.local}] refused: 4 connections waiting to publish (limit 4)"
            in server_lines(caplog)
        )
        for client in idle:  # the four waiting ones are untouched
            assert not client.reader.at_eof()
    finally:
        for client in idle:
            client.close()
    await async_wait_until(lambda: server.pending_count == 0, 5, "the slots to be freed")
    # Freed slots admit again.
    client = await connect_from(server.port)
    try:
        await client.handshake()
        client.command("connect", 1, {"app": "live"})
        assert (await client.read_command()).name == "_result"
    finally:
        client.close()


async def test_the_per_ip_limit_leaves_other_addresses_alone(start_server: StartServer) -> None:
    # Loopback is exempt by default (a local proxy); the test's 127.x peers stand for
    # remote addresses.
    server = await start_server(max_pending=10, max_pending_per_ip=2, per_ip_exempt_loopback=False)
    first = [await connect_from(server.port, "127.0.0.1") for _ in range(2)]
    try:
        await async_wait_until(lambda: server.pending_count == 2, 5, "2 pending connections")
        third = await connect_from(server.port, "127.0.0.1")
        assert await closed_by_server(third, within=2)
        third.close()
        other = await connect_from(server.port, "127.0.0.2")
        try:
            await other.handshake()  # served: another address has its own budget
            other.command("connect", 1, {"app": "live"})
            assert (await other.read_command()).name == "_result"
            assert server.pending.held_by("127.0.0.2") == 1
        finally:
            other.close()
        assert server.pending.refused_per_address == 1 and server.pending.refused_total == 0
    finally:
        for client in first:
            client.close()


async def test_by_default_loopback_peers_share_only_the_total(start_server: StartServer) -> None:
    """Behind a local RTMPS terminator every publisher is 127.0.0.1; an encoder host
    starting many channels at once is the same: 8 per address would refuse them."""
    server = await start_server(max_pending=12)
    clients = [await connect_from(server.port) for _ in range(12)]
    try:
        await async_wait_until(lambda: server.pending_count == 12, 5, "12 pending connections")
        extra = await connect_from(server.port)
        assert await closed_by_server(extra, within=2)  # the total still holds
        extra.close()
        assert (server.pending.refused_per_address, server.pending.refused_total) == (0, 1)
    finally:
        for client in clients:
            client.close()


async def test_publishing_connections_do_not_count_as_pending(
    start_server: StartServer, harness: Harness
) -> None:
    server = await start_server(max_pending=2, max_pending_per_ip=2, per_ip_exempt_loopback=False)
    publishers: list[RawClient] = []
    waiting: list[RawClient] = []
    try:
        for i in range(3):  # one after the other: each is pending until it publishes
            client = await connect_from(server.port)
            publishers.append(client)
            await client.handshake()
            status = await client.publish(f"key{i}")
            assert status_info(status)["code"] == "NetStream.Publish.Start"
        assert server.pending_count == 0 and server.connection_count == 3
        waiting = [await connect_from(server.port) for _ in range(2)]  # the full budget
        await async_wait_until(lambda: server.pending_count == 2, 5, "2 pending connections")
        for client in waiting:
            await client.handshake()
        assert server.refused_over_limit == 0
    finally:
        for client in publishers + waiting:
            client.close()


@pytest.mark.parametrize("sent", [b"", b"\x03" + bytes(700)], ids=["nothing", "half of C1"])
async def test_the_handshake_has_a_deadline(
    start_server: StartServer, caplog: pytest.LogCaptureFixture, sent: bytes
) -> None:
    caplog.set_level(logging.DEBUG, logger=SERVER_LOGGER)
    server = await start_server(handshake_timeout_seconds=0.3, publish_timeout_seconds=10)
    client = await connect_from(server.port)
    try:
        client.writer.write(sent)
        started = asyncio.get_running_loop().time()
        assert await closed_by_server(client, within=3)
        assert asyncio.get_running_loop().time() - started < 2  # not the 10 s publish deadline
    finally:
        client.close()
    await async_wait_until(lambda: server.connection_count == 0, 5, "the connection to end")
    assert [line for line in server_lines(caplog) if client.prefix in line] == [
        f"{client.prefix} closed: no handshake within 0.3 s"
    ]
    assert server.pending_count == 0


async def test_refused_sockets_leak_no_file_descriptor_and_no_task(
    start_server: StartServer,
) -> None:
    # The defaults (64 pending, 8 per address), the 127.x peers standing for remote ones.
    server = await start_server(per_ip_exempt_loopback=False)
    await asyncio.sleep(0)
    fds_before, tasks_before = open_fds(), len(asyncio.all_tasks())
    clients = [await connect_from(server.port) for _ in range(50)]
    try:
        # 50 client sockets here; the server keeps only the 8 it accepted.
        await async_wait_until(lambda: open_fds() <= fds_before + 50 + 8, 5, "refused fds closed")
        assert server.refused_over_limit == 42
        assert len(asyncio.all_tasks()) <= tasks_before + 8  # no task for a refused one
    finally:
        for client in clients:
            client.close()
    await async_wait_until(lambda: server.connection_count == 0, 5, "the connections to end")
    await async_wait_until(lambda: open_fds() <= fds_before, 5, "every fd closed")
    await async_wait_until(
        lambda: len(asyncio.all_tasks()) <= tasks_before, 5, "every connection task done"
    )
    assert server.pending_count == 0


async def refused_attempt(port: int) -> None:
    client = await connect_from(port)
    try:
        await client.handshake()
        status = await client.publish("forbidden")  # the harness refuses this key
        assert status_info(status)["code"] == "NetStream.Publish.BadName"
        await client.wait_closed()
    finally:
        client.close()


async def test_two_thousand_refused_publishers_write_a_few_dozen_lines(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=SERVER_LOGGER)
    server = RtmpServer(harness.admit, host="127.0.0.1", port=0)
    await server.start()
    try:
        for _ in range(250):  # 8 at a time: the per-IP limit is not what this is about
            await asyncio.gather(*(refused_attempt(server.port) for _ in range(8)))
        assert len(harness.refusals) == 2000
        await async_wait_until(lambda: server.connection_count == 0, 10, "the connections to end")
    finally:
        await server.stop()  # writes the summary of what was held back
    lines = server_lines(caplog)
    closed = [line for line in lines if "closed: publish refused: unknown stream key" in line]
    summaries = [line for line in lines if "similar lines (refused)" in line]
    assert len(lines) <= 40, lines[:50]
    assert 1 <= len(closed) <= 10 and summaries
    held_back = sum(int(line.split("suppressed ")[1].split()[0]) for line in summaries)
    assert len(closed) + held_back == 2000
