"""The store's tables, declared once for both engines (SQLite and PostgreSQL).

The migrations in `api.migrations` build exactly this (a test compares them). Ids come
from the database (SQLite AUTOINCREMENT, PostgreSQL identity sequences), never from a
host, so rows written by several hosts sharing one PostgreSQL never collide. Times are
ISO 8601 text (`utcnow`), as the API writes them; flags are integers 0/1, as SQLite
stored them, so rows read the same from either engine.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
    text,
)

# SQLite's INTEGER is 64-bit (and only `INTEGER PRIMARY KEY` is the rowid); PostgreSQL's
# is 32-bit, so it gets BIGINT: the same range of values on both.
Int64 = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData()


def _id(name: str = "id") -> Column[int]:
    """A primary key the database numbers (AUTOINCREMENT on SQLite: never reused)."""
    return Column(name, Int64, Identity(), primary_key=True)


projects = Table(
    "projects",
    metadata,
    Column("id", Text, primary_key=True),
    Column("name", Text, nullable=False),
    Column("created_at", Text, nullable=False),
    # The webhook signing secret (`whsec_...`): kept as is, like stream keys, since it
    # must sign. After a rotation the previous one signs too, until its time is up.
    # Nullable only because SQLite cannot add a NOT NULL column: every row has one.
    Column("webhook_secret", Text),
    Column("previous_webhook_secret", Text),
    Column("previous_webhook_secret_until", Text),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("key_id", Text, primary_key=True),
    Column("project_id", Text, ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
    Column("secret_hash", LargeBinary, nullable=False),
    Column("created_at", Text, nullable=False),
)

live_jobs = Table(
    "live_jobs",
    metadata,
    _id(),
    Column("project_id", Text, ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
    Column("name", Text, nullable=False, unique=True),
    Column("stream_key", Text, nullable=False, unique=True),
    Column("key_digest", Text, nullable=False, unique=True),
    Column("destination", Text, nullable=False),
    Column("description", Text),
    Column("bucket", Text, nullable=False),
    Column("cdn_distribution", Int64, nullable=False),
    Column("job_template_id", Int64, nullable=False),
    Column("file_path", Text, nullable=False),
    Column("server_type", Int64, nullable=False),
    Column("input_class", Int64, nullable=False),
    Column("callback_url", Text),
    Column("srt_passphrase", Text),  # SRT jobs: what libsrt asks of the publisher
    Column("source_url", Text),  # HLS pull jobs: where the source is fetched from
    # The input's failover (`api.validation`'s defaults, for jobs from before them too).
    Column("input_loss_threshold_ms", Int64, nullable=False, server_default=text("1000")),
    Column("input_preference", Text, nullable=False, server_default=text("'primary'")),
    Column("failback_after_seconds", Float, nullable=False, server_default=text("30")),
    Column("backup_source_url", Text),  # Standard HLS pull jobs: the backup source
    # WebSocket viewers need a token from the API (`api.viewers`); else public.
    Column("viewer_token_required", Int64, nullable=False, server_default=text("0")),
    Column("status", Int64, nullable=False),
    Column("online", Int64, nullable=False),
    Column("insert_date", Text, nullable=False),
    Column("start_date_time", Text),
    Column("end_date_time", Text),
    Column("cut_start", Text),
    Column("cut_finish", Text),
    Column("statistics", Text),
    Column("prefix_claimed_at", Text),
    # The job's lease (`api.hosts`): the host running its pipeline (`encoderId`), the
    # pipeline's `lockKey`, the fencing token (one more at every take) and until when
    # it holds (renewed by the host's heartbeat; null once released: the last holder
    # stays named).
    Column("lease_encoder_id", Int64),
    Column("lease_key", Text),
    Column("lease_token", Int64, nullable=False, server_default=text("0")),
    Column("lease_expires_at", Text),
    Index("live_jobs_project", "project_id", "id"),
    Index("live_jobs_bucket", "bucket", "id"),
    sqlite_autoincrement=True,
)

outputs = Table(
    "outputs",
    metadata,
    _id("output_id"),
    Column("live_job_id", Int64, ForeignKey("live_jobs.id", ondelete="CASCADE"), nullable=False),
    Column("rendition", Text, nullable=False),
    Column("status", Int64, nullable=False),
    Column("progress", Int64, nullable=False, server_default=text("0")),
    Column("counter", Int64, nullable=False, server_default=text("0")),
    Column("lock_key", Text),
    Column("encoder_id", Int64),
    Column("skipped", Int64, nullable=False, server_default=text("0")),
    Column("skip_reason", Text),
    Index("outputs_job", "live_job_id", "output_id"),
    sqlite_autoincrement=True,
)

timings = Table(
    "timings",
    metadata,
    _id(),
    Column("live_job_id", Int64, ForeignKey("live_jobs.id", ondelete="CASCADE"), nullable=False),
    Column("output_id", Int64),
    Column("status", Text, nullable=False),
    Column("child_status", Text, nullable=False),
    Column("start_date_time", Text, nullable=False),
    Column("message_comment", Text, nullable=False),
    Index("timings_job", "live_job_id", "id"),
    sqlite_autoincrement=True,
)

# No ON DELETE: a bucket is never released, its media stays its owner's.
buckets = Table(
    "buckets",
    metadata,
    Column("name", Text, primary_key=True),
    Column("project_id", Text, ForeignKey("projects.id"), nullable=False),
    Column("created_at", Text, nullable=False),
    Column("created_by_onair", Int64, nullable=False, server_default=text("0")),
)

# Webhook events waiting for, or done with, delivery to their job's callbackUrl: written
# in the transaction of the status change (or timing) they tell, sent by
# `api.webhooks.sender`. `sequence` orders one job's events (only the oldest pending
# one is sent); a host sending one holds it until `claimed_until` (`claimed_by`).
webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    _id(),
    Column("webhook_id", Text, nullable=False, unique=True),
    Column("project_id", Text, ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
    Column("live_job_id", Int64, ForeignKey("live_jobs.id", ondelete="CASCADE"), nullable=False),
    Column("sequence", Int64, nullable=False),
    Column("type", Text, nullable=False),
    Column("url", Text, nullable=False),
    Column("body", Text, nullable=False),
    Column("state", Text, nullable=False),  # pending, delivered, failed (given up)
    Column("attempts", Int64, nullable=False, server_default=text("0")),
    Column("created_at", Text, nullable=False),
    Column("next_attempt_at", Text),  # null once delivered or given up
    Column("claimed_until", Text),
    Column("claimed_by", Text),
    Column("last_status_code", Int64),
    Column("last_error", Text),
    Column("delivered_at", Text),
    Column("finished_at", Text),  # delivered or given up: when it may be pruned from
    Index("webhook_deliveries_job_sequence", "live_job_id", "sequence", unique=True),
    Index("webhook_deliveries_due", "state", "next_attempt_at"),
    Index("webhook_deliveries_project", "project_id", "live_job_id", "id"),
    sqlite_autoincrement=True,
)

webhook_attempts = Table(
    "webhook_attempts",
    metadata,
    _id(),
    Column(
        "delivery_id",
        Int64,
        ForeignKey("webhook_deliveries.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("attempted_at", Text, nullable=False),
    Column("status_code", Int64),
    Column("error", Text),
    Column("duration_ms", Int64, nullable=False),
    Index("webhook_attempts_delivery", "delivery_id", "id"),
    sqlite_autoincrement=True,
)

# Videos cut from a live's recording (`api.videos`): one row per cut, Processing until
# its master playlist is written (Ready) or it failed for good (Failed, `error`). A host
# running a cut holds it until `claimed_until` (`claimed_by`, renewed while it runs);
# one whose holder stopped or died is taken again, at most a few times (`attempts`).
videos = Table(
    "videos",
    metadata,
    _id(),
    Column("public_id", Text, nullable=False, unique=True),
    Column("project_id", Text, ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
    Column("live_job_id", Int64, ForeignKey("live_jobs.id", ondelete="CASCADE"), nullable=False),
    Column("title", Text),
    Column("name", Text, nullable=False),
    Column("status", Text, nullable=False),  # Processing, Ready, Failed
    Column("visibility", Int64, nullable=False),  # 1 Public, 2 Private, 3 Password Protected
    Column("live_start", Text),  # the live it is cut from: when its job went online
    Column("after_live", Int64, nullable=False, server_default=text("0")),  # wait for its end
    Column("from_ms", Int64),  # null: from the live's start
    Column("to_ms", Int64),  # null: to the live's end (known once it ended)
    Column("duration_ms", Int64),
    Column("video_prefix", Text, nullable=False),
    Column("master_key", Text),
    Column("original_file_key", Text),
    Column("error", Text),
    Column("created_at", Text, nullable=False),
    Column("finished_at", Text),
    Column("attempts", Int64, nullable=False, server_default=text("0")),
    Column("next_attempt_at", Text),
    Column("claimed_by", Text),
    Column("claimed_until", Text),
    Index("videos_project", "project_id", "id"),
    Index("videos_due", "status", "next_attempt_at"),
    sqlite_autoincrement=True,
)

# Secrets of the service itself, shared by every host of one store: the key that signs
# private videos' playback tokens (`api.videos.tokens`), made at first use.
service_secrets = Table(
    "service_secrets",
    metadata,
    Column("name", Text, primary_key=True),
    Column("value", Text, nullable=False),
    Column("created_at", Text, nullable=False),
)

# Restreams of a live (`api.restreams`): where its media is forwarded (an RTMP/RTMPS
# application URL and its stream key), enabled or not (`status`, 0/1). The key is a
# secret kept as is (it must be sent), like a job's stream key: never logged.
restreams = Table(
    "restreams",
    metadata,
    _id(),
    Column("project_id", Text, ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
    Column("live_job_id", Int64, ForeignKey("live_jobs.id", ondelete="CASCADE"), nullable=False),
    Column("title", Text, nullable=False),
    Column("stream_url", Text, nullable=False),
    Column("stream_key", Text, nullable=False),
    Column("status", Int64, nullable=False),  # 1 enabled (forwarded while live), 0 not
    Column("created_at", Text, nullable=False),
    # What its forwarding does now (JSON, with "at": when), written every few seconds
    # by the host running the live: what the other hosts answer (`api.restreams`).
    Column("live_state", Text),
    Index("restreams_job", "live_job_id", "id"),
    Index("restreams_project", "project_id", "id"),
    sqlite_autoincrement=True,
)

# The encoding hosts sharing the store (`api.hosts`): each registers at start and gets
# its `encoder_id` here, beats every few seconds (`heartbeat_at`, with the units of
# lives it runs) and is dead once it has not for a while. `name` is unique among them.
hosts = Table(
    "hosts",
    metadata,
    Column("encoder_id", Int64, primary_key=True, autoincrement=False),
    Column("name", Text, nullable=False, unique=True),
    Column("address", Text, nullable=False),  # where the other hosts reach its API
    Column("capacity_units", Float, nullable=False),
    Column("used_units", Float, nullable=False, server_default=text("0")),
    Column("version", Text, nullable=False),
    Column("state", Text, nullable=False),  # up, draining, stopped
    Column("started_at", Text, nullable=False),
    Column("heartbeat_at", Text, nullable=False),
    # Where the other hosts relay a Standard job's second input to it (RTMP), whether
    # that listener expects a PROXY protocol header, and the key of a relay's token.
    Column("relay_url", Text),
    Column("relay_proxy", Int64, nullable=False, server_default=text("0")),
    Column("relay_secret", Text),
)
