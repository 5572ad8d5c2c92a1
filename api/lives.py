"""The one owner of every live job: its record, its status, its timings and its pipeline.

HTTP handlers ask `LiveJobs` (`create`, `get`, `set_online`, `statistics`, ...); every
ingest server's admit callback is `LiveJobs.admit`. It composes three parts, none of
which knows it: `JobRecords` (the only writer of the database), `Admission` (the
checks, a lock per job, the host's capacity) and `RunningPipelines` (starting,
finishing, recovering and flushing pipelines).

Admission of one job never waits on another job's I/O. A publisher's job is looked up
without any lock; then, under that job's own lock only: the job is read again (the
toggle may just have changed it), a failed pipeline is taken down in the background
(this job's publisher waits for it a little, no other job's does), capacity is
claimed in one plain call (no `await` between the check and the claim) and the new
pipeline starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from encoder.templates import get_template
from ingest.health import Health
from ingest.hls.pull import HlsPuller
from ingest.session import (
    MPEGTS,
    IngestProtocol,
    PublishRefused,
    PublishRequest,
    PublishSession,
    TransportStatistics,
)
from ingest.stats import SourceStatistics
from packager.object_store import S3Storage
from restream.forwarder import Destination, ForwarderStatus

from .admission import (
    INGEST_APP,
    PULL_APP,
    PULL_APPS,
    PULL_BACKUP_APP,
    Admission,
    default_capacity,
    input_of,
    relayed,
)
from .database import Database, Page, utcnow
from .errors import (
    AdmissionRefused,
    AlreadyPublishing,
    HostDraining,
    LeaseHeld,
    RelayRefused,
    StillFinishing,
    UnknownStreamKey,
)
from .hosts import Hosts
from .input_relay import InputRelay, InputRelays, token_of
from .pipeline import JobPipeline
from .records import JobRecords
from .running import OFFLINE_WAIT_SECONDS, RunningPipelines
from .settings import Settings
from .statistics import OutputStatistics, from_record
from .status import LiveStatus
from .validation import STANDARD_INPUT_CLASS, NewLiveJob, Paging, Toggle

logger = logging.getLogger(__name__)

# A publisher that finds its job's pipeline failed waits this long for it to stop, then
# starts the next one; past it the stop goes on in the background and the publisher is
# refused (StillFinishing), as every publisher of that job until it is done.
RESTART_WAIT_SECONDS = 5.0
RELAYED = "PublisherRelayed"  # the timing of a publisher relayed to the lease's host
# How often the lives running here are checked against the store's online flag (the
# offline toggle answered by another host).
OFFLINE_POLL_SECONDS = 1.0


def capacity_units(settings: Settings) -> float:
    """The host's capacity: `ONAIR_CAPACITY`, else measured (`default_capacity`)."""
    return settings.capacity if settings.capacity is not None else default_capacity()


