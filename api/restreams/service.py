"""`Restreams`: the owner of a live's restreams (where its media is forwarded). Handlers
ask it; it keeps the rows (`RestreamStore`), finds the live video through the live
jobs' owner (`LiveJobs.get`: this project's job, by name or id, else 404), and tells
the restreams' runtime after every change (`on_change(job_id)`), which forwards the
enabled ones (`enabled_for_job`) and says how each goes (`states`).

The runtime is injected (`attach_runtime`, or the constructor): without one, every
restream reads `idle` with zeros and a change is only recorded. A change of a
restream's state is recorded by `JobRecords.restream_changed` (its timing and its
`restream.state` event, in one transaction), also reachable as `restream_changed` here.

Any host answers for any live: the host running it keeps its forwarding in step with
the store every `SYNC_SECONDS` (a change made through another host reaches it so) and
writes what each restream does there (`live_state`), which the other hosts answer while
it is fresh (`STATE_FRESH_SECONDS`); idle once it is not (the host went away).

A stream key is a secret: it is answered to the project's own key (the reference's
result carries it), never logged nor put in a message. It is stored as is (not
encrypted at rest: out of scope, like the live jobs' own stream keys).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from media.outbound import OutboundPolicy, OutboundRefused, check_url, origin
from restream.forwarder import ForwarderStatus

from ..database import Database, Page, utcnow
from ..database.store import utc_at
from ..errors import JobNotFound, OnairError
from ..lives import LiveJobs
from ..models import Restream, RestreamStateName
from ..records import JobRecords
from ..validation import RESTREAM_SCHEMES, NewRestream, ascii_int
from .store import MAX_RESTREAMS_PER_JOB, RestreamStore

logger = logging.getLogger(__name__)

IDLE: RestreamStateName = "idle"
SYNC_SECONDS = 2.0
STATE_FRESH_SECONDS = 10.0  # a stored state older than this: its host went away


@dataclass(frozen=True)
class RestreamLiveState:
    """What a restream's forwarding does now, as the runtime tells it."""

    state: RestreamStateName = IDLE  # idle, connecting, forwarding, reconnecting, errored
    last_error: str | None = None  # why the last connection failed or dropped; no key
    connected_since: float | None = None  # Unix time of the current connection
    reconnects: int = 0  # connections made again after a drop, in this live
    bytes_sent: int = 0
    bitrate_bps: int = 0  # what is sent now
    dropped_packets: int = 0  # not sent: the destination was too slow
    forwarding: str | None = None  # "source" or "rendition {name}"


def live_state(status: ForwarderStatus) -> RestreamLiveState:
    """A forwarder's status as the API tells it."""
    return RestreamLiveState(
        state=status.state.value,
        last_error=status.last_error,
        connected_since=status.connected_since,
        reconnects=status.reconnects,
        bytes_sent=status.bytes_sent,
        bitrate_bps=status.bitrate,
        dropped_packets=status.dropped_packets,
        forwarding=status.forwarding,
    )


@dataclass(frozen=True)
class RestreamTarget:
    """An enabled restream, as the runtime connects to it (`streamUrl` + `streamKey`)."""

    id: int
    title: str
    stream_url: str
    stream_key: str  # a secret: never log it

    def __repr__(self) -> str:  # a logged target never shows its key
        return (
            f"RestreamTarget(id={self.id}, title={self.title!r},"
            f" stream_url={_origin(self.stream_url)!r}, stream_key=<hidden>)"
        )


StatesProvider = Callable[[int], Mapping[int, RestreamLiveState]]
ChangeCallback = Callable[[int], Awaitable[None]]


def stored_state(state: RestreamLiveState, now: float) -> str:
    """A live state as the store keeps it (`restreams.live_state`)."""
    return json.dumps({**asdict(state), "at": now})


def read_state(stored: str | None, now: float) -> RestreamLiveState | None:
    """A stored live state while it is fresh; None when stale, absent or unreadable."""
    if not stored:
        return None
    try:
        values = json.loads(stored)
        if now - float(values.pop("at")) > STATE_FRESH_SECONDS:
            return None
        known = {f.name for f in fields(RestreamLiveState)}
        return RestreamLiveState(**{k: v for k, v in values.items() if k in known})
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


