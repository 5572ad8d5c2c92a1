"""The job manager: the one owner of every live job's state and running pipeline.

API handlers ask it (`create`, `get`, `set_online`, `stats`, ...); ingest asks it to
admit a publisher. Every change of a job's status goes through `set_status`, which
appends the timing row in the same transaction.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

from encoder.templates import get_template

from .errors import JobNotFound
from .keys import new_stream_key, stream_key_digest
from .settings import Settings
from .status import LiveStatus
from .store import Page, Store, utcnow
from .validation import NewLiveJob, Paging, Toggle, ascii_int

logger = logging.getLogger(__name__)

EMPTY_STATISTICS: dict[str, Any] = {
    "width": 0,
    "height": 0,
    "framerate": 0,
    "videoDataRate": 0,
    "videoCodecId": 0,
    "audioDataRate": 0,
    "audioSampleRate": 0,
    "audioSampleSize": 0,
    "audioCodecId": 0,
    "audioChannels": 0,
    "stereo": False,
    "encoder": "",
}


def job_statistics(job: dict[str, Any]) -> dict[str, Any]:
    """The job's last recorded input statistics (zeros before any media)."""
    if job.get("statistics"):
        return {**EMPTY_STATISTICS, **json.loads(job["statistics"])}
    return dict(EMPTY_STATISTICS)


