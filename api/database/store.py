"""`Database`: projects, keys, buckets, live jobs, outputs and timings, and the webhook
queue, on either engine."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import (
    Connection,
    Engine,
    Executable,
    Select,
    Table,
    and_,
    delete,
    exists,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from packager.layout import object_prefix

from ..errors import BucketOwned, PrefixTaken
from ..webhooks.events import (
    TIMING_EVENTS,
    event_body,
    new_webhook_id,
    status_event,
    timing_event,
)
from ..webhooks.signing import new_webhook_secret
from .engines import (
    WRITE,
    current_revision,
    migrate,
    postgres_engine,
    secure_db_files,
    shown,
    sqlite_engine,
)
from .schema import (
    api_keys,
    buckets,
    hosts,
    live_jobs,
    outputs,
    projects,
    timings,
    webhook_attempts,
    webhook_deliveries,
)

if TYPE_CHECKING:
    from ..settings import Settings

T = TypeVar("T")

logger = logging.getLogger(__name__)

# PostgreSQL's "try again" (serialization_failure, deadlock_detected): the transaction
# is rerun from the start, a few times.
RETRIED_SQLSTATES = frozenset({"40001", "40P01"})
TRANSACTION_ATTEMPTS = 5
SEARCHED_FIELDS = ("name", "description", "destination", "file_path", "bucket")


def prefixes_overlap(first: str, second: str) -> bool:
    """Whether two key prefixes are the same place or one encloses the other, segment by
    segment: `a/b` encloses `a/b/c` but not `a/bc`."""
    a, b = first.split("/"), second.split("/")
    common = min(len(a), len(b))
    return a[:common] == b[:common]


def utcnow() -> str:
    """Now, as the API writes date-times: ISO 8601, UTC, milliseconds, `Z`."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def utc_at(unix_seconds: float) -> str:
    """A Unix time as the API writes date-times (`utcnow`'s format: they sort as text)."""
    moment = datetime.fromtimestamp(unix_seconds, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def unix_of(date_time: str) -> float:
    """The Unix time of a date-time the store wrote (`utcnow`, `utc_at`)."""
    return datetime.fromisoformat(date_time.replace("Z", "+00:00")).timestamp()


# A webhook delivery's state: waiting (or being sent), done, or given up.
PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"


@dataclass(frozen=True)
class Page:
    rows: list[dict[str, Any]]
    total_count: int


def _timing(
    job_id: int,
    output_id: int | None,
    status_name: str,
    child_status: str,
    message: str,
    at: str | None = None,
) -> Executable:
    return insert(timings).values(
        live_job_id=job_id,
        output_id=output_id,
        status=status_name,
        child_status=child_status,
        start_date_time=at or utcnow(),
        message_comment=message,
    )


# A timing's own webhook event, built in its transaction from the job's locked row:
# (type, data), or None (no callbackUrl).
WebhookEvent = Callable[[Mapping[str, Any]], tuple[str, dict[str, Any]] | None]


class Database:
    """The store: SQLite in the data dir, or PostgreSQL (`ONAIR_DATABASE_URL`).

    `target` is a PostgreSQL URL (`postgresql://user:password@host/database`) or the
    path of the SQLite file (`Settings.db_path`; its dir is made 0700, the files 0600).
    The schema is migrated at open. Methods are blocking and thread-safe; the API runs
    them on the store's one worker thread (`call`), so they run in the order they were
    asked for, and the event loop never waits on the database.
    """

    def __init__(self, target: str | Path) -> None:
        self.path: Path | None = None
        if isinstance(target, str) and "://" in target:
            self._engine = postgres_engine(target)
            where = f"PostgreSQL at {shown(target)}"
        else:
            self.path = Path(target)
            self._engine = sqlite_engine(self.path)
            where = f"SQLite at {self.path}"
        self.dialect = self._engine.dialect.name
        self._executor: ThreadPoolExecutor | None = None
        try:
            revision = migrate(self._engine)
        except BaseException:
            self._engine.dispose()
            raise
        if self.path is not None:
            secure_db_files(self.path)  # -wal and -shm exist now (left over ones included)
        logger.info("store: %s, schema revision %s", where, revision)

    @classmethod
    def for_settings(cls, settings: Settings) -> Database:
        """The PostgreSQL database of ONAIR_DATABASE_URL, else the SQLite file in
        ONAIR_DATA_DIR."""
        return cls(settings.database_url or settings.db_path)

    # -- plumbing ---------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (for tools and checks; the methods below are the API)."""
        return self._engine

    @property
    def schema_revision(self) -> str | None:
        """The Alembic revision the store is at (`engines.head_revision()` once open)."""
        return current_revision(self._engine)

    def _query(self, statement: Executable) -> list[dict[str, Any]]:
        with self._engine.connect() as connection:
            return [dict(row._mapping) for row in connection.execute(statement)]

    def _transaction(self, work: Callable[[Connection], T]) -> T:
        """Run `work` in one write transaction; on PostgreSQL rerun it if the server
        asks to (a deadlock or serialization failure), never half-done."""
        for attempt in range(1, TRANSACTION_ATTEMPTS + 1):
            try:
                with self._engine.connect() as connection:
                    connection.execution_options(**WRITE)
                    with connection.begin():
                        return work(connection)
            except DBAPIError as error:
                sqlstate = getattr(error.orig, "sqlstate", None)
                if sqlstate not in RETRIED_SQLSTATES or attempt == TRANSACTION_ATTEMPTS:
                    raise
                logger.info("store transaction retried (SQLSTATE %s)", sqlstate)
                time.sleep(0.01 * attempt)
        raise AssertionError("unreachable")

    def transaction(self, work: Callable[[Connection], T]) -> T:
        """`work` in one write transaction, as this store runs its own: for the parts
        that keep their tables beside it (`api.videos.store`)."""
        return self._transaction(work)

    def _write(self, statements: Sequence[Executable]) -> None:
        """Run statements in one transaction."""

        def work(connection: Connection) -> None:
            for statement in statements:
                connection.execute(statement)

        self._transaction(work)

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a database method on the database's own thread."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="database")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        self._engine.dispose()

    def ping(self) -> bool:
        try:
            self._query(select(text("1")))
        except SQLAlchemyError:
            return False
        return True

    # -- projects and keys ------------------------------------------------------

    def create_project(
        self,
        project_id: str,
        name: str,
        key_id: str,
        secret_hash: bytes,
        webhook_secret: str | None = None,
    ) -> None:
        """A project and its first API key; its webhook secret (a new one unless given)."""
        now = utcnow()
        secret = webhook_secret or new_webhook_secret()
        self._write(
            [
                insert(projects).values(
                    id=project_id, name=name, created_at=now, webhook_secret=secret
                ),
                insert(api_keys).values(
                    key_id=key_id, project_id=project_id, secret_hash=secret_hash, created_at=now
                ),
            ]
        )

    def get_project(self, project_id: str) -> dict[str, Any] | None:
        rows = self._query(select(projects).where(projects.c.id == project_id))
        return rows[0] if rows else None

    def get_api_key(self, key_id: str) -> dict[str, Any] | None:
        rows = self._query(select(api_keys).where(api_keys.c.key_id == key_id))
        return rows[0] if rows else None

    # -- live jobs ---------------------------------------------------------------

    def insert_job(self, job: dict[str, Any], renditions: Sequence[str]) -> int:
        """Insert a live job and its outputs, claiming its bucket, in one transaction.

        Raises BucketOwned if the bucket belongs to another project, PrefixTaken if the
        job's prefix (`destination/filePath`) equals, lies inside or encloses another
        job's in the bucket. Creates in one bucket are serialized, by any number of
        threads, processes or hosts: SQLite's write lock is taken at BEGIN IMMEDIATE;
        on PostgreSQL the bucket's row is inserted if absent and locked FOR UPDATE before
        the checks, so each create sees the jobs of those before it.
        """
        prefix = object_prefix(job["destination"], job["file_path"])

        def work(connection: Connection) -> int:
            _claim_bucket(connection, job["bucket"], job["project_id"], job["insert_date"])
            _check_prefix_free(connection, job["bucket"], prefix)
            job_id = int(
                connection.execute(
                    insert(live_jobs).values(job).returning(live_jobs.c.id)
                ).scalar_one()
            )
            for rendition in renditions:  # one by one: output ids in ladder order
                connection.execute(
                    insert(outputs).values(
                        live_job_id=job_id, rendition=rendition, status=job["status"]
                    )
                )
            return job_id

        return self._transaction(work)

    def replace_stream_key(
        self, job_id: int, stream_key: str, key_digest: str, status_name: str, message: str
    ) -> None:
        """Give a job a new stream key (the old one stops matching at once), with its
        timing row, in one transaction."""
        self._write(
            [
                update(live_jobs)
                .where(live_jobs.c.id == job_id)
                .values(stream_key=stream_key, key_digest=key_digest),
                _timing(job_id, None, status_name, "StreamKeyRotated", message),
            ]
        )

    # -- buckets -----------------------------------------------------------------

    def bucket(self, name: str) -> dict[str, Any] | None:
        """Who owns a bucket: {name, project_id, created_at, created_by_onair}; None if
        no job was ever created on it."""
        rows = self._query(select(buckets).where(buckets.c.name == name))
        if not rows:
            return None
        row = rows[0]
        row["created_by_onair"] = bool(row["created_by_onair"])
        return row

    def mark_bucket_created(self, name: str) -> bool:
        """Record that onair created this bucket (a job's pipeline calls it after
        CreateBucket succeeded). False if the bucket is not claimed by any project."""

        def work(connection: Connection) -> bool:
            result = connection.execute(
                update(buckets).where(buckets.c.name == name).values(created_by_onair=1)
            )
            return result.rowcount > 0

        return self._transaction(work)

    def claim_prefix(self, job_id: int) -> None:
        """The job's pipeline is about to write at its prefix: from now on what is
        there is the job's own (continued by its next pipelines)."""
        self._write(
            [
                update(live_jobs)
                .where(live_jobs.c.id == job_id, live_jobs.c.prefix_claimed_at.is_(None))
                .values(prefix_claimed_at=utcnow())
            ]
        )

    def get_job(self, project_id: str, job_id: int) -> dict[str, Any] | None:
        rows = self._query(
            _jobs().where(live_jobs.c.project_id == project_id, live_jobs.c.id == job_id)
        )
        return rows[0] if rows else None

    def get_job_by_name(self, project_id: str, name: str) -> dict[str, Any] | None:
        rows = self._query(
            _jobs().where(live_jobs.c.project_id == project_id, live_jobs.c.name == name)
        )
        return rows[0] if rows else None

    def get_job_by_public_name(self, name: str) -> dict[str, Any] | None:
        rows = self._query(_jobs().where(live_jobs.c.name == name))
        return rows[0] if rows else None

    def get_job_by_digest(self, key_digest: str) -> dict[str, Any] | None:
        rows = self._query(_jobs().where(live_jobs.c.key_digest == key_digest))
        return rows[0] if rows else None

    def get_job_by_id(self, job_id: int) -> dict[str, Any] | None:
        rows = self._query(_jobs().where(live_jobs.c.id == job_id))
        return rows[0] if rows else None

    def list_jobs(self, project_id: str, search: str | None, offset: int, limit: int) -> Page:
        """A page of the project's jobs, newest first; `search` matches a substring of
        the name, description, destination, file path or bucket (case-insensitive)."""
        where = [live_jobs.c.project_id == project_id]
        if search:
            where.append(
                or_(*(live_jobs.c[f].icontains(search, autoescape=True) for f in SEARCHED_FIELDS))
            )
        with self._engine.connect() as connection:
            total = connection.execute(
                select(func.count()).select_from(live_jobs).where(*where)
            ).scalar_one()
            rows = connection.execute(
                _jobs().where(*where).order_by(live_jobs.c.id.desc()).limit(limit).offset(offset)
            )
            return Page([dict(row._mapping) for row in rows], int(total))

    def online_jobs(self) -> list[dict[str, Any]]:
        return self._query(_jobs().where(live_jobs.c.online == 1).order_by(live_jobs.c.id))

    def update_job(self, job_id: int, **values: Any) -> None:
        if "statistics" in values and not isinstance(values["statistics"], str | None):
            values["statistics"] = json.dumps(values["statistics"])
        self._write([update(live_jobs).where(live_jobs.c.id == job_id).values(**values)])

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
        """Change a job's status and append its timing row, in one transaction; when the
        status changes on a job with a callbackUrl, its webhook event is queued in it."""
        now = utcnow()

        def work(connection: Connection) -> None:
            job = _locked_job(connection, job_id)
            connection.execute(
                update(live_jobs)
                .where(live_jobs.c.id == job_id)
                .values(status=status, **job_values)
            )
            connection.execute(_timing(job_id, output_id, status_name, child_status, message, now))
            event = None if job is None else status_event(job, status, child_status, message)
            if job is not None and event is not None:
                _queue_webhook(connection, job, *event, now)

        self._transaction(work)

    def add_timing(
        self,
        job_id: int,
        status_name: str,
        child_status: str,
        message: str,
        output_id: int | None = None,
        event: WebhookEvent | None = None,
    ) -> None:
        """A timing row; one that is an event of its own (a failed rendition, or what
        `event(job)` builds: a health change) queues the job's webhook event in the same
        transaction."""
        if child_status not in TIMING_EVENTS and event is None:
            self._write([_timing(job_id, output_id, status_name, child_status, message)])
            return
        now = utcnow()

        def work(connection: Connection) -> None:
            job = _locked_job(connection, job_id)
            connection.execute(_timing(job_id, output_id, status_name, child_status, message, now))
            output = None
            if output_id is not None:
                found = connection.execute(
                    select(outputs).where(outputs.c.output_id == output_id)
                ).first()
                output = None if found is None else dict(found._mapping)
            if job is None:
                return
            built = (
                event(job)
                if event is not None
                else timing_event(job, child_status, message, output)
            )
            if built is not None:
                _queue_webhook(connection, job, *built, now)

        self._transaction(work)

    def list_timings(self, job_id: int, output_id: int | None, offset: int, limit: int) -> Page:
        where = [timings.c.live_job_id == job_id]
        if output_id is not None:
            where.append(timings.c.output_id == output_id)
        with self._engine.connect() as connection:
            total = connection.execute(
                select(func.count()).select_from(timings).where(*where)
            ).scalar_one()
            rows = connection.execute(
                select(timings).where(*where).order_by(timings.c.id).limit(limit).offset(offset)
            )
            return Page([dict(row._mapping) for row in rows], int(total))

    # -- outputs -----------------------------------------------------------------

    def list_outputs(self, project_id: str, job_id: int | None, offset: int, limit: int) -> Page:
        joined = outputs.join(live_jobs, live_jobs.c.id == outputs.c.live_job_id)
        where = [live_jobs.c.project_id == project_id]
        if job_id is not None:
            where.append(outputs.c.live_job_id == job_id)
        with self._engine.connect() as connection:
            total = connection.execute(
                select(func.count()).select_from(joined).where(*where)
            ).scalar_one()
            rows = connection.execute(
                select(outputs)
                .select_from(joined)
                .where(*where)
                .order_by(outputs.c.live_job_id, outputs.c.output_id)
                .limit(limit)
                .offset(offset)
            )
            return Page([dict(row._mapping) for row in rows], int(total))

    def job_outputs(self, job_id: int) -> list[dict[str, Any]]:
        return self._query(
            select(outputs).where(outputs.c.live_job_id == job_id).order_by(outputs.c.output_id)
        )

    def mark_skipped(self, job_id: int, skipped: Mapping[str, str]) -> set[str]:
        """Mark these renditions skipped (name -> reason), the job's others not, in one
        transaction; returns the names the job has no output for."""
        of_job = outputs.c.live_job_id == job_id

        def work(connection: Connection) -> set[str]:
            names = set(connection.execute(select(outputs.c.rendition).where(of_job)).scalars())
            connection.execute(update(outputs).where(of_job).values(skipped=0, skip_reason=None))
            for name, reason in skipped.items():
                if name in names:
                    connection.execute(
                        update(outputs)
                        .where(of_job, outputs.c.rendition == name)
                        .values(skipped=1, skip_reason=reason)
                    )
            return set(skipped) - names

        return self._transaction(work)

    def update_outputs(self, job_id: int, updates: Sequence[dict[str, Any]]) -> None:
        """Each update: {"output_id": ..., column: value, ...}."""
        statements = [
            update(outputs)
            .where(outputs.c.output_id == u["output_id"], outputs.c.live_job_id == job_id)
            .values({k: v for k, v in u.items() if k != "output_id"})
            for u in updates
        ]
        if statements:
            self._write(statements)

    # -- webhooks ------------------------------------------------------------------
    # The queue `api.webhooks.sender` works: rows are queued by `set_status` and
    # `add_timing` (in their transaction), claimed under a lease, finished per attempt.
    # Times are parameters (`utc_at` of the sender's clock), never read here.

    def webhook_secrets(self, project_id: str, now: str) -> list[str]:
        """What the project's deliveries are signed with at `now`: its secret, then the
        previous one while its grace period lasts; [] for no project."""
        rows = self._query(select(projects).where(projects.c.id == project_id))
        return _secrets_of(rows[0], now) if rows else []

    def rotate_webhook_secret(self, project_id: str, secret: str, previous_until: str) -> bool:
        """`secret` signs from now on; the one it replaces signs too until
        `previous_until`. False if there is no such project."""

        def work(connection: Connection) -> bool:
            current = connection.execute(
                select(projects.c.webhook_secret)
                .where(projects.c.id == project_id)
                .with_for_update()
            ).first()
            if current is None:
                return False
            connection.execute(
                update(projects)
                .where(projects.c.id == project_id)
                .values(
                    webhook_secret=secret,
                    previous_webhook_secret=current.webhook_secret,
                    previous_webhook_secret_until=previous_until,
                )
            )
            return True

        return self._transaction(work)

    def claim_webhook_deliveries(
        self, now: str, until: str, claimer: str, limit: int
    ) -> list[dict[str, Any]]:
        """Up to `limit` deliveries due at `now`, each held for `claimer` until `until`,
        with the secrets to sign them (`secrets`).

        Only a job's oldest pending delivery is due (one job's events go in order); one
        held by another host until after `now` is not. Each is taken by a conditional
        UPDATE that rechecks the hold: two hosts on one PostgreSQL never hold the same
        delivery at once (the second's UPDATE waits for the first's, then finds it held).
        """
        d = webhook_deliveries
        earlier = webhook_deliveries.alias("earlier")
        is_oldest = ~exists().where(
            earlier.c.live_job_id == d.c.live_job_id,
            earlier.c.state == PENDING,
            earlier.c.sequence < d.c.sequence,
        )
        free = or_(d.c.claimed_until.is_(None), d.c.claimed_until <= now)

        def work(connection: Connection) -> list[dict[str, Any]]:
            candidates = connection.execute(
                select(d.c.id)
                .where(d.c.state == PENDING, d.c.next_attempt_at <= now, free, is_oldest)
                .order_by(d.c.next_attempt_at, d.c.id)
                .limit(limit)
            ).scalars()
            claimed = [
                delivery_id
                for delivery_id in list(candidates)
                if connection.execute(
                    update(d)
                    .where(d.c.id == delivery_id, d.c.state == PENDING, free)
                    .values(claimed_until=until, claimed_by=claimer)
                ).rowcount
                == 1
            ]
            if not claimed:
                return []
            rows = connection.execute(
                select(d, *_SECRET_COLUMNS)
                .join(projects, projects.c.id == d.c.project_id)
                .where(d.c.id.in_(claimed))
                .order_by(d.c.id)
            ).mappings()
            return [{**row, "secrets": _secrets_of(dict(row), now)} for row in rows]

        return self._transaction(work)

    def finish_webhook_attempt(
        self,
        delivery_id: int,
        claimer: str,
        attempt: Mapping[str, Any],
        *,
        delivered: bool,
        next_attempt_at: str | None,
    ) -> None:
        """Record an attempt (`attempted_at`, `status_code`, `error`, `duration_ms`) and
        what follows, in one transaction: delivered, tried again at `next_attempt_at`,
        or (neither) given up. The hold is released. A host whose hold had run out
        records its attempt but does not reschedule what another host holds now."""
        d = webhook_deliveries
        at = attempt["attempted_at"]
        outcome: dict[str, Any] = {
            "attempts": d.c.attempts + 1,
            "last_status_code": attempt["status_code"],
            "last_error": attempt["error"],
        }
        if delivered:
            finish = {"state": DELIVERED, "delivered_at": at, "finished_at": at}
        elif next_attempt_at is None:
            finish = {"state": FAILED, "finished_at": at}
        else:
            finish = {}
        mine = d.c.claimed_by == claimer

        def work(connection: Connection) -> None:
            connection.execute(insert(webhook_attempts).values(delivery_id=delivery_id, **attempt))
            held = connection.execute(
                update(d)
                .where(d.c.id == delivery_id, d.c.state == PENDING, mine)
                .values(
                    **outcome,
                    **finish,
                    next_attempt_at=None if finish else next_attempt_at,
                    claimed_until=None,
                    claimed_by=None,
                )
            ).rowcount
            if not held:
                extra = {**finish, "next_attempt_at": None} if delivered else {}
                connection.execute(
                    update(d)
                    .where(d.c.id == delivery_id, d.c.state == PENDING)
                    .values(**outcome, **extra)
                )

        self._transaction(work)

    def release_webhook_claims(self, claimer: str) -> None:
        """Let go of every delivery `claimer` holds (its sender stops): due again at once."""
        d = webhook_deliveries
        self._write(
            [
                update(d)
                .where(d.c.claimed_by == claimer, d.c.state == PENDING)
                .values(claimed_until=None, claimed_by=None)
            ]
        )

    def prune_webhook_deliveries(self, finished_before: str) -> int:
        """Delete deliveries delivered or given up before `finished_before` (and their
        attempts); pending ones are kept whatever their age. Returns how many went."""
        d = webhook_deliveries

        def work(connection: Connection) -> int:
            # Attempts first: no reliance on ON DELETE CASCADE being enforced.
            done = select(d.c.id).where(d.c.state != PENDING, d.c.finished_at < finished_before)
            connection.execute(
                delete(webhook_attempts).where(webhook_attempts.c.delivery_id.in_(done))
            )
            return int(
                connection.execute(
                    delete(d).where(d.c.state != PENDING, d.c.finished_at < finished_before)
                ).rowcount
            )

        return self._transaction(work)

    def pending_webhook_count(self) -> int:
        """Deliveries not delivered and not given up, every project's."""
        d = webhook_deliveries
        rows = self._query(
            select(func.count().label("n")).select_from(d).where(d.c.state == PENDING)
        )
        return int(rows[0]["n"])

    def list_webhook_deliveries(
        self, project_id: str, job_id: int | None, offset: int, limit: int, attempt_log: int = 5
    ) -> Page:
        """A page of the project's deliveries (or one job's), newest first, each with its
        last `attempt_log` attempts (`attempt_log`, oldest first)."""
        d, a = webhook_deliveries, webhook_attempts
        where = [d.c.project_id == project_id]
        if job_id is not None:
            where.append(d.c.live_job_id == job_id)
        with self._engine.connect() as connection:
            total = connection.execute(
                select(func.count()).select_from(d).where(*where)
            ).scalar_one()
            rows = [
                dict(row)
                for row in connection.execute(
                    select(d).where(*where).order_by(d.c.id.desc()).limit(limit).offset(offset)
                ).mappings()
            ]
            ids = [row["id"] for row in rows]
            latest = (
                select(
                    a,
                    func.row_number()
                    .over(partition_by=a.c.delivery_id, order_by=a.c.id.desc())
                    .label("rank"),
                )
                .where(a.c.delivery_id.in_(ids))
                .subquery()
            )
            log: dict[int, list[dict[str, Any]]] = {delivery_id: [] for delivery_id in ids}
            if ids:
                for attempt in connection.execute(
                    select(latest)
                    .where(latest.c.rank <= attempt_log)
                    .order_by(latest.c.delivery_id, latest.c.id)
                ).mappings():
                    log[attempt["delivery_id"]].append(dict(attempt))
        for row in rows:
            row["attempt_log"] = log[row["id"]]
        return Page(rows, int(total))


_SECRET_COLUMNS = (
    projects.c.webhook_secret,
    projects.c.previous_webhook_secret,
    projects.c.previous_webhook_secret_until,
)


def _jobs() -> Select[Any]:
    """Every job row as the store reads it: with `lease_host`, the name of the host
    that holds its lease (null once released)."""
    holder = and_(
        hosts.c.encoder_id == live_jobs.c.lease_encoder_id,
        live_jobs.c.lease_expires_at.is_not(None),
    )
    return select(live_jobs, hosts.c.name.label("lease_host")).select_from(
        live_jobs.outerjoin(hosts, holder)
    )


def _secrets_of(project: Mapping[str, Any], now: str) -> list[str]:
    found = [project["webhook_secret"]] if project["webhook_secret"] else []
    until = project["previous_webhook_secret_until"]
    if project["previous_webhook_secret"] and until and until > now:
        found.append(project["previous_webhook_secret"])
    return found


def _locked_job(connection: Connection, job_id: int) -> dict[str, Any] | None:
    """In a write transaction: what a webhook event of the job needs, its row locked
    until the transaction ends (FOR UPDATE: SQLite's write lock is held already), so one
    job's events are queued in the order of its changes, whichever host makes them."""
    row = (
        connection.execute(
            select(
                live_jobs.c.id,
                live_jobs.c.project_id,
                live_jobs.c.name,
                live_jobs.c.status,
                live_jobs.c.callback_url,
            )
            .where(live_jobs.c.id == job_id)
            .with_for_update()
        )
        .mappings()
        .first()
    )
    return dict(row) if row is not None else None


def _queue_webhook(
    connection: Connection, job: Mapping[str, Any], kind: str, data: Mapping[str, Any], now: str
) -> None:
    """In the transaction holding the job's row: its next event, due at once."""
    d = webhook_deliveries
    last = connection.execute(
        select(func.coalesce(func.max(d.c.sequence), 0)).where(d.c.live_job_id == job["id"])
    ).scalar_one()
    connection.execute(
        insert(d).values(
            webhook_id=new_webhook_id(),
            project_id=job["project_id"],
            live_job_id=job["id"],
            sequence=int(last) + 1,
            type=kind,
            url=job["callback_url"],
            body=event_body(kind, now, data),
            state=PENDING,
            attempts=0,
            created_at=now,
            next_attempt_at=now,
        )
    )


def queue_job_event(
    connection: Connection, job_id: int, kind: str, data: Mapping[str, Any], now: str
) -> bool:
    """In a write transaction: the job's next webhook event (`kind`, `data`), queued in
    order with its others, if the job has a callbackUrl; whether it was queued."""
    job = _locked_job(connection, job_id)
    if job is None or not job["callback_url"]:
        return False
    _queue_webhook(connection, job, kind, data, now)
    return True


def _insert_if_absent(connection: Connection, table: Table, **values: Any) -> None:
    """INSERT ... ON CONFLICT DO NOTHING, in the connection's dialect."""
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    connection.execute(dialect.insert(table).values(**values).on_conflict_do_nothing())


def _claim_bucket(connection: Connection, name: str, project_id: str, now: str) -> None:
    """In a write transaction: the bucket is this project's, or becomes it. Its row is
    locked until the transaction ends (FOR UPDATE: nothing on SQLite, whose write lock
    the transaction already holds)."""
    _insert_if_absent(connection, buckets, name=name, project_id=project_id, created_at=now)
    owner = connection.execute(
        select(buckets.c.project_id).where(buckets.c.name == name).with_for_update()
    ).scalar_one()
    if owner != project_id:
        raise BucketOwned()


def _check_prefix_free(connection: Connection, bucket: str, prefix: str) -> None:
    """In a write transaction holding the bucket's lock: no job of any project in
    `bucket` overlaps `prefix`."""
    rows = connection.execute(
        select(live_jobs.c.destination, live_jobs.c.file_path).where(live_jobs.c.bucket == bucket)
    )
    for destination, file_path in rows:
        if prefixes_overlap(prefix, object_prefix(destination, file_path)):
            raise PrefixTaken()
