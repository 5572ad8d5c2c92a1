"""Opening the store: the engine of a SQLite file or a PostgreSQL URL, and its migration.

SQLite (the embedded default): one connection (the pool's single slot is the lock the
worker thread and the upload threads take turns on), WAL, a busy timeout for the other
processes (`onair project create`), foreign keys on, and every write transaction
`BEGIN IMMEDIATE`, so a read-check-write takes the write lock before it reads. The
data dir is 0700 and the database files 0600: they hold every stream key.

PostgreSQL (`ONAIR_DATABASE_URL`): psycopg 3, a small pool, READ COMMITTED; what must
be atomic across hosts takes a row lock (`Database.insert_job`), migrations an advisory
lock. Neither the URL's password nor statement parameters (stream keys) are ever logged.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import URL, Connection, Engine, create_engine, event, inspect, make_url, text
from sqlalchemy.pool import ConnectionPoolEntry, QueuePool

logger = logging.getLogger(__name__)

DATA_DIR_MODE = 0o700
DB_FILE_MODE = 0o600
DB_FILE_SUFFIXES = ("", "-wal", "-shm", "-journal")
SQLITE_BUSY_TIMEOUT_MS = 5000
# Connections a PostgreSQL store keeps: the store's worker thread, and the upload
# threads' plain calls (`JobRecords` storage claims); more are opened under a burst.
POSTGRES_POOL_SIZE = 3
POSTGRES_POOL_OVERFLOW = 5
POOL_TIMEOUT_SECONDS = 30.0
# Held (per transaction) while one host migrates: the others wait, then find it done.
MIGRATION_LOCK_ID = 0x6F6E6169  # "onai"
# The Execution option that makes a SQLite transaction BEGIN IMMEDIATE.
WRITE = {"onair_write": True}

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
# onair before Alembic counted its SQLite migrations in PRAGMA user_version; revision
# "000N" is that migration N.
LEGACY_SQLITE_VERSIONS = 4


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


def secure_db_files(path: Path) -> None:
    """The database and its -wal/-shm (SQLite gives those the database file's mode)."""
    for suffix in DB_FILE_SUFFIXES:
        restrict_mode(path.with_name(path.name + suffix), DB_FILE_MODE)


def postgres_url(url: str | URL) -> URL:
    """A PostgreSQL URL with onair's driver (psycopg 3): `postgresql://` and
    `postgres://` as libpq spells them, `postgresql+psycopg://` as SQLAlchemy does."""
    parsed = make_url(url)
    if parsed.drivername not in ("postgresql", "postgres", "postgresql+psycopg"):
        raise ValueError(f"not a PostgreSQL URL: {parsed.render_as_string(hide_password=True)}")
    return parsed.set(drivername="postgresql+psycopg")


def shown(url: str | URL) -> str:
    """A URL as it may appear in logs and errors: the password masked."""
    return make_url(url).render_as_string(hide_password=True)


def sqlite_engine(path: Path) -> Engine:
    """The engine of a SQLite file, created 0600 in a 0700 data dir if it is new."""
    secure_data_dir(path.parent)
    # Created 0600 before SQLite opens it (it would create it 0644): no moment in which
    # another user could open it.
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, DB_FILE_MODE))
    secure_db_files(path)
    engine = create_engine(
        URL.create("sqlite+pysqlite", database=str(path)),
        poolclass=QueuePool,
        pool_size=1,
        max_overflow=0,
        pool_timeout=POOL_TIMEOUT_SECONDS,
        hide_parameters=True,
        connect_args={"check_same_thread": False},
    )

    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        dbapi_connection.isolation_level = None  # pysqlite's own BEGINs off: ours below
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def on_begin(connection: Connection) -> None:
        write = connection.get_execution_options().get("onair_write", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


def postgres_engine(url: str | URL) -> Engine:
    """The engine of a PostgreSQL database (psycopg 3), pinging pooled connections
    before use so a restarted server costs no failed request."""
    return create_engine(
        postgres_url(url),
        pool_size=POSTGRES_POOL_SIZE,
        max_overflow=POSTGRES_POOL_OVERFLOW,
        pool_timeout=POOL_TIMEOUT_SECONDS,
        pool_pre_ping=True,
        hide_parameters=True,
        connect_args={"application_name": "onair", "connect_timeout": 10},
    )


def _alembic_config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest revision in `api.migrations`: what every store is migrated to."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def migrate(engine: Engine) -> str:
    """Bring the store to the newest revision, in one transaction; returns it.

    A SQLite file from before Alembic (no alembic_version table, PRAGMA user_version N)
    is first stamped at revision N. The transaction holds the write lock (SQLite) or
    an advisory lock (PostgreSQL) from its first read: hosts or processes opening the
    store at once migrate it once.
    """
    with engine.connect() as connection:
        connection.execution_options(**WRITE)
        with connection.begin():
            if connection.dialect.name == "postgresql":
                connection.execute(
                    text("SELECT pg_advisory_xact_lock(:lock)"), {"lock": MIGRATION_LOCK_ID}
                )
            config = _alembic_config(connection)
            before = MigrationContext.configure(connection).get_current_revision()
            if before is None and connection.dialect.name == "sqlite":
                before = _stamp_legacy_sqlite(connection, config)
            command.upgrade(config, "head")
    after = head_revision()
    if before != after:
        logger.info("store migrated from revision %s to %s", before or "(empty)", after)
    return after


def _stamp_legacy_sqlite(connection: Connection, config: Config) -> str | None:
    """A SQLite file migrated by onair before Alembic: stamp it at its revision."""
    version = int(connection.exec_driver_sql("PRAGMA user_version").scalar_one())
    if version == 0:
        if inspect(connection).has_table("live_jobs"):
            raise RuntimeError("the SQLite store has tables but no schema version: not onair's?")
        return None
    if version > LEGACY_SQLITE_VERSIONS:
        raise RuntimeError(f"the SQLite store's schema version {version} is unknown")
    revision = f"{version:04d}"
    command.stamp(config, revision)
    logger.info("SQLite store at schema version %s: stamped revision %s", version, revision)
    return revision
