"""Admission with the whole service and real ffmpeg publishers: what each refusal says,
and no job's admission waiting on another job's I/O.

Admission is measured where it happens: the RTMP server's admit callback is wrapped
(`AdmitClock`), so a duration is the service's own, from `publish` to its answer.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from api import pipeline as pipeline_module
from api.app import RTMP_KEY, create_app
from ingest.rtmp.server import RtmpServer
from ingest.session import PublishRefused, PublishRequest, PublishSession
from packager.object_store import S3Storage
from packager.s3server import EmbeddedS3
from tests.support.publishers import publish
from tests.support.service import Live, make_projects, make_settings

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]  # real time, the whole service

ADMITTED = "admitted"
# Admission does a few database calls and starts a pipeline's threads: well under a
# second on a quiet machine. The bound is what tells "did not wait on the hung storage"
# (which hangs until the test releases it, longer than this) from "did", with room for a
# machine loaded by a parallel test run; it is not a latency target.
ADMISSION_BOUND_SECONDS = 10.0


@dataclass
class Admission:
    key: str
    started: float
    seconds: float | None = None
    outcome: str | HTTPStatus | None = None  # ADMITTED, or the refusal's status


class AdmitClock:
    """Wraps the RTMP server's admit callback: when each admission began and how long it
    took, per stream key, and how it ended."""

    def __init__(self, rtmp: RtmpServer) -> None:
        self._inner = rtmp.admit
        rtmp.admit = self.admit
        self.admissions: list[Admission] = []

    async def admit(self, request: PublishRequest) -> PublishSession:
        admission = Admission(request.stream_key, time.monotonic())
        self.admissions.append(admission)
        try:
            session = await self._inner(request)
        except PublishRefused as refused:
            admission.outcome = refused.status
            raise
        else:
            admission.outcome = ADMITTED
            return session
        finally:
            admission.seconds = time.monotonic() - admission.started

    def of(self, key: str) -> list[Admission]:
        return [a for a in self.admissions if a.key == key]

    async def next_of(self, key: str, already: int, within: float, done: bool = True) -> Admission:
        """The key's admission number `already` + 1, once begun (and ended, if `done`)."""
        deadline = time.monotonic() + within
        while True:
            found = self.of(key)
            if len(found) > already and (not done or found[already].seconds is not None):
                return found[already]
            assert time.monotonic() < deadline, f"no admission of {key[:8]} within {within} s"
            await asyncio.sleep(0.02)


class HangingStorage(S3Storage):
    """The test S3, except that every call about `bucket` hangs until `release()`."""

    def __init__(self, s3_server: EmbeddedS3, bucket: str) -> None:
        super().__init__(
            s3_server.endpoint, s3_server.access_key, s3_server.secret_key, "us-east-1"
        )
        self.bucket = bucket
        self.released = threading.Event()
        self.hanging = 0  # calls waiting now

    def _wait(self, bucket: str) -> None:
        if bucket != self.bucket:
            return
        self.hanging += 1
        try:
            self.released.wait()
        finally:
            self.hanging -= 1

    def release(self) -> None:
        self.released.set()

    def ensure_bucket(self, bucket: str, before_create: Callable[[], None] | None = None) -> bool:
        self._wait(bucket)
        return super().ensure_bucket(bucket, before_create)

    def put(
        self,
        bucket: str,
        key: str,
        data: bytes,
        content_type: str,
        cache_control: str,
        metadata: Mapping[str, str] | None = None,
        **conditions: Any,
    ) -> str | None:
        self._wait(bucket)
        return super().put(bucket, key, data, content_type, cache_control, metadata, **conditions)

    def get_text(self, bucket: str, key: str) -> str | None:
        self._wait(bucket)
        return super().get_text(bucket, key)

    def has_objects(self, bucket: str, prefix: str) -> bool:
        self._wait(bucket)
        return super().has_objects(bucket, prefix)


@dataclass
class Service:
    live: Live
    clock: AdmitClock


