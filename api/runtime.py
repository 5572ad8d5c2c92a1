"""The media runtime: the RTMP server, stream-key admission and every job's pipeline.

It is the only place where ingest, encoder and packager meet the job store. Media
threads report through `PipelineEvent`s; this module applies them on the event loop
(status changes, timing rows), so the store and the statuses have one writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from encoder.runtime import RENDITION_SKIPPED
from encoder.templates import get_template
from ingest.rtmp.server import PublishRefused, PublishRequest, PublishSession, RtmpServer
from packager.storage import S3Storage

from .jobs import JobManager
from .keys import stream_key_digest, stream_keys_equal
from .pipeline import JobPipeline, PipelineEvent
from .settings import Settings
from .status import LiveStatus

logger = logging.getLogger(__name__)

RTMP_APP = "live"
STATS_FLUSH_SECONDS = 2.0
# Going offline waits this long for the last uploads and ENDLIST, then answers and
# lets them finish in the background (a storage outage must not hang the API).
OFFLINE_WAIT_SECONDS = 15.0
# A stopping service waits this long for uploads; the rest stays in the spool.
SHUTDOWN_FINISH_SECONDS = 10.0
OFFLINE_FINISH_SECONDS = 3600.0


class MediaRuntime:
    """Owns the ingest server and the running pipelines; the JobManager asks it."""

    def __init__(self, settings: Settings, jobs: JobManager, storage: S3Storage) -> None:
        self.settings = settings
        self.jobs = jobs
        self.storage = storage
        self.rtmp = RtmpServer(self.admit, host=settings.rtmp_host, port=settings.rtmp_port)
        self._pipelines: dict[int, JobPipeline] = {}
        self._skipped: dict[int, dict[str, str]] = {}  # job -> rendition -> reason
        self._reconnect_timers: dict[int, asyncio.TimerHandle] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._admit_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._flusher: asyncio.Task[None] | None = None
        self._finishing: dict[int, asyncio.Task[None]] = {}
        self._stopping = False

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self.rtmp.start()
        self._flusher = asyncio.create_task(self._flush_forever())
        logger.info("RTMP ingest listening on %s:%s", self.settings.rtmp_host, self.rtmp.port)

    async def stop(self) -> None:
        self._stopping = True
        await self.rtmp.stop()
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        for job_id in list(self._pipelines):
            await self.stop_job(job_id, "service stopping")
        if self._finishing:
            await asyncio.gather(*self._finishing.values(), return_exceptions=True)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- admission ----------------------------------------------------------------

    async def admit(self, request: PublishRequest) -> PublishSession:
        """Decide at `publish`, before any media is read: right app, known key, online job."""
        if request.app.strip("/") != RTMP_APP:
            raise PublishRefused(f"unknown application {request.app!r}; use /{RTMP_APP}/")
        store = self.jobs.store
        job = await store.call(store.get_job_by_digest, stream_key_digest(request.stream_key))
        if job is None or not stream_keys_equal(request.stream_key, job["stream_key"]):
            logger.info("[rtmp %s] refused: unknown stream key", request.remote)
            raise PublishRefused("unknown stream key")
        if not job["online"]:
            await self.jobs.add_timing(
                job["id"], "PublisherRefused", f"{request.remote}: the job is offline"
            )
            raise PublishRefused("this live job is offline: put it online first")
        if job["server_type"] != 0:
            raise PublishRefused("this live job does not take RTMP input")
        finishing = self._finishing.get(job["id"])
        if finishing is not None and not finishing.done():
            raise PublishRefused("the previous live of this job is still being published")
        async with self._admit_lock:
            pipeline = self._pipelines.get(job["id"])
            if pipeline is not None and pipeline.publishing:
                await self.jobs.add_timing(
                    job["id"],
                    "PublisherRefused",
                    f"{request.remote}: the stream key is already publishing",
                )
                raise PublishRefused("this stream key is already publishing")
            if pipeline is not None and pipeline.failed is not None:
                self._pipelines.pop(job["id"], None)
                await asyncio.to_thread(
                    pipeline.stop, "restarting after a failure", OFFLINE_FINISH_SECONDS
                )
                pipeline = None
            if pipeline is None:
                pipeline = await asyncio.to_thread(self._new_pipeline, job)
                self._pipelines[job["id"]] = pipeline
                self._skipped[job["id"]] = {}
                await self.jobs.mark_skipped(job["id"], {})  # planned anew by this pipeline
                await self._publish_lock(job["id"], pipeline)
            timer = self._reconnect_timers.pop(job["id"], None)
            reconnect = timer is not None or job["status"] == LiveStatus.INTERRUPTED
            if timer is not None:
                timer.cancel()
            session = pipeline.attach(request)
        await self.jobs.add_timing(
            job["id"],
            "PublisherReconnected" if reconnect else "PublisherConnected",
            f"{request.remote} publishing to /{RTMP_APP}/ (app {request.app})",
        )
        return session

    def _new_pipeline(self, job: dict[str, Any]) -> JobPipeline:
        return JobPipeline(
            job,
            get_template(job["job_template_id"]),
            self.storage,
            self.settings.spool_dir,
            self._from_thread,
            dvr_window_seconds=self.settings.dvr_window_seconds,
        )

    async def _publish_lock(self, job_id: int, pipeline: JobPipeline) -> None:
        store = self.jobs.store
        outputs = await store.call(store.job_outputs, job_id)
        await store.call(
            store.update_outputs,
            job_id,
            [
                {
                    "output_id": o["output_id"],
                    "lock_key": pipeline.lock_key,
                    "encoder_id": self.settings.encoder_id,
                }
                for o in outputs
            ],
        )

    # -- events from media threads ---------------------------------------------

    def _from_thread(self, event: PipelineEvent) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        loop.call_soon_threadsafe(self._spawn, event)

    def _spawn(self, event: PipelineEvent) -> None:
        task = asyncio.ensure_future(self._apply(event))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _apply(self, event: PipelineEvent) -> None:
        job = await self.jobs.store.call(self.jobs.store.get_job_by_id, event.job_id)
        if job is None or not job["online"]:
            return
        if event.kind == "media":
            await self.jobs.set_status(
                event.job_id, LiveStatus.LIVE, event.child_status, event.message
            )
        elif event.kind == "closed":
            if event.job_id not in self._pipelines:
                return
            await self.jobs.set_status(
                event.job_id, LiveStatus.INTERRUPTED, event.child_status, event.message
            )
            self._arm_reconnect_window(event.job_id)
        elif event.kind == "failed":
            pipeline = self._pipelines.get(event.job_id)
            if pipeline is not None and pipeline.session is not None:
                pipeline.session.close("pipeline failed")
            await self.jobs.set_status(
                event.job_id, LiveStatus.INTERRUPTED, event.child_status, event.message
            )
        else:
            output_id = await self._output_id(event.job_id, event.rendition)
            if event.child_status == RENDITION_SKIPPED and event.rendition is not None:
                skipped = self._skipped.setdefault(event.job_id, {})
                skipped[event.rendition] = event.message
                await self.jobs.mark_skipped(event.job_id, dict(skipped))
            await self.jobs.add_timing(event.job_id, event.child_status, event.message, output_id)

    async def _output_id(self, job_id: int, rendition: str | None) -> int | None:
        """The output row of `rendition` (None for an event about the whole job)."""
        if rendition is None:
            return None
        store = self.jobs.store
        for output in await store.call(store.job_outputs, job_id):
            if output["rendition"] == rendition:
                return int(output["output_id"])
        return None

    def _arm_reconnect_window(self, job_id: int) -> None:
        assert self._loop is not None
        old = self._reconnect_timers.pop(job_id, None)
        if old is not None:
            old.cancel()
        window = self.settings.reconnect_window_seconds
        self._reconnect_timers[job_id] = self._loop.call_later(
            window, self._spawn_window_expired, job_id
        )

    def _spawn_window_expired(self, job_id: int) -> None:
        self._reconnect_timers.pop(job_id, None)
        task = asyncio.ensure_future(self._window_expired(job_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _window_expired(self, job_id: int) -> None:
        job = await self.jobs.store.call(self.jobs.store.get_job_by_id, job_id)
        if job is None or job["status"] != LiveStatus.INTERRUPTED or not job["online"]:
            return
        window = self.settings.reconnect_window_seconds
        await self.jobs.set_status(
            job_id,
            LiveStatus.PROCESSING,
            "ReconnectWindowExpired",
            f"no publisher for {window:g} s: waiting for input",
        )

    # -- queries and control from the JobManager -------------------------------

    def input_statistics(self, job_id: int) -> dict[str, Any] | None:
        pipeline = self._pipelines.get(job_id)
        return pipeline.input_statistics() if pipeline is not None else None

    def dropped_frames(self, job_id: int) -> int:
        pipeline = self._pipelines.get(job_id)
        return pipeline.ingest_dropped_frames if pipeline is not None else 0

    def output_statistics(self, job_id: int) -> list[dict[str, Any]]:
        pipeline = self._pipelines.get(job_id)
        return pipeline.output_statistics() if pipeline is not None else []

    async def stop_job(self, job_id: int, reason: str) -> None:
        """The job goes offline (or the service stops): drop the publisher, finish output.

        Waits up to OFFLINE_WAIT_SECONDS for the last segments and ENDLIST; past that
        the finishing goes on in the background (new publishers are refused until done).
        """
        timer = self._reconnect_timers.pop(job_id, None)
        if timer is not None:
            timer.cancel()
        pipeline = self._pipelines.pop(job_id, None)
        self._skipped.pop(job_id, None)
        if pipeline is None:
            return
        if pipeline.session is not None:
            pipeline.session.close(reason)
        timeout = SHUTDOWN_FINISH_SECONDS if self._stopping else OFFLINE_FINISH_SECONDS
        task = asyncio.create_task(self._finish(job_id, pipeline, reason, timeout))
        self._finishing[job_id] = task
        task.add_done_callback(lambda _: self._finishing.pop(job_id, None))
        await asyncio.wait({task}, timeout=OFFLINE_WAIT_SECONDS)

    async def _finish(
        self, job_id: int, pipeline: JobPipeline, reason: str, timeout_seconds: float
    ) -> None:
        try:
            await self._flush(job_id, pipeline)
            await asyncio.to_thread(pipeline.stop, reason, timeout_seconds)
            await self._flush(job_id, pipeline)
        except Exception:
            logger.exception("[job %s] finishing the live failed", job_id)

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(STATS_FLUSH_SECONDS)
            for job_id, pipeline in list(self._pipelines.items()):
                try:
                    await self._flush(job_id, pipeline)
                except Exception:
                    logger.exception("[job %s] could not record statistics", job_id)

    async def _flush(self, job_id: int, pipeline: JobPipeline) -> None:
        """Record input statistics and output progress in the store."""
        store = self.jobs.store
        stats = pipeline.input_statistics()
        if stats.get("width") or stats.get("audioSampleRate"):
            await store.call(lambda: store.update_job(job_id, statistics=stats))
        published = {row["name"]: row for row in pipeline.output_statistics()}
        updates = []
        for output in await store.call(store.job_outputs, job_id):
            row = published.get(output["rendition"])
            if row is None:
                continue
            updates.append(
                {
                    "output_id": output["output_id"],
                    "progress": int(row.get("seconds", 0)),
                    "counter": int(row.get("segments", 0)),
                }
            )
        await store.call(store.update_outputs, job_id, updates)
