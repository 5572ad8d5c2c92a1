"""Who may publish: the checks at publish, one lock per job, and the host's capacity.

Admission of one job never waits on another job's I/O. What must happen one at a time
for a job (finding its pipeline, stopping a failed one, starting the next) runs under
that job's own lock (`Admission.serialised`); the one thing the jobs share, the host's
capacity, is counted in plain calls with no `await` between the check and the claim
(`Capacity.claim`), so no lock is held across I/O and none is shared by two jobs.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from encoder.program import BACKUP, PRIMARY
from ingest.session import (
    BACKUP_APP,
    HLS_BACKUP_APP,
    HLS_PUSH_APP,
    INGEST_APP,
    PULL_APP,
    PULL_BACKUP_APP,
    RELAY_APP,
    RELAY_BACKUP_APP,
    IngestProtocol,
    PublishRequest,
)

from .errors import HostAtCapacity, JobOffline, UnknownStreamKey, WrongIngestProtocol
from .validation import STANDARD_INPUT_CLASS

# The applications (`ingest.session`): `rtmp://host:1935/live/<key>` and, for a
# Standard job's backup publisher, `rtmp://host:1935/backup/<key>` (SRT's
# `r=backup/<key>`); HLS push's `/hls/` and `/hls-backup/`; onair's own pullers'; and
# (RTMP, from another onair host) the relays of a Standard job's inputs.
HLS_APPS = (HLS_PUSH_APP, PULL_APP, HLS_BACKUP_APP, PULL_BACKUP_APP)
PULL_APPS = (PULL_APP, PULL_BACKUP_APP)
RELAY_APPS = (RELAY_APP, RELAY_BACKUP_APP)
BACKUP_APPS = (BACKUP_APP, HLS_BACKUP_APP, PULL_BACKUP_APP, RELAY_BACKUP_APP)


def relayed(request: PublishRequest) -> bool:
    """Whether the publisher is another onair host relaying an input to this one."""
    return request.protocol is IngestProtocol.RTMP and request.app.strip("/") in RELAY_APPS


def input_of(request: PublishRequest) -> str:
    """Which input of its job a publisher feeds: the backup for a backup app."""
    return BACKUP if request.app.strip("/") in BACKUP_APPS else PRIMARY


def default_capacity() -> float:
    """One template-2 720p live per CPU core (bench/density.py: 2 on 2 cores)."""
    return float(os.cpu_count() or 1)


class Capacity:
    """The units of lives this host runs at once (`ONAIR_CAPACITY`, in template-2 720p
    lives), and which job holds how many.

    A job claims its units when its pipeline is about to start and releases them when
    the pipeline is taken down (an interrupted live keeps its place for its reconnect
    window; a finishing one no longer counts). Plain calls on the event loop: a claim
    checks and takes in one step, so two admissions cannot both take the last unit.
    """

    def __init__(self, total_units: float) -> None:
        self.total_units = total_units
        self._claims: dict[int, float] = {}

    @property
    def used_units(self) -> float:
        return sum(self._claims.values())

    def holds(self, job_id: int) -> bool:
        return job_id in self._claims

    def claim(self, job_id: int, units: float) -> None:
        """Take `units` for the job, or raise HostAtCapacity (the job holds nothing then).
        A job that already holds its units keeps them."""
        if job_id in self._claims:
            return
        used = self.used_units
        if used + units > self.total_units + 1e-9:
            raise HostAtCapacity(
                "host at capacity: try another host",
                f"host at capacity ({used:g} of {self.total_units:g} units in use,"
                f" this live needs {units:g})",
            )
        self._claims[job_id] = units

    def release(self, job_id: int) -> None:
        self._claims.pop(job_id, None)


class _JobLock:
    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class Admission:
    """The checks a publisher passes, the per-job locks and the host's `capacity`."""

    def __init__(self, capacity_units: float) -> None:
        self.capacity = Capacity(capacity_units)
        self._locks: dict[int, _JobLock] = {}

    @staticmethod
    def check_app(request: PublishRequest) -> None:
        """The key is published under the application onair serves for its protocol:
        /live/ for RTMP and SRT, /hls/ for an HLS push, "pull" for onair's own puller."""
        if relayed(request):
            return  # its token is checked with the job (`LiveJobs.admit`)
        wanted = HLS_APPS if request.protocol is IngestProtocol.HLS else (INGEST_APP, BACKUP_APP)
        if request.app.strip("/") not in wanted:
            raise UnknownStreamKey(f"unknown application {request.app!r}; use /{wanted[0]}/")

    @staticmethod
    def check_job(job: dict[str, Any] | None, request: PublishRequest) -> dict[str, Any]:
        """The job (None: the key is unknown) takes this publisher now: online, and its
        `serverType` is the publisher's protocol. Returns the job."""
        if job is None:
            raise UnknownStreamKey("unknown stream key")  # the server logs it, rate-limited
        if not job["online"]:
            raise JobOffline("this live job is offline: put it online first", "the job is offline")
        if input_of(request) == BACKUP and job["input_class"] != STANDARD_INPUT_CLASS:
            raise WrongIngestProtocol(
                "this live job has no backup input (inputClass Single)",
                "a backup publisher to a Single job",
            )
        if relayed(request):
            if job["input_class"] != STANDARD_INPUT_CLASS:
                raise WrongIngestProtocol(
                    "only a Standard job's inputs are relayed", "a relay to a Single job"
                )
            return job  # the publisher's own protocol was checked by the relaying host
        if (
            request.protocol is IngestProtocol.HLS
            and job["server_type"] == IngestProtocol.HLS
            and (request.app in PULL_APPS) != bool(job["source_url"])
        ):
            pulls = bool(job["source_url"])
            raise WrongIngestProtocol(
                "this live job pulls its source: it takes no push"
                if pulls
                else "this live job takes HLS pushes, it pulls nothing",
                "the job pulls input.sourceUrl" if pulls else "the job has no input.sourceUrl",
            )
        if job["server_type"] != request.protocol:
            takes = IngestProtocol(job["server_type"]).name
            raise WrongIngestProtocol(
                f"this live job does not take {request.protocol.name} input",
                f"the job takes {takes} input (serverType {job['server_type']}),"
                f" not {request.protocol.name}",
            )
        return job

    @asynccontextmanager
    async def serialised(self, job_id: int) -> AsyncIterator[None]:
        """One admission (or take-down) of this job at a time; other jobs never wait."""
        entry = self._locks.get(job_id)
        if entry is None:
            entry = self._locks[job_id] = _JobLock()
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._locks[job_id]
