"""The store: SQLite (WAL) under ONAIR_DATA_DIR, or PostgreSQL at ONAIR_DATABASE_URL.

(Not the object store, `packager.object_store`, where the media goes.) One schema for
both, declared once in SQLAlchemy Core (`api.database.schema`) and migrated by Alembic
(`api.migrations`) at every open; a SQLite data dir of an older onair is upgraded in
place. The API runs database calls on a worker thread of the store's own
(`Database.call`) so the event loop never waits on the database. Other processes (the
`onair project create` CLI, other hosts on PostgreSQL) open their own connections: what
must be atomic is one transaction holding the right lock (`api.database.engines`).

The database holds every stream key: a SQLite data dir is kept 0700 and the database
files (with their -wal and -shm) 0600, tightened at every open.
"""

from .engines import (
    DATA_DIR_MODE,
    DB_FILE_MODE,
    head_revision,
    restrict_mode,
    secure_data_dir,
)
from .store import Database, Page, prefixes_overlap, utcnow

__all__ = [
    "DATA_DIR_MODE",
    "DB_FILE_MODE",
    "Database",
    "Page",
    "head_revision",
    "prefixes_overlap",
    "restrict_mode",
    "secure_data_dir",
    "utcnow",
]
