"""The pipelines running on this host: started, fed, finished, recovered and flushed.

`RunningPipelines` is a part of the jobs' owner (`api.lives.LiveJobs`), which decides
when a job's pipeline starts and ends; this module does the work. It holds each live
job's `JobPipeline` from its first publisher until the job goes offline; turns what
media threads report (`PipelineEvent`) into status changes and timings on the event
loop, through `JobRecords` (the one writer of the database); finishes a pipeline in
the background, as one of the job's `finishing` tasks (that job's next publisher waits
for it, no other job's does); uploads what a stopped service left in the spool;
records statistics and progress every `STATS_FLUSH_SECONDS`; and evaluates every live's
input health (`ingest.health`) every `HEALTH_CHECK_SECONDS`, recording each change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import threading
from collections.abc import Awaitable, Callable, Coroutine
from fractions import Fraction
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge

from encoder.host import RENDITION_SKIPPED
from encoder.program import INPUT_FAILBACK, INPUT_FAILOVER, PRIMARY, ProgramEvent
from encoder.templates import JobTemplate, get_template
from encoder.timeline import continuing_at
from ingest.adapter import DecoderSession
from ingest.health import UNKNOWN, Health
from ingest.session import PublishRequest
from ingest.stats import SourceStatistics
from packager.hls import HlsWriter
from packager.hls.resume import read_recording
from packager.layout import object_prefix
from packager.object_store import FencedStore, S3Storage
from packager.recovery import Leftover, read_leftover
from packager.spool import SpoolBudget
from restream.forwarder import Destination, ForwarderStatus

from .hosts import Lease
from .metrics import JobMetrics
from .ownership import StorageOwnership
from .pipeline import JobPipeline, PipelineEvent, PipelineLimits
from .records import JobRecords
from .settings import Settings
from .statistics import OutputStatistics
from .status import LiveStatus

logger = logging.getLogger(__name__)
T = TypeVar("T")

STATS_FLUSH_SECONDS = 2.0
STATUS_KINDS = ("media", "closed", "failed")  # the pipeline events that change the status
# How often every live's input health is evaluated (a change: a timing and a webhook).
HEALTH_CHECK_SECONDS = 0.5
# Going offline waits this long for the last uploads and ENDLIST, then answers and
# lets them finish in the background (a storage outage must not hang the API).
OFFLINE_WAIT_SECONDS = 15.0
# How long a new pipeline waits for the stored recording it continues to be read (where
# its timeline starts): admission is not held by a slow storage.
TIMELINE_READ_SECONDS = 2.0
# A stopping service gives every live this long in all (the encoders' flush, then the
# uploads); what is left stays in the spool, listed in its manifest for the next start.
SHUTDOWN_SECONDS = 12.0
SHUTDOWN_ENCODER_SECONDS = 3.0
OFFLINE_FINISH_SECONDS = 3600.0
RECOVERY_FINISH_SECONDS = 3600.0


class RunningPipelines:
    """Every running pipeline of this host, its reconnect window and its finishing."""

    def __init__(
        self,
        settings: Settings,
        records: JobRecords,
        object_store: S3Storage,
        registry: CollectorRegistry,
    ) -> None:
        self._settings = settings
        self._records = records
        self._object_store = object_store
        self._ownership = StorageOwnership(records, object_store, settings.s3_buckets)
        self._spool_budget = SpoolBudget(settings.spool_max_bytes)
        self._given_up = Counter(
            "onair_spool_segments_given_up",
            "Segments given up, not yet uploaded, for the spool's limits",
            registry=registry,
        )
        self._given_up_seen: dict[int, int] = {}  # job -> segments already counted
        self._switches = Counter(
            "onair_input_switches",
            "Switches between a Standard job's inputs, by kind (InputFailover, InputFailback)",
            ["kind"],
            registry=registry,
        )
        spooled = Gauge("onair_spool_bytes", "Bytes in every job's upload spool", registry=registry)
        spooled.set_function(lambda: self._spool_budget.used_bytes)
        limit = Gauge(
            "onair_spool_limit_bytes",
            "The upload spool's limit for every job together",
            registry=registry,
        )
        limit.set(settings.spool_max_bytes)
        self._pipelines: dict[int, JobPipeline] = {}
        self._idle = asyncio.Event()  # set while no pipeline runs here
        self._idle.set()
        self._leases: dict[int, Lease] = {}  # job -> the lease its pipeline runs under
        # A finished pipeline's lease, let go (set by the jobs' owner: `Hosts.release`).
        self.release_lease: Callable[[Lease], Awaitable[None]] | None = None
        # Whether a lease is still this host's (blocking: an upload worker asks before
        # each write), and what to do when a write finds it is not (the owner's).
        self.lease_holds: Callable[[Lease], bool] | None = None
        self.on_fenced: Callable[[int], None] | None = None
        # Whether the host of an encoder id is alive (its heartbeat is fresh).
        self.host_alive: Callable[[int], Awaitable[bool]] | None = None
        self._fenced: set[int] = set()  # jobs whose lease was lost: their events dropped
        self._stores: dict[int, FencedStore] = {}  # job -> its pipeline's fenced storage
        registry.register(JobMetrics(lambda: list(self._pipelines.items())))
        self._skipped: dict[int, dict[str, str]] = {}  # job -> rendition -> reason
        self._reconnect_timers: dict[int, asyncio.TimerHandle] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._flusher: asyncio.Task[None] | None = None
        self._health_watch: asyncio.Task[None] | None = None
        self._health: dict[int, Health] = {}  # job -> its last recorded health
        self._finishing: dict[int, asyncio.Task[None]] = {}
        self._stopping = False
        # The enabled restreams of a job, from the store (set by the app).
        self.restream_targets: Callable[[int], Awaitable[list[Destination]]] | None = None

    async def start(self) -> None:
        """Upload what the last run left in the spool (in the background), start
        recording statistics."""
        self._loop = asyncio.get_running_loop()
        await self._recover_spools()
        self._flusher = asyncio.create_task(self._flush_forever())
        self._health_watch = asyncio.create_task(self._watch_health())

    async def stop(self) -> None:
        """Finish every live at once, each bounded: SHUTDOWN_SECONDS at most in all."""
        self._stopping = True
        for task in (self._flusher, self._health_watch):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        taken_down = [self.take_down(job, "service stopping") for job in list(self._pipelines)]
        finishing = [task for task in taken_down if task is not None]
        if finishing:
            await asyncio.wait(finishing, timeout=OFFLINE_WAIT_SECONDS)
        pending = [*self._finishing.values(), *self._tasks]
        if pending:
            _, late = await asyncio.wait(pending, timeout=SHUTDOWN_SECONDS)
            for task in late:
                task.cancel()  # a recovery or a database write: redone at the next start
            if late:
                logger.warning("%d tasks cancelled at shutdown", len(late))

    # -- one job's pipeline ---------------------------------------------------------

    def get(self, job_id: int) -> JobPipeline | None:
        return self._pipelines.get(job_id)

    def job_ids(self) -> list[int]:
        """The jobs whose pipeline runs here."""
        return list(self._pipelines)

    async def until_idle(self, seconds: float) -> bool:
        """Wait until no pipeline runs here, for up to `seconds`; whether none does."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), seconds)
        return self._idle.is_set()

    def finishing(self, job_id: int) -> asyncio.Task[None] | None:
        """The job's previous pipeline (or its spool's recovery), still finishing."""
        task = self._finishing.get(job_id)
        return task if task is not None and not task.done() else None

    async def launch(self, job: dict[str, Any], lease: Lease) -> JobPipeline:
        """Start the job's pipeline (it has none) under the job's `lease`, which this
        host took: it plans its ladder anew, runs its outputs under the lease's lockKey,
        and forwards to the job's enabled restreams. The lease is released when the
        pipeline has finished."""
        job_id = int(job["id"])
        self._fenced.discard(job_id)
        pipeline = await asyncio.to_thread(self._new_pipeline, job, lease)
        pipeline.lock_key = lease.key
        self._pipelines[job_id] = pipeline
        self._idle.clear()
        self._leases[job_id] = lease
        self._skipped[job_id] = {}
        try:
            await self._records.mark_skipped(job_id, {})
            await self._records.record_lease(job_id, lease.key, lease.encoder_id)
            await self.update_restreams(job_id)
        except BaseException:
            self.take_down(job_id, "could not be recorded")
            raise
        return pipeline

    async def update_restreams(self, job_id: int) -> None:
        """Forward the job's live (if it runs here) to its enabled restreams, as the
        store lists them now: a new or toggled-on one starts, a removed one stops."""
        pipeline = self._pipelines.get(job_id)
        if pipeline is None or self.restream_targets is None:
            return
        destinations = await self.restream_targets(job_id)
        if self._pipelines.get(job_id) is pipeline:
            pipeline.update_restreams(destinations)

    def restream_statuses(self, job_id: int) -> dict[int, ForwarderStatus]:
        """What each restream of the job's live does now ({} without a live here)."""
        pipeline = self._pipelines.get(job_id)
        return pipeline.restreams.statuses() if pipeline is not None else {}

    def attach(
        self, job_id: int, request: PublishRequest, input_name: str = PRIMARY
    ) -> tuple[DecoderSession, bool]:
        """The publisher's session on one input of the job's pipeline, and whether it
        came back within the reconnect window."""
        timer = self._reconnect_timers.pop(job_id, None)
        if timer is not None:
            timer.cancel()
        return self._pipelines[job_id].attach(request, input_name), timer is not None

    def take_down(
        self, job_id: int, reason: str, *, release: bool = True
    ) -> asyncio.Task[None] | None:
        """Drop the job's publisher and finish its pipeline in the background; returns
        the finishing task (None without a pipeline). The job's next publisher waits for
        it (`finishing`)."""
        timer = self._reconnect_timers.pop(job_id, None)
        if timer is not None:
            timer.cancel()
        pipeline = self._pipelines.pop(job_id, None)
        if not self._pipelines:
            self._idle.set()
        self._skipped.pop(job_id, None)
        previous = self._health.pop(job_id, UNKNOWN)
        if pipeline is None:
            return None
        store = self._stores.pop(job_id, None)
        if not release:
            self._fenced.add(job_id)  # lost: what its pipeline reports is not the job's now
            if store is not None:
                store.fence()  # and its last uploads are not written
        if previous.state is not UNKNOWN.state and release:  # no live: Unknown again
            self._background(self._records.health_changed(job_id, previous, UNKNOWN))
        pipeline.close_sessions(reason)
        lease = self._leases.pop(job_id, None) if release else None
        self._leases.pop(job_id, None)
        return self._track_finishing(job_id, self._finish(job_id, pipeline, reason, lease))

    def _track_finishing(self, job_id: int, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(work)
        self._finishing[job_id] = task
        task.add_done_callback(lambda done: self._forget_finishing(job_id, done))
        return task

    def _forget_finishing(self, job_id: int, task: asyncio.Task[None]) -> None:
        if self._finishing.get(job_id) is task:
            del self._finishing[job_id]

    async def _finish(
        self, job_id: int, pipeline: JobPipeline, reason: str, lease: Lease | None
    ) -> None:
        if self._stopping:
            encoder = SHUTDOWN_ENCODER_SECONDS
            finish = SHUTDOWN_SECONDS - SHUTDOWN_ENCODER_SECONDS - 3.0  # - the workers' stop
        else:
            encoder, finish = 30.0, OFFLINE_FINISH_SECONDS
        try:
            await self._flush(job_id, pipeline)
            # A daemon thread, not the loop's executor: a stop that overruns its
            # bounds must never hold the process at exit, nor take an executor
            # thread another job's admission needs.
            await in_daemon_thread(pipeline.stop, reason, finish, encoder)
            await self._flush(job_id, pipeline)
        except Exception:
            logger.exception("[job %s] finishing the live failed", job_id)
        finally:
            self._given_up_seen.pop(job_id, None)
            if lease is not None:
                await self._let_go(job_id, lease)

    async def _let_go(self, job_id: int, lease: Lease) -> None:
        """The job's lease, once its pipeline is done: the next host may take it."""
        if self.release_lease is None:
            return
        try:
            await self.release_lease(lease)
        except Exception:
            logger.exception("[job %s] releasing its lease failed (it expires)", job_id)

    def _fenced_store(self, lease: Lease) -> FencedStore:
        """The job's storage while its `lease` is this host's (`FencedStore`)."""
        holds = self.lease_holds

        def fenced() -> None:  # an upload worker's thread
            loop = self._loop
            if loop is not None and not loop.is_closed() and self.on_fenced is not None:
                loop.call_soon_threadsafe(self.on_fenced, lease.job_id)

        store = self._stores[lease.job_id] = FencedStore(
            self._object_store,
            (lambda: holds(lease)) if holds is not None else (lambda: True),
            metadata={
                "onair-encoder": str(lease.encoder_id),
                "onair-lease-token": str(lease.token),
            },
            on_fenced=fenced,
        )
        return store

    def _new_pipeline(self, job: dict[str, Any], lease: Lease) -> JobPipeline:
        settings = self._settings
        limits = PipelineLimits(
            dvr_window_seconds=settings.dvr_window_seconds,
            max_input_pixels=settings.max_input_pixels,
            spool_max_bytes_per_job=settings.spool_max_bytes_per_job,
            spool_budget=self._spool_budget,
            outbound=settings.outbound,
            slate_image=settings.restream_slate_image,
            slate_max_seconds=settings.reconnect_window_seconds,
            input_loss_repeat_seconds=settings.input_loss_repeat_ms / 1000,
            input_slate_image=settings.input_slate_image,
        )
        template = get_template(job["job_template_id"])
        return JobPipeline(
            job,
            template,
            self._object_store,
            settings.spool_dir,
            self._from_thread,
            limits=limits,
            prepare=partial(self._ownership.prepare, job),
            writes=self._fenced_store(lease),
            timeline_start=self._timeline_start(job, template),
        )

    def _timeline_start(self, job: dict[str, Any], template: JobTemplate) -> Fraction:
        """Blocking, bounded: where the job's new output timeline starts, past the stored
        recording it continues (`encoder.timeline.continuing_at`). Storage that does not
        answer within TIMELINE_READ_SECONDS gives 0 (the recording's timestamps then
        restart, after its EXT-X-DISCONTINUITY), never a held admission."""
        prefix = object_prefix(job["destination"], job["file_path"])
        names = [r.name for r in template.renditions] or ["source"]
        found: list[tuple[float, int]] = []

        def read() -> None:
            with contextlib.suppress(Exception):  # StorageError, a bucket not there yet
                for name in names:
                    segments = read_recording(
                        self._object_store, job["bucket"], prefix, name
                    ).segments
                    if segments:
                        found.append((sum(s.duration_seconds for s in segments), len(segments)))
                        return

        reader = threading.Thread(target=read, name="onair-timeline-read", daemon=True)
        reader.start()
        reader.join(TIMELINE_READ_SECONDS)
        if not found:
            if reader.is_alive():
                logger.warning("[job %s] stored recording not read in time", job["id"])
            return Fraction(0)
        seconds, segments = found[0]
        return continuing_at(seconds, template.segment_seconds, segments)

    # -- events from media threads ----------------------------------------------------

    def _from_thread(self, event: PipelineEvent) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        loop.call_soon_threadsafe(self._spawn, event)

    def _spawn(self, event: PipelineEvent) -> None:
        self._background(self._apply(event))

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _apply(self, event: PipelineEvent) -> None:
        if event.job_id in self._fenced:
            return  # another host runs the job now: its status and timings are that host's
        lease = self._leases.get(event.job_id)
        holds = self.lease_holds
        if event.kind in STATUS_KINDS and lease is not None and holds is not None:
            # A status change only under the lease: a host that was stopped while another
            # took the job over must not say its publisher left (it is live there).
            if not await asyncio.to_thread(holds, lease):
                if self.on_fenced is not None:
                    self.on_fenced(event.job_id)
                return
        records = self._records
        job = await records.by_id(event.job_id)
        if job is None:
            return
        if not job["online"] and event.kind in ("media", "closed", "failed"):
            return  # no status change once offline (a timing is still worth its row)
        if event.kind == "media":
            await records.set_status(
                event.job_id, LiveStatus.LIVE, event.child_status, event.message
            )
        elif event.kind == "closed":
            if event.job_id not in self._pipelines:
                return
            await records.set_status(
                event.job_id, LiveStatus.INTERRUPTED, event.child_status, event.message
            )
            self._arm_reconnect_window(event.job_id)
        elif event.kind == "failed":
            pipeline = self._pipelines.get(event.job_id)
            if pipeline is not None:
                pipeline.close_sessions("pipeline failed")
            await records.set_status(
                event.job_id, LiveStatus.INTERRUPTED, event.child_status, event.message
            )
        elif event.kind == "input" and event.program is not None:
            await self._input_event(event.job_id, event.program)
        elif event.kind == "restream":
            assert event.restream is not None
            await records.restream_changed(
                event.job_id,
                event.restream.id,
                event.restream.title,
                event.child_status,
                event.message,
            )
        else:
            output_id = await records.output_id(event.job_id, event.rendition)
            if event.child_status == RENDITION_SKIPPED and event.rendition is not None:
                skipped = self._skipped.setdefault(event.job_id, {})
                skipped[event.rendition] = event.message
                await records.mark_skipped(event.job_id, dict(skipped))
            await records.add_timing(event.job_id, event.child_status, event.message, output_id)

    async def _input_event(self, job_id: int, event: ProgramEvent) -> None:
        """A switch between the job's inputs (a timing, a webhook, a metric), or the
        input-loss fill starting or ending (a timing)."""
        if event.kind in (INPUT_FAILOVER, INPUT_FAILBACK):
            self._switches.labels(event.kind).inc()
            await self._records.input_switched(
                job_id, event.kind, event.from_input, event.to_input, event.reason, event.message
            )
        else:
            await self._records.add_timing(job_id, event.kind, event.message)

    def _arm_reconnect_window(self, job_id: int) -> None:
        assert self._loop is not None
        old = self._reconnect_timers.pop(job_id, None)
        if old is not None:
            old.cancel()
        window = self._settings.reconnect_window_seconds
        self._reconnect_timers[job_id] = self._loop.call_later(
            window, self._spawn_window_expired, job_id
        )

    def _spawn_window_expired(self, job_id: int) -> None:
        self._reconnect_timers.pop(job_id, None)
        self._background(self._window_expired(job_id))

    async def _window_expired(self, job_id: int) -> None:
        job = await self._records.by_id(job_id)
        if job is None or job["status"] != LiveStatus.INTERRUPTED or not job["online"]:
            return
        window = self._settings.reconnect_window_seconds
        await self._records.set_status(
            job_id,
            LiveStatus.PROCESSING,
            "ReconnectWindowExpired",
            f"no publisher for {window:g} s: waiting for input",
        )

    # -- input health ----------------------------------------------------------------------

    def health(self, job_id: int) -> Health:
        """The job's input health now: Unknown without a running pipeline."""
        pipeline = self._pipelines.get(job_id)
        return pipeline.health() if pipeline is not None else UNKNOWN

    async def _watch_health(self) -> None:
        while True:
            await asyncio.sleep(HEALTH_CHECK_SECONDS)
            for job_id, pipeline in list(self._pipelines.items()):
                try:
                    health = pipeline.health()
                except Exception:
                    logger.exception("[job %s] could not evaluate the input health", job_id)
                    continue
                previous = self._health.get(job_id, UNKNOWN)
                if health.state is not previous.state:
                    self._health[job_id] = health
                    self._background(self._records.health_changed(job_id, previous, health))

    # -- statistics ---------------------------------------------------------------------

    def input_statistics(self, job_id: int) -> SourceStatistics | None:
        pipeline = self._pipelines.get(job_id)
        return pipeline.input_statistics() if pipeline is not None else None

    def dropped_frames(self, job_id: int) -> int:
        pipeline = self._pipelines.get(job_id)
        return pipeline.ingest_dropped_frames if pipeline is not None else 0

    def output_statistics(self, job_id: int) -> list[OutputStatistics]:
        pipeline = self._pipelines.get(job_id)
        return pipeline.output_statistics() if pipeline is not None else []

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(STATS_FLUSH_SECONDS)
            for job_id, pipeline in list(self._pipelines.items()):
                try:
                    await self._flush(job_id, pipeline)
                except Exception:
                    logger.exception("[job %s] could not record statistics", job_id)

    async def _flush(self, job_id: int, pipeline: JobPipeline) -> None:
        """Record input statistics and output progress in the database."""
        given_up = pipeline.writer.dropped_segments
        self._given_up.inc(max(0, given_up - self._given_up_seen.get(job_id, 0)))
        self._given_up_seen[job_id] = given_up
        await self._records.record_progress(
            job_id, pipeline.input_statistics(), pipeline.writer.stats()
        )

    # -- what the last run left in the spool ----------------------------------------------

    async def _recover_spools(self) -> None:
        """Upload, in order, what a stopped service could not: each job's spool
        manifest (`packager.recovery`), in the background; the job's next publisher
        waits for it (it is one of the job's `finishing` tasks)."""
        root = self._settings.spool_dir
        try:
            folders = [f for f in root.iterdir() if f.is_dir() and f.name.isdigit()]
        except OSError:
            return
        for folder in folders:
            leftover = await asyncio.to_thread(read_leftover, folder)
            job = await self._records.by_id(int(folder.name))
            holder = job["lease_encoder_id"] if job is not None else None
            if (
                job is not None
                and holder is not None
                and holder != self._settings.encoder_id
                and self.host_alive is not None
                and await self.host_alive(int(holder))
            ):
                # Another live host took the live over (this one died or stalled; a
                # manifest: it was stopped; none: killed).
                await self._lost_to_takeover(job, folder, int(holder))
                continue
            if leftover is None:
                continue
            if job is None:
                logger.warning("%s: its job no longer exists; left for an operator", folder)
                continue
            self._track_finishing(int(job["id"]), self._recover(job, folder, leftover))

    async def _lost_to_takeover(self, job: dict[str, Any], folder: Path, holder: int) -> None:
        """What this host spooled for a live another host took over (this one died, or
        stalled past its lease) cannot join the recording that went on there: named as
        lost, and the spool freed."""
        count = len(await asyncio.to_thread(lambda: list(folder.rglob("*.ts"))))
        if not count:
            return
        await self._records.add_timing(
            int(job["id"]),
            "SpoolLost",
            f"{count} segments encoder {self._settings.encoder_id} spooled were never"
            f" uploaded: the live was taken over by encoder {holder}, they are dropped",
        )
        await asyncio.to_thread(lambda: shutil.rmtree(folder, ignore_errors=True))

    async def _recover(self, job: dict[str, Any], folder: Path, leftover: Leftover) -> None:
        job_id = int(job["id"])
        count = sum(1 for p in leftover.pending if p.file is not None)
        await self._records.add_timing(
            job_id, "SpoolRecovering", f"uploading {count} segments the last run left"
        )
        events: list[PipelineEvent] = []
        writer = HlsWriter(
            self._object_store,
            job["bucket"],
            object_prefix(job["destination"], job["file_path"]),
            folder,
            label=f"job {job_id} recovery",
            on_event=lambda status, message, rendition: events.append(
                PipelineEvent(job_id, "timing", status, message, rendition)
            ),
            spool_budget=self._spool_budget,
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
        await self._records.add_timing(job_id, "SpoolRecovered", message)


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