@asynccontextmanager
async def service(
    tmp_path: Path,
    s3_server: EmbeddedS3,
    s3_client: Any,
    object_store: S3Storage | None = None,
    **overrides: Any,
) -> AsyncIterator[Service]:
    """The whole service (`create_app`, as `onair run` builds it) with one project."""
    settings = make_settings(tmp_path, s3_server, **overrides)
    project = make_projects(settings.db_path, 1)[0]
    server = TestServer(create_app(settings, object_store=object_store), host="127.0.0.1")
    await server.start_server()
    try:
        clock = AdmitClock(server.app[RTMP_KEY])
        async with aiohttp.ClientSession() as session:
            yield Service(Live(settings, server, session, project, s3_client), clock)
    finally:
        await server.close()


async def create_job(live: Live, bucket: str, path: str, server_type: int = 0) -> dict[str, Any]:
    body = {
        "jobTemplateId": 2,
        "destination": "admission",
        "bucket": bucket,
        "input": {"filePath": path, "serverType": server_type, "inputClass": 0},
    }
    job = (await live.call("POST", "/livejobs", json=body))["result"]
    await live.call("POST", f"/livejobs/{job['key']}", json={"online": True})
    return job  # type: ignore[no-any-return]


async def refusals(live: Live, job: dict[str, Any]) -> list[str]:
    return [
        t["messageComment"]
        for t in await live.timings(job)
        if t["childStatus"] == "PublisherRefused"
    ]


async def wait_timing(live: Live, job: dict[str, Any], child: str, within: float = 10) -> None:
    deadline = time.monotonic() + within
    while child not in [t["childStatus"] for t in await live.timings(job)]:
        assert time.monotonic() < deadline, f"no {child} timing within {within} s"
        await asyncio.sleep(0.1)


def fail_after_first_segment(monkeypatch: pytest.MonkeyPatch, job_id: int) -> None:
    """The job's pipeline fails (as when its decoder does) right after its encoder
    handed the first segment to the HLS writer; the encoder itself goes on."""
    timing = pipeline_module.JobPipeline._timing

    def failing(
        self: pipeline_module.JobPipeline, status: str, message: str, rendition: str | None
    ) -> None:
        timing(self, status, message, rendition)
        if self.job_id == job_id and status == "EncoderFirstSegment":
            self._on_error(RuntimeError("injected pipeline failure"))

    monkeypatch.setattr(pipeline_module.JobPipeline, "_timing", failing)


def new_bucket() -> str:
    return "adm-" + secrets.token_hex(6)