class JobManager:
    """Owns live jobs: their records, status transitions and (via runtimes) pipelines."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.runtime: Any = None  # the media runtime (ingest + pipelines), attached by the app

    # -- queries -----------------------------------------------------------------

    async def create(self, project_id: str, new: NewLiveJob) -> dict[str, Any]:
        """Create a job; BucketOwned or PrefixTaken (400) if its storage is not free.

        The store claims the bucket for the project and checks the prefix in the
        transaction that inserts the job.
        """
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
            "status": int(LiveStatus.OFFLINE),
            "online": 0,
            "insert_date": utcnow(),
        }
        job_id = await self.store.call(
            self.store.insert_job, row, [r.name for r in template.renditions]
        )
        await self.store.call(
            self.store.add_timing,
            job_id,
            LiveStatus.OFFLINE.label,
            "Created",
            f"live job created with template {template.id} ({template.name})",
        )
        return await self.get(project_id, str(job_id))

    def _find(self, project_id: str, ref: str) -> dict[str, Any] | None:
        """On the store's thread: a job by its integer id (ASCII digits) or its name."""
        job_id = ascii_int(ref)
        if job_id is not None:
            return self.store.get_job(project_id, job_id) if 0 < job_id < 2**63 else None
        try:
            name = str(uuid.UUID(ref))
        except ValueError:
            return None
        return self.store.get_job_by_name(project_id, name)

    async def get(self, project_id: str, ref: str) -> dict[str, Any]:
        """A job of this project by its integer id or its name (UUID); else JobNotFound."""
        job = await self.store.call(self._find, project_id, ref)
        if job is None:
            raise JobNotFound(ref)
        return job

    async def get_with_outputs(
        self, project_id: str, ref: str
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """`get`, and the job's outputs, in one trip to the store."""

        def load() -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
            job = self._find(project_id, ref)
            return job, (self.store.job_outputs(job["id"]) if job is not None else [])

        job, outputs = await self.store.call(load)
        if job is None:
            raise JobNotFound(ref)
        return job, outputs

    async def get_by_key(self, project_id: str, stream_key: str) -> dict[str, Any]:
        job = await self.store.call(self.store.get_job_by_digest, stream_key_digest(stream_key))
        if job is None or job["project_id"] != project_id:
            raise JobNotFound()  # never the key: it is a secret, and errors get logged
        return job

    async def list_jobs(self, project_id: str, search: str | None, paging: Paging) -> Page:
        return await self.store.call(
            self.store.list_jobs, project_id, search, paging.offset, paging.page_size
        )

    async def outputs(self, project_id: str, job_id: int | None, paging: Paging) -> Page:
        return await self.store.call(
            self.store.list_outputs, project_id, job_id, paging.offset, paging.page_size
        )

    async def timings(self, job: dict[str, Any], output_id: int | None, paging: Paging) -> Page:
        return await self.store.call(
            self.store.list_timings, job["id"], output_id, paging.offset, paging.page_size
        )

    def statistics(self, job: dict[str, Any]) -> dict[str, Any]:
        """Input statistics: live from the running pipeline, else the last recorded."""
        if self.runtime is not None:
            live = self.runtime.input_statistics(job["id"])
            if live is not None:
                return {**EMPTY_STATISTICS, **live}
        return job_statistics(job)

    def dropped_frames(self, job: dict[str, Any]) -> int:
        """Frames dropped between decoder and encoder (the encoder fell behind)."""
        return int(self.runtime.dropped_frames(job["id"])) if self.runtime is not None else 0

    def output_statistics(self, job: dict[str, Any]) -> list[dict[str, Any]]:
        if self.runtime is not None:
            return list(self.runtime.output_statistics(job["id"]))
        return []

    # -- state changes -----------------------------------------------------------

    async def set_online(self, project_id: str, stream_key: str, toggle: Toggle) -> dict[str, Any]:
        job = await self.get_by_key(project_id, stream_key)
        if toggle.online and not job["online"]:
            await self.set_status(
                job["id"],
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
        elif not toggle.online and job["online"]:
            if self.runtime is not None:
                await self.runtime.stop_job(job["id"], "job went offline")
            await self.set_status(
                job["id"],
                LiveStatus.OFFLINE,
                "WentOffline",
                "job offline: publisher refused from now on",
                online=0,
                end_date_time=utcnow(),
            )
        return await self.get(project_id, str(job["id"]))

    async def rotate_key(self, project_id: str, ref: str) -> dict[str, Any]:
        """Give a job (by id or name) a new stream key; the old one is refused from now on.

        New publishers and the online toggle look the key up by its digest, so the old
        key stops working at once. A publisher already admitted keeps its session: the
        running pipeline is not touched.
        """
        job = await self.get(project_id, ref)
        key = new_stream_key()
        await self.store.call(
            self.store.replace_stream_key,
            job["id"],
            key,
            stream_key_digest(key),
            LiveStatus(job["status"]).label,
            "stream key rotated: the previous key is refused from now on",
        )
        logger.info("[job %s] stream key rotated", job["id"])
        return await self.get(project_id, str(job["id"]))

    async def set_status(
        self,
        job_id: int,
        status: LiveStatus,
        child_status: str,
        message: str,
        **job_values: Any,
    ) -> None:
        """Change a job's status (and its outputs'), appending the timing row."""
        await self.store.call(
            lambda: self.store.set_status(
                job_id, int(status), status.label, child_status, message, None, **job_values
            )
        )
        outputs = await self.store.call(self.store.job_outputs, job_id)
        await self.store.call(
            self.store.update_outputs,
            job_id,
            [{"output_id": o["output_id"], "status": int(status)} for o in outputs],
        )
        logger.info("[job %s] %s: %s (%s)", job_id, status.label, child_status, message)

    async def mark_skipped(self, job_id: int, skipped: dict[str, str]) -> None:
        """Record the renditions a pipeline will not encode (rendition name -> reason).

        Called when the encoder has planned its ladder for the source (a 720p source
        skips `1080p`). Renditions not in `skipped` are marked encoded: each pipeline
        plans anew, so what a previous one skipped may be encoded now.
        """
        unknown = await self.store.call(self.store.mark_skipped, job_id, skipped)
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

    async def add_timing(
        self, job_id: int, child_status: str, message: str, output_id: int | None = None
    ) -> None:
        job = await self.store.call(self.store.get_job_by_id, job_id)
        if job is None:
            return
        await self.store.call(
            self.store.add_timing,
            job_id,
            LiveStatus(job["status"]).label,
            child_status,
            message,
            output_id,
        )

    async def restore(self) -> None:
        """After a restart: jobs that were online wait for their publisher again."""
        for job in await self.store.call(self.store.online_jobs):
            if job["status"] != LiveStatus.PROCESSING:
                await self.set_status(
                    job["id"],
                    LiveStatus.PROCESSING,
                    "ServiceRestarted",
                    "service restarted: waiting for the publisher",
                )
