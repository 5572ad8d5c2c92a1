"""The restreams' rows in the store (`api.database`): blocking, thread-safe, run on the
store's thread (`Database.call`). Every read and write names the project: another
project's restream is never seen (None, a 404).

The stream key is kept as is (it must be sent to the destination), like a job's own
stream key; it is not encrypted at rest, and nothing here logs a row."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, update

from ..database import Database, Page
from ..database.schema import live_jobs, restreams
from ..errors import ValidationFailed

MAX_RESTREAMS_PER_JOB = 10


class TooManyRestreams(ValidationFailed):
    """The live video has the most restreams it may have already (400 naming videoId)."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            [
                f"videoId: a live video has at most {limit} restreams, and this one has"
                f" {limit}: delete one first"
            ]
        )


class RestreamStore:
    """Restreams, in the store's database."""

    def __init__(self, database: Database, *, limit: int = MAX_RESTREAMS_PER_JOB) -> None:
        self._db = database
        self.limit = limit

    def insert(self, row: Mapping[str, Any]) -> int:
        """A new restream of `row["live_job_id"]`, its id; TooManyRestreams if the job has
        `limit` already. The job's row is locked first (FOR UPDATE; SQLite's write lock
        is taken at BEGIN), so creates on one job, from any host, count one at a time."""

        def work(connection: Connection) -> int:
            job_id = row["live_job_id"]
            connection.execute(
                select(live_jobs.c.id).where(live_jobs.c.id == job_id).with_for_update()
            ).first()
            count = connection.execute(
                select(func.count()).select_from(restreams).where(restreams.c.live_job_id == job_id)
            ).scalar_one()
            if int(count) >= self.limit:
                raise TooManyRestreams(self.limit)
            return int(
                connection.execute(
                    insert(restreams).values(**row).returning(restreams.c.id)
                ).scalar_one()
            )

        return self._db.transaction(work)

    def get(self, project_id: str, restream_id: int) -> dict[str, Any] | None:
        """A restream of this project (another project's is None)."""
        with self._db.engine.connect() as connection:
            row = connection.execute(
                select(restreams).where(
                    restreams.c.id == restream_id, restreams.c.project_id == project_id
                )
            ).first()
        return None if row is None else dict(row._mapping)

    def toggle(self, project_id: str, restream_id: int) -> dict[str, Any] | None:
        """Flip the restream's status (one UPDATE: two toggles at once flip twice); the
        row after it, None if the project has no such restream."""

        def work(connection: Connection) -> dict[str, Any] | None:
            where = (restreams.c.id == restream_id, restreams.c.project_id == project_id)
            flipped = connection.execute(
                update(restreams).where(*where).values(status=1 - restreams.c.status)
            ).rowcount
            if flipped != 1:
                return None
            row = connection.execute(select(restreams).where(*where)).first()
            return None if row is None else dict(row._mapping)

        return self._db.transaction(work)

    def delete(self, project_id: str, restream_id: int) -> dict[str, Any] | None:
        """Delete the restream; the row it was, None if the project has no such one."""

        def work(connection: Connection) -> dict[str, Any] | None:
            where = (restreams.c.id == restream_id, restreams.c.project_id == project_id)
            row = connection.execute(select(restreams).where(*where).with_for_update()).first()
            if row is None:
                return None
            connection.execute(delete(restreams).where(*where))
            return dict(row._mapping)

        return self._db.transaction(work)

    def page(self, project_id: str, job_id: int, offset: int, limit: int) -> Page:
        """A page of one live job's restreams, in the order they were made."""
        where = (restreams.c.project_id == project_id, restreams.c.live_job_id == job_id)
        with self._db.engine.connect() as connection:
            total = connection.execute(
                select(func.count()).select_from(restreams).where(*where)
            ).scalar_one()
            rows = connection.execute(
                select(restreams).where(*where).order_by(restreams.c.id).limit(limit).offset(offset)
            )
            return Page([dict(row._mapping) for row in rows], int(total))

    def enabled(self, job_id: int) -> list[dict[str, Any]]:
        """The job's enabled restreams (status 1), in the order they were made."""
        with self._db.engine.connect() as connection:
            rows = connection.execute(
                select(restreams)
                .where(restreams.c.live_job_id == job_id, restreams.c.status == 1)
                .order_by(restreams.c.id)
            )
            return [dict(row._mapping) for row in rows]

    def record_states(self, job_id: int, states: Mapping[int, str]) -> None:
        """What each restream of the job does now (`live_state` JSON), from its live's
        host."""
        if not states:
            return

        def work(connection: Connection) -> None:
            for restream_id, state in states.items():
                connection.execute(
                    update(restreams)
                    .where(restreams.c.id == restream_id, restreams.c.live_job_id == job_id)
                    .values(live_state=state)
                )

        self._db.transaction(work)
