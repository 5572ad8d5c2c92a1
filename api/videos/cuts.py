"""`VideoCuts`: the runner of this host's cuts, started and stopped with the app.

It claims Processing videos from the store under a lease (`VideoStore.claim_due`:
one host runs a cut; the lease is renewed while it runs), at most `slots` at once, and
runs each on a worker thread (`vod.cut_video`). A cut ends Ready (its master written
last, by the engine) or Failed with a reason; a storage outage (`StorageError`) lets
it go for later, with backoff (an outage delays a cut, it does not fail it, unless it
lasts `GIVE_UP_HOURS`). A stop of the service cancels running cuts (bounded) and lets
them go: the next start, or another host, resumes them from the start (the engine
rewrites every object). A video taken `MAX_ATTEMPTS` times without finishing (the
service died during it each time) fails, saying so: never Processing forever.

A stop-and-cut's video waits for its live to end (the offline toggle's pipeline to
finish publishing) before it is cut: its end is the live's end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

from packager.layout import object_prefix
from packager.object_store import S3Storage, StorageError
from vod import CutCancelled, CutError, CutRequest, CutResult, cut_video, recorded_timeline

from ..database import Database
from ..database.store import unix_of, utc_at
from ..lives import LiveJobs
from ..webhooks.events import video_event
from .store import FAILED, READY, VideoStore
from .visibility import ensure_private_policy, is_private

logger = logging.getLogger(__name__)

LEASE_SECONDS = 60.0
POLL_SECONDS = 1.0
MAX_CONCURRENT_CUTS = 2  # cuts re-encode edge GOPs: two at once leave the lives room
MAX_ATTEMPTS = 3
RETRY_INITIAL_SECONDS = 2.0
RETRY_MAX_SECONDS = 300.0
LIVE_END_POLL_SECONDS = 1.0
GIVE_UP_HOURS = 24.0
STOP_WAIT_SECONDS = 10.0


def parse_time(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text.replace("Z", "+00:00"))


class VideoCuts:
    """Runs the store's Processing videos on this host (see the module)."""

    def __init__(
        self,
        database: Database,
        store: VideoStore,
        lives: LiveJobs,
        storage: S3Storage,
        claimer: str,
        *,
        slots: int = MAX_CONCURRENT_CUTS,
        clock: Callable[[], float] = time.time,
        lease_seconds: float = LEASE_SECONDS,
    ) -> None:
        self._db = database
        self._store = store
        self._lives = lives
        self._storage = storage
        self._claimer = claimer
        self._slots = slots
        self._clock = clock
        self._lease_seconds = lease_seconds
        self._executor: ThreadPoolExecutor | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._cuts: dict[int, tuple[asyncio.Task[None], threading.Event]] = {}
        self._retries: dict[int, int] = {}
        self._stopping = False

    async def start(self) -> None:
        """Resume: what this host held when it stopped (or died) is due again at once."""
        if self._task is not None:
            return
        await self._db.call(self._store.release_claims, self._claimer)
        self._stopping = False
        self._executor = ThreadPoolExecutor(self._slots, thread_name_prefix="video-cut")
        self._task = asyncio.create_task(self._run(), name="video-cuts")

    def wake(self) -> None:
        """A new video is due: look now rather than at the next poll."""
        self._wake.set()

    async def stop(self) -> None:
        """Cancel the running cuts (each stops within STOP_WAIT_SECONDS or is left to
        its thread), let them go for the next start; idempotent."""
        self._stopping = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for _, cancel in self._cuts.values():
            cancel.set()
        running = [cut for cut, _ in self._cuts.values()]
        if running:
            await asyncio.wait(running, timeout=STOP_WAIT_SECONDS)
        await self._db.call(self._store.release_claims, self._claimer)
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)

    # -- the loop ---------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            try:
                await self._claim()
            except asyncio.CancelledError:
                raise
            except Exception:  # the store away for a moment: try at the next poll
                logger.exception("[videos] claiming cuts failed")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), POLL_SECONDS)

    async def _claim(self) -> None:
        free = self._slots - len(self._cuts)
        if free <= 0:
            return
        now = self._clock()
        claimed = await self._db.call(
            self._store.claim_due,
            utc_at(now),
            utc_at(now + self._lease_seconds),
            self._claimer,
            free,
        )
        for video in claimed:
            cancel = threading.Event()
            task = asyncio.create_task(self._cut(video, cancel), name=f"cut {video['public_id']}")
            self._cuts[int(video["id"])] = (task, cancel)

    async def _cut(self, video: dict[str, Any], cancel: threading.Event) -> None:
        video_id = int(video["id"])
        heartbeat = asyncio.create_task(self._hold(video_id, cancel))
        try:
            await self._attempt(video, cancel)
        except Exception:
            logger.exception("[video %s] the cut's bookkeeping failed", video["public_id"])
        finally:
            heartbeat.cancel()
            self._cuts.pop(video_id, None)
            self._wake.set()  # a slot is free

    async def _hold(self, video_id: int, cancel: threading.Event) -> None:
        """Renew the lease while the cut runs; a lost lease (another host took it after
        the store was away too long) cancels this one."""
        while True:
            await asyncio.sleep(self._lease_seconds / 3)
            until = utc_at(self._clock() + self._lease_seconds)
            try:
                held = await self._db.call(self._store.renew, video_id, self._claimer, until)
            except Exception:
                logger.warning("[video %s] lease not renewed (store away)", video_id)
                continue
            if not held:
                cancel.set()
                return

    # -- one attempt ------------------------------------------------------------------

    async def _attempt(self, video: dict[str, Any], cancel: threading.Event) -> None:
        tag = f"[video {video['public_id']}]"
        job = await self._db.call(self._db.get_job_by_id, int(video["live_job_id"]))
        if job is None:
            await self._finish(video, None, FAILED, error="its live job no longer exists")
            return
        if int(video["attempts"]) > MAX_ATTEMPTS:
            await self._finish(
                video,
                job,
                FAILED,
                error=f"the cut was interrupted {MAX_ATTEMPTS} times (the service stopped"
                " during it); given up",
            )
            return
        if video["after_live"] and self._live_goes_on(video, job):
            await self._later(video, LIVE_END_POLL_SECONDS)
            return
        logger.info("%s cutting (attempt %s)", tag, video["attempts"])
        loop = asyncio.get_running_loop()
        if self._executor is None:
            return
        try:
            result, from_ms, to_ms = await loop.run_in_executor(
                self._executor, self._work, video, job, cancel
            )
        except CutCancelled:
            if self._stopping:
                await self._later(video, 0.0)
            logger.info("%s cut cancelled", tag)
        except CutError as error:
            await self._finish(video, job, FAILED, error=str(error))
        except StorageError as error:
            await self._storage_failed(video, job, error)
        except Exception as error:
            logger.exception("%s cut failed", tag)
            await self._finish(video, job, FAILED, error=f"internal error: {error}")
        else:
            await self._finish(
                video,
                job,
                READY,
                duration_ms=result.duration_ms,
                from_ms=from_ms,
                to_ms=to_ms,
                master_key=result.master_key,
                original_file_key=result.original_file_key,
            )

    def _live_goes_on(self, video: dict[str, Any], job: dict[str, Any]) -> bool:
        """The live a stop-and-cut ended is still publishing (its end is not written)."""
        same_live = job["start_date_time"] == video["live_start"]
        return (same_live and bool(job["online"])) or self._lives.publishing_here(int(job["id"]))

    def _work(
        self, video: dict[str, Any], job: dict[str, Any], cancel: threading.Event
    ) -> tuple[CutResult, int, int]:
        """On a worker thread: the private policy first, then the range as recorded
        now, then the cut."""
        bucket = job["bucket"]
        if is_private(int(video["visibility"])):
            ensure_private_policy(self._storage, bucket)
        live_prefix = object_prefix(job["destination"], job["file_path"])
        since = parse_time(video["live_start"])
        timeline = recorded_timeline(self._storage, bucket, live_prefix, since)
        from_ms, to_ms = timeline.resolve(video["from_ms"], video["to_ms"], None, None)
        request = CutRequest(bucket, live_prefix, video["video_prefix"], since, from_ms, to_ms)
        return cut_video(self._storage, request, cancel=cancel), from_ms, to_ms

    async def _storage_failed(
        self, video: dict[str, Any], job: dict[str, Any], error: StorageError
    ) -> None:
        age_hours = (self._clock() - unix_of(video["created_at"])) / 3600
        if age_hours >= GIVE_UP_HOURS:
            await self._finish(
                video, job, FAILED, error=f"storage unavailable for {GIVE_UP_HOURS:g} h: {error}"
            )
            return
        video_id = int(video["id"])
        retries = self._retries.get(video_id, 0)
        self._retries[video_id] = retries + 1
        delay = min(RETRY_MAX_SECONDS, RETRY_INITIAL_SECONDS * 2**retries)
        logger.warning(
            "[video %s] storage failed, cut again in %.0f s: %s", video["public_id"], delay, error
        )
        await self._later(video, delay)

    async def _later(self, video: dict[str, Any], delay_seconds: float) -> None:
        await self._db.call(
            lambda: self._store.retry_later(
                int(video["id"]),
                self._claimer,
                utc_at(self._clock() + delay_seconds),
                counted=False,
            )
        )

    async def _finish(
        self, video: dict[str, Any], job: dict[str, Any] | None, status: str, **values: Any
    ) -> None:
        video_id = int(video["id"])
        self._retries.pop(video_id, None)
        values = {"status": status, **values}
        ended = {**video, **values}
        event = video_event(job, ended) if job is not None else ("", {})
        done = await self._db.call(self._store.finish, video_id, self._claimer, values, event)
        if done:
            logger.info(
                "[video %s] %s%s",
                video["public_id"],
                status,
                f": {values['error']}" if status == FAILED else "",
            )
