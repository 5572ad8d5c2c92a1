"""Live job records: the jobs, their outputs and timings in the database, and the one
place that writes them.

`JobRecords` is a part of the jobs' owner (`api.lives.LiveJobs`), shared with the
running pipelines (`api.running`) it composes; nothing else writes a job. Every change
of a job's status goes through `set_status`, which appends the timing row in the same
transaction, and, for a job with a callbackUrl, queues its webhook event in it too
(`api.webhooks`; a failed rendition's timing likewise).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select

from encoder.templates import get_template
from ingest.health import Health
from ingest.stats import SourceStatistics
from packager.hls import PublishedRendition

from .database import Database, Page, utcnow
from .database.schema import restreams
from .errors import JobNotFound
from .keys import new_stream_key, stream_key_digest, stream_keys_equal
from .statistics import to_record
from .status import LiveStatus
from .validation import NewLiveJob, Paging, ascii_int
from .webhooks.events import (
    INPUT_NAMES,
    INPUT_SWITCHES,
    RESTREAM_CHILD_STATES,
    health_event,
    input_failover_event,
    restream_event,
)

HEALTH_CHANGED = "HealthChanged"

logger = logging.getLogger(__name__)


class JobRecords:
    """Reads and writes live jobs, their outputs and timings.

    Coroutines run their queries on the database's thread; the storage claims at the
    end are plain calls, made on the upload workers' threads (the database is
    thread-safe).
    """

    def __init__(self, database: Database) -> None:
        self._db = database

    # -- jobs -------------------------------------------------------------------

    async def create(self, project_id: str, new: NewLiveJob) -> dict[str, Any]:
        """Create a job; BucketOwned or PrefixTaken (400) if its storage is not free.

        The database claims the bucket for the project and checks the prefix in the
        transaction that inserts the job.
        """
        db = self._db
        template = get_template(new.job_template_id)
        key = new_stream_key()
        row = {
            "project_id": project_id,
            "name": str(uuid.uuid4()),
            "stream_key": key,
            "key_digest": stream_key_digest(key),
            "destination": new.destination,
            "description": new.description,
            "bucket": new.bucket,
            "cdn_distribution": int(new.cdn_distribution),
            "job_template_id": new.job_template_id,
            "file_path": new.file_path,
            "server_type": new.server_type,
            "input_class": new.input_class,
            "callback_url": new.callback_url,
            "srt_passphrase": new.srt_passphrase,
            "source_url": new.source_url,
            "input_loss_threshold_ms": new.input_loss_threshold_ms,
            "input_preference": new.input_preference,
            "failback_after_seconds": new.failback_after_seconds,
            "backup_source_url": new.backup_source_url,
            "viewer_token_required": int(new.viewer_token_required),
            "status": int(LiveStatus.OFFLINE),
            "online": 0,
            "insert_date": utcnow(),
        }
        job_id = await db.call(db.insert_job, row, [r.name for r in template.renditions])
        await db.call(
            db.add_timing,
            job_id,
            LiveStatus.OFFLINE.label,
            "Created",
            f"live job created with template {template.id} ({template.name})",
        )
        return await self.get(project_id, str(job_id))

    def _find(self, project_id: str, ref: str) -> dict[str, Any] | None:
        """On the database's thread: a job by its integer id (ASCII digits) or its name."""
        job_id = ascii_int(ref)
        if job_id is not None:
            return self._db.get_job(project_id, job_id) if 0 < job_id < 2**63 else None
        try:
            name = str(uuid.UUID(ref))
        except ValueError:
            return None
        return self._db.get_job_by_name(project_id, name)

    async def get(self, project_id: str, ref: str) -> dict[str, Any]:
        """A job of this project by its integer id or its name (UUID); else JobNotFound."""
        job = await self._db.call(self._find, project_id, ref)
        if job is None:
            raise JobNotFound(ref)
        return job

    async def get_with_outputs(
        self, project_id: str, ref: str
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """`get`, and the job's outputs, in one trip to the database."""

        def load() -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
            job = self._find(project_id, ref)
            return job, (self._db.job_outputs(job["id"]) if job is not None else [])

        job, outputs = await self._db.call(load)
        if job is None:
            raise JobNotFound(ref)
        return job, outputs

    async def get_by_key(self, project_id: str, stream_key: str) -> dict[str, Any]:
        """A job of this project by its stream key; else JobNotFound (never naming it)."""
        job = await self.by_stream_key(stream_key)
        if job is None or job["project_id"] != project_id:
            raise JobNotFound()  # never the key: it is a secret, and errors get logged
        return job

    async def by_stream_key(self, stream_key: str) -> dict[str, Any] | None:
        """Any project's job with this stream key (looked up by its digest, then compared
        in constant time), None if there is none."""
        db = self._db
        job = await db.call(db.get_job_by_digest, stream_key_digest(stream_key))
        if job is None or not stream_keys_equal(stream_key, job["stream_key"]):
            return None
        return job

    async def by_id(self, job_id: int) -> dict[str, Any] | None:
        return await self._db.call(self._db.get_job_by_id, job_id)

    async def by_public_name(self, name: str) -> dict[str, Any] | None:
        """Any project's job by its public name (the UUID viewers see), None if none."""
        return await self._db.call(self._db.get_job_by_public_name, name)

    async def list_jobs(self, project_id: str, search: str | None, paging: Paging) -> Page:
        db = self._db
        return await db.call(db.list_jobs, project_id, search, paging.offset, paging.page_size)

    async def outputs(self, project_id: str, job_id: int | None, paging: Paging) -> Page:
        db = self._db
        return await db.call(db.list_outputs, project_id, job_id, paging.offset, paging.page_size)

    async def timings(self, job: dict[str, Any], output_id: int | None, paging: Paging) -> Page:
        db = self._db
        return await db.call(db.list_timings, job["id"], output_id, paging.offset, paging.page_size)

    async def webhook_deliveries(self, project_id: str, job_id: int | None, paging: Paging) -> Page:
        """A page of the project's webhook deliveries (or one job's), newest first.

        They are queued by the store in the transactions of `set_status` and
        `add_timing` (the events they tell) and sent by `api.webhooks.sender`."""
        db = self._db
        return await db.call(
            db.list_webhook_deliveries, project_id, job_id, paging.offset, paging.page_size
        )

    async def output_id(self, job_id: int, rendition: str | None) -> int | None:
        """The output row of `rendition` (None for an event about the whole job)."""
        if rendition is None:
            return None
        for output in await self._db.call(self._db.job_outputs, job_id):
            if output["rendition"] == rendition:
                return int(output["output_id"])
        return None

    # -- state changes -----------------------------------------------------------

    async def set_status(
        self,
        job_id: int,
        status: LiveStatus,
        child_status: str,
        message: str,
        **job_values: Any,
    ) -> None:
        """Change a job's status (and its outputs'), appending the timing row and, for a
        job with a callbackUrl, queueing its webhook event in the same transaction."""
        db = self._db
        await db.call(
            lambda: db.set_status(
                job_id, int(status), status.label, child_status, message, None, **job_values
            )
        )
        outputs = await db.call(db.job_outputs, job_id)
        await db.call(
            db.update_outputs,
            job_id,
            [{"output_id": o["output_id"], "status": int(status)} for o in outputs],
        )
        logger.info("[job %s] %s: %s (%s)", job_id, status.label, child_status, message)

    async def add_timing(
        self, job_id: int, child_status: str, message: str, output_id: int | None = None
    ) -> None:
        """A timing row at the job's current status (an event that does not change it)."""
        db = self._db
        job = await db.call(db.get_job_by_id, job_id)
        if job is None:
            return
        await db.call(
            db.add_timing, job_id, LiveStatus(job["status"]).label, child_status, message, output_id
        )

    async def health_changed(self, job_id: int, previous: Health, health: Health) -> None:
        """The job's input health changed: a `HealthChanged` timing row (its message
        names the reasons) and, for a job with a callbackUrl, its `livejob.health`
        event, in one transaction."""
        db = self._db
        job = await db.call(db.get_job_by_id, job_id)
        if job is None:
            return
        reasons = [{"type": r.type.value, "description": r.description} for r in health.reasons]
        message = f"{previous.state.value} -> {health.summary}"

        def event(locked: Mapping[str, Any]) -> tuple[str, dict[str, Any]] | None:
            return health_event(locked, health.state.value, previous.state.value, reasons)

        status_name = LiveStatus(job["status"]).label
        await db.call(
            lambda: db.add_timing(job_id, status_name, HEALTH_CHANGED, message, None, event)
        )
        logger.info("[job %s] health %s", job_id, message)

    async def restream_changed(
        self, job_id: int, restream_id: int, title: str, child_status: str, message: str
    ) -> None:
        """A restream of the job changed state: a timing row (`child_status`, one of
        `RESTREAM_CHILD_STATES`: RestreamConnecting, RestreamConnected,
        RestreamReconnecting, RestreamErrored, RestreamStopped; its message names the
        restream) and, for a job with a callbackUrl, its `restream.state` event, in one
        transaction. Called by the restreams' runtime, on the event loop.

        `message` must not carry the stream key; were it there, it is masked before it
        is written (timings are read by anyone with the project's key, and logged)."""
        if child_status not in RESTREAM_CHILD_STATES:
            raise ValueError(f"not a restream child status: {child_status!r}")
        db = self._db
        job = await db.call(db.get_job_by_id, job_id)
        if job is None:
            return
        key = await db.call(self._restream_key, restream_id)
        if key:
            message = message.replace(key, "<streamKey>")
        text = f"restream {restream_id} ({title}): {message}"

        def event(locked: Mapping[str, Any]) -> tuple[str, dict[str, Any]] | None:
            return restream_event(locked, restream_id, title, child_status, message)

        status_name = LiveStatus(job["status"]).label
        await db.call(lambda: db.add_timing(job_id, status_name, child_status, text, None, event))
        logger.info("[job %s] %s: %s", job_id, child_status, text)

    async def input_switched(
        self,
        job_id: int,
        child_status: str,
        from_input: str,
        to_input: str,
        reason: str,
        message: str,
    ) -> None:
        """A Standard job switched inputs: a timing row (`child_status`: InputFailover,
        the input in use was lost, or InputFailback, back to the primary; its message
        "failover primary -> backup: {message}") and, for a job with a callbackUrl, its
        `input.failover` event, in one transaction. `from_input` and `to_input` are
        `primary` or `backup`; `reason` says why in a word (e.g. `inputLost`), `message`
        in a sentence (e.g. "no media for 1000 ms"). Called by the pipeline, on the
        event loop."""
        if child_status not in INPUT_SWITCHES:
            raise ValueError(f"not an input switch child status: {child_status!r}")
        for name, value in (("from_input", from_input), ("to_input", to_input)):
            if value not in INPUT_NAMES:
                raise ValueError(f"{name} is not one of {', '.join(INPUT_NAMES)}: {value!r}")
        db = self._db
        job = await db.call(db.get_job_by_id, job_id)
        if job is None:
            return
        text = f"{INPUT_SWITCHES[child_status]} {from_input} -> {to_input}: {message}"

        def event(locked: Mapping[str, Any]) -> tuple[str, dict[str, Any]] | None:
            return input_failover_event(locked, child_status, from_input, to_input, reason, message)

        status_name = LiveStatus(job["status"]).label
        await db.call(lambda: db.add_timing(job_id, status_name, child_status, text, None, event))
        logger.info("[job %s] %s: %s", job_id, child_status, text)

    def _restream_key(self, restream_id: int) -> str | None:
        with self._db.engine.connect() as connection:
            key = connection.execute(
                select(restreams.c.stream_key).where(restreams.c.id == restream_id)
            ).scalar()
        return None if key is None else str(key)

    async def rotate_key(self, project_id: str, ref: str) -> dict[str, Any]:
        """Give a job (by id or name) a new stream key; the old one is refused from now on.

        New publishers and the online toggle look the key up by its digest, so the old
        key stops working at once. A publisher already admitted keeps its session: the
        running pipeline is not touched.
        """
        db = self._db
        job = await self.get(project_id, ref)
        key = new_stream_key()
        await db.call(
            db.replace_stream_key,
            job["id"],
            key,
            stream_key_digest(key),
            LiveStatus(job["status"]).label,
            "stream key rotated: the previous key is refused from now on",
        )
        logger.info("[job %s] stream key rotated", job["id"])
        return await self.get(project_id, str(job["id"]))

    async def mark_skipped(self, job_id: int, skipped: dict[str, str]) -> None:
        """Record the renditions a pipeline will not encode (rendition name -> reason).

        Called when the encoder has planned its ladder for the source (a 720p source
        skips `1080p`). Renditions not in `skipped` are marked encoded: each pipeline
        plans anew, so what a previous one skipped may be encoded now.
        """
        unknown = await self._db.call(self._db.mark_skipped, job_id, skipped)
        if unknown:
            logger.warning(
                "[job %s] cannot mark unknown renditions skipped: %s", job_id, sorted(unknown)
            )
        applied = sorted((name, reason) for name, reason in skipped.items() if name not in unknown)
        if applied:
            logger.info(
                "[job %s] renditions skipped: %s",
                job_id,
                ", ".join(f"{name} ({reason})" for name, reason in applied),
            )

    async def record_lease(self, job_id: int, lock_key: str, encoder_id: int) -> None:
        """Every output of the job is run by this host (`encoder_id`) under `lock_key`."""
        db = self._db
        outputs = await db.call(db.job_outputs, job_id)
        leases = [
            {"output_id": o["output_id"], "lock_key": lock_key, "encoder_id": encoder_id}
            for o in outputs
        ]
        await db.call(db.update_outputs, job_id, leases)

    async def record_progress(
        self,
        job_id: int,
        input_statistics: SourceStatistics,
        published: Mapping[str, PublishedRendition],
    ) -> None:
        """The job's input statistics (once media was seen) and each output's progress."""
        db = self._db
        if input_statistics.media_seen:
            record = to_record(input_statistics)
            await db.call(lambda: db.update_job(job_id, statistics=record))
        updates = []
        for output in await db.call(db.job_outputs, job_id):
            row = published.get(output["rendition"])
            if row is None:
                continue
            updates.append(
                {
                    "output_id": output["output_id"],
                    "progress": int(row.seconds),
                    "counter": row.segments,
                }
            )
        await db.call(db.update_outputs, job_id, updates)

    async def online_jobs(self) -> list[dict[str, Any]]:
        return list(await self._db.call(self._db.online_jobs))

    async def restore(self, encoder_id: int) -> None:
        """After a restart: jobs that were online wait for their publisher again, but
        for those another live host runs (their lease is that host's)."""
        now = utcnow()
        for job in await self._db.call(self._db.online_jobs):
            elsewhere = (
                job["lease_encoder_id"] is not None
                and job["lease_encoder_id"] != encoder_id
                and job["lease_expires_at"] is not None
                and job["lease_expires_at"] > now
            )
            if job["status"] != LiveStatus.PROCESSING and not elsewhere:
                await self.set_status(
                    job["id"],
                    LiveStatus.PROCESSING,
                    "ServiceRestarted",
                    "service restarted: waiting for the publisher",
                )

    # -- storage claims (plain calls, on an upload worker's thread) ---------------

    def mark_bucket_created(self, bucket: str) -> None:
        """onair created this bucket: its jobs may write it."""
        self._db.mark_bucket_created(bucket)

    def bucket_created_by_onair(self, bucket: str) -> bool:
        owned = self._db.bucket(bucket)
        return owned is not None and bool(owned["created_by_onair"])

    def prefix_claimed(self, job_id: int) -> bool:
        """Whether the job's pipelines ever wrote at its prefix (so what is there is its
        own); True for a job that no longer exists (nothing to protect)."""
        current = self._db.get_job_by_id(job_id)
        return current is None or bool(current["prefix_claimed_at"])

    def claim_prefix(self, job_id: int) -> None:
        self._db.claim_prefix(job_id)
