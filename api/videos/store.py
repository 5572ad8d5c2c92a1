"""The videos' rows in the store (`api.database`): blocking, thread-safe, run on the
store's thread (`Database.call`). A video's status changes to Ready or Failed in the
transaction that queues its webhook event (`video.ready`, `video.failed`)."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, func, insert, or_, select, update

from ..database import Database, Page, utcnow
from ..database.schema import service_secrets, videos
from ..database.store import _insert_if_absent, queue_job_event

PROCESSING, READY, FAILED = "Processing", "Ready", "Failed"


class VideoStore:
    """Videos and the service's secrets, in the store's database."""

    def __init__(self, database: Database) -> None:
        self._db = database

    def insert(self, row: Mapping[str, Any]) -> None:
        self._db.transaction(lambda connection: connection.execute(insert(videos).values(**row)))

    def get(self, project_id: str, public_id: str) -> dict[str, Any] | None:
        """A video of this project (another project's is None: never seen across)."""
        with self._db.engine.connect() as connection:
            row = connection.execute(
                select(videos).where(
                    videos.c.project_id == project_id, videos.c.public_id == public_id
                )
            ).first()
        return None if row is None else dict(row._mapping)

    def get_by_id(self, video_id: int) -> dict[str, Any] | None:
        with self._db.engine.connect() as connection:
            row = connection.execute(select(videos).where(videos.c.id == video_id)).first()
        return None if row is None else dict(row._mapping)

    def page(self, project_id: str, live_job_id: int | None, offset: int, limit: int) -> Page:
        """A page of the project's videos (or one live's), newest first."""
        where = [videos.c.project_id == project_id]
        if live_job_id is not None:
            where.append(videos.c.live_job_id == live_job_id)
        with self._db.engine.connect() as connection:
            total = connection.execute(
                select(func.count()).select_from(videos).where(*where)
            ).scalar_one()
            rows = connection.execute(
                select(videos)
                .where(*where)
                .order_by(videos.c.id.desc())
                .limit(limit)
                .offset(offset)
            )
            return Page([dict(row._mapping) for row in rows], int(total))

    # -- the cuts' runner ----------------------------------------------------------

    def claim_due(self, now: str, until: str, claimer: str, limit: int) -> list[dict[str, Any]]:
        """Up to `limit` Processing videos due at `now` that nobody holds, each held for
        `claimer` until `until`, its `attempts` counted. A conditional UPDATE takes each:
        two hosts never hold one video at once."""
        v = videos
        free = or_(v.c.claimed_until.is_(None), v.c.claimed_until <= now)

        def work(connection: Connection) -> list[dict[str, Any]]:
            candidates = list(
                connection.execute(
                    select(v.c.id)
                    .where(v.c.status == PROCESSING, v.c.next_attempt_at <= now, free)
                    .order_by(v.c.next_attempt_at, v.c.id)
                    .limit(limit)
                ).scalars()
            )
            claimed = []
            for video_id in candidates:
                taken = connection.execute(
                    update(v)
                    .where(v.c.id == video_id, v.c.status == PROCESSING, free)
                    .values(claimed_by=claimer, claimed_until=until, attempts=v.c.attempts + 1)
                ).rowcount
                if taken == 1:
                    claimed.append(video_id)
            if not claimed:
                return []
            rows = connection.execute(select(v).where(v.c.id.in_(claimed)).order_by(v.c.id))
            return [dict(row._mapping) for row in rows]

        return self._db.transaction(work)

    def renew(self, video_id: int, claimer: str, until: str) -> bool:
        """Hold the video longer; False if it is no longer this claimer's."""

        def work(connection: Connection) -> bool:
            return (
                connection.execute(
                    update(videos)
                    .where(
                        videos.c.id == video_id,
                        videos.c.claimed_by == claimer,
                        videos.c.status == PROCESSING,
                    )
                    .values(claimed_until=until)
                ).rowcount
                == 1
            )

        return self._db.transaction(work)

    def retry_later(self, video_id: int, claimer: str, at: str, *, counted: bool) -> None:
        """Let the video go until `at` (a storage outage: `counted` False, the attempt
        does not count towards giving up; a stop of the service: likewise)."""
        values: dict[str, Any] = {"claimed_by": None, "claimed_until": None, "next_attempt_at": at}
        if not counted:
            values["attempts"] = videos.c.attempts - 1
        self._db.transaction(
            lambda connection: connection.execute(
                update(videos)
                .where(
                    videos.c.id == video_id,
                    videos.c.claimed_by == claimer,
                    videos.c.status == PROCESSING,
                )
                .values(**values)
            )
        )

    def finish(
        self,
        video_id: int,
        claimer: str | None,
        values: Mapping[str, Any],
        event: tuple[str, Mapping[str, Any]],
    ) -> bool:
        """Ready or Failed (`values`: status and what comes with it), and the video's
        webhook event queued, in one transaction; only while it is Processing and held
        by `claimer` (None: by nobody in particular). False if it was not."""
        now = utcnow()

        def work(connection: Connection) -> bool:
            where = [videos.c.id == video_id, videos.c.status == PROCESSING]
            if claimer is not None:
                where.append(videos.c.claimed_by == claimer)
            done = connection.execute(
                update(videos)
                .where(*where)
                .values(**values, finished_at=now, claimed_by=None, claimed_until=None)
            ).rowcount
            if done != 1:
                return False
            row = connection.execute(
                select(videos.c.live_job_id).where(videos.c.id == video_id)
            ).scalar_one()
            queue_job_event(connection, int(row), event[0], event[1], now)
            return True

        return self._db.transaction(work)

    def release_claims(self, claimer: str) -> None:
        """Let go of every video `claimer` holds (its runner stops, or starts again after
        a crash): due again at once."""
        self._db.transaction(
            lambda connection: connection.execute(
                update(videos)
                .where(videos.c.claimed_by == claimer, videos.c.status == PROCESSING)
                .values(claimed_by=None, claimed_until=None)
            )
        )

    # -- the service's secrets -----------------------------------------------------

    def secret(self, name: str) -> str:
        """The service's secret `name`, made (256 bits of the OS CSPRNG) at first use;
        every host of the store reads the same one."""

        def work(connection: Connection) -> str:
            _insert_if_absent(
                connection,
                service_secrets,
                name=name,
                value=secrets.token_urlsafe(32),
                created_at=utcnow(),
            )
            return str(
                connection.execute(
                    select(service_secrets.c.value).where(service_secrets.c.name == name)
                ).scalar_one()
            )

        return self._db.transaction(work)
