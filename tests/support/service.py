"""The service under test: settings on the test S3 and free ports, projects and keys,
the control API alone (`start_api`, `running_api`), the whole service in the test's
process (`start_live`), and `onair run` as a child process (`RunningService`)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import m3u8
from aiohttp import web
from aiohttp.test_utils import TestServer

from api.app import RouteAccessLogger, create_app
from api.cli import create_project
from api.database import Database
from api.settings import Settings, load_settings
from encoder.program import FILL_ENDED, FILLED_IN_ALL
from packager.s3server import EmbeddedS3
from tests.support.media import ffprobe
from tests.support.ports import free_port, free_udp_port

CREATE_BODY: dict[str, Any] = {
    "jobTemplateId": 2,
    "destination": "shows/news",
    "description": "evening news",
    "bucket": "onair-test",
    "cdnDistribution": False,
    "input": {"filePath": "2026/ep1", "serverType": 0, "inputClass": 0},
}


def elsewhere(file_path: str) -> dict[str, Any]:
    """Create-body changes that put a job at another place of the bucket (no two jobs
    may share an output prefix)."""
    return {"input": {**CREATE_BODY["input"], "filePath": file_path}}


@dataclass
class Project:
    """A project and its API key."""

    id: str
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


@dataclass
class Api:
    """The control API on a real socket, with its projects, for requests by hand."""

    base: str
    session: aiohttp.ClientSession
    settings: Settings
    projects: list[Project]
    app: web.Application  # the running app: its LiveJobs is app[LIVE_JOBS_KEY]

    @property
    def project(self) -> Project:
        return self.projects[0]

    @property
    def other(self) -> Project:
        return self.projects[1]

    def url(self, path: str, project: Project | None = None) -> str:
        project = project or self.project
        return f"{self.base}/api/v1/projects/{project.id}{path}"

    async def call(
        self, method: str, path: str, project: Project | None = None, **kwargs: Any
    ) -> tuple[int, dict[str, Any]]:
        project = project or self.project
        headers = kwargs.pop("headers", project.headers)
        async with self.session.request(
            method, self.url(path, project), headers=headers, **kwargs
        ) as response:
            return response.status, await response.json()

    async def create_job(self, project: Project | None = None, **changes: Any) -> dict[str, Any]:
        status, body = await self.call(
            "POST", "/livejobs", project, json={**CREATE_BODY, **changes}
        )
        assert status == 201, body
        return body["result"]


def make_projects(db_path: Path, count: int) -> list[Project]:
    """`count` projects in the store at `db_path`, created as `onair project create` does."""
    database = Database(db_path)
    try:
        return [
            Project(**{"id": p["projectId"], "key": p["apiKey"]})
            for p in (create_project(database, f"p{i}") for i in range(count))
        ]
    finally:
        database.close()


def make_settings(tmp_path: Path, s3_server: EmbeddedS3, **overrides: Any) -> Settings:
    """Settings on the test S3; the RTMP ingest (the app is the whole service) on a free
    loopback port unless `overrides` say otherwise."""
    return load_settings(
        {},
        **{
            "data_dir": tmp_path / "data",
            "s3_endpoint": s3_server.endpoint,
            "s3_access_key": s3_server.access_key,
            "s3_secret_key": s3_server.secret_key,
            "rtmp_host": "127.0.0.1",
            "rtmp_port": free_port(),
            "srt_host": "127.0.0.1",
            "srt_port": free_udp_port(),
            "hls_ingest_host": "127.0.0.1",
            "hls_ingest_port": free_port(),
            **overrides,
        },
    )


async def start_api(
    settings: Settings, storage_ping: Callable[[], bool] = lambda: True
) -> TestServer:
    """`create_app(settings)` served on a free loopback port."""
    # The access log as `onair run` would write it, were it on: routes, not paths.
    server = TestServer(create_app(settings, storage_ping=storage_ping), host="127.0.0.1")
    await server.start_server(access_log_class=RouteAccessLogger)
    return server


@asynccontextmanager
async def running_api(
    tmp_path: Path, s3_server: EmbeddedS3, **overrides: Any
) -> AsyncIterator[Api]:
    """The API on a real socket, with two projects; `overrides` change settings."""
    settings = make_settings(tmp_path, s3_server, **overrides)
    projects = make_projects(settings.db_path, 2)
    server = await start_api(settings)
    try:
        async with aiohttp.ClientSession() as session:
            yield Api(str(server.make_url("")).rstrip("/"), session, settings, projects, server.app)
    finally:
        await server.close()


# The whole service in the test's process


@dataclass
class Live:
    """The whole service (API, RTMP ingest, encoders, HLS to S3) and one project."""

    settings: Settings
    server: TestServer
    session: aiohttp.ClientSession
    project: Project
    s3: Any  # boto3 client

    @property
    def api(self) -> str:
        return str(self.server.make_url("")).rstrip("/") + f"/api/v1/projects/{self.project.id}"

    async def call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        async with self.session.request(
            method, self.api + path, headers=self.project.headers, **kwargs
        ) as response:
            body = await response.json()
            assert response.status < 300, body
            return body  # type: ignore[no-any-return]

    async def create_online_job(
        self,
        template: int,
        bucket: str,
        path: str,
        *,
        job_fields: dict[str, Any] | None = None,
        **input_fields: Any,
    ) -> dict[str, Any]:
        """An RTMP Single job put online (`input_fields` change its `input`, `job_fields`
        add top-level fields)."""
        job = (
            await self.call(
                "POST",
                "/livejobs",
                json={
                    "jobTemplateId": template,
                    "destination": "live",
                    "bucket": bucket,
                    "input": {"filePath": path, "serverType": 0, "inputClass": 0, **input_fields},
                    **(job_fields or {}),
                },
            )
        )["result"]
        await self.call("POST", f"/livejobs/{job['key']}", json={"online": True})
        return job

    def rtmp_url(self, key: str) -> str:
        return f"rtmp://127.0.0.1:{self.settings.rtmp_port}/live/{key}"

    async def status(self, job: dict[str, Any]) -> int:
        return int((await self.call("GET", f"/livejobs/{job['id']}"))["result"]["status"])

    async def wait_status(self, job: dict[str, Any], status: int, within: float = 30) -> None:
        deadline = asyncio.get_running_loop().time() + within
        while (current := await self.status(job)) != status:
            assert asyncio.get_running_loop().time() < deadline, (current, status)
            await asyncio.sleep(0.1)

    async def timings(self, job: dict[str, Any]) -> list[dict[str, Any]]:
        body = await self.call("GET", f"/livejobs/{job['id']}/timings?pageSize=100")
        return body["result"]  # type: ignore[no-any-return]

    async def encoded_frames(self, job: dict[str, Any]) -> int:
        """Frames the job's slowest rendition has encoded so far (`stats`)."""
        stats = (await self.call("GET", f"/livejobs/{job['id']}/stats"))["result"][0]
        return min((o.get("framesEncoded", 0) for o in stats["outputs"]), default=0)

    async def assert_recorded_whole(
        self, job: dict[str, Any], counts: dict[str, int], sent: int, late: int = 0
    ) -> None:
        """Every frame a rendition encoded is in its recording (`counts`), and every frame
        sent and filled was encoded, but for those the encoder reports dropping (too
        slow: `EncoderStopped` says "180p 426 frames, 4 dropped") and at most `late` that
        came after their input was lost and filled (their time was the fill's)."""
        filled = await self.fill_frames(job)
        summary = next(
            t["messageComment"]
            for t in reversed(await self.timings(job))
            if t["childStatus"] == "EncoderStopped"
        )
        reported = {
            name: (int(frames), int(dropped))
            for name, frames, dropped in re.findall(r"(\w+) (\d+) frames, (\d+) dropped", summary)
        }
        for rendition, recorded in counts.items():
            frames, dropped = reported[rendition]
            assert recorded == frames, (rendition, recorded, summary)
            shown = frames + dropped - filled
            assert sent - late <= shown <= sent, (rendition, sent, filled, summary)

    async def fill_frames(self, job: dict[str, Any]) -> int:
        """Frames of the input-loss fill the job's live recorded (its last
        `InputLossFillEnded` says; 0 without a fill)."""
        found = [
            int(match.group(1))
            for t in await self.timings(job)
            if t["childStatus"] == FILL_ENDED
            and (match := re.search(rf"(\d+) {FILLED_IN_ALL}", t["messageComment"]))
        ]
        return max(found, default=0)

    def recorded_video_packets(
        self, job: dict[str, Any], renditions: Iterable[str], scratch: Path
    ) -> dict[str, int]:
        """Video packets in each rendition's whole recording (its event playlist), as
        ffprobe counts them (files in `scratch`)."""
        bucket, prefix = job["bucket"], f"{job['destination']}/{job['input']['filePath']}"
        found = {}
        for rendition in renditions:
            event = m3u8.loads(self.get_text(bucket, f"{prefix}/{rendition}/event.m3u8"))
            whole = b"".join(
                self.s3.get_object(Bucket=bucket, Key=f"{prefix}/{rendition}/{s.uri}")[
                    "Body"
                ].read()
                for s in event.segments
            )
            probe, _ = ffprobe(scratch / f"{rendition}.ts", "-show_packets", data=whole)
            found[rendition] = sum(1 for p in probe["packets"] if p["codec_type"] == "video")
        return found

    def get_text(self, bucket: str, key: str) -> str:
        return self.s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()  # type: ignore[no-any-return]


