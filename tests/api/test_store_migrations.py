"""SQLite data dirs of an older onair (its own migrations, PRAGMA user_version 1..4)
migrate in place: stamped at the matching Alembic revision and upgraded, keeping every
row, to the very schema a new store gets."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from api.database import Database, head_revision
from api.database.engines import MIGRATIONS_DIR
from api.errors import BucketOwned, PrefixTaken
from tests.support.legacy_store import (
    LEGACY_MIGRATIONS,
    create_legacy_store,
    job_row,
    legacy_job,
    legacy_project,
)


def sqlite_schema(path: Path) -> dict[str, Any]:
    """What SQLite says of each table: columns, indexes (by columns), foreign keys."""
    connection = sqlite3.connect(path)
    try:
        tables = [
            name
            for (name,) in connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'"
                " AND name NOT LIKE 'sqlite_%' AND name != 'alembic_version' ORDER BY name"
            )
        ]
        schema: dict[str, Any] = {}
        for table in tables:
            indexes = set()
            for _, name, unique, *_ in connection.execute(f"PRAGMA index_list({table})"):
                columns = tuple(r[2] for r in connection.execute(f"PRAGMA index_info({name})"))
                indexes.add((columns, bool(unique)))
            # (cid, name, type, notnull, default, pk); the old TEXT PRIMARY KEYs lack NOT
            # NULL (SQLite does not imply it but for INTEGER ones): no code writes a NULL.
            columns = [
                (*c[:3], c[3] or bool(c[5]), *c[4:])
                for c in connection.execute(f"PRAGMA table_info({table})")
            ]
            schema[table] = {
                "columns": columns,
                "indexes": indexes,
                "foreign_keys": sorted(
                    r[2:] for r in connection.execute(f"PRAGMA foreign_key_list({table})")
                ),
                "autoincrement": "AUTOINCREMENT"
                in connection.execute(
                    "SELECT sql FROM sqlite_master WHERE name = ?", (table,)
                ).fetchone()[0],
            }
        return schema
    finally:
        connection.close()


def user_version(path: Path) -> int:
    connection = sqlite3.connect(path)
    try:
        return int(connection.execute("PRAGMA user_version").fetchone()[0])
    finally:
        connection.close()


@pytest.mark.parametrize("version", range(1, len(LEGACY_MIGRATIONS) + 1))
def test_an_old_sqlite_store_upgrades_in_place_to_the_schema_of_a_new_one(
    tmp_path: Path, version: int
) -> None:
    old = tmp_path / "old" / "onair.sqlite3"
    create_legacy_store(old, version)
    legacy_project(old, "a", "2025-01-01T00:00:00.000Z")
    legacy_project(old, "b", "2025-01-01T00:00:00.000Z")
    published = legacy_job(old, job_row("a", "media", "shows", "news"), ["720p", "480p"], 3)
    quiet = legacy_job(old, job_row("a", "media", "shows", "sport"), ["720p"])
    # Before bucket owners, B could use A's bucket: it stays A's (A's job came first).
    legacy_job(old, job_row("b", "media", "probe", "x"), ["720p"])
    other = legacy_job(old, job_row("b", "b-media", "mine", "only"), ["720p"])

    database = Database(old)
    try:
        assert database.schema_revision == head_revision()
        assert database.list_jobs("a", None, 0, 10).total_count == 2
        assert [o["rendition"] for o in database.job_outputs(published)] == ["720p", "480p"]
        assert all(o["skipped"] == 0 for o in database.job_outputs(published))
        if version < 3:  # bucket owners came with migration 3: the earliest job's project
            assert database.bucket("media")["project_id"] == "a"  # type: ignore[index]
            assert database.bucket("b-media")["project_id"] == "b"  # type: ignore[index]
            assert database.bucket("media")["created_by_onair"] is True  # type: ignore[index]
        if version < 4:  # a job that had published owns what is at its prefix
            assert database.get_job_by_id(published)["prefix_claimed_at"]  # type: ignore[index]
            assert database.get_job_by_id(quiet)["prefix_claimed_at"] is None  # type: ignore[index]
        # And the upgraded store enforces what the new one does.
        if version < 3:
            with pytest.raises(BucketOwned):
                database.insert_job(job_row("b", "media", "elsewhere", "x"), ["720p"])
            with pytest.raises(PrefixTaken):
                database.insert_job(job_row("b", "b-media", "mine", "only/more"), ["720p"])
        assert database.insert_job(job_row("b", "b-media", "new", "place"), ["720p"]) > other
    finally:
        database.close()

    new = tmp_path / "new" / "onair.sqlite3"
    Database(new).close()
    assert sqlite_schema(old) == sqlite_schema(new)
    assert user_version(old) == version  # untouched: Alembic's table holds the revision
    assert (old.parent.stat().st_mode & 0o777, old.stat().st_mode & 0o777) == (0o700, 0o600)


def test_every_old_schema_version_is_a_revision_and_the_newest_is_the_last_one() -> None:
    """The revisions that reproduce the old migrations keep their numbers; later
    revisions (0005: webhooks) follow them."""
    numbers = sorted(p.name[1:5] for p in (MIGRATIONS_DIR / "versions").glob("r[0-9]*.py"))
    legacy = [f"{version:04d}" for version in range(1, len(LEGACY_MIGRATIONS) + 1)]
    assert numbers[: len(legacy)] == legacy
    assert head_revision() == numbers[-1]


def test_an_old_store_opened_by_two_processes_at_once_is_migrated_once(tmp_path: Path) -> None:
    path = tmp_path / "data" / "onair.sqlite3"
    create_legacy_store(path, 2)
    legacy_project(path, "a", "2025-01-01T00:00:00.000Z")
    legacy_job(path, job_row("a", "media", "shows", "news"), ["720p"])
    barrier = threading.Barrier(2)
    opened: list[Database] = []
    errors: list[BaseException] = []

    def open_store() -> None:
        barrier.wait()
        try:
            opened.append(Database(path))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=open_store) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    try:
        assert errors == [] and len(opened) == 2
        assert {d.schema_revision for d in opened} == {head_revision()}
        assert opened[0].bucket("media")["project_id"] == "a"  # type: ignore[index]
    finally:
        for database in opened:
            database.close()


def test_a_store_of_an_unknown_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "data" / "onair.sqlite3"
    create_legacy_store(path, len(LEGACY_MIGRATIONS))
    connection = sqlite3.connect(path)
    connection.execute(f"PRAGMA user_version={len(LEGACY_MIGRATIONS) + 1}")
    connection.close()
    with pytest.raises(RuntimeError, match="schema version 5 is unknown"):
        Database(path)
