"""The database: SQLite (WAL) under ONAIR_DATA_DIR, with versioned migrations.

(Not the object store, `packager.object_store`, where the media goes.) All access goes
through one connection guarded by a lock; the API runs database calls on a worker
thread of its own (`Database.call`) so the event loop never waits on the disk. Other
processes (the `onair project create` CLI) open their own connection: WAL plus a
busy timeout keeps concurrent writers safe.

The database holds every stream key: the data dir is kept 0700 and the database
files (with their -wal and -shm) 0600, tightened at every open.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from packager.layout import object_prefix

from .errors import BucketOwned, PrefixTaken

T = TypeVar("T")

logger = logging.getLogger(__name__)

DATA_DIR_MODE = 0o700
DB_FILE_MODE = 0o600
DB_FILE_SUFFIXES = ("", "-wal", "-shm", "-journal")

MIGRATIONS: tuple[str, ...] = (
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


def restrict_mode(path: Path, mode: int) -> None:
    """Clear the permission bits of `path` that `mode` does not have (never loosens)."""
    try:
        current = path.stat().st_mode & 0o777
        if current & ~mode:
            os.chmod(path, current & mode)
    except FileNotFoundError:
        pass
    except PermissionError:  # not ours (a volume root): say so, the files stay private
        logger.warning(
            "cannot restrict %s to mode %o (owned by another user): restrict it by hand",
            path,
            mode,
        )


def secure_data_dir(data_dir: Path) -> None:
    """Create the data dir with mode 0700, or tighten an existing one: it holds the
    database (every stream key), the S3 credentials and the development project's key."""
    data_dir.mkdir(mode=DATA_DIR_MODE, parents=True, exist_ok=True)
    restrict_mode(data_dir, DATA_DIR_MODE)


def _secure_db_files(path: Path) -> None:
    """The database and its -wal/-shm (SQLite gives those the database file's mode)."""
    for suffix in DB_FILE_SUFFIXES:
        restrict_mode(path.with_name(path.name + suffix), DB_FILE_MODE)


def prefixes_overlap(first: str, second: str) -> bool:
    """Whether two key prefixes are the same place or one encloses the other, segment by
    segment: `a/b` encloses `a/b/c` but not `a/bc`."""
    a, b = first.split("/"), second.split("/")
    common = min(len(a), len(b))
    return a[:common] == b[:common]


