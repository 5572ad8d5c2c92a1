"""The store on both engines: SQLite (the embedded default) and PostgreSQL (a real server
the suite starts, `tests.support.postgres`). Every test here runs once per engine."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from api.database import Database, head_revision
from api.database.schema import metadata
from api.errors import BucketOwned, PrefixTaken
from api.records import JobRecords
from api.status import LiveStatus
from tests.support.legacy_store import job_row

HASH = bytes(range(32))


@pytest.fixture
def store(store_target: str | Path) -> Any:
    database = Database(store_target)
    yield database
    database.close()


def with_project(database: Database, project_id: str = "p1") -> str:
    database.create_project(project_id, f"project {project_id}", f"key-{project_id}", HASH)
    return project_id


# -- schema --------------------------------------------------------------------------------


def test_a_new_store_is_at_the_newest_revision_and_matches_the_declared_tables(
    store: Database,
) -> None:
    assert store.schema_revision == head_revision()
    with store.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), metadata)
        columns = {c["name"]: c for c in inspect(connection).get_columns("live_jobs")}
    assert differences == []
    if store.dialect == "postgresql":  # ids from the database's sequences, 64-bit
        assert columns["id"]["identity"]["start"] == 1
        assert str(columns["id"]["type"]) == "BIGINT"


def test_reopening_keeps_the_rows_and_the_revision(store_target: str | Path) -> None:
    first = Database(store_target)
    try:
        project = with_project(first)
        job_id = first.insert_job(job_row(project, "media", "shows", "news"), ["720p"])
    finally:
        first.close()
    again = Database(store_target)
    try:
        assert again.schema_revision == head_revision()
        assert again.get_job(project, job_id)["file_path"] == "news"  # type: ignore[index]
        assert again.get_api_key("key-p1")["secret_hash"] == HASH  # type: ignore[index]
    finally:
        again.close()


# -- projects, jobs, outputs, timings --------------------------------------------------------


def test_a_job_reads_back_as_written_with_its_outputs_in_ladder_order(store: Database) -> None:
    project = with_project(store)
    row = job_row(project, "media", "shows/news", "2026/ep1", description="evening news")
    job_id = store.insert_job(row, ["720p", "480p", "360p"])
    job = store.get_job(project, job_id)
    assert job is not None
    assert {k: job[k] for k in row} == row
    assert job["prefix_claimed_at"] is None and job["statistics"] is None
    assert store.get_job_by_name(project, row["name"]) == job
    assert store.get_job_by_digest(row["key_digest"]) == job
    assert store.get_job_by_id(job_id) == job
    assert store.get_job("another-project", job_id) is None
    outputs = store.job_outputs(job_id)
    assert [o["rendition"] for o in outputs] == ["720p", "480p", "360p"]
    assert [(o["status"], o["progress"], o["counter"], o["skipped"]) for o in outputs] == [
        (1, 0, 0, 0)
    ] * 3
    assert store.bucket("media") == {
        "name": "media",
        "project_id": project,
        "created_at": row["insert_date"],
        "created_by_onair": False,
    }


def test_listing_pages_newest_first_and_searches_literally(store: Database) -> None:
    project = with_project(store)
    ids = [
        store.insert_job(job_row(project, "media", "shows", name, description=text), ["720p"])
        for name, text in [
            ("news", "Evening NEWS"),
            ("sport", "100% football"),
            ("a_b", None),
            ("axb", None),
        ]
    ]
    page = store.list_jobs(project, None, 1, 2)
    assert page.total_count == 4 and [r["id"] for r in page.rows] == ids[::-1][1:3]
    assert [r["id"] for r in store.list_jobs(project, "news", 0, 10).rows] == [ids[0]]
    # Case-insensitive on both engines; % and _ are the characters, not wildcards.
    assert [r["id"] for r in store.list_jobs(project, "evening", 0, 10).rows] == [ids[0]]
    assert [r["id"] for r in store.list_jobs(project, "0% f", 0, 10).rows] == [ids[1]]
    assert [r["id"] for r in store.list_jobs(project, "a_b", 0, 10).rows] == [ids[2]]
    assert store.list_jobs(project, "%", 0, 10).total_count == 1
    assert store.list_jobs("another-project", None, 0, 10).total_count == 0


def test_status_changes_timings_and_outputs(store: Database) -> None:
    project = with_project(store)
    job_id = store.insert_job(job_row(project, "media", "shows", "news"), ["720p", "480p"])
    store.set_status(job_id, 2, "Processing", "WentOnline", "online", None, online=1)
    assert [j["id"] for j in store.online_jobs()] == [job_id]
    store.update_job(job_id, statistics={"width": 1280})
    assert store.get_job_by_id(job_id)["statistics"] == '{"width": 1280}'  # type: ignore[index]
    first, second = (o["output_id"] for o in store.job_outputs(job_id))
    store.add_timing(job_id, "Processing", "PublisherConnected", "hello", second)
    page = store.list_timings(job_id, None, 0, 10)
    assert [t["child_status"] for t in page.rows] == ["WentOnline", "PublisherConnected"]
    assert store.list_timings(job_id, second, 0, 10).total_count == 1

    store.update_outputs(
        job_id, [{"output_id": first, "progress": 12, "counter": 6, "lock_key": "lease-1"}]
    )
    assert store.mark_skipped(job_id, {"480p": "source is 640x360", "1080p": "x"}) == {"1080p"}
    rows = {o["rendition"]: o for o in store.list_outputs(project, job_id, 0, 10).rows}
    assert (rows["720p"]["progress"], rows["720p"]["counter"]) == (12, 6)
    assert rows["720p"]["lock_key"] == "lease-1" and rows["480p"]["lock_key"] is None
    assert (rows["480p"]["skipped"], rows["480p"]["skip_reason"]) == (1, "source is 640x360")
    assert store.list_outputs(project, None, 0, 1).total_count == 2
    assert store.list_outputs("another-project", None, 0, 10).total_count == 0

    store.replace_stream_key(job_id, "new-key", "new-digest", "Processing", "rotated")
    assert store.get_job_by_digest("new-digest")["id"] == job_id  # type: ignore[index]
    store.claim_prefix(job_id)
    claimed = store.get_job_by_id(job_id)["prefix_claimed_at"]  # type: ignore[index]
    store.claim_prefix(job_id)  # the first claim's time stays
    assert claimed and store.get_job_by_id(job_id)["prefix_claimed_at"] == claimed  # type: ignore[index]
    assert store.mark_bucket_created("media") is True
    assert store.bucket("media")["created_by_onair"] is True  # type: ignore[index]
    assert store.mark_bucket_created("never-claimed") is False
    assert store.ping()


def test_buckets_belong_to_one_project_and_places_to_one_job(store: Database) -> None:
    a, b = with_project(store, "a"), with_project(store, "b")
    store.insert_job(job_row(a, "media", "shows", "news"), ["720p"])
    with pytest.raises(BucketOwned):
        store.insert_job(job_row(b, "media", "elsewhere", "entirely"), ["720p"])
    for destination, file_path in [("shows", "news"), ("shows", "news/late"), ("shows", "")]:
        with pytest.raises(PrefixTaken):
            store.insert_job(job_row(a, "media", destination, file_path), ["720p"])
    store.insert_job(job_row(a, "media", "shows", "newsroom"), ["720p"])  # not inside news/
    # A refused create leaves nothing behind: not the job, not a claim on a new bucket.
    store.insert_job(job_row(b, "b-media", "x", "y"), ["720p"])
    with pytest.raises(PrefixTaken):
        store.insert_job(job_row(b, "b-media", "x", "y/z"), ["720p"])
    assert store.list_jobs(a, None, 0, 10).total_count == 2
    assert store.list_jobs(b, None, 0, 10).total_count == 1
    assert store.bucket("media")["project_id"] == a  # type: ignore[index]


# -- several hosts at once ----------------------------------------------------------------

HOSTS = 4
CREATES = 40


def new_job(bucket: str, destination: str, file_path: str) -> Any:
    """What `JobRecords.create` reads of a validated create body."""
    return SimpleNamespace(
        job_template_id=2,
        destination=destination,
        description=None,
        bucket=bucket,
        cdn_distribution=False,
        file_path=file_path,
        server_type=0,
        input_class=0,
        callback_url=None,
        srt_passphrase=None,
        source_url=None,
        input_loss_threshold_ms=1000,
        input_preference="primary",
        failback_after_seconds=30.0,
        backup_source_url=None,
        viewer_token_required=False,
    )


async def test_forty_concurrent_creates_and_toggles_from_several_hosts(
    store_target: str | Path,
) -> None:
    """Four stores on one database (four hosts; on SQLite, four processes' connections),
    40 creates at once through `JobRecords`, then every job toggled online and offline at
    once: no row lost, no id twice, every timing recorded."""
    hosts = [Database(store_target) for _ in range(HOSTS)]
    try:
        projects = [with_project(hosts[0], p) for p in ("a", "b")]
        records = [JobRecords(host) for host in hosts]

        async def create(index: int) -> dict[str, Any]:
            project = projects[index % 2]
            body = new_job(f"bucket-{project}", "shows", f"episode-{index}")
            return await records[index % HOSTS].create(project, body)

        jobs = await asyncio.gather(*(create(i) for i in range(CREATES)))
        ids = [job["id"] for job in jobs]
        assert len(set(ids)) == CREATES
        assert len({job["name"] for job in jobs}) == CREATES
        listed = [{r["id"] for r in hosts[1].list_jobs(p, None, 0, 100).rows} for p in projects]
        assert listed[0] | listed[1] == set(ids) and not listed[0] & listed[1]
        output_ids = [o["output_id"] for i in ids for o in hosts[2].job_outputs(i)]
        assert len(output_ids) == 3 * CREATES == len(set(output_ids))

        async def toggle(index: int, job_id: int) -> None:
            host = records[(index + 1) % HOSTS]  # another host than the one that created it
            await host.set_status(job_id, LiveStatus.PROCESSING, "WentOnline", "on", online=1)
            await host.set_status(job_id, LiveStatus.OFFLINE, "WentOffline", "off", online=0)
            await host.set_status(job_id, LiveStatus.PROCESSING, "WentOnline", "on", online=1)

        await asyncio.gather(*(toggle(i, job_id) for i, job_id in enumerate(ids)))
        assert sorted(j["id"] for j in hosts[3].online_jobs()) == sorted(ids)
        timing_ids = []
        for job_id in ids:
            page = hosts[3].list_timings(job_id, None, 0, 100)
            assert [t["child_status"] for t in page.rows] == [
                "Created",
                "WentOnline",
                "WentOffline",
                "WentOnline",
            ]
            timing_ids += [t["id"] for t in page.rows]
            statuses = {o["status"] for o in hosts[3].job_outputs(job_id)}
            assert statuses == {int(LiveStatus.PROCESSING)}
        assert len(timing_ids) == 4 * CREATES == len(set(timing_ids))
    finally:
        for host in hosts:
            host.close()


def test_hosts_racing_for_one_bucket_and_one_place_one_wins(store_target: str | Path) -> None:
    """Creates racing on several hosts at once (threads released together): one project
    owns a new bucket, one job gets a place, whatever the interleaving."""
    hosts = [Database(store_target) for _ in range(HOSTS)]
    try:
        projects = [with_project(hosts[0], f"p{i}") for i in range(HOSTS)]
        barrier = threading.Barrier(HOSTS)
        outcomes: list[str] = []
        lock = threading.Lock()

        def insert(project: str, index: int, bucket: str, file_path: str) -> None:
            row = job_row(project, bucket, "race", file_path)
            barrier.wait()
            try:
                hosts[index].insert_job(row, ["720p"])
                outcome = project
            except (BucketOwned, PrefixTaken) as refused:
                outcome = type(refused).__name__
            with lock:
                outcomes.append(outcome)

        def race(owners: list[str], bucket: str, file_path: Any) -> list[str]:
            outcomes.clear()
            threads = [
                threading.Thread(target=insert, args=(owners[i], i, bucket, file_path(i)))
                for i in range(HOSTS)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
            return sorted(outcomes)

        # Every project for a new bucket, each at a place of its own.
        result = race(projects, "contested", lambda i: f"job{i}")
        winners = [o for o in result if o in projects]
        assert len(winners) == 1 and result.count("BucketOwned") == HOSTS - 1, result
        assert hosts[1].bucket("contested")["project_id"] == winners[0]  # type: ignore[index]

        # The bucket's owner on four hosts at once, for nested places.
        result = race([winners[0]] * HOSTS, "contested", lambda i: "shared" + "/deeper" * i)
        assert result.count(winners[0]) == 1 and result.count("PrefixTaken") == HOSTS - 1
        assert hosts[2].list_jobs(winners[0], None, 0, 10).total_count == 2
    finally:
        for host in hosts:
            host.close()