class LiveJobs:
    """Owns live jobs: records, status transitions, timings, admission and pipelines."""

    def __init__(
        self,
        settings: Settings,
        database: Database,
        object_store: S3Storage,
        registry: CollectorRegistry,
        hosts: Hosts,
    ) -> None:
        self._settings = settings
        self._hosts = hosts
        self._draining = False
        self._offline_watch: asyncio.Task[None] | None = None
        self._records = JobRecords(database)
        # HLS pull jobs online: their source (and a Standard job's backup source)
        self._pullers: dict[int, list[HlsPuller]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        capacity = capacity_units(settings)
        self._admission = Admission(capacity)
        self._running = RunningPipelines(settings, self._records, object_store, registry)
        self._running.release_lease = hosts.release
        self._running.lease_holds = hosts.still_holds
        self._running.on_fenced = self._fenced_out
        self._running.host_alive = hosts.alive
        self._relays = InputRelays(settings.outbound, settings.max_input_pixels)
        self._relays.on_end = self._relay_ended
        hosts.used_units = lambda: self._admission.capacity.used_units
        hosts.on_lost = self._lease_lost
        units = Gauge(
            "onair_capacity_units",
            "Host capacity, in template-2 720p lives",
            ["kind"],
            registry=registry,
        )
        self._refused = Counter(
            "onair_admissions_refused",
            "Publishers refused at admission, by reason",
            ["reason"],
            registry=registry,
        )
        for refusal in AdmissionRefused.__subclasses__():  # from 0: rate() sees the first
            self._refused.labels(refusal.reason)
        units.labels("total").set(capacity)
        units.labels("used").set_function(lambda: self._admission.capacity.used_units)

    def use_restreams(self, targets: Callable[[int], Awaitable[list[Destination]]]) -> None:
        """Where a job's restreams are read from (the restreams service's store)."""
        self._running.restream_targets = targets

    async def update_restreams(self, job_id: int) -> None:
        """The job's restreams changed: its live (if it runs here) follows now."""
        await self._running.update_restreams(job_id)

    def restream_statuses(self, job_id: int) -> dict[int, ForwarderStatus]:
        """What each restream of the job's live does now ({} without a live here)."""
        return self._running.restream_statuses(job_id)

    async def start(self) -> None:
        """Jobs that were online wait for their publisher again; what the last run left
        in the spool is uploaded (in the background)."""
        await self._records.restore(self._hosts.encoder_id)
        await self._running.start()
        self._offline_watch = asyncio.create_task(self._watch_offline())
        for job in await self._records.online_jobs():
            await self._start_pulling(job)

    async def drain(self, seconds: float) -> None:
        """A stopping host (SIGTERM): admit no publisher from now on and let the running
        lives go on for up to `seconds` (less if they all end), then `stop` ends them and
        releases their leases, so another host admits their publishers at once."""
        self._draining = True
        self._hosts.drain()
        running = self._running.job_ids()
        logger.info(
            "draining: no publisher admitted; %d lives go on for up to %g s", len(running), seconds
        )
        with contextlib.suppress(Exception):
            await self._hosts.beat()  # the store says so at once
        await self._running.until_idle(seconds)

    async def _watch_offline(self) -> None:
        """The lives this host runs whose job another host put offline end here."""
        while True:
            await asyncio.sleep(OFFLINE_POLL_SECONDS)
            try:
                for job_id in await self._hosts.offline_of(self._running.job_ids()):
                    async with self._admission.serialised(job_id):
                        self._running.take_down(job_id, "job went offline (on another host)")
                        self._admission.capacity.release(job_id)
            except Exception:
                logger.exception("reading which lives went offline failed: tried again")

    async def stop(self) -> None:
        """Finish every live, bounded (the ingest servers are stopped first)."""
        if self._offline_watch is not None:
            self._offline_watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._offline_watch
        await asyncio.gather(*(p.stop() for pullers in self._pullers.values() for p in pullers))
        self._pullers.clear()
        self._relays.stop("this host is stopping")
        await self._running.stop()

    # -- HLS pull jobs: onair fetches their source while they are online ----------------

    async def _start_pulling(self, job: dict[str, Any]) -> None:
        """An HLS pull job's puller(s): its source, and a Standard job's backup source."""
        job_id = int(job["id"])
        if not job["source_url"] or job["server_type"] != IngestProtocol.HLS:
            return
        if job_id in self._pullers:
            return

        def on_event(child_status: str, message: str) -> None:
            task = asyncio.ensure_future(self._records.add_timing(job_id, child_status, message))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        sources = [(PULL_APP, job["source_url"], on_event)]
        backup = job.get("backup_source_url")
        if backup and job["input_class"] == STANDARD_INPUT_CLASS:

            def on_backup_event(child_status: str, message: str) -> None:
                on_event(child_status, f"backup source: {message}")

            sources.append((PULL_BACKUP_APP, backup, on_backup_event))
        pullers = [
            HlsPuller(
                self.admit,
                stream_key=job["stream_key"],
                source_url=url,
                policy=self._settings.outbound,
                on_event=events,
                label=f"job {job_id}" if app == PULL_APP else f"job {job_id} backup",
                app=app,
                claim=partial(
                    self._may_pull, job_id, get_template(job["job_template_id"]).capacity_units
                ),
            )
            for app, url, events in sources
        ]
        self._pullers[job_id] = pullers
        for puller in pullers:
            await puller.start()

    async def _may_pull(self, job_id: int, units: float) -> bool:
        """A pull job is pulled by the host holding its lease: any host with room for it
        while nobody does (the first to be admitted takes the lease)."""
        if self._draining:
            return False
        holder = await self._hosts.holder(job_id)
        if holder is not None:
            return holder == self._hosts.encoder_id
        capacity = self._admission.capacity
        return capacity.holds(job_id) or capacity.used_units + units <= capacity.total_units

    async def _stop_pulling(self, job_id: int) -> None:
        pullers = self._pullers.pop(job_id, [])
        await asyncio.gather(*(puller.stop() for puller in pullers))

    # -- queries --------------------------------------------------------------------

    async def create(self, project_id: str, new: NewLiveJob) -> dict[str, Any]:
        """A new job (BucketOwned or PrefixTaken, 400, if its storage is not free)."""
        return await self._records.create(project_id, new)

    async def get(self, project_id: str, ref: str) -> dict[str, Any]:
        """A job of this project by its integer id or its name (UUID); else JobNotFound."""
        return await self._records.get(project_id, ref)

    async def get_with_outputs(
        self, project_id: str, ref: str
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        return await self._records.get_with_outputs(project_id, ref)

    async def list_jobs(self, project_id: str, search: str | None, paging: Paging) -> Page:
        return await self._records.list_jobs(project_id, search, paging)

    async def outputs(self, project_id: str, job_id: int | None, paging: Paging) -> Page:
        return await self._records.outputs(project_id, job_id, paging)

    async def timings(self, job: dict[str, Any], output_id: int | None, paging: Paging) -> Page:
        return await self._records.timings(job, output_id, paging)

    async def webhook_deliveries(self, project_id: str, job_id: int | None, paging: Paging) -> Page:
        """The project's webhook deliveries (or one job's: JobNotFound if not its)."""
        if job_id is not None:
            await self._records.get(project_id, str(job_id))
        return await self._records.webhook_deliveries(project_id, job_id, paging)

    def statistics(self, job: dict[str, Any]) -> SourceStatistics:
        """Input statistics: live from the running pipeline, else the last recorded."""
        live = self._running.input_statistics(job["id"])
        return live if live is not None else from_record(job["statistics"])

    def transport_statistics(self, job: dict[str, Any]) -> TransportStatistics | None:
        """The publisher's transport's own figures (SRT), None without them."""
        pipeline = self._running.get(int(job["id"]))
        return pipeline.transport_statistics() if pipeline is not None else None

    async def by_public_name(self, name: str) -> dict[str, Any] | None:
        """Any project's job by its public name (WebSocket viewers: no API key)."""
        return await self._records.by_public_name(name)

    async def runs_elsewhere(self, job: dict[str, Any]) -> str | None:
        """Where another host that runs the job's live answers (its API's base URL);
        None when it runs here or nowhere."""
        if self._running.get(int(job["id"])) is not None:
            return None
        return await self._hosts.runs_elsewhere(int(job["id"]))

    def running_pipeline(self, job: dict[str, Any]) -> JobPipeline | None:
        """The job's pipeline on this host, None without one."""
        return self._running.get(int(job["id"]))

    def dropped_frames(self, job: dict[str, Any]) -> int:
        """Frames dropped between decoder and encoder (the encoder fell behind)."""
        return self._running.dropped_frames(job["id"])

    def health(self, job: dict[str, Any]) -> Health:
        """The job's input health, computed now (Unknown while no pipeline runs: the job
        offline, or online before its first publisher)."""
        return self._running.health(int(job["id"]))

    def output_statistics(self, job: dict[str, Any]) -> list[OutputStatistics]:
        """Per rendition, what the running pipeline measured and published."""
        return list(self._running.output_statistics(job["id"]))

    # -- state changes --------------------------------------------------------------

    async def set_online(self, project_id: str, stream_key: str, toggle: Toggle) -> dict[str, Any]:
        """The online toggle, by stream key: online waits for a publisher; offline drops
        it and finishes the output (waiting at most OFFLINE_WAIT_SECONDS, then in the
        background: the job's new publishers are refused until it is done)."""
        job = await self._records.get_by_key(project_id, stream_key)
        job_id = int(job["id"])
        if toggle.online and not job["online"]:
            await self._records.set_status(
                job_id,
                LiveStatus.PROCESSING,
                "WentOnline",
                "job online: waiting for the publisher"
                + (f" (cut window {toggle.start} .. {toggle.finish})" if toggle.start else ""),
                online=1,
                start_date_time=utcnow(),
                end_date_time=None,
                cut_start=toggle.start,
                cut_finish=toggle.finish,
            )
            await self._start_pulling(job)
        elif not toggle.online and job["online"]:
            await self._go_offline(
                job_id, "WentOffline", "job offline: publisher refused from now on"
            )
        return await self._records.get(project_id, str(job_id))

    async def end_live(self, project_id: str, ref: str, reason: str) -> dict[str, Any]:
        """The live of a job (by id or name) ends as the offline toggle ends it (nothing
        to do if it is offline); `reason` is the timing's message. Returns the job."""
        job = await self._records.get(project_id, ref)
        if job["online"]:
            await self._go_offline(int(job["id"]), "WentOffline", reason)
        return await self._records.get(project_id, str(job["id"]))

    async def _go_offline(self, job_id: int, child_status: str, message: str) -> None:
        await self._stop_pulling(job_id)
        holder = await self._hosts.holder(job_id)
        elsewhere = holder is not None and holder != self._hosts.encoder_id
        if not elsewhere:
            async with self._admission.serialised(job_id):  # not while being admitted
                finishing = self._running.take_down(job_id, "job went offline")
                self._admission.capacity.release(job_id)
            if finishing is not None:
                await asyncio.wait({finishing}, timeout=OFFLINE_WAIT_SECONDS)
        await self._records.set_status(
            job_id, LiveStatus.OFFLINE, child_status, message, online=0, end_date_time=utcnow()
        )
        if elsewhere:
            # Another host runs the live: it sees the job offline within a second and
            # ends it there; the answer waits for its lease (the recording finished), as
            # long as it would on that host.
            await self._hosts.wait_released(job_id, OFFLINE_WAIT_SECONDS)

    def running_job_ids(self) -> list[int]:
        """The jobs whose live runs on this host."""
        return self._running.job_ids()

    def publishing_here(self, job_id: int) -> bool:
        """Whether this host still runs, or still finishes, a pipeline of the job (its
        recording may still grow)."""
        return self._running.get(job_id) is not None or self._running.finishing(job_id) is not None

    async def rotate_key(self, project_id: str, ref: str) -> dict[str, Any]:
        """A new stream key for a job (by id or name); the old one is refused from now
        on (a live already publishing with it is not cut; an HLS pull job's puller goes
        on with the new key)."""
        job = await self._records.rotate_key(project_id, ref)
        job_id = int(job["id"])
        if job_id in self._pullers:
            await self._stop_pulling(job_id)
            await self._start_pulling(await self._records.by_id(job_id) or job)
        return job

    async def mark_skipped(self, job_id: int, skipped: dict[str, str]) -> None:
        """Record the renditions the job's pipeline does not encode (name -> reason)."""
        await self._records.mark_skipped(job_id, skipped)

    # -- admission (every ingest server's admit callback) -----------------------------

    async def admit(self, request: PublishRequest) -> PublishSession:
        """Decide at publish, before any media is read: the app, a known key, an online
        job of the publisher's protocol, no other publisher on it, room on the host.

        A refusal is a `PublishRefused` with the kind's status (`AdmissionRefused`),
        which the ingest server tells its publisher in its own terms; on a known job it
        is also a `PublisherRefused` timing.
        """
        try:
            if self._draining:
                raise HostDraining("this host is stopping: try another host")
            Admission.check_app(request)
            job = await self._records.by_stream_key(request.stream_key)
            if job is None:
                raise UnknownStreamKey("unknown stream key")  # the server logs it, rate-limited
        except AdmissionRefused as refused:
            self._refused.labels(refused.reason).inc()
            raise PublishRefused(refused.description, refused.status) from None
        job_id = int(job["id"])
        try:
            Admission.check_job(job, request)  # at once, before waiting for the job's lock
            if relayed(request) and not self._hosts.relay_accepted(
                job_id, input_of(request), request.stream_key, token_of(request)
            ):
                raise RelayRefused("relay refused", "a relay without this host's token")
            async with self._admission.serialised(job_id):
                session, child_status, message = await self._admit_to(job_id, request)
        except AdmissionRefused as refused:
            self._refused.labels(refused.reason).inc()
            detail = refused.detail or refused.description
            await self._records.add_timing(
                job_id, "PublisherRefused", f"{request.remote}: {detail}"
            )
            raise PublishRefused(refused.description, refused.status) from None
        await self._records.add_timing(job_id, child_status, message)
        return session

    async def srt_passphrase(self, stream_key: str) -> str | None:
        """An SRT publisher's first check, in its handshake (before any media): the job's
        passphrase, which SRT itself then asks of it (None: the job has none).
        `PublishRefused` if the key is unknown, or its job offline or not an SRT job
        (a `PublisherRefused` timing where the job is known); `admit` follows the
        handshake with every other check."""
        probe = PublishRequest(
            IngestProtocol.SRT, INGEST_APP, stream_key, "", MPEGTS, _ignore, _ignore
        )
        job = None
        try:
            job = await self._records.by_stream_key(stream_key)
            job = Admission.check_job(job, probe)
        except AdmissionRefused as refused:
            self._refused.labels(refused.reason).inc()
            if job is not None:
                await self._records.add_timing(
                    int(job["id"]),
                    "PublisherRefused",
                    f"SRT: {refused.detail or refused.description}",
                )
            raise PublishRefused(refused.description, refused.status) from None
        passphrase = job["srt_passphrase"]
        return str(passphrase) if passphrase else None

    async def _admit_to(
        self, job_id: int, request: PublishRequest
    ) -> tuple[PublishSession, str, str]:
        """Under the job's lock: its pipeline (started, or restarted after a failure)
        and the publisher's session on it, or the relay of a Standard job's input to
        the host holding its lease; with the timing to record (childStatus, message)."""
        job = Admission.check_job(await self._records.by_id(job_id), request)
        running = self._running
        pipeline = running.get(job_id)
        input_name = input_of(request)
        if pipeline is not None and pipeline.publishing_on(input_name):
            raise AlreadyPublishing(
                "this stream key is already publishing", "the stream key is already publishing"
            )
        finishing = running.finishing(job_id)
        if pipeline is not None and pipeline.failed is not None and finishing is None:
            # Its capacity stays claimed: the next pipeline takes its place.
            finishing = running.take_down(job_id, "restarting after a failure")
            pipeline = None
            if finishing is not None:
                await asyncio.wait({finishing}, timeout=RESTART_WAIT_SECONDS)
                if finishing.done():
                    finishing = None
        if finishing is not None:
            if pipeline is None:
                self._admission.capacity.release(job_id)
            raise StillFinishing("the previous live of this job is still being published")
        if pipeline is None:
            units = get_template(job["job_template_id"]).capacity_units
            self._admission.capacity.claim(job_id, units)
            try:
                lease = await self._hosts.acquire(job_id)
            except LeaseHeld as held:
                self._admission.capacity.release(job_id)
                if not self._relayable(job, request):
                    raise
                relay = await self._relay(job_id, request, input_name, held)
                return relay.session, RELAYED, relay.described
            except BaseException:
                self._admission.capacity.release(job_id)
                raise
            try:
                await running.launch(job, lease)
            except BaseException:
                self._admission.capacity.release(job_id)
                await self._hosts.release(lease)
                raise
            if lease.taken_over_from is not None:
                await self._records.add_timing(
                    job_id,
                    "Takeover",
                    f"encoder {lease.encoder_id} ({self._hosts.name}) took the live over from"
                    f" encoder {lease.taken_over_from}, whose lease had expired",
                )
        session, reconnect = running.attach(job_id, request, input_name)
        message = f"{request.remote} publishing to /{INGEST_APP}/ (app {request.app})"
        if reconnect or job["status"] == LiveStatus.INTERRUPTED:
            return session, "PublisherReconnected", message
        return session, "PublisherConnected", message

    @staticmethod
    def _relayable(job: dict[str, Any], request: PublishRequest) -> bool:
        """A Standard job's publisher (not onair's own puller, not a relay already) may
        be relayed to the host holding the job's lease."""
        app = request.app.strip("/")
        return (
            job["input_class"] == STANDARD_INPUT_CLASS
            and app not in PULL_APPS
            and not relayed(request)
        )

    async def _relay(
        self, job_id: int, request: PublishRequest, input_name: str, held: LeaseHeld
    ) -> InputRelay:
        target = await self._hosts.relay_target(held.holder)
        if target is None:  # the holder stopped beating an instant ago: try again soon
            raise held
        return self._relays.start(job_id, input_name, request, target)

    def _relay_ended(self, relay: InputRelay, reason: str) -> None:
        message = f"{relay.described}: {reason}"
        task = asyncio.create_task(self._records.add_timing(relay.job_id, "RelayEnded", message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _fenced_out(self, job_id: int) -> None:
        """A write of the job's pipeline found its lease another host's (before this
        host's heartbeat did): the lease is lost."""
        if self._hosts.forget(job_id):
            self._lease_lost(job_id, None)

    def _lease_lost(self, job_id: int, holder: int | None) -> None:
        """Another host took the job's lease while this one still ran its pipeline (this
        host stalled past the lease's expiry): the pipeline stops here."""
        task = asyncio.ensure_future(self._give_up(job_id, holder))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _give_up(self, job_id: int, holder: int | None) -> None:
        if holder is None:
            holder = await self._hosts.holder(job_id)
        now_at = f"encoder {holder}" if holder is not None else "nobody"
        await self._records.add_timing(
            job_id,
            "LeaseLost",
            f"encoder {self._hosts.encoder_id} lost the job's lease ({now_at} holds it now):"
            " its pipeline stops here",
        )
        async with self._admission.serialised(job_id):
            self._running.take_down(job_id, "the job's lease was lost", release=False)
            self._admission.capacity.release(job_id)


def _ignore(reason: str) -> None:
    """A probe's close/reject: there is no connection to act on yet."""