def utcnow() -> str:
    """Now, as the API writes date-times: ISO 8601, UTC, milliseconds, `Z`."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Page:
    rows: list[dict[str, Any]]
    total_count: int


class Database:
    """SQLite state of projects, keys, buckets, live jobs, outputs and timings.

    `path` is in the data dir (`Settings.db_path`), which is made private (0700) here,
    the database files 0600.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        secure_data_dir(self.path.parent)
        # Created 0600 before SQLite opens it (it would create it 0644): no moment in
        # which another user could open it.
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, DB_FILE_MODE))
        _secure_db_files(self.path)
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA busy_timeout=5000")
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._migrate()
        _secure_db_files(self.path)  # -wal and -shm exist now (left over ones included)

    # -- plumbing ---------------------------------------------------------------

    def _migrate(self) -> None:
        version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        for number, script in enumerate(MIGRATIONS, start=1):
            if number <= version:
                continue
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                # user_version is re-read inside the write lock: another process may
                # have migrated between our read and BEGIN.
                current = self._conn.execute("PRAGMA user_version").fetchone()[0]
                if current < number:
                    for statement in script.split(";"):
                        if statement.strip():
                            self._conn.execute(statement)
                    self._conn.execute(f"PRAGMA user_version={number}")
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    @property
    def schema_version(self) -> int:
        with self._lock:
            return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(r) for r in self._conn.execute(sql, params).fetchall()]

    def _write(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> int:
        """Run statements in one transaction; returns the last rowid."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                rowid = 0
                for sql, params in statements:
                    rowid = self._conn.execute(sql, params).lastrowid or rowid
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            return rowid

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a database method on the database's own thread."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="database")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        with self._lock:
            self._conn.close()

    def ping(self) -> bool:
        try:
            self._query("SELECT 1")
        except sqlite3.Error:
            return False
        return True

    # -- projects and keys ------------------------------------------------------

    def create_project(self, project_id: str, name: str, key_id: str, secret_hash: bytes) -> None:
        now = utcnow()
        self._write(
            [
                (
                    "INSERT INTO projects(id, name, created_at) VALUES (?, ?, ?)",
                    (project_id, name, now),
                ),
                (
                    "INSERT INTO api_keys(key_id, project_id, secret_hash, created_at)"
                    " VALUES (?, ?, ?, ?)",
                    (key_id, project_id, secret_hash, now),
                ),
            ]
        )

    def get_project(self, project_id: str) -> dict[str, Any] | None:
        rows = self._query("SELECT * FROM projects WHERE id = ?", (project_id,))
        return rows[0] if rows else None

    def get_api_key(self, key_id: str) -> dict[str, Any] | None:
        rows = self._query("SELECT * FROM api_keys WHERE key_id = ?", (key_id,))
        return rows[0] if rows else None

    # -- live jobs ---------------------------------------------------------------

    def insert_job(self, job: dict[str, Any], renditions: Sequence[str]) -> int:
        """Insert a live job and its outputs, claiming its bucket, in one transaction.

        Raises BucketOwned if the bucket belongs to another project, PrefixTaken if the
        job's prefix (`destination/filePath`) equals, lies inside or encloses another
        job's in the bucket. BEGIN IMMEDIATE takes SQLite's write lock before the checks,
        so creates racing for a new bucket or place (threads or processes) are
        serialized: the later one sees the earlier one's rows.
        """
        columns = ", ".join(job)
        marks = ", ".join("?" for _ in job)
        prefix = object_prefix(job["destination"], job["file_path"])
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._claim_bucket(job["bucket"], job["project_id"], job["insert_date"])
                self._check_prefix_free(job["bucket"], prefix)
                cursor = self._conn.execute(
                    f"INSERT INTO live_jobs({columns}) VALUES ({marks})", tuple(job.values())
                )
                job_id = int(cursor.lastrowid or 0)
                for rendition in renditions:
                    self._conn.execute(
                        "INSERT INTO outputs(live_job_id, rendition, status) VALUES (?, ?, ?)",
                        (job_id, rendition, job["status"]),
                    )
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        return job_id

    def _claim_bucket(self, name: str, project_id: str, now: str) -> None:
        """In a write transaction: the bucket is this project's, or becomes it."""
        row = self._conn.execute(
            "SELECT project_id FROM buckets WHERE name = ?", (name,)
        ).fetchone()
        if row is None:
            self._conn.execute(
                "INSERT INTO buckets(name, project_id, created_at) VALUES (?, ?, ?)",
                (name, project_id, now),
            )
        elif row["project_id"] != project_id:
            raise BucketOwned()

    def _check_prefix_free(self, bucket: str, prefix: str) -> None:
        """In a write transaction: no job of any project in `bucket` overlaps `prefix`."""
        rows = self._conn.execute(
            "SELECT destination, file_path FROM live_jobs WHERE bucket = ?", (bucket,)
        )
        for row in rows:
            if prefixes_overlap(prefix, object_prefix(row["destination"], row["file_path"])):
                raise PrefixTaken()

    def replace_stream_key(
        self, job_id: int, stream_key: str, key_digest: str, status_name: str, message: str
    ) -> None:
        """Give a job a new stream key (the old one stops matching at once), with its
        timing row, in one transaction."""
        self._write(
            [
                (
                    "UPDATE live_jobs SET stream_key = ?, key_digest = ? WHERE id = ?",
                    (stream_key, key_digest, job_id),
                ),
                (
                    "INSERT INTO timings(live_job_id, output_id, status, child_status,"
                    " start_date_time, message_comment) VALUES (?, NULL, ?, ?, ?, ?)",
                    (job_id, status_name, "StreamKeyRotated", utcnow(), message),
                ),
            ]
        )

    # -- buckets -----------------------------------------------------------------

    def bucket(self, name: str) -> dict[str, Any] | None:
        """Who owns a bucket: {name, project_id, created_at, created_by_onair}; None if
        no job was ever created on it."""
        rows = self._query("SELECT * FROM buckets WHERE name = ?", (name,))
        if not rows:
            return None
        row = rows[0]
        row["created_by_onair"] = bool(row["created_by_onair"])
        return row

    def mark_bucket_created(self, name: str) -> bool:
        """Record that onair created this bucket (a job's pipeline calls it after
        CreateBucket succeeded). False if the bucket is not claimed by any project."""
        with self._lock:
            cursor = self._conn.execute(
                "UPDATE buckets SET created_by_onair = 1 WHERE name = ?", (name,)
            )
            return cursor.rowcount > 0

    def claim_prefix(self, job_id: int) -> None:
        """The job's pipeline is about to write at its prefix: from now on what is
        there is the job's own (continued by its next pipelines)."""
        self._write(
            [
                (
                    "UPDATE live_jobs SET prefix_claimed_at = ?"
                    " WHERE id = ? AND prefix_claimed_at IS NULL",
                    (utcnow(), job_id),
                )
            ]
        )

    def get_job(self, project_id: str, job_id: int) -> dict[str, Any] | None:
        rows = self._query(
            "SELECT * FROM live_jobs WHERE project_id = ? AND id = ?", (project_id, job_id)
        )
        return rows[0] if rows else None

    def get_job_by_name(self, project_id: str, name: str) -> dict[str, Any] | None:
        rows = self._query(
            "SELECT * FROM live_jobs WHERE project_id = ? AND name = ?", (project_id, name)
        )
        return rows[0] if rows else None

    def get_job_by_digest(self, key_digest: str) -> dict[str, Any] | None:
        rows = self._query("SELECT * FROM live_jobs WHERE key_digest = ?", (key_digest,))
        return rows[0] if rows else None

    def get_job_by_id(self, job_id: int) -> dict[str, Any] | None:
        rows = self._query("SELECT * FROM live_jobs WHERE id = ?", (job_id,))
        return rows[0] if rows else None

    def list_jobs(self, project_id: str, search: str | None, offset: int, limit: int) -> Page:
        where = "project_id = ?"
        params: list[Any] = [project_id]
        if search:
            pattern = (
                "%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            )
            fields = ("name", "description", "destination", "file_path", "bucket")
            where += " AND (" + " OR ".join(f"{f} LIKE ? ESCAPE '\\'" for f in fields) + ")"
            params += [pattern] * len(fields)
        total = self._query(f"SELECT COUNT(*) AS n FROM live_jobs WHERE {where}", params)[0]["n"]
        rows = self._query(
            f"SELECT * FROM live_jobs WHERE {where} ORDER BY id DESC LIMIT ? OFFSET ?",
            [*params, limit, offset],
        )
        return Page(rows, int(total))

    def online_jobs(self) -> list[dict[str, Any]]:
        return self._query("SELECT * FROM live_jobs WHERE online = 1 ORDER BY id")

    def update_job(self, job_id: int, **values: Any) -> None:
        if "statistics" in values and not isinstance(values["statistics"], str | None):
            values["statistics"] = json.dumps(values["statistics"])
        assignments = ", ".join(f"{name} = ?" for name in values)
        self._write(
            [(f"UPDATE live_jobs SET {assignments} WHERE id = ?", (*values.values(), job_id))]
        )

    def set_status(
        self,
        job_id: int,
        status: int,
        status_name: str,
        child_status: str,
        message: str,
        output_id: int | None = None,
        **job_values: Any,
    ) -> None:
        """Change a job's status and append its timing row, in one transaction."""
        now = utcnow()
        assignments = ", ".join(["status = ?", *(f"{name} = ?" for name in job_values)])
        self._write(
            [
                (
                    f"UPDATE live_jobs SET {assignments} WHERE id = ?",
                    (status, *job_values.values(), job_id),
                ),
                (
                    "INSERT INTO timings(live_job_id, output_id, status, child_status,"
                    " start_date_time, message_comment) VALUES (?, ?, ?, ?, ?, ?)",
                    (job_id, output_id, status_name, child_status, now, message),
                ),
            ]
        )

    def add_timing(
        self,
        job_id: int,
        status_name: str,
        child_status: str,
        message: str,
        output_id: int | None = None,
    ) -> None:
        self._write(
            [
                (
                    "INSERT INTO timings(live_job_id, output_id, status, child_status,"
                    " start_date_time, message_comment) VALUES (?, ?, ?, ?, ?, ?)",
                    (job_id, output_id, status_name, child_status, utcnow(), message),
                )
            ]
        )

    def list_timings(self, job_id: int, output_id: int | None, offset: int, limit: int) -> Page:
        where = "live_job_id = ?"
        params: list[Any] = [job_id]
        if output_id is not None:
            where += " AND output_id = ?"
            params.append(output_id)
        total = self._query(f"SELECT COUNT(*) AS n FROM timings WHERE {where}", params)[0]["n"]
        rows = self._query(
            f"SELECT * FROM timings WHERE {where} ORDER BY id LIMIT ? OFFSET ?",
            [*params, limit, offset],
        )
        return Page(rows, int(total))

    # -- outputs -----------------------------------------------------------------

    def list_outputs(self, project_id: str, job_id: int | None, offset: int, limit: int) -> Page:
        where = "j.project_id = ?"
        params: list[Any] = [project_id]
        if job_id is not None:
            where += " AND o.live_job_id = ?"
            params.append(job_id)
        base = f"FROM outputs o JOIN live_jobs j ON j.id = o.live_job_id WHERE {where}"
        total = self._query(f"SELECT COUNT(*) AS n {base}", params)[0]["n"]
        rows = self._query(
            f"SELECT o.* {base} ORDER BY o.live_job_id, o.output_id LIMIT ? OFFSET ?",
            [*params, limit, offset],
        )
        return Page(rows, int(total))

    def job_outputs(self, job_id: int) -> list[dict[str, Any]]:
        return self._query(
            "SELECT * FROM outputs WHERE live_job_id = ? ORDER BY output_id", (job_id,)
        )

    def mark_skipped(self, job_id: int, skipped: Mapping[str, str]) -> set[str]:
        """Mark these renditions skipped (name -> reason), the job's others not, in one
        transaction; returns the names the job has no output for."""
        names = {o["rendition"] for o in self.job_outputs(job_id)}
        statements: list[tuple[str, Sequence[Any]]] = [
            (
                "UPDATE outputs SET skipped = 0, skip_reason = NULL WHERE live_job_id = ?",
                (job_id,),
            )
        ]
        statements += [
            (
                "UPDATE outputs SET skipped = 1, skip_reason = ?"
                " WHERE live_job_id = ? AND rendition = ?",
                (reason, job_id, name),
            )
            for name, reason in skipped.items()
            if name in names
        ]
        self._write(statements)
        return set(skipped) - names

    def update_outputs(self, job_id: int, updates: Sequence[dict[str, Any]]) -> None:
        """Each update: {"output_id": ..., column: value, ...}."""
        statements = []
        for update in updates:
            values = {k: v for k, v in update.items() if k != "output_id"}
            assignments = ", ".join(f"{name} = ?" for name in values)
            statements.append(
                (
                    f"UPDATE outputs SET {assignments} WHERE output_id = ? AND live_job_id = ?",
                    (*values.values(), update["output_id"], job_id),
                )
            )
        if statements:
            self._write(statements)
