"""SQLite data dirs as onair left them before Alembic: the schema its own migrations built
(PRAGMA user_version 1..4, their SQL copied verbatim from that version of
`api/database.py`), and rows written as its code wrote them."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path
from typing import Any

from api.database import utcnow
from api.keys import new_api_key, new_stream_key, stream_key_digest

LEGACY_MIGRATIONS: tuple[str, ...] = (
    # 1: projects, keys, live jobs, outputs, timings
    """
    CREATE TABLE projects (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE api_keys (
        key_id TEXT PRIMARY KEY,
        project_id TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
        secret_hash BLOB NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE live_jobs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        project_id TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
        name TEXT NOT NULL UNIQUE,
        stream_key TEXT NOT NULL UNIQUE,
        key_digest TEXT NOT NULL UNIQUE,
        destination TEXT NOT NULL,
        description TEXT,
        bucket TEXT NOT NULL,
        cdn_distribution INTEGER NOT NULL,
        job_template_id INTEGER NOT NULL,
        file_path TEXT NOT NULL,
        server_type INTEGER NOT NULL,
        input_class INTEGER NOT NULL,
        callback_url TEXT,
        status INTEGER NOT NULL,
        online INTEGER NOT NULL,
        insert_date TEXT NOT NULL,
        start_date_time TEXT,
        end_date_time TEXT,
        cut_start TEXT,
        cut_finish TEXT,
        statistics TEXT
    );
    CREATE INDEX live_jobs_project ON live_jobs(project_id, id);
    CREATE TABLE outputs (
        output_id INTEGER PRIMARY KEY AUTOINCREMENT,
        live_job_id INTEGER NOT NULL REFERENCES live_jobs(id) ON DELETE CASCADE,
        rendition TEXT NOT NULL,
        status INTEGER NOT NULL,
        progress INTEGER NOT NULL DEFAULT 0,
        counter INTEGER NOT NULL DEFAULT 0,
        lock_key TEXT,
        encoder_id INTEGER
    );
    CREATE INDEX outputs_job ON outputs(live_job_id, output_id);
    CREATE TABLE timings (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        live_job_id INTEGER NOT NULL REFERENCES live_jobs(id) ON DELETE CASCADE,
        output_id INTEGER,
        status TEXT NOT NULL,
        child_status TEXT NOT NULL,
        start_date_time TEXT NOT NULL,
        message_comment TEXT NOT NULL
    );
    CREATE INDEX timings_job ON timings(live_job_id, id);
    """,
    # 2: renditions a pipeline does not encode (a source smaller than the rung)
    """
    ALTER TABLE outputs ADD COLUMN skipped INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE outputs ADD COLUMN skip_reason TEXT;
    """,
    # 3: buckets belong to the project whose job first used them. Existing buckets go
    # to the project of their earliest job. `created_by_onair` is set when a job's
    # pipeline creates the bucket; claims migrated here are trusted as onair's
    # (earlier versions created the buckets their jobs used, or used them as found).
    # No ON DELETE: a bucket is never released, its media stays its owner's.
    """
    CREATE TABLE buckets (
        name TEXT PRIMARY KEY,
        project_id TEXT NOT NULL REFERENCES projects(id),
        created_at TEXT NOT NULL,
        created_by_onair INTEGER NOT NULL DEFAULT 0
    );
    INSERT INTO buckets(name, project_id, created_at, created_by_onair)
        SELECT j.bucket, j.project_id, j.insert_date, 1 FROM live_jobs AS j
        WHERE j.id = (SELECT MIN(e.id) FROM live_jobs AS e WHERE e.bucket = j.bucket);
    CREATE INDEX live_jobs_bucket ON live_jobs(bucket, id);
    """,
    # 4: when a job's pipeline first wrote at its prefix: before that, objects found
    # there are not onair's (they are never continued nor overwritten). Jobs that
    # published before this migration own what is at theirs.
    """
    ALTER TABLE live_jobs ADD COLUMN prefix_claimed_at TEXT;
    UPDATE live_jobs SET prefix_claimed_at = insert_date
        WHERE id IN (SELECT live_job_id FROM outputs WHERE counter > 0);
    """,
)


def create_legacy_store(path: Path, version: int) -> None:
    """A SQLite file migrated by the old code up to `version` (1..4), as it did it."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA foreign_keys=ON")
        for number, script in enumerate(LEGACY_MIGRATIONS[:version], start=1):
            connection.execute("BEGIN IMMEDIATE")
            for statement in script.split(";"):
                if statement.strip():
                    connection.execute(statement)
            connection.execute(f"PRAGMA user_version={number}")
            connection.execute("COMMIT")
    finally:
        connection.close()


def legacy_project(path: Path, project_id: str, created_at: str) -> str:
    """A project and its API key, inserted as `onair project create` did; the key."""
    key = new_api_key()
    with sqlite3.connect(path) as connection:
        connection.execute(
            "INSERT INTO projects(id, name, created_at) VALUES (?, ?, ?)",
            (project_id, project_id, created_at),
        )
        connection.execute(
            "INSERT INTO api_keys(key_id, project_id, secret_hash, created_at) VALUES (?, ?, ?, ?)",
            (key.key_id, project_id, key.secret_hash, created_at),
        )
    connection.close()
    return key.api_key


def legacy_job(
    path: Path,
    job: dict[str, Any],
    renditions: list[str],
    counter: int = 0,
) -> int:
    """A live job row and its outputs as the old code inserted them (no bucket claim,
    no prefix check); `counter` segments published by each output. Its id."""
    columns = ", ".join(job)
    marks = ", ".join("?" for _ in job)
    with sqlite3.connect(path) as connection:
        cursor = connection.execute(
            f"INSERT INTO live_jobs({columns}) VALUES ({marks})", tuple(job.values())
        )
        job_id = int(cursor.lastrowid or 0)
        for rendition in renditions:
            connection.execute(
                "INSERT INTO outputs(live_job_id, rendition, status, counter) VALUES (?, ?, ?, ?)",
                (job_id, rendition, job["status"], counter),
            )
    connection.close()
    return job_id


def job_row(
    project_id: str, bucket: str, destination: str, file_path: str, **changes: Any
) -> dict[str, Any]:
    """A live_jobs row as `JobRecords.create` writes it (template 2, offline)."""
    key = new_stream_key()
    return {
        "project_id": project_id,
        "name": str(uuid.uuid4()),
        "stream_key": key,
        "key_digest": stream_key_digest(key),
        "destination": destination,
        "description": None,
        "bucket": bucket,
        "cdn_distribution": 0,
        "job_template_id": 2,
        "file_path": file_path,
        "server_type": 0,
        "input_class": 0,
        "callback_url": None,
        "status": 1,
        "online": 0,
        "insert_date": utcnow(),
        **changes,
    }