async def test_a_jobs_hung_storage_and_failed_pipeline_never_delay_another_jobs_admission(
    tmp_path: Path, s3_server: EmbeddedS3, s3_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One job's bucket hangs (every call waits) and its pipeline fails: stopping that
    pipeline waits on the storage (its final playlists), as long as the storage hangs.
    Its publisher comes back meanwhile; another job's publisher is admitted at once."""

    hung_bucket, bucket = new_bucket(), new_bucket()
    storage = HangingStorage(s3_server, hung_bucket)
    async with service(tmp_path, s3_server, s3_client, storage) as running:
        live, clock = running.live, running.clock
        try:
            doomed = await create_job(live, hung_bucket, "doomed")
            healthy = await create_job(live, bucket, "healthy")
            fail_after_first_segment(monkeypatch, doomed["id"])

            # The doomed job's pipeline fails once its first segment is spooled (its
            # upload hangs): stopping the pipeline waits for that upload (the encoder
            # finishes its output), as long as the storage hangs.
            first = await publish(live.rtmp_url(doomed["key"]), 6)
            assert first.returncode != 0  # dropped when its pipeline failed
            await wait_timing(live, doomed, "PipelineFailed")
            assert storage.hanging >= 1

            # Its publisher comes back: its admission takes the failed pipeline down, and
            # waits for it (the job's own lock only).
            comeback = asyncio.create_task(publish(live.rtmp_url(doomed["key"]), 2, realtime=False))
            waiting = await clock.next_of(doomed["key"], 1, within=20, done=False)

            # Meanwhile another job's publisher: admitted within the bound.
            other = asyncio.create_task(publish(live.rtmp_url(healthy["key"]), 3))
            admitted = await clock.next_of(healthy["key"], 0, within=20)
            assert admitted.outcome == ADMITTED
            assert admitted.seconds is not None and admitted.seconds < ADMISSION_BOUND_SECONDS, (
                f"admission took {admitted.seconds:.2f} s"
            )
            assert waiting.seconds is None  # the doomed job's admission was still waiting

            # The comeback is refused once its wait for the stop is over: the stop goes
            # on in the background, the job's publishers are refused until it is done.
            assert (await comeback).returncode != 0
            assert waiting.outcome == HTTPStatus.SERVICE_UNAVAILABLE
            assert any("still being published" in m for m in await refusals(live, doomed))
            assert storage.hanging >= 1  # still hung: nothing waited for it
            done = await other
            assert done.returncode == 0, done.stderr
        finally:
            storage.release()

        # The storage answers again: the failed pipeline's stop ends, and the job's next
        # publisher is admitted to a new pipeline.
        deadline = time.monotonic() + 60
        while True:
            count = len(clock.of(doomed["key"]))
            await publish(live.rtmp_url(doomed["key"]), 2, realtime=False)
            if (await clock.next_of(doomed["key"], count, within=20)).outcome == ADMITTED:
                break
            assert time.monotonic() < deadline, "the doomed job was never admitted again"
            await asyncio.sleep(0.5)
        for job in (doomed, healthy):
            await live.call("POST", f"/livejobs/{job['key']}", json={"online": False})


async def test_an_rtmp_publisher_to_an_srt_job_is_refused_with_a_timing(
    tmp_path: Path, s3_server: EmbeddedS3, s3_client: Any
) -> None:
    async with service(tmp_path, s3_server, s3_client) as running:
        live, clock = running.live, running.clock
        job = await create_job(live, new_bucket(), "srt", server_type=1)
        refused = await publish(live.rtmp_url(job["key"]), 2, realtime=False)
        assert refused.returncode != 0
        [admission] = clock.of(job["key"])
        assert admission.outcome == HTTPStatus.FORBIDDEN
        assert admission.seconds is not None and admission.seconds < ADMISSION_BOUND_SECONDS
        [message] = await refusals(live, job)
        assert "takes SRT input" in message and "not RTMP" in message
        assert "127.0.0.1:" in message  # the publisher's address
        assert await live.status(job) == 2  # still waiting for its (SRT) publisher
        stats = (await live.call("GET", f"/livejobs/{job['id']}/stats"))["result"][0]
        assert stats["width"] == 0  # nothing was decoded


async def test_each_refusal_says_what_kind_it_is(
    tmp_path: Path, s3_server: EmbeddedS3, s3_client: Any
) -> None:
    """`PublishRefused.status` (what ingest tells the publisher in its wire's terms):
    unknown key 404, offline 403, already publishing 409, host at capacity 503."""
    async with service(tmp_path, s3_server, s3_client, capacity=1.0) as running:
        live, clock = running.live, running.clock
        bucket = new_bucket()
        on_air = await create_job(live, bucket, "on-air")
        waiting = await create_job(live, bucket, "waiting")
        offline = await create_job(live, bucket, "offline")
        await live.call("POST", f"/livejobs/{offline['key']}", json={"online": False})

        first = asyncio.create_task(publish(live.rtmp_url(on_air["key"]), 8))
        await live.wait_status(on_air, 3)
        unknown = "00000000-0000-4000-8000-000000000000"
        cases = [
            (unknown, HTTPStatus.NOT_FOUND),
            (offline["key"], HTTPStatus.FORBIDDEN),
            (on_air["key"], HTTPStatus.CONFLICT),
            (waiting["key"], HTTPStatus.SERVICE_UNAVAILABLE),
        ]
        for key, status in cases:
            count = len(clock.of(key))
            done = await publish(live.rtmp_url(key), 2, realtime=False)
            assert done.returncode != 0, key[:8]
            assert (await clock.next_of(key, count, within=5)).outcome == status, key[:8]
        assert (await first).returncode == 0
        assert any("the job is offline" in m for m in await refusals(live, offline))
        assert any("already publishing" in m for m in await refusals(live, on_air))
        assert any("host at capacity" in m for m in await refusals(live, waiting))
