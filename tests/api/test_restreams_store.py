"""The restreams' rows on both engines (SQLite, PostgreSQL): read back as written, only
by their own project; the limit per live held by creates racing on one job; gone with
their job; and a restream's change of state, its timing row and its `restream.state`
event written together (`JobRecords.restream_changed`)."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete

from api.database import Database, utcnow
from api.database.schema import live_jobs
from api.records import JobRecords
from api.restreams.store import RestreamStore, TooManyRestreams
from api.webhooks.events import RESTREAM_CHILD_STATES
from tests.support.legacy_store import job_row

HASH = bytes(range(32))
HOOK = "https://hooks.example.com/onair"


@pytest.fixture
def store(store_target: str | Path) -> Iterator[Database]:
    database = Database(store_target)
    yield database
    database.close()


def new_job(database: Database, project: str = "p1", callback: str | None = None) -> int:
    if database.get_project(project) is None:
        database.create_project(project, project, f"key-{project}", HASH)
    row = job_row(
        project, f"media-{project}", "shows", f"news-{uuid.uuid4()}", callback_url=callback
    )
    return database.insert_job(row, ["720p"])


def restream_row(project: str, job_id: int, **changes: Any) -> dict[str, Any]:
    return {
        "project_id": project,
        "live_job_id": job_id,
        "title": "YouTube",
        "stream_url": "rtmp://a.rtmp.youtube.com/live2",
        "stream_key": "sk-" + uuid.uuid4().hex,
        "status": 1,
        "created_at": utcnow(),
        **changes,
    }


def test_a_restream_reads_back_as_written_and_only_by_its_project(store: Database) -> None:
    restreams = RestreamStore(store)
    job_id = new_job(store)
    other_job = new_job(store, "p2")
    row = restream_row("p1", job_id)
    restream_id = restreams.insert(row)
    got = restreams.get("p1", restream_id)
    assert got is not None and {k: got[k] for k in row} == row
    assert restreams.get("p2", restream_id) is None
    assert restreams.toggle("p2", restream_id) is None
    assert restreams.delete("p2", restream_id) is None
    assert restreams.page("p2", job_id, 0, 10).rows == []
    restreams.insert(restream_row("p2", other_job))
    assert [r["id"] for r in restreams.page("p1", job_id, 0, 10).rows] == [restream_id]
    assert restreams.get("p1", restream_id) == got  # untouched by p2's tries


def test_toggle_flips_and_the_enabled_ones_are_the_runtimes(store: Database) -> None:
    restreams = RestreamStore(store)
    job_id = new_job(store)
    first = restreams.insert(restream_row("p1", job_id))
    second = restreams.insert(restream_row("p1", job_id, status=0))
    assert [r["id"] for r in restreams.enabled(job_id)] == [first]
    flipped = restreams.toggle("p1", second)
    assert flipped is not None and flipped["status"] == 1
    assert [r["id"] for r in restreams.enabled(job_id)] == [first, second]
    flipped = restreams.toggle("p1", first)
    assert flipped is not None and flipped["status"] == 0
    assert [r["id"] for r in restreams.enabled(job_id)] == [second]
    deleted = restreams.delete("p1", second)
    assert deleted is not None and deleted["id"] == second
    assert restreams.enabled(job_id) == [] and restreams.get("p1", second) is None
    page = restreams.page("p1", job_id, 0, 10)
    assert (page.total_count, [r["id"] for r in page.rows]) == (1, [first])


def test_creates_racing_on_one_job_stop_at_the_limit(store: Database) -> None:
    restreams = RestreamStore(store, limit=10)
    job_id = new_job(store)
    barrier = threading.Barrier(15)
    made: list[int] = []
    refused: list[BaseException] = []

    def make() -> None:
        barrier.wait()
        try:
            made.append(restreams.insert(restream_row("p1", job_id)))
        except TooManyRestreams as error:
            refused.append(error)

    threads = [threading.Thread(target=make) for _ in range(15)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert (len(made), len(refused)) == (10, 5)
    assert restreams.page("p1", job_id, 0, 100).total_count == 10
    # Another job's count is its own.
    assert restreams.insert(restream_row("p1", new_job(store)))


def test_a_jobs_restreams_go_with_it(store: Database) -> None:
    restreams = RestreamStore(store)
    job_id = new_job(store)
    restream_id = restreams.insert(restream_row("p1", job_id))
    store.transaction(lambda c: c.execute(delete(live_jobs).where(live_jobs.c.id == job_id)))
    assert restreams.get("p1", restream_id) is None


async def test_each_state_change_is_a_timing_row_and_a_restream_state_event(
    store: Database,
) -> None:
    job_id = new_job(store, callback=HOOK)
    restreams = RestreamStore(store)
    row = restream_row("p1", job_id)
    restream_id = restreams.insert(row)
    records = JobRecords(store)
    for child_status in RESTREAM_CHILD_STATES:
        await records.restream_changed(
            job_id, restream_id, "YouTube", child_status, f"{child_status} ({row['stream_key']})"
        )
    timings = [
        r
        for r in store.list_timings(job_id, None, 0, 100).rows
        if r["child_status"].startswith("Restream")
    ]
    assert [r["child_status"] for r in timings] == list(RESTREAM_CHILD_STATES)  # oldest first
    assert timings[-1]["message_comment"] == (
        f"restream {restream_id} (YouTube): RestreamStopped (<streamKey>)"
    )
    assert {r["status"] for r in timings} == {"Offline"}
    events = store.list_webhook_deliveries("p1", job_id, 0, 100).rows[::-1]
    assert [e["type"] for e in events] == ["restream.state"] * len(RESTREAM_CHILD_STATES)
    bodies = [json.loads(e["body"]) for e in events]
    job = store.get_job_by_id(job_id)
    assert job is not None
    assert bodies[1]["data"] == {
        "liveJobId": job_id,
        "name": job["name"],
        "restreamId": restream_id,
        "title": "YouTube",
        "state": "forwarding",
        "reason": "RestreamConnected",
        "message": "RestreamConnected (<streamKey>)",
    }
    assert [b["data"]["state"] for b in bodies] == list(RESTREAM_CHILD_STATES.values())
    assert all(row["stream_key"] not in e["body"] for e in events)


async def test_without_a_callback_url_a_state_change_is_a_timing_row_only(
    store: Database,
) -> None:
    job_id = new_job(store)
    restream_id = RestreamStore(store).insert(restream_row("p1", job_id))
    records = JobRecords(store)
    await records.restream_changed(job_id, restream_id, "YouTube", "RestreamErrored", "refused")
    rows = store.list_timings(job_id, None, 0, 100).rows
    assert [r["child_status"] for r in rows].count("RestreamErrored") == 1
    assert store.list_webhook_deliveries("p1", job_id, 0, 100).rows == []
    with pytest.raises(ValueError, match="not a restream child status"):
        await records.restream_changed(job_id, restream_id, "YouTube", "Connected", "x")
    # A job that is gone: nothing to record.
    await records.restream_changed(10**9, restream_id, "YouTube", "RestreamStopped", "x")
