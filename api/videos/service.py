"""`Videos`: the owner of the videos cut from lives. Handlers ask it; it composes the
store's rows (`VideoStore`), the cuts' runner (`VideoCuts`) and the live jobs' owner
(`LiveJobs`: a stop-and-cut ends the live as the offline toggle does).

A request's range is checked against what is recorded when it is made (a 400 says the
recorded range); what a stop-and-cut leaves open (no end given: the live's end) is
resolved when the cut runs, after the live ended.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import quote

from aiohttp import web

from packager.layout import object_prefix
from packager.object_store import S3Storage, StorageError
from vod import CutError, RecordedTimeline, recorded_timeline
from vod.cut import ORIGINAL_FILE_NAME

from ..database import Database, Page, utcnow
from ..errors import Forbidden, JobNotFound, OnairError, ValidationFailed
from ..lives import LiveJobs
from ..models import Video
from ..present import url_path
from ..settings import Settings
from ..validation import MS_FIELDS, TIME_FIELDS, VISIBILITIES, CutAndPublish, CutRange, StopAndCut
from .cuts import VideoCuts, parse_time
from .playlists import resolve_key, rewrite, uris
from .store import PROCESSING, READY, VideoStore
from .tokens import TOKEN_SECRET_NAME, make_token, token_problem
from .visibility import is_private, video_prefix

MASTER_NAME = "master.m3u8"
PLAYLIST_CONTENT_TYPE = "application/vnd.apple.mpegurl"


class VideoNotFound(JobNotFound):
    """No video with this public id in this project (404)."""

    def __init__(self, ref: str) -> None:
        OnairError.__init__(self, f"video not found: {ref}")


class Videos:
    """Cuts lives into videos, and tells where they play (see the module)."""

    def __init__(
        self,
        settings: Settings,
        database: Database,
        lives: LiveJobs,
        storage: S3Storage,
        presigner: S3Storage,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._db = database
        self._lives = lives
        self._storage = storage
        self._presigner = presigner  # on the address players reach (storage_base_url)
        self._clock = clock
        self.store = VideoStore(database)
        self.cuts = VideoCuts(
            database, self.store, lives, storage, f"host-{settings.encoder_id}", clock=clock
        )
        self._secret: str | None = None

    async def start(self) -> None:
        """Resume the cuts this host left (and any due)."""
        await self.cuts.start()

    async def close(self) -> None:
        """Stop the cuts (bounded): they resume at the next start."""
        await self.cuts.stop()

    # -- cuts ---------------------------------------------------------------------------

    async def stop_and_cut(self, project_id: str, ref: str, body: StopAndCut) -> dict[str, Any]:
        """The live ends and a range of it becomes a video (cut once the live ended)."""
        job = await self._lives.get(project_id, ref)
        timeline = await self._timeline(job)
        stored: tuple[int | None, int | None]
        if body.has_ms:
            from_ms, to_ms = self._resolve(
                timeline, MS_FIELDS, body.from_milisecond, body.to_milisecond
            )
            stored = (from_ms, to_ms if body.to_milisecond is not None else None)
        elif body.has_times:
            start, finish = parse_time(body.date_time_from), parse_time(body.date_time_to)
            from_ms, to_ms = self._resolve(timeline, TIME_FIELDS, None, None, start, finish)
            stored = (from_ms, to_ms if finish is not None else None)
        elif job["cut_start"] or job["cut_finish"]:
            stored = self._window(timeline, job)
        else:
            stored = (None, None)
        video = await self._insert(job, body, None, stored, after_live=True)
        await self._lives.end_live(
            project_id, str(job["id"]), f"stop-and-cut: the live ends, video {video['public_id']}"
        )
        self.cuts.wake()
        return video

    async def cut_and_publish(
        self, project_id: str, ref: str, body: CutAndPublish
    ) -> dict[str, Any]:
        """A range already recorded becomes a video; the live goes on. A range whose end
        is not recorded yet is a 400 (no waiting: ask again once it is)."""
        job = await self._lives.get(project_id, ref)
        timeline = await self._timeline(job)
        stored = self._resolve(timeline, MS_FIELDS, body.from_milisecond, body.to_milisecond)
        video = await self._insert(job, body, body.title, stored, after_live=False)
        self.cuts.wake()
        return video

    async def stop_live(self, project_id: str, ref: str) -> None:
        """The live ends without a video (nothing to do if it is offline)."""
        await self._lives.end_live(project_id, ref, "stop: the live ends without a video")

    async def _timeline(self, job: dict[str, Any]) -> RecordedTimeline:
        prefix = object_prefix(job["destination"], job["file_path"])
        since = parse_time(job["start_date_time"])
        try:
            return await asyncio.to_thread(
                recorded_timeline, self._storage, job["bucket"], prefix, since
            )
        except CutError as error:
            raise ValidationFailed([f"id: {error}"]) from None
        except StorageError as error:
            raise web.HTTPServiceUnavailable(reason=f"storage unavailable: {error}") from None

    @staticmethod
    def _resolve(
        timeline: RecordedTimeline,
        fields: tuple[str, ...],
        from_ms: int | None,
        to_ms: int | None,
        from_time: datetime | None = None,
        to_time: datetime | None = None,
    ) -> tuple[int, int]:
        try:
            return timeline.resolve(from_ms, to_ms, from_time, to_time)
        except CutError as error:
            raise ValidationFailed([f"{', '.join(fields)}: {error}"]) from None

    def _window(self, timeline: RecordedTimeline, job: dict[str, Any]) -> tuple[int, int | None]:
        """The online toggle's cut window, within what was recorded (a live stopped
        before the window's end ends the video there)."""
        start, finish = parse_time(job["cut_start"]), parse_time(job["cut_finish"])
        first, last = timeline.first_program_time, timeline.last_program_time
        if start is not None and first is not None and start < first:
            start = None
        open_end = finish is None or (last is not None and finish > last)
        from_ms, to_ms = self._resolve(
            timeline,
            ("startDateTime", "finishDateTime (the online toggle's cut window)"),
            None,
            None,
            start,
            None if open_end else finish,
        )
        return from_ms, None if open_end else to_ms

    async def _insert(
        self,
        job: dict[str, Any],
        body: CutRange,
        title: str | None,
        stored: tuple[int | None, int | None],
        *,
        after_live: bool,
    ) -> dict[str, Any]:
        public_id = str(uuid.uuid4())
        visibility = body.video_visibility_option_id
        prefix = video_prefix(
            object_prefix(job["destination"], job["file_path"]), public_id, visibility
        )
        now = utcnow()
        row = {
            "public_id": public_id,
            "project_id": job["project_id"],
            "live_job_id": int(job["id"]),
            "title": title,
            "name": title or f"Cut of {job['description'] or job['name']}",
            "status": PROCESSING,
            "visibility": visibility,
            "live_start": job["start_date_time"],
            "after_live": int(after_live),
            "from_ms": stored[0],
            "to_ms": stored[1],
            "video_prefix": prefix,
            "master_key": f"{prefix}/{MASTER_NAME}",
            "original_file_key": f"{prefix}/{ORIGINAL_FILE_NAME}",
            "created_at": now,
            "next_attempt_at": now,
            "attempts": 0,
        }
        await self._db.call(self.store.insert, row)
        return await self._get_row(job["project_id"], public_id)

    # -- queries ------------------------------------------------------------------------

    async def _get_row(self, project_id: str, public_id: str) -> dict[str, Any]:
        try:
            public_id = str(uuid.UUID(public_id))
        except ValueError:
            raise VideoNotFound(public_id) from None
        video = await self._db.call(self.store.get, project_id, public_id)
        if video is None:
            raise VideoNotFound(public_id)
        return video

    async def get(self, project_id: str, public_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """A video of this project and its live job; VideoNotFound (404) otherwise."""
        video = await self._get_row(project_id, public_id)
        return video, await self._job(video)

    async def _job(self, video: dict[str, Any]) -> dict[str, Any]:
        job = await self._db.call(self._db.get_job_by_id, int(video["live_job_id"]))
        if job is None:
            raise VideoNotFound(video["public_id"])
        return job

    async def list(
        self, project_id: str, live_job_id: int | None, offset: int, limit: int
    ) -> tuple[Page, dict[int, dict[str, Any]]]:
        """A page of the project's videos (or one live job's: JobNotFound if not its),
        newest first, with their jobs."""
        if live_job_id is not None:
            await self._lives.get(project_id, str(live_job_id))
        page = await self._db.call(self.store.page, project_id, live_job_id, offset, limit)
        jobs = {}
        for video in page.rows:
            job_id = int(video["live_job_id"])
            if job_id not in jobs:
                jobs[job_id] = await self._job(video)
        return page, jobs

    # -- presentation -------------------------------------------------------------------

    async def _token_secret(self) -> str:
        if self._secret is None:
            self._secret = await self._db.call(self.store.secret, TOKEN_SECRET_NAME)
        return self._secret

    def _storage_url(self, job: dict[str, Any], key: str) -> str:
        settings = self._settings
        if job["cdn_distribution"] and settings.cdn_base_url:
            return f"{settings.cdn_base_url}/{url_path(job['bucket'], key)}"
        return f"{settings.storage_base_url}/{url_path(job['bucket'], key)}"

    def original_file_url(self, video: dict[str, Any], job: dict[str, Any]) -> str:
        key = video["original_file_key"]
        if is_private(int(video["visibility"])):
            return self._presigner.presign(job["bucket"], key, self._settings.presign_seconds)
        return self._storage_url(job, key)

    async def playback_url(self, video: dict[str, Any], job: dict[str, Any], api_base: str) -> str:
        if not is_private(int(video["visibility"])):
            return self._storage_url(job, video["master_key"])
        expires = int(self._clock()) + self._settings.playback_token_seconds
        token = make_token(await self._token_secret(), video["public_id"], expires)
        return (
            f"{api_base}/api/v1/{quote(video['project_id'], safe='')}/videos/"
            f"{video['public_id']}/playlist.m3u8?token={token}"
        )

    async def view(self, video: dict[str, Any], job: dict[str, Any], api_base: str) -> Video:
        ready = video["status"] == READY
        visibility = int(video["visibility"])
        return Video(
            video_public_id=video["public_id"],
            name=video["name"],
            title=video["title"],
            status=video["status"],
            error=video["error"],
            duration=video["duration_ms"],
            visibility=VISIBILITIES[visibility],  # type: ignore[arg-type]
            video_visibility_option_id=visibility,  # type: ignore[arg-type]
            playback_url=await self.playback_url(video, job, api_base) if ready else None,
            original_file=self.original_file_url(video, job) if ready else None,
            live_video_id=job["name"],
            live_job_id=int(job["id"]),
            from_milisecond=video["from_ms"],
            to_milisecond=video["to_ms"],
            created_date_time=video["created_at"],
            finished_date_time=video["finished_at"],
        )

    # -- a private video's playlists ------------------------------------------------------

    async def playlist(
        self, project_id: str, public_id: str, token: str, variant: int | None
    ) -> str:
        """The master (variant None) or one variant's playlist of a private video, its
        segments presigned now; Forbidden (403) without a valid token."""
        # The token first: without a good one, nothing is told (not even whether the
        # video exists).
        problem = token_problem(await self._token_secret(), public_id, token, self._clock())
        if problem is not None:
            raise Forbidden(problem)
        video = await self._get_row(project_id, public_id)
        if video["status"] != READY or not is_private(int(video["visibility"])):
            raise VideoNotFound(public_id)  # a public one plays from storage
        job = await self._job(video)
        try:
            text = await asyncio.to_thread(self._playlist, video, job, token, variant)
        except StorageError as error:
            raise web.HTTPServiceUnavailable(reason=f"storage unavailable: {error}") from None
        if text is None:
            raise VideoNotFound(f"{public_id} (variant {variant})")
        return text

    def _playlist(
        self, video: dict[str, Any], job: dict[str, Any], token: str, variant: int | None
    ) -> str | None:
        bucket, prefix, master_key = job["bucket"], video["video_prefix"], video["master_key"]
        master = self._storage.get_text(bucket, master_key)
        if master is None:
            return None
        listed = uris(master)
        if variant is None:
            return rewrite(
                master, lambda uri: f"playlist.m3u8?token={token}&variant={listed.index(uri)}"
            )
        if variant >= len(listed):
            return None
        key = resolve_key(master_key, listed[variant], prefix)
        media = None if key is None else self._storage.get_text(bucket, key)
        if key is None or media is None:
            return None
        expires = self._settings.presign_seconds

        def presigned(uri: str) -> str:
            segment = resolve_key(key, uri, prefix)
            return uri if segment is None else self._presigner.presign(bucket, segment, expires)

        return rewrite(media, presigned)