async def start_live(
    tmp_path: Path, s3_server: EmbeddedS3, s3_client: Any, **overrides: Any
) -> AsyncIterator[Live]:
    """The whole service on free ports (settings `overrides` for the test), one project."""
    settings = make_settings(tmp_path, s3_server, **overrides)
    project = make_projects(settings.db_path, 1)[0]
    server = await start_api(settings)
    async with aiohttp.ClientSession() as session:
        yield Live(settings, server, session, project, s3_client)
    await server.close()


def stored_keys(s3: Any, bucket: str, prefix: str = "") -> list[str]:
    """Every key under `prefix` (none if onair never created the bucket)."""
    try:
        listing = s3.list_objects_v2(Bucket=bucket, Prefix=prefix)
    except s3.exceptions.NoSuchBucket:
        return []
    return [o["Key"] for o in listing.get("Contents", [])]


# `onair run` in a child process


ONAIR = str(Path(sys.executable).parent / "onair")


class RunningService:
    """`onair run` in a child process, as `make run` starts it."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.process = subprocess.Popen(
            [ONAIR, "run"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self.base = f"http://127.0.0.1:{env['ONAIR_HTTP_PORT']}"

    def wait_ready(self, timeout: float = 60.0) -> dict[str, str]:
        """Read the banner; returns the development project's id and key."""
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        found: dict[str, str] = {}
        while time.monotonic() < deadline and "key" not in found:
            line = self.process.stdout.readline()
            if not line:
                raise AssertionError("onair run exited:\n" + "".join(self.lines))
            self.lines.append(line)
            if line.startswith("Development project:"):
                found["id"] = line.split()[-1]
            if line.startswith("Development API key:"):
                found["key"] = line.split()[-1]
        assert "key" in found, "".join(self.lines)
        return found

    def project_create(self, name: str) -> dict[str, Any]:
        done = subprocess.run(
            [ONAIR, "project", "create", name],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def stop(self, sig: int = signal.SIGINT, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        finally:
            if self.process.stdout:
                self.process.stdout.close()


def service_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of `onair run` for a test: no ONAIR_* of the caller's, free ports."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONAIR_")}
    env.update(
        ONAIR_DATA_DIR=str(tmp_path / "data"),
        ONAIR_HTTP_PORT=str(free_port()),
        ONAIR_RTMP_PORT=str(free_port()),
        ONAIR_SRT_PORT=str(free_udp_port()),
        ONAIR_SRT_HOST="127.0.0.1",
        ONAIR_HLS_INGEST_PORT=str(free_port()),
        ONAIR_HLS_INGEST_HOST="127.0.0.1",
        ONAIR_RTMP_HOST="127.0.0.1",
    )
    env.update(extra)
    return env
