"""Issue 9, item 3: nothing a stranger sends can exhaust the host.

A probe held 420 idle RTMP sockets open: the file descriptors ran out and the API
stopped answering. Here the whole service (RTMP ingest and API on one loop, as
`api.app.create_app` assembles it) faces the same 420 sockets, from a process of
their own, on a host whose descriptor limit leaves room for the pending-connection
limit (64) and little more. The API must keep answering, and afterwards a real
publisher (the ffmpeg CLI) must still go live.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import secrets
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from api.app import RTMP_KEY, create_app
from packager.s3server import EmbeddedS3
from tests.support.media import SMALL_TEMPLATE
from tests.support.ports import free_port
from tests.support.publishers import publish
from tests.support.service import Live, make_projects, make_settings
from tests.support.waiting import async_wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]  # real time, the whole service

IDLE_SOCKETS = 420
PENDING_LIMIT = 64  # the default of ONAIR_RTMP_MAX_PENDING
# Descriptors the test process may open beyond the pending limit while the idle sockets
# are held: a refused socket lives until the end of its loop iteration, and asyncio
# accepts up to `backlog` (128) per iteration, so a burst briefly holds up to two
# batches more; then the API calls and the S3 ping. Still fewer than the 420 need.
FD_HEADROOM = 2 * 128 + 64

# Opens `count` TCP connections that never send a byte, 8 per source address
# (127.0.1.x: the per-IP limit is not what stops them, the total is), reports how many
# got through the TCP handshake, and holds them all until the test ends.
IDLE_CLIENT = r"""
import selectors, socket, sys, time
port, count = int(sys.argv[1]), int(sys.argv[2])
sys.stdin.readline()  # "go"
selector, sockets = selectors.DefaultSelector(), []
for i in range(count):
    s = socket.socket()
    s.bind((f"127.0.1.{1 + i // 8}", 0))
    s.setblocking(False)
    s.connect_ex(("127.0.0.1", port))
    selector.register(s, selectors.EVENT_WRITE)
    sockets.append(s)
connected, deadline = 0, time.monotonic() + 20
while selector.get_map() and time.monotonic() < deadline:
    for key, _ in selector.select(0.5):
        selector.unregister(key.fileobj)
        connected += key.fileobj.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
print(connected, flush=True)
sys.stdin.readline()  # held until the test is done
"""


# A user of the API, from a process of its own (so that only the service's process is
# short of descriptors): for each "url<TAB>authorization" line, a GET on a new
# connection; prints "status seconds" ("error seconds" on failure).
API_USER = r"""
import sys, time, urllib.request
for line in sys.stdin:
    url, authorization = line.rstrip("\n").split("\t")
    request = urllib.request.Request(url, headers={"Authorization": authorization})
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            response.read()
            status = str(response.status)
    except Exception as exc:
        status = type(exc).__name__
    print(status, time.monotonic() - started, flush=True)
"""


class ApiUser:
    """Asks the API from another process, each time on a new TCP connection."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls) -> ApiUser:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            API_USER,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        return cls(process)

    async def get(self, url: str, authorization: str = "") -> tuple[str, float]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(f"{url}\t{authorization}\n".encode())
        await self.process.stdin.drain()
        status, seconds = (await asyncio.wait_for(self.process.stdout.readline(), 30)).split()
        return status.decode(), float(seconds)

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
        await self.process.wait()


def open_fds() -> int:
    """This process's open descriptors; -1 when none is left even to list them."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return -1


@contextlib.contextmanager
def descriptor_limit(soft: int) -> Iterator[None]:
    """Lower this process's RLIMIT_NOFILE soft limit (`ulimit -n`) for a while.

    New descriptors take the lowest free numbers, so about `soft - open_fds()` more fit.
    """
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, before[0]), before[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, before)


async def settled_fds(within: float = 15.0) -> int:
    """This process's open descriptors once the count stays the same for a second."""
    deadline = time.monotonic() + within
    last, since = open_fds(), time.monotonic()
    while time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        now = open_fds()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= 1.0:
            break
    return last


async def test_420_idle_rtmp_sockets_leave_the_api_answering_and_publishing_possible(
    tmp_path: Path, s3_server: EmbeddedS3, s3_client: Any
) -> None:
    bucket = "flood-" + secrets.token_hex(6)  # created by onair at the first publish
    settings = make_settings(
        tmp_path, s3_server, rtmp_host="127.0.0.1", rtmp_port=free_port()
    )  # the RTMP limits are the defaults: 64 pending, 8 per IP
    [project] = make_projects(settings.db_path, 1)
    server = TestServer(create_app(settings), host="127.0.0.1")
    await server.start_server()
    rtmp = server.app[RTMP_KEY]
    stranger = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        IDLE_CLIENT,
        str(settings.rtmp_port),
        str(IDLE_SOCKETS),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert stranger.stdin is not None and stranger.stdout is not None
    user = await ApiUser.start()
    try:
        async with aiohttp.ClientSession() as session:
            live = Live(settings, server, session, project, s3_client)
            healthz = str(server.make_url("/healthz"))
            jobs = live.api + "/livejobs"
            assert (await user.get(healthz))[0] == "200"
            fds_before = await settled_fds()
            # `ulimit -n` here is large (20000 when written); a small host's is not.
            # Emulate one where the 420 sockets would not fit but the limit's 64 do.
            with descriptor_limit(open_fds() + PENDING_LIMIT + FD_HEADROOM):
                stranger.stdin.write(b"go\n")
                await stranger.stdin.drain()
                line = await asyncio.wait_for(stranger.stdout.readline(), 60)
                connected = int(line)
                assert connected >= IDLE_SOCKETS * 0.9, connected
                held = await settled_fds() - fds_before
                # The API answers, on new connections, while the 420 sockets are open.
                health = await user.get(healthz)
                listed = await user.get(jobs, project.headers["Authorization"])
                assert health[0] == "200" and health[1] < 2.0, health
                assert listed[0] == "200" and listed[1] < 2.0, listed
            assert 0 <= held <= PENDING_LIMIT + 16, f"{held} descriptors held for idle sockets"
            assert settings.rtmp_max_pending == PENDING_LIMIT
            assert rtmp.pending_count <= PENDING_LIMIT
            # The limit did bite. (How many were refused rather than closed by the
            # handshake deadline depends on how fast the 420 connected: not asserted.)
            assert rtmp.refused_over_limit > 0
            # The handshake deadline frees the pending ones; the stranger still holds
            # its 420 sockets, and a real publisher goes live.
            await async_wait_until(lambda: rtmp.pending_count == 0, 15, "the handshake deadline")
            assert await settled_fds() <= fds_before + 16
            job = await live.create_online_job(SMALL_TEMPLATE, bucket, "after-the-flood")
            publisher = asyncio.create_task(publish(live.rtmp_url(job["key"]), 4))
            await live.wait_status(job, 3)  # Live: the media arrived
            done = await publisher
            assert done.returncode == 0, done.stderr
            await live.call("POST", f"/livejobs/{job['key']}", json={"online": False})
    finally:
        if stranger.returncode is None:
            stranger.kill()
        await stranger.wait()
        await user.stop()
        await server.close()
