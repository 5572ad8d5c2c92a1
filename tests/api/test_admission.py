"""Admission's parts alone: the host's capacity, the per-job locks, the checks and what
kind of refusal each is (the whole path, with ffmpeg, is tests/test_admission_e2e.py)."""

from __future__ import annotations

import asyncio
from http import HTTPStatus
from typing import Any

import pytest

from api.admission import Admission, Capacity, input_of
from api.errors import (
    AlreadyPublishing,
    HostAtCapacity,
    JobOffline,
    StillFinishing,
    UnknownStreamKey,
    WrongIngestProtocol,
)
from ingest.session import FLV, IngestProtocol, PublishRequest


def request(app: str = "live", protocol: IngestProtocol = IngestProtocol.RTMP) -> PublishRequest:
    return PublishRequest(
        protocol, app, "key", "127.0.0.1:5000", FLV, close=lambda _: None, reject=lambda _: None
    )


def job(**values: Any) -> dict[str, Any]:
    return {"id": 1, "online": 1, "server_type": 0, **values}


def test_refusals_carry_the_status_ingest_tells_the_publisher() -> None:
    assert UnknownStreamKey.status == HTTPStatus.NOT_FOUND
    assert JobOffline.status == WrongIngestProtocol.status == HTTPStatus.FORBIDDEN
    assert AlreadyPublishing.status == HTTPStatus.CONFLICT
    assert HostAtCapacity.status == StillFinishing.status == HTTPStatus.SERVICE_UNAVAILABLE


def test_the_checks_at_publish() -> None:
    Admission.check_app(request("live/"))
    with pytest.raises(UnknownStreamKey, match="unknown application"):
        Admission.check_app(request("other"))
    with pytest.raises(UnknownStreamKey):
        Admission.check_job(None, request())
    with pytest.raises(JobOffline):
        Admission.check_job(job(online=0), request())
    with pytest.raises(WrongIngestProtocol) as refused:
        Admission.check_job(job(server_type=int(IngestProtocol.SRT)), request())
    assert refused.value.detail is not None and "takes SRT input" in refused.value.detail
    assert Admission.check_job(job(), request())["id"] == 1
    srt_job = job(server_type=int(IngestProtocol.SRT))
    assert Admission.check_job(srt_job, request(protocol=IngestProtocol.SRT)) is srt_job


def test_a_backup_publisher_feeds_a_standard_jobs_backup_input_only() -> None:
    backup = request("backup")
    Admission.check_app(backup)
    assert input_of(backup) == "backup" and input_of(request("live")) == "primary"
    assert input_of(request("hls-backup", IngestProtocol.HLS)) == "backup"
    assert input_of(request("pull-backup", IngestProtocol.HLS)) == "backup"
    standard = job(input_class=1)
    assert Admission.check_job(standard, backup) is standard
    with pytest.raises(WrongIngestProtocol, match="no backup input"):
        Admission.check_job(job(input_class=0), backup)
    pull = job(input_class=1, server_type=int(IngestProtocol.HLS), source_url="https://x/a.m3u8")
    assert Admission.check_job(pull, request("pull-backup", IngestProtocol.HLS)) is pull
    with pytest.raises(WrongIngestProtocol, match="pulls its source"):
        Admission.check_job(pull, request("hls-backup", IngestProtocol.HLS))


def test_a_relay_feeds_a_standard_jobs_input_whatever_its_publishers_protocol() -> None:
    """Another host's relay (RTMP, app relay or relay-backup): the input it names, on a
    Standard job of any serverType; never a Single job, never over another protocol."""
    primary, backup = request("relay"), request("relay-backup")
    for relay in (primary, backup):
        Admission.check_app(relay)
    assert input_of(primary) == "primary" and input_of(backup) == "backup"
    srt_standard = job(input_class=1, server_type=int(IngestProtocol.SRT))
    assert Admission.check_job(srt_standard, backup) is srt_standard
    with pytest.raises(WrongIngestProtocol, match="only a Standard job's inputs"):
        Admission.check_job(job(input_class=0), primary)
    with pytest.raises(UnknownStreamKey, match="unknown application"):
        Admission.check_app(request("relay", IngestProtocol.HLS))


def test_capacity_claims_check_and_take_in_one_step() -> None:
    capacity = Capacity(2.0)
    capacity.claim(1, 1.0)
    capacity.claim(1, 1.0)  # held already: kept, not taken twice
    capacity.claim(2, 1.0)
    assert capacity.used_units == 2.0
    with pytest.raises(HostAtCapacity) as refused:
        capacity.claim(3, 0.05)
    assert refused.value.description == "host at capacity: try another host"
    assert refused.value.detail == ("host at capacity (2 of 2 units in use, this live needs 0.05)")
    assert not capacity.holds(3)
    capacity.release(1)
    capacity.release(1)  # idempotent
    capacity.claim(3, 0.05)
    assert capacity.holds(3) and capacity.used_units == pytest.approx(1.05)


async def test_one_jobs_lock_never_holds_another_job() -> None:
    admission = Admission(4.0)
    held = asyncio.Event()
    release = asyncio.Event()
    order: list[str] = []

    async def slow_admission_of_job_1() -> None:
        async with admission.serialised(1):
            held.set()
            await release.wait()  # I/O that never ends until the test says so
            order.append("job 1")

    async def admission_of(job_id: int, name: str) -> None:
        async with admission.serialised(job_id):
            order.append(name)

    slow = asyncio.create_task(slow_admission_of_job_1())
    await held.wait()
    await asyncio.wait_for(admission_of(2, "job 2"), timeout=1)  # not behind job 1
    same_job = asyncio.create_task(admission_of(1, "job 1 again"))
    await asyncio.sleep(0.05)
    assert not same_job.done()  # job 1's next admission waits for job 1's
    release.set()
    await asyncio.gather(slow, same_job)
    assert order == ["job 2", "job 1", "job 1 again"]
    assert admission._locks == {}  # no lock is kept for a job nobody admits
