"""Several onair hosts on one machine, as the cluster tests, `make cluster-demo` and
`bench/cluster.py` run them: `onair run` processes on one store (PostgreSQL) and one S3,
a TCP round-robin balancer in front of their RTMP ports, and an API client that asks
any live host."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
import secrets
import signal
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp

from packager.s3server import EmbeddedS3
from tests.support.ports import free_port, free_port_block, free_udp_port
from tests.support.postgres import DIRECTORY_PREFIX, PostgresServer
from tests.support.publishers import ffmpeg_publish_cmd
from tests.support.service import ONAIR

PASSTHROUGH = 3  # the template: the lives cost little CPU, five fit on 2 cores


@contextlib.contextmanager
def shared_backends(base: Path, label: str) -> Iterator[tuple[str, EmbeddedS3]]:
    """A PostgreSQL server (Debian's, on a unix socket) with a fresh database, and one
    SeaweedFS under `base`, for hosts outside the test suite's fixtures (the demo, the
    benchmark): the store's URL and the S3; both stopped at the end."""
    # Its own directory under /tmp: as root the server runs as `postgres`, which must
    # reach it (the suite's fixture does the same).
    postgres = PostgresServer(Path(tempfile.mkdtemp(prefix=DIRECTORY_PREFIX)))
    postgres.start()
    try:
        s3 = EmbeddedS3(
            base / "seaweedfs",
            free_port_block(),
            access_key=f"{label}-" + secrets.token_hex(6),
            secret_key=secrets.token_urlsafe(24),
        )
        s3.start()
        try:
            yield postgres.url(postgres.create_database()), s3
        finally:
            s3.stop()
    finally:
        postgres.stop()


class Balancer:
    """A TCP load balancer: each connection to the next backend, round robin (a backend
    that refuses the connection is skipped, as a balancer's health check would)."""

    def __init__(self, ports: list[int], listen_port: int = 0) -> None:
        self.ports = ports
        self._next = itertools.cycle(range(len(ports)))
        self._server: asyncio.Server | None = None
        self.port = listen_port

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream = None
        for _ in self.ports:
            port = self.ports[next(self._next)]
            with contextlib.suppress(OSError):
                upstream = await asyncio.open_connection("127.0.0.1", port)
                break
        if upstream is None:
            writer.close()
            return
        up_reader, up_writer = upstream

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            with contextlib.suppress(OSError):
                sink.close()

        with contextlib.suppress(asyncio.CancelledError):  # the balancer stopping
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


class Host:
    """`onair run` on free ports, on the shared store and S3."""

    def __init__(self, name: str, scratch: Path, store_url: str, s3: EmbeddedS3, **env: str):
        self.name = name
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("ONAIR_")}
        self.env |= {
            "ONAIR_DATA_DIR": str(scratch / name),
            "ONAIR_DATABASE_URL": store_url,
            "ONAIR_S3_ENDPOINT": s3.endpoint,
            "ONAIR_S3_ACCESS_KEY": s3.access_key,
            "ONAIR_S3_SECRET_KEY": s3.secret_key,
            "ONAIR_HOST_NAME": name,
            "ONAIR_DEV_PROJECT": "false",
            "ONAIR_RTMP_HOST": "127.0.0.1",
            "ONAIR_SRT_HOST": "127.0.0.1",
            "ONAIR_HLS_INGEST_HOST": "127.0.0.1",
            "ONAIR_CAPACITY": "4",
            **env,
        }
        self._new_ports()
        self.log_path = scratch / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._log_from = 0  # where this run's lines start in the log
        self.stopping = False  # signalled: its API may be gone already

    def _new_ports(self) -> None:
        self.http_port, self.rtmp_port = free_port(), free_port()
        self.env |= {
            "ONAIR_HTTP_PORT": str(self.http_port),
            "ONAIR_RTMP_PORT": str(self.rtmp_port),
            "ONAIR_SRT_PORT": str(free_udp_port()),
            "ONAIR_HLS_INGEST_PORT": str(free_port()),
        }

    def start(self) -> None:
        self._log_from = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [ONAIR, "run"], env=self.env, stdout=log, stderr=subprocess.STDOUT
            )

    async def wait_up(self, within: float = 60) -> None:
        """Until its API answers; a port another process took in the meantime (free
        ports are only free when asked) is a start again on new ones."""
        deadline = time.monotonic() + within
        async with aiohttp.ClientSession() as session:
            while True:
                assert self.process is not None
                this_run = self.log_path.read_bytes()[self._log_from :]
                if self.process.poll() is not None and b"address already in use" in this_run:
                    self._new_ports()
                    self.start()
                    continue
                assert self.process.poll() is None, self.log()
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"http://127.0.0.1:{self.http_port}/healthz") as r:
                        if r.status == 200:
                            return
                assert time.monotonic() < deadline, self.log()
                await asyncio.sleep(0.2)

    def encoder_id(self) -> int:
        """The id the store gave this host at registration (its log says)."""
        found = re.search(
            rf"host '{self.name}' registered as encoder (\d+)", self.log_path.read_text()
        )
        assert found, self.log()
        return int(found.group(1))

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def stop(self, sig: int = signal.SIGKILL) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(60)


