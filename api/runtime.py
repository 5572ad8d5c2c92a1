"""The media runtime: the RTMP server, stream-key admission and every job's pipeline.

It is the only place where ingest, encoder and packager meet the job store. Media
threads report through `PipelineEvent`s; this module applies them on the event loop
(status changes, timing rows), so the store and the statuses have one writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import Callable, Coroutine
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge

from encoder.host import RENDITION_SKIPPED
from encoder.templates import get_template
from ingest.rtmp.server import RtmpServer
from ingest.session import PublishRefused, PublishRequest, PublishSession
from packager.hls import HlsWriter
from packager.layout import object_prefix
from packager.object_store import PermanentStorageError, S3Storage
from packager.recovery import Leftover, read_leftover
from packager.spool import SpoolBudget

from .jobs import JobManager
from .keys import stream_key_digest, stream_keys_equal
from .pipeline import JobPipeline, PipelineEvent, PipelineLimits
from .settings import Settings
from .status import LiveStatus

logger = logging.getLogger(__name__)
T = TypeVar("T")

RTMP_APP = "live"
STATS_FLUSH_SECONDS = 2.0
# Going offline waits this long for the last uploads and ENDLIST, then answers and
# lets them finish in the background (a storage outage must not hang the API).
OFFLINE_WAIT_SECONDS = 15.0
# A stopping service gives every live this long in all (the encoders' flush, then the
# uploads); what is left stays in the spool, listed in its manifest for the next start.
SHUTDOWN_SECONDS = 12.0
SHUTDOWN_ENCODER_SECONDS = 3.0
OFFLINE_FINISH_SECONDS = 3600.0
RECOVERY_FINISH_SECONDS = 3600.0


class MediaRuntime:
    """Owns the ingest server and the running pipelines; the JobManager asks it."""

    def __init__(
        self,
        settings: Settings,
        jobs: JobManager,
        storage: S3Storage,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.settings = settings
        self.jobs = jobs
        self.storage = storage
        self.spool_budget = SpoolBudget(settings.spool_max_bytes)
        self.capacity = settings.capacity if settings.capacity is not None else default_capacity()
        registry = registry or CollectorRegistry()
        self._given_up = Counter(
            "onair_spool_segments_given_up",
            "Segments given up, not yet uploaded, for the spool's limits",
            registry=registry,
        )
        self._given_up_seen: dict[int, int] = {}  # job -> publisher count already counted
        spooled = Gauge("onair_spool_bytes", "Bytes in every job's upload spool", registry=registry)
        spooled.set_function(lambda: self.spool_budget.used_bytes)
        units = Gauge(
            "onair_capacity_units",
            "Host capacity, in template-2 720p lives",
            ["kind"],
            registry=registry,
        )
        units.labels("total").set(self.capacity)
        units.labels("used").set_function(self.capacity_used)
        self.rtmp = RtmpServer(
            self.admit,
            host=settings.rtmp_host,
            port=settings.rtmp_port,
            max_pending=settings.rtmp_max_pending,
            max_pending_per_ip=settings.rtmp_max_pending_per_ip,
        )
        self._pipelines: dict[int, JobPipeline] = {}
        self._skipped: dict[int, dict[str, str]] = {}  # job -> rendition -> reason
        self._bucket_locks: dict[str, threading.Lock] = {}  # upload workers ensure buckets
        self._bucket_locks_lock = threading.Lock()
        self._reconnect_timers: dict[int, asyncio.TimerHandle] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._admit_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._flusher: asyncio.Task[None] | None = None
        self._finishing: dict[int, asyncio.Task[None]] = {}
        self._stopping = False

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self._recover_spools()
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
        # Every live at once, each bounded: the whole stop takes SHUTDOWN_SECONDS at most.
        await asyncio.gather(
            *(self.stop_job(job_id, "service stopping") for job_id in list(self._pipelines))
        )
        pending = [*self._finishing.values(), *self._tasks]
        if pending:
            _, late = await asyncio.wait(pending, timeout=SHUTDOWN_SECONDS)
            for task in late:
                task.cancel()  # a recovery or a store write: redone at the next start
            if late:
                logger.warning("%d tasks cancelled at shutdown", len(late))

    # -- admission ----------------------------------------------------------------

    async def admit(self, request: PublishRequest) -> PublishSession:
        """Decide at `publish`, before any media is read: right app, known key, online job."""
        if request.app.strip("/") != RTMP_APP:
            raise PublishRefused(f"unknown application {request.app!r}; use /{RTMP_APP}/")
        store = self.jobs.store
        job = await store.call(store.get_job_by_digest, stream_key_digest(request.stream_key))
        if job is None or not stream_keys_equal(request.stream_key, job["stream_key"]):
            raise PublishRefused("unknown stream key")  # the server logs it, rate-limited
        if not job["online"]:
            await self.jobs.add_timing(
                job["id"], "PublisherRefused", f"{request.remote}: the job is offline"
            )
            raise PublishRefused("this live job is offline: put it online first")
        if job["server_type"] != request.protocol:
            raise PublishRefused(f"this live job does not take {request.protocol.name} input")
        finishing = self._finishing.get(job["id"])
        if finishing is not None and not finishing.done():
            raise PublishRefused("the previous live of this job is still being published")
        async with self._admit_lock:
            pipeline = self._pipelines.get(job["id"])
            if pipeline is None:
                await self._check_capacity(job, request)
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

    async def _check_capacity(self, job: dict[str, Any], request: PublishRequest) -> None:
        """Refuse a new live that would take the host past its capacity: every live on
        it would then fall behind real time and drop frames."""
        cost = get_template(job["job_template_id"]).capacity_units
        used = self.capacity_used()
        if used + cost <= self.capacity + 1e-9:
            return
        message = (
            f"{request.remote}: host at capacity ({used:g} of {self.capacity:g} units in use,"
            f" this live needs {cost:g})"
        )
        await self.jobs.add_timing(job["id"], "PublisherRefused", message)
        raise PublishRefused("host at capacity: try another host")

    def capacity_used(self) -> float:
        """Units taken by the running lives (an interrupted one keeps its place)."""
        return sum(p.template.capacity_units for p in self._pipelines.values())

    def _limits(self) -> PipelineLimits:
        settings = self.settings
        return PipelineLimits(
            dvr_window_seconds=settings.dvr_window_seconds,
            max_input_pixels=settings.max_input_pixels,
            spool_max_bytes_per_job=settings.spool_max_bytes_per_job,
            spool_budget=self.spool_budget,
        )

    def _new_pipeline(self, job: dict[str, Any]) -> JobPipeline:
        return JobPipeline(
            job,
            get_template(job["job_template_id"]),
            self.storage,
            self.settings.spool_dir,
            self._from_thread,
            limits=self._limits(),
            prepare=partial(self._prepare_storage, job),
        )

    def _bucket_lock(self, bucket: str) -> threading.Lock:
        with self._bucket_locks_lock:
            return self._bucket_locks.setdefault(bucket, threading.Lock())

    def _prepare_storage(self, job: dict[str, Any]) -> None:
        """Before a pipeline's first write (its upload worker runs this, retrying
        through an outage): the bucket is one onair may write, the prefix the job's.

        - With `ONAIR_S3_BUCKETS`, no other bucket is created or written.
        - Without it, only buckets onair created itself: one found already there is
          refused (list it in ONAIR_S3_BUCKETS to use it).
        - Objects at the prefix of a job that never wrote there are not onair's:
          they are neither continued nor overwritten; the pipeline fails and says so.
        Refusals are `PermanentStorageError`s: the output fails at once, with a timing.
        """
        bucket = job["bucket"]
        store = self.jobs.store
        allowed = self.settings.s3_buckets
        if allowed is not None and bucket not in allowed:
            raise PermanentStorageError(f"bucket {bucket} is not in ONAIR_S3_BUCKETS")
        with self._bucket_lock(bucket):  # another job's worker may be creating it
            created = self.storage.ensure_bucket(bucket)
            if created:
                store.mark_bucket_created(bucket)
        if not created and allowed is None:
            owned = store.bucket(bucket)
            if owned is None or not owned["created_by_onair"]:
                raise PermanentStorageError(
                    f"bucket {bucket} was already in the S3 and onair did not create it:"
                    " list it in ONAIR_S3_BUCKETS to use it"
                )
        current = store.get_job_by_id(int(job["id"]))
        if current is not None and not current["prefix_claimed_at"]:
            prefix = object_prefix(job["destination"], job["file_path"])
            if self.storage.has_objects(bucket, prefix + "/"):
                raise PermanentStorageError(
                    f"s3://{bucket}/{prefix}/ already holds objects onair did not write:"
                    " they are left as they are; empty it or give the job another filePath"
                )
            store.claim_prefix(int(job["id"]))

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
        task = self._track_finishing(job_id, self._finish(job_id, pipeline, reason))
        await asyncio.wait({task}, timeout=OFFLINE_WAIT_SECONDS)

    def _track_finishing(self, job_id: int, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run `work` as the job's finishing task: its next publisher waits for it."""
        task = asyncio.create_task(work)
        self._finishing[job_id] = task
        task.add_done_callback(lambda _: self._finishing.pop(job_id, None))
        return task

    async def _finish(self, job_id: int, pipeline: JobPipeline, reason: str) -> None:
        if self._stopping:
            encoder = SHUTDOWN_ENCODER_SECONDS
            finish = SHUTDOWN_SECONDS - SHUTDOWN_ENCODER_SECONDS - 3.0  # - the workers' stop
        else:
            encoder, finish = 30.0, OFFLINE_FINISH_SECONDS
        try:
            await self._flush(job_id, pipeline)
            # A daemon thread, not the loop's executor: a stop that overruns its
            # bounds must never hold the process at exit.
            await in_daemon_thread(pipeline.stop, reason, finish, encoder)
            await self._flush(job_id, pipeline)
        except Exception:
            logger.exception("[job %s] finishing the live failed", job_id)
        finally:
            self._given_up_seen.pop(job_id, None)

    # -- what the last run left in the spool --------------------------------------

    async def _recover_spools(self) -> None:
        """Upload, in order, what a stopped service could not: each job's spool
        manifest (`packager.recovery`), in the background; the job's next publisher
        waits for it (it is one of the job's `_finishing` tasks)."""
        root = self.settings.spool_dir
        try:
            folders = [f for f in root.iterdir() if f.is_dir() and f.name.isdigit()]
        except OSError:
            return
        for folder in folders:
            leftover = await asyncio.to_thread(read_leftover, folder)
            if leftover is None:
                continue
            job = await self.jobs.store.call(self.jobs.store.get_job_by_id, int(folder.name))
            if job is None:
                logger.warning("%s: its job no longer exists; left for an operator", folder)
                continue
            self._track_finishing(int(job["id"]), self._recover(job, folder, leftover))

    async def _recover(self, job: dict[str, Any], folder: Path, leftover: Leftover) -> None:
        job_id = int(job["id"])
        count = sum(1 for p in leftover.pending if p.file is not None)
        await self.jobs.add_timing(
            job_id, "SpoolRecovering", f"uploading {count} segments the last run left"
        )
        events: list[PipelineEvent] = []
        writer = HlsWriter(
            self.storage,
            job["bucket"],
            object_prefix(job["destination"], job["file_path"]),
            folder,
            label=f"job {job_id} recovery",
            on_event=lambda status, message, rendition: events.append(
                PipelineEvent(job_id, "timing", status, message, rendition)
            ),
            spool_budget=self.spool_budget,
        )
        try:
            writer.start(leftover.variants, leftover.segment_seconds, leftover=leftover)
            await in_daemon_thread(writer.finish, RECOVERY_FINISH_SECONDS)
        except (TimeoutError, RuntimeError) as error:
            writer.close()  # what is still pending goes back into the manifest
            message = f"not finished: {error}"
        else:
            message = f"uploaded and listed {writer.inherited_segments} segments"
        finally:
            for event in events:
                self._spawn(event)
        await self.jobs.add_timing(job_id, "SpoolRecovered", message)

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
        given_up = pipeline.writer.dropped_segments
        self._given_up.inc(max(0, given_up - self._given_up_seen.get(job_id, 0)))
        self._given_up_seen[job_id] = given_up
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


def default_capacity() -> float:
    """One template-2 720p live per CPU core (bench/density.py: 2 on 2 cores)."""
    return float(os.cpu_count() or 1)


async def in_daemon_thread(fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)` in a daemon thread of its own, awaited: unlike the loop's executor,
    a call still running when the service exits never holds the process."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def run() -> None:
        result: Any = None
        error: BaseException | None = None
        try:
            result = fn(*args)
        except BaseException as raised:
            error = raised
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(
        target=run, name=f"onair-{getattr(fn, '__name__', 'call')}", daemon=True
    ).start()
    return await future
