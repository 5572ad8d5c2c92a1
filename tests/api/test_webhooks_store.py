"""The webhook queue in the store, on both engines (SQLite and a real PostgreSQL): events
queued with the status change they tell, one job's in order, each delivery held by one
host at a time, finished ones pruned, secrets rotated with a grace period."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks import Webhook

from api.database import Database
from api.database.store import utc_at
from api.status import LiveStatus
from tests.support.legacy_store import create_legacy_store, job_row, legacy_project

HASH = bytes(range(32))
HOOK = "https://hooks.example.com/onair?token=t0ken"


@pytest.fixture
def store(store_target: str | Path) -> Iterator[Database]:
    database = Database(store_target)
    yield database
    database.close()


def new_job(database: Database, path: str, callback: str | None = HOOK, project: str = "p1") -> int:
    if database.get_project(project) is None:
        database.create_project(project, project, f"key-{project}", HASH)
    row = job_row(project, f"media-{project}", "shows", path, callback_url=callback)
    return database.insert_job(row, ["720p", "360p"])


def change(database: Database, job_id: int, status: LiveStatus, reason: str = "Test") -> None:
    database.set_status(job_id, int(status), status.label, reason, f"now {status.label}")


def later(seconds: float) -> str:
    return utc_at(time.time() + seconds)


def claim(database: Database, claimer: str = "a", at: float = 1.0, limit: int = 50) -> list[Any]:
    return database.claim_webhook_deliveries(later(at), later(at + 60), claimer, limit)


def finish(database: Database, row: dict[str, Any], claimer: str = "a", **outcome: Any) -> None:
    attempt = {"attempted_at": later(1), "status_code": 200, "error": None, "duration_ms": 3}
    database.finish_webhook_attempt(
        row["id"],
        claimer,
        {**attempt, **outcome.pop("attempt", {})},
        delivered=outcome.get("delivered", True),
        next_attempt_at=outcome.get("next_attempt_at"),
    )


def deliveries(database: Database, project: str = "p1", job: int | None = None) -> list[Any]:
    return database.list_webhook_deliveries(project, job, 0, 100).rows[::-1]  # oldest first


def test_status_changes_queue_their_events_in_order_with_the_body_fixed(store: Database) -> None:
    job_id = new_job(store, "a")
    job = store.get_job_by_id(job_id)
    assert job is not None
    for status in (LiveStatus.PROCESSING, LiveStatus.LIVE, LiveStatus.INTERRUPTED):
        change(store, job_id, status)
    change(store, job_id, LiveStatus.INTERRUPTED, "SameAgain")  # no change: no event
    change(store, job_id, LiveStatus.OFFLINE)
    rows = deliveries(store)
    assert [r["type"] for r in rows] == [
        "livejob.online",
        "livejob.live",
        "livejob.interrupted",
        "livejob.offline",
    ]
    assert [r["sequence"] for r in rows] == [1, 2, 3, 4]
    assert all(r["state"] == "pending" and r["url"] == HOOK for r in rows)
    assert len({r["webhook_id"] for r in rows}) == 4
    body = json.loads(rows[1]["body"])
    assert body["type"] == "livejob.live"
    assert body["data"] == {
        "liveJobId": job_id,
        "name": job["name"],
        "status": 3,
        "statusName": "Live",
        "previousStatus": 2,
        "previousStatusName": "Processing",
        "reason": "Test",
        "message": "now Live",
    }
    # The event's time is its timing row's.
    timing = store.list_timings(job_id, None, 0, 100).rows[1]
    assert (timing["status"], timing["start_date_time"]) == ("Live", body["timestamp"])
    assert not any(job["stream_key"] in r["body"] for r in rows)


def test_a_job_without_a_callback_url_queues_nothing(store: Database) -> None:
    job_id = new_job(store, "quiet", callback=None)
    change(store, job_id, LiveStatus.PROCESSING)
    assert deliveries(store) == []


def test_a_failed_rendition_queues_an_output_event(store: Database) -> None:
    job_id = new_job(store, "outputs")
    output = store.job_outputs(job_id)[1]
    store.add_timing(job_id, "Processing", "RenditionFailed", "boom", output["output_id"])
    store.add_timing(job_id, "Processing", "FirstSegmentPublished", "x", output["output_id"])
    rows = deliveries(store)
    assert [r["type"] for r in rows] == ["output.failed"]
    data = json.loads(rows[0]["body"])["data"]
    assert (data["outputId"], data["rendition"], data["message"]) == (
        output["output_id"],
        "360p",
        "boom",
    )


def test_only_the_oldest_pending_event_of_a_job_is_due(store: Database) -> None:
    first, second = new_job(store, "one"), new_job(store, "two")
    for job_id in (first, second):
        change(store, job_id, LiveStatus.PROCESSING)
        change(store, job_id, LiveStatus.LIVE)
    claimed = claim(store)
    assert sorted((r["live_job_id"], r["type"]) for r in claimed) == [
        (first, "livejob.online"),
        (second, "livejob.online"),
    ]
    assert all(r["secrets"] and r["secrets"][0].startswith("whsec_") for r in claimed)
    retry_at = later(30)
    finish(store, claimed[0], delivered=False, next_attempt_at=retry_at)
    finish(store, claimed[1])
    # The first job's event waits for its retry, and its next event behind it.
    again = claim(store)
    assert [(r["live_job_id"], r["type"]) for r in again] == [
        (claimed[1]["live_job_id"], "livejob.live")
    ]
    retried = claim(store, at=31)
    assert [(r["live_job_id"], r["type"]) for r in retried] == [
        (claimed[0]["live_job_id"], "livejob.online")
    ]
    # Given up (no next attempt): it no longer blocks the next one.
    finish(store, retried[0], delivered=False, next_attempt_at=None, attempt={"status_code": 500})
    after = claim(store, at=32)
    assert [(r["live_job_id"], r["type"]) for r in after] == [
        (claimed[0]["live_job_id"], "livejob.live")
    ]
    states = {(r["live_job_id"], r["type"]): r for r in deliveries(store)}
    failed = states[(claimed[0]["live_job_id"], "livejob.online")]
    assert (failed["state"], failed["attempts"], failed["last_status_code"]) == ("failed", 2, 500)
    assert failed["next_attempt_at"] is None and failed["finished_at"]


def test_a_held_delivery_is_not_claimed_by_another_store_until_its_hold_ends(
    store_target: str | Path,
) -> None:
    first, second = Database(store_target), Database(store_target)
    try:
        job_id = new_job(first, "held")
        change(first, job_id, LiveStatus.PROCESSING)
        assert len(claim(first, "host-a")) == 1
        assert claim(second, "host-b") == []
        assert claim(second, "host-b", at=30) == []
        taken = claim(second, "host-b", at=62)  # host-a's 60 s hold ran out
        assert len(taken) == 1
        # host-a comes back late: its attempt is recorded, host-b's hold stands.
        finish(first, taken[0], "host-a", delivered=False, next_attempt_at=later(1))
        row = deliveries(first)[0]
        assert (row["state"], row["attempts"], row["claimed_by"]) == ("pending", 1, "host-b")
        second.release_webhook_claims("host-b")
        assert deliveries(first)[0]["claimed_by"] is None
    finally:
        first.close()
        second.close()


def test_two_stores_claiming_at_once_never_take_the_same_delivery(
    store_target: str | Path,
) -> None:
    opened = [Database(store_target) for _ in range(2)]
    try:
        for n in range(12):
            change(opened[0], new_job(opened[0], f"job{n}"), LiveStatus.PROCESSING)
        taken: dict[str, list[int]] = {"a": [], "b": []}
        start = threading.Barrier(2)

        def work(database: Database, claimer: str) -> None:
            start.wait()
            for _ in range(6):
                taken[claimer] += [r["id"] for r in claim(database, claimer, limit=2)]

        threads = [
            threading.Thread(target=work, args=(db, name))
            for db, name in zip(opened, ("a", "b"), strict=True)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert set(taken["a"]).isdisjoint(taken["b"])
        assert sorted(taken["a"] + taken["b"]) == sorted(r["id"] for r in deliveries(opened[0]))
    finally:
        for database in opened:
            database.close()


def test_finished_deliveries_are_pruned_with_their_attempts_pending_ones_kept(
    store: Database,
) -> None:
    done, waiting = new_job(store, "done"), new_job(store, "waiting")
    change(store, done, LiveStatus.PROCESSING)
    change(store, waiting, LiveStatus.PROCESSING)
    row = next(r for r in claim(store) if r["live_job_id"] == done)
    finish(store, row)
    assert store.pending_webhook_count() == 1
    assert store.prune_webhook_deliveries(utc_at(time.time() - 86400)) == 0  # too recent
    assert store.prune_webhook_deliveries(later(3600)) == 1
    assert [r["live_job_id"] for r in deliveries(store)] == [waiting]
    with store.engine.connect() as connection:
        attempts = connection.exec_driver_sql("SELECT count(*) FROM webhook_attempts").scalar()
    assert attempts == 0


def test_the_listing_pages_newest_first_with_the_last_attempts(store: Database) -> None:
    job_id = new_job(store, "listed")
    other = new_job(store, "theirs", project="p2")
    change(store, job_id, LiveStatus.PROCESSING)
    change(store, job_id, LiveStatus.LIVE)
    change(store, other, LiveStatus.PROCESSING)
    row = claim(store)[0]
    for n in range(7):
        store.finish_webhook_attempt(
            row["id"],
            "a",
            {"attempted_at": later(n), "status_code": 500 + n, "error": f"e{n}", "duration_ms": n},
            delivered=False,
            next_attempt_at=later(n),
        )
    page = store.list_webhook_deliveries("p1", None, 0, 1)
    assert page.total_count == 2 and page.rows[0]["type"] == "livejob.live"
    oldest = store.list_webhook_deliveries("p1", job_id, 1, 1).rows[0]
    assert oldest["attempts"] == 7
    assert [a["status_code"] for a in oldest["attempt_log"]] == [502, 503, 504, 505, 506]
    assert store.list_webhook_deliveries("p2", None, 0, 10).total_count == 1
    assert store.list_webhook_deliveries("p1", other, 0, 10).total_count == 0


def test_a_rotated_secret_signs_beside_the_new_one_until_its_grace_ends(store: Database) -> None:
    store.create_project("p1", "p1", "key-p1", HASH)
    (old,) = store.webhook_secrets("p1", later(0))
    assert store.rotate_webhook_secret("p1", "whsec_" + "A" * 44, later(3600))
    assert store.webhook_secrets("p1", later(0)) == ["whsec_" + "A" * 44, old]
    assert store.webhook_secrets("p1", later(3601)) == ["whsec_" + "A" * 44]
    assert not store.rotate_webhook_secret("nobody", "whsec_x", later(1))
    assert store.webhook_secrets("nobody", later(0)) == []


def test_projects_of_an_older_store_get_a_secret_at_migration(tmp_path: Path) -> None:
    path = tmp_path / "data" / "onair.sqlite3"
    create_legacy_store(path, 4)
    legacy_project(path, "old", "2025-01-01T00:00:00.000Z")
    legacy_project(path, "older", "2025-01-01T00:00:00.000Z")
    database = Database(path)
    try:
        found = [database.webhook_secrets(p, later(0)) for p in ("old", "older")]
    finally:
        database.close()
    assert all(len(s) == 1 and s[0].startswith("whsec_") for s in found)
    assert found[0] != found[1]
    Webhook(found[0][0])  # a secret standardwebhooks reads
