"""A change of a live's input health in the store (both engines): its `HealthChanged`
timing row and, for a job with a callbackUrl, its `livejob.health` event, together."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from api.database import Database
from api.records import HEALTH_CHANGED, JobRecords
from ingest.health import UNKNOWN, Health, HealthReason, HealthState, ReasonType
from tests.support.legacy_store import job_row

HASH = bytes(range(32))
HOOK = "https://hooks.example.com/onair"
STARVING = Health(
    HealthState.STARVING,
    (
        HealthReason(ReasonType.DRIFT_GROWING, "input fell 1.6 s behind real time"),
        HealthReason(ReasonType.ENCODER_OVERLOADED, "onair dropped 3 frames"),
    ),
)


@pytest.fixture
def store(store_target: str | Path) -> Iterator[Database]:
    database = Database(store_target)
    yield database
    database.close()


def new_job(database: Database, path: str, callback: str | None) -> int:
    if database.get_project("p1") is None:
        database.create_project("p1", "p1", "key-p1", HASH)
    row = job_row("p1", "media-p1", "shows", path, callback_url=callback)
    return database.insert_job(row, ["720p"])


async def test_each_health_change_is_a_timing_row_and_a_livejob_health_event(
    store: Database,
) -> None:
    job_id = new_job(store, "hooked", HOOK)
    records = JobRecords(store)
    healthy = Health(HealthState.HEALTHY)
    await records.health_changed(job_id, UNKNOWN, healthy)
    await records.health_changed(job_id, healthy, STARVING)
    rows = store.list_timings(job_id, None, 0, 100).rows
    health_rows = [r for r in rows if r["child_status"] == HEALTH_CHANGED]
    assert [r["message_comment"] for r in health_rows] == [
        "Unknown -> Healthy",
        "Healthy -> Starving: driftGrowing (input fell 1.6 s behind real time);"
        " encoderOverloaded (onair dropped 3 frames)",
    ]
    events = store.list_webhook_deliveries("p1", job_id, 0, 100).rows[::-1]
    assert [e["type"] for e in events] == ["livejob.health", "livejob.health"]
    job = store.get_job_by_id(job_id)
    assert job is not None
    assert json.loads(events[1]["body"])["data"] == {
        "liveJobId": job_id,
        "name": job["name"],
        "healthStatusName": "Starving",
        "previousHealthStatusName": "Healthy",
        "reasons": [
            {"type": "driftGrowing", "description": "input fell 1.6 s behind real time"},
            {"type": "encoderOverloaded", "description": "onair dropped 3 frames"},
        ],
    }


async def test_without_a_callback_url_a_health_change_is_a_timing_row_only(
    store: Database,
) -> None:
    job_id = new_job(store, "quiet", None)
    await JobRecords(store).health_changed(job_id, UNKNOWN, STARVING)
    rows = store.list_timings(job_id, None, 0, 100).rows
    assert [r["child_status"] for r in rows].count(HEALTH_CHANGED) == 1
    assert store.list_webhook_deliveries("p1", job_id, 0, 100).rows == []
