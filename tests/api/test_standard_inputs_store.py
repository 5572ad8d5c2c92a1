"""Standard input class, the store's side, on both engines (SQLite, PostgreSQL): the
failover columns (migration 0009: existing jobs get the defaults, and a downgrade keeps
every row), and a switch of input, its timing row and its `input.failover` event
written together (`JobRecords.input_switched`)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, MetaData, func, inspect, select

from api.database import Database, head_revision
from api.database.engines import WRITE, _alembic_config, postgres_engine, sqlite_engine
from api.database.schema import metadata
from api.records import JobRecords
from api.validation import (
    DEFAULT_FAILBACK_AFTER_SECONDS,
    DEFAULT_INPUT_LOSS_THRESHOLD_MS,
    PRIMARY_PREFERENCE,
)
from api.webhooks.events import INPUT_FAILBACK, INPUT_FAILOVER, INPUT_FAILOVER_EVENT
from tests.support.legacy_store import job_row

HASH = bytes(range(32))
HOOK = "https://hooks.example.com/onair"
FAILOVER_COLUMNS = (
    "input_loss_threshold_ms",
    "input_preference",
    "failback_after_seconds",
    "backup_source_url",
)
DEFAULTS = (
    DEFAULT_INPUT_LOSS_THRESHOLD_MS,
    PRIMARY_PREFERENCE,
    DEFAULT_FAILBACK_AFTER_SECONDS,
    None,
)


@pytest.fixture
def store(store_target: str | Path) -> Iterator[Database]:
    database = Database(store_target)
    yield database
    database.close()


def new_job(database: Database, callback: str | None = None, **changes: Any) -> int:
    if database.get_project("p1") is None:
        database.create_project("p1", "p1", "key-p1", HASH)
    row = job_row("p1", "media", "shows", f"news-{uuid.uuid4()}", callback_url=callback, **changes)
    return database.insert_job(row, ["720p"])


def _engine(target: str | Path) -> Engine:
    return postgres_engine(target) if isinstance(target, str) else sqlite_engine(Path(target))


def _migrate(target: str | Path, revision: str, *, down: bool = False) -> None:
    """Bring the store at `target` to `revision`, as `engines.migrate` does to head."""
    engine = _engine(target)
    try:
        with engine.connect() as connection:
            connection.execution_options(**WRITE)
            with connection.begin():
                config = _alembic_config(connection)
                (command.downgrade if down else command.upgrade)(config, revision)
    finally:
        engine.dispose()


def _rows_at_0008(target: str | Path) -> int:
    """A store at revision 0008 with a project, a job, its output and its timing."""
    _migrate(target, "0008")
    engine = _engine(target)
    try:
        with engine.connect() as connection:
            connection.execution_options(**WRITE)
            with connection.begin():
                tables = MetaData()
                tables.reflect(connection)
                assert "backup_source_url" not in tables.tables["live_jobs"].c
                connection.execute(
                    tables.tables["projects"]
                    .insert()
                    .values(id="p1", name="p1", created_at="2026-01-01T00:00:00+00:00")
                )
                row = job_row("p1", "media", "shows", "news", source_url="https://a.example/x")
                jobs = tables.tables["live_jobs"]
                job_id = int(
                    connection.execute(jobs.insert().values(row).returning(jobs.c.id)).scalar_one()
                )
                connection.execute(
                    tables.tables["outputs"]
                    .insert()
                    .values(live_job_id=job_id, rendition="720p", status=1)
                )
                connection.execute(
                    tables.tables["timings"]
                    .insert()
                    .values(
                        live_job_id=job_id,
                        status="Offline",
                        child_status="Created",
                        start_date_time="2026-01-01T00:00:00+00:00",
                        message_comment="created",
                    )
                )
        return job_id
    finally:
        engine.dispose()


def _counts(target: str | Path) -> dict[str, int]:
    engine = _engine(target)
    try:
        with engine.connect() as connection:
            tables = MetaData()
            tables.reflect(connection, only=["live_jobs", "outputs", "timings"])
            return {
                name: int(connection.execute(select(func.count()).select_from(table)).scalar_one())
                for name, table in tables.tables.items()
            }
    finally:
        engine.dispose()


# -- migration 0009 ------------------------------------------------------------------------


def test_jobs_from_before_the_failover_columns_get_their_defaults(
    store_target: str | Path,
) -> None:
    job_id = _rows_at_0008(store_target)
    database = Database(store_target)  # migrates to head
    try:
        assert database.schema_revision == head_revision()  # past 0009
        job = database.get_job_by_id(job_id)
        assert job is not None
        assert tuple(job[c] for c in FAILOVER_COLUMNS) == DEFAULTS
        assert job["source_url"] == "https://a.example/x"
        assert job["viewer_token_required"] == 0  # 0010: viewing public, as it was
        assert len(database.job_outputs(job_id)) == 1
        # a row written without them reads the same
        later = database.get_job_by_id(new_job(database))
        assert later is not None
        assert tuple(later[c] for c in FAILOVER_COLUMNS) == DEFAULTS
        with database.engine.connect() as connection:
            assert compare_metadata(MigrationContext.configure(connection), metadata) == []
    finally:
        database.close()


def test_the_downgrade_drops_the_columns_and_keeps_every_row(store_target: str | Path) -> None:
    job_id = _rows_at_0008(store_target)
    Database(store_target).close()
    before = _counts(store_target)
    assert before == {"projects": 1, "live_jobs": 1, "outputs": 1, "timings": 1}
    _migrate(store_target, "0008", down=True)
    engine = _engine(store_target)
    try:
        with engine.connect() as connection:
            columns = {c["name"] for c in inspect(connection).get_columns("live_jobs")}
            revision = MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()
    assert revision == "0008"
    assert not columns & set(FAILOVER_COLUMNS)
    assert {"srt_passphrase", "source_url"} <= columns
    # No copy of live_jobs: its outputs and timings are not cascaded away.
    assert _counts(store_target) == before
    database = Database(store_target)  # and up again
    try:
        job = database.get_job_by_id(job_id)
        assert job is not None and tuple(job[c] for c in FAILOVER_COLUMNS) == DEFAULTS
        assert new_job(database) > job_id  # ids never reused (AUTOINCREMENT kept)
        with database.engine.connect() as connection:
            assert compare_metadata(MigrationContext.configure(connection), metadata) == []
    finally:
        database.close()


def test_the_failover_columns_read_back_as_written(store: Database) -> None:
    values: dict[str, Any] = {
        "server_type": 2,
        "input_class": 1,
        "source_url": "https://a.example/primary.m3u8",
        "input_loss_threshold_ms": 250,
        "input_preference": "equal",
        "failback_after_seconds": 2.5,
        "backup_source_url": "https://b.example/backup.m3u8",
    }
    job = store.get_job_by_id(new_job(store, **values))
    assert job is not None
    assert {name: job[name] for name in values} == values


# -- input_switched ------------------------------------------------------------------------


async def test_a_switch_of_input_writes_its_timing_and_queues_its_event(store: Database) -> None:
    job_id = new_job(store, callback=HOOK, input_class=1)
    records = JobRecords(store)
    await records.input_switched(
        job_id, INPUT_FAILOVER, "primary", "backup", "inputLost", "no media for 1000 ms"
    )
    await records.input_switched(
        job_id, INPUT_FAILBACK, "backup", "primary", "primaryClean", "primary clean for 30 s"
    )
    timings = [
        r for r in store.list_timings(job_id, None, 0, 100).rows if r["child_status"] != "Created"
    ]
    assert [(r["status"], r["child_status"], r["message_comment"]) for r in timings] == [
        ("Offline", "InputFailover", "failover primary -> backup: no media for 1000 ms"),
        ("Offline", "InputFailback", "failback backup -> primary: primary clean for 30 s"),
    ]
    events = store.list_webhook_deliveries("p1", job_id, 0, 100).rows[::-1]  # oldest first
    assert [e["type"] for e in events] == [INPUT_FAILOVER_EVENT] * 2 == ["input.failover"] * 2
    assert [e["url"] for e in events] == [HOOK, HOOK]
    bodies = [json.loads(e["body"]) for e in events]
    job = store.get_job_by_id(job_id)
    assert job is not None
    assert bodies[0]["type"] == "input.failover"
    assert bodies[0]["data"] == {
        "liveJobId": job_id,
        "name": job["name"],
        "childStatus": "InputFailover",
        "from": "primary",
        "to": "backup",
        "reason": "inputLost",
        "message": "no media for 1000 ms",
    }
    assert (bodies[1]["data"]["childStatus"], bodies[1]["data"]["to"]) == (
        "InputFailback",
        "primary",
    )
    assert job["stream_key"] not in str(bodies)


async def test_without_a_callback_url_a_switch_is_a_timing_row_only(store: Database) -> None:
    job_id = new_job(store, input_class=1)
    records = JobRecords(store)
    await records.input_switched(job_id, INPUT_FAILOVER, "primary", "backup", "inputLost", "x")
    rows = store.list_timings(job_id, None, 0, 100).rows
    assert [r["child_status"] for r in rows].count("InputFailover") == 1
    assert store.list_webhook_deliveries("p1", job_id, 0, 100).rows == []
    with pytest.raises(ValueError, match="not an input switch child status"):
        await records.input_switched(job_id, "Failover", "primary", "backup", "inputLost", "x")
    with pytest.raises(ValueError, match="to_input is not one of primary, backup"):
        await records.input_switched(job_id, INPUT_FAILOVER, "primary", "spare", "inputLost", "x")
    # A job that is gone: nothing to record.
    await records.input_switched(10**9, INPUT_FAILOVER, "primary", "backup", "inputLost", "x")