def no_states(_job_id: int) -> Mapping[int, RestreamLiveState]:
    """No runtime: nothing is forwarded."""
    return {}


async def no_change(_job_id: int) -> None:
    """No runtime: a change is only recorded."""


def _origin(stream_url: str) -> str:
    """All a log may say of a destination (`rtmp://host:1935`): never its path."""
    try:
        return origin(check_url(stream_url, RESTREAM_SCHEMES))
    except OutboundRefused:
        return "(unparsable URL)"


class RestreamNotFound(JobNotFound):
    """No restream with this id in this project (404)."""

    def __init__(self, ref: str) -> None:
        OnairError.__init__(self, f"restream not found: {ref}")


class Restreams:
    """A live's restreams: create, toggle, list, delete; and what the runtime reads
    (`enabled_for_job`). See the module."""

    def __init__(
        self,
        database: Database,
        lives: LiveJobs,
        outbound: OutboundPolicy,
        *,
        states: StatesProvider = no_states,
        on_change: ChangeCallback = no_change,
        max_per_video: int = MAX_RESTREAMS_PER_JOB,
    ) -> None:
        self._db = database
        self._lives = lives
        self.outbound = outbound  # checks an IP literal host at create (`NewRestream`)
        self._states = states
        self._on_change = on_change
        self.store = RestreamStore(database, limit=max_per_video)
        self._records = JobRecords(database)
        self._sync: asyncio.Task[None] | None = None

    def attach_runtime(
        self,
        *,
        states: StatesProvider | None = None,
        on_change: ChangeCallback | None = None,
    ) -> None:
        """The runtime's provider of states and its callback (made after this service:
        it reads `enabled_for_job`)."""
        if states is not None:
            self._states = states
        if on_change is not None:
            self._on_change = on_change

    async def start(self) -> None:
        self._sync = asyncio.create_task(self._sync_forever())

    async def stop(self) -> None:
        if self._sync is not None:
            self._sync.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sync
            self._sync = None

    async def _sync_forever(self) -> None:
        while True:
            await asyncio.sleep(SYNC_SECONDS)
            for job_id in self._lives.running_job_ids():
                try:
                    await self.sync(job_id)
                except Exception:
                    logger.exception("[job %s] keeping its restreams in step failed", job_id)

    async def sync(self, job_id: int) -> None:
        """A live running here: its forwarding follows the store (changes made through
        other hosts), and what it does is written for them."""
        await self._on_change(job_id)
        now = time.time()
        states = {rid: stored_state(state, now) for rid, state in self._states(job_id).items()}
        if states:  # a live without restreams: nothing to write
            await self._db.call(self.store.record_states, job_id, states)

    # -- the API's ---------------------------------------------------------------------

    async def create(self, project_id: str, new: NewRestream) -> tuple[dict[str, Any], str]:
        """A restream of this project's live video `new.video_id` (its job's name or
        id; else JobNotFound, 404), and the video's public id; TooManyRestreams (400)
        past the limit."""
        job = await self._lives.get(project_id, new.video_id)
        job_id = int(job["id"])
        row = {
            "project_id": project_id,
            "live_job_id": job_id,
            "title": new.title,
            "stream_url": new.stream_url,
            "stream_key": new.stream_key,
            "status": int(new.status),
            "created_at": utcnow(),
        }
        restream_id = await self._db.call(self.store.insert, row)
        logger.info(
            "[job %s] restream %s created (%s, to %s)",
            job_id,
            restream_id,
            "enabled" if new.status else "disabled",
            _origin(new.stream_url),
        )
        await self._changed(job_id)
        return await self._get(project_id, restream_id), str(job["name"])

    async def toggle(self, project_id: str, ref: str) -> dict[str, Any]:
        """Flip the restream's status (enabled: forwarded while the live is on)."""
        restream_id = self._id(ref)
        row = await self._db.call(self.store.toggle, project_id, restream_id)
        if row is None:
            raise RestreamNotFound(ref)
        job_id = int(row["live_job_id"])
        logger.info(
            "[job %s] restream %s %s",
            job_id,
            restream_id,
            "enabled" if row["status"] else "disabled",
        )
        await self._changed(job_id)
        return row

    async def delete(self, project_id: str, ref: str) -> None:
        """Delete the restream (its forwarding stops)."""
        restream_id = self._id(ref)
        row = await self._db.call(self.store.delete, project_id, restream_id)
        if row is None:
            raise RestreamNotFound(ref)
        job_id = int(row["live_job_id"])
        logger.info("[job %s] restream %s deleted", job_id, restream_id)
        await self._changed(job_id)

    async def list_for_video(
        self, project_id: str, video_ref: str, offset: int, limit: int
    ) -> tuple[Page, str]:
        """A page of this project's live video's restreams (JobNotFound, 404, if it is
        not this project's), in the order they were made; and the video's public id."""
        job = await self._lives.get(project_id, video_ref)
        page = await self._db.call(self.store.page, project_id, int(job["id"]), offset, limit)
        return page, str(job["name"])

    async def get(self, project_id: str, ref: str) -> tuple[dict[str, Any], str]:
        """A restream of this project, and its live video's public id."""
        row = await self._get(project_id, self._id(ref))
        job = await self._db.call(self._db.get_job_by_id, int(row["live_job_id"]))
        if job is None:
            raise RestreamNotFound(ref)
        return row, str(job["name"])

    def view(self, row: Mapping[str, Any], video_id: str) -> Restream:
        """The restream as the API answers it, with what its forwarding does now."""
        job_id, restream_id = int(row["live_job_id"]), int(row["id"])
        live = self._states(job_id).get(restream_id)
        if live is None and row["status"] and not self._lives.publishing_here(job_id):
            live = read_state(row.get("live_state"), time.time())  # its live's host's
        live = live or RestreamLiveState()
        return Restream(
            id=restream_id,
            title=row["title"],
            stream_key=row["stream_key"],
            stream_url=row["stream_url"],
            status=bool(row["status"]),
            video_id=video_id,
            state=live.state,
            last_error=live.last_error,
            connected_since=(
                None if live.connected_since is None else utc_at(live.connected_since)
            ),
            reconnects=live.reconnects,
            bytes_sent=live.bytes_sent,
            bitrate=live.bitrate_bps,
            dropped_packets=live.dropped_packets,
            forwarding=live.forwarding if live.state == "forwarding" else None,
        )

    # -- the runtime's -----------------------------------------------------------------

    async def enabled_for_job(self, job_id: int) -> list[RestreamTarget]:
        """The job's enabled restreams, in the order they were made: what to forward."""
        rows = await self._db.call(self.store.enabled, job_id)
        return [
            RestreamTarget(
                id=int(r["id"]),
                title=r["title"],
                stream_url=r["stream_url"],
                stream_key=r["stream_key"],
            )
            for r in rows
        ]

    async def restream_changed(
        self, job_id: int, restream_id: int, title: str, child_status: str, message: str
    ) -> None:
        """`JobRecords.restream_changed`: the timing row and the `restream.state` event."""
        await self._records.restream_changed(job_id, restream_id, title, child_status, message)

    # -- helpers -----------------------------------------------------------------------

    @staticmethod
    def _id(ref: str) -> int:
        restream_id = ascii_int(ref)
        if restream_id is None or not 0 < restream_id < 2**63:
            raise RestreamNotFound(ref)
        return restream_id

    async def _get(self, project_id: str, restream_id: int) -> dict[str, Any]:
        row = await self._db.call(self.store.get, project_id, restream_id)
        if row is None:
            raise RestreamNotFound(str(restream_id))
        return row

    async def _changed(self, job_id: int) -> None:
        """Tell the runtime. The change is recorded already: a failing callback is
        logged, the request still succeeds (the runtime reads the records anew)."""
        try:
            await self._on_change(job_id)
        except Exception:
            logger.exception("[job %s] the restreams' runtime failed on a change", job_id)