class Cluster:
    def __init__(self, hosts: list[Host], balancer: Balancer, project: dict[str, Any]) -> None:
        self.hosts = hosts
        self.balancer = balancer
        self.headers = {"Authorization": f"Bearer {project['apiKey']}"}
        self.project_id = project["projectId"]
        self.session = aiohttp.ClientSession()
        # One bucket for every job of the cluster (each its own path): every bucket is a
        # SeaweedFS collection with volumes of its own, and the test S3 is shared.
        self.bucket = "cluster-" + secrets.token_hex(4)

    def api(self, host: Host, *, projects: bool = True) -> str:
        """The project's API on `host`: under `/projects/` (live jobs), or not
        (restreams, as the reference has them)."""
        under = "projects/" if projects else ""
        return f"http://127.0.0.1:{host.http_port}/api/v1/{under}{self.project_id}"

    async def call(
        self, method: str, path: str, host: Host | None = None, projects: bool = True, **kw: Any
    ) -> Any:
        """Any live host answers for any job (the store is shared)."""
        host = host or next(
            h for h in self.hosts if h.process and h.process.poll() is None and not h.stopping
        )
        async with self.session.request(
            method, self.api(host, projects=projects) + path, headers=self.headers, **kw
        ) as response:
            body = await response.json()
            assert response.status < 300, body
            return body["result"]

    async def online_job(self, path: str, **input_fields: Any) -> dict[str, Any]:
        job = await self.call(
            "POST",
            "/livejobs",
            json={
                "jobTemplateId": PASSTHROUGH,
                "destination": "live",
                "bucket": self.bucket,
                "input": {"filePath": path, "serverType": 0, "inputClass": 0, **input_fields},
            },
        )
        await self.call("POST", f"/livejobs/{job['key']}", json={"online": True})
        return job  # type: ignore[no-any-return]

    async def timings(self, job: dict[str, Any]) -> list[dict[str, Any]]:
        """Every timing of the job (a publisher trying again is many of them), in order."""
        found: list[dict[str, Any]] = []
        for page in itertools.count(1):
            rows = await self.call(
                "GET", f"/livejobs/{job['id']}/timings?pageSize=100&pageIndex={page}"
            )
            found += rows
            if len(rows) < 100:
                return found
        raise AssertionError("unreachable")

    async def status(self, job: dict[str, Any]) -> int:
        return int((await self.call("GET", f"/livejobs/{job['id']}"))["status"])

    async def wait_status(self, job: dict[str, Any], status: int, within: float = 30) -> None:
        deadline = time.monotonic() + within
        while (current := await self.status(job)) != status:
            assert time.monotonic() < deadline, (current, status)
            await asyncio.sleep(0.2)

    async def lock_keys(self, job: dict[str, Any]) -> set[str]:
        """The outputs' lockKey (the job's lease) now."""
        outputs = await self.call("GET", f"/livejobs/outputs?liveJobId={job['id']}")
        return {str(o["lockKey"]) for o in outputs}

    async def encoder_of(self, job: dict[str, Any]) -> int:
        outputs = await self.call("GET", f"/livejobs/outputs?liveJobId={job['id']}")
        return int(outputs[0]["encoderId"])


def publisher(url: str, seconds: float) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ffmpeg_publish_cmd(url, size="320x180", seconds=seconds, realtime=True),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def project_for(store_url: str, scratch: Path) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONAIR_")}
    env |= {"ONAIR_DATABASE_URL": store_url, "ONAIR_DATA_DIR": str(scratch / "cli")}
    done = subprocess.run(
        [ONAIR, "project", "create", "cluster"], env=env, capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


async def start_cluster(
    count: int, scratch: Path, store_url: str, s3: EmbeddedS3, **env: str
) -> Cluster:
    project = project_for(store_url, scratch)
    hosts = [Host(f"host-{i + 1}", scratch, store_url, s3, **env) for i in range(count)]
    for host in hosts:
        host.start()
    try:
        await asyncio.gather(*(host.wait_up() for host in hosts))
    except BaseException:
        for host in hosts:  # none left behind
            host.stop()
        raise
    balancer = Balancer([h.rtmp_port for h in hosts])
    await balancer.start()
    return Cluster(hosts, balancer, project)


@contextlib.asynccontextmanager
async def cluster_of(
    count: int, scratch: Path, store_url: str, s3: EmbeddedS3, **env: str
) -> AsyncIterator[Cluster]:
    cluster = await start_cluster(count, scratch, store_url, s3, **env)
    try:
        yield cluster
    finally:
        await cluster.balancer.stop()
        await cluster.session.close()
        for host in cluster.hosts:
            host.stop()


async def admitted_through(
    cluster: Cluster, job: dict[str, Any], seconds: float, within: float
) -> tuple[subprocess.Popen[bytes], float]:
    """Publish through the balancer, again every second until a host admits it (the job
    Live again); returns the publisher and when it was admitted."""
    url = f"rtmp://127.0.0.1:{cluster.balancer.port}/live/{job['key']}"
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        attempt = publisher(url, seconds)
        try:
            await asyncio.wait_for(asyncio.to_thread(attempt.wait), 1.0)
        except TimeoutError:
            if await cluster.status(job) == 3:
                return attempt, time.monotonic()
            continue  # connected; the host may still be taking it
        # refused (ffmpeg exited): the next attempt reaches the next host
    raise AssertionError(f"not admitted within {within} s: {await cluster.timings(job)}")
