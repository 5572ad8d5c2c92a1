"""Projects, API keys, live jobs, their outputs and timings (SQLite user_version 1).

Revision ID: 0001
Revises: (none)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels = None
depends_on = None

# SQLite INTEGER is 64-bit, PostgreSQL's INTEGER 32: BIGINT there.
Int64 = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _id(name: str = "id") -> sa.Column[int]:
    return sa.Column(name, Int64, sa.Identity(), primary_key=True)


def _project_id() -> sa.Column[str]:
    return sa.Column(
        "project_id", sa.Text, sa.ForeignKey("projects.id", ondelete="CASCADE"), nullable=False
    )


def _live_job_id() -> sa.Column[int]:
    return sa.Column(
        "live_job_id", Int64, sa.ForeignKey("live_jobs.id", ondelete="CASCADE"), nullable=False
    )


def upgrade() -> None:
    op.create_table(
        "projects",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("created_at", sa.Text, nullable=False),
    )
    op.create_table(
        "api_keys",
        sa.Column("key_id", sa.Text, primary_key=True),
        _project_id(),
        sa.Column("secret_hash", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.Text, nullable=False),
    )
    op.create_table(
        "live_jobs",
        _id(),
        _project_id(),
        sa.Column("name", sa.Text, nullable=False, unique=True),
        sa.Column("stream_key", sa.Text, nullable=False, unique=True),
        sa.Column("key_digest", sa.Text, nullable=False, unique=True),
        sa.Column("destination", sa.Text, nullable=False),
        sa.Column("description", sa.Text),
        sa.Column("bucket", sa.Text, nullable=False),
        sa.Column("cdn_distribution", Int64, nullable=False),
        sa.Column("job_template_id", Int64, nullable=False),
        sa.Column("file_path", sa.Text, nullable=False),
        sa.Column("server_type", Int64, nullable=False),
        sa.Column("input_class", Int64, nullable=False),
        sa.Column("callback_url", sa.Text),
        sa.Column("status", Int64, nullable=False),
        sa.Column("online", Int64, nullable=False),
        sa.Column("insert_date", sa.Text, nullable=False),
        sa.Column("start_date_time", sa.Text),
        sa.Column("end_date_time", sa.Text),
        sa.Column("cut_start", sa.Text),
        sa.Column("cut_finish", sa.Text),
        sa.Column("statistics", sa.Text),
        sqlite_autoincrement=True,
    )
    op.create_index("live_jobs_project", "live_jobs", ["project_id", "id"])
    op.create_table(
        "outputs",
        _id("output_id"),
        _live_job_id(),
        sa.Column("rendition", sa.Text, nullable=False),
        sa.Column("status", Int64, nullable=False),
        sa.Column("progress", Int64, nullable=False, server_default=sa.text("0")),
        sa.Column("counter", Int64, nullable=False, server_default=sa.text("0")),
        sa.Column("lock_key", sa.Text),
        sa.Column("encoder_id", Int64),
        sqlite_autoincrement=True,
    )
    op.create_index("outputs_job", "outputs", ["live_job_id", "output_id"])
    op.create_table(
        "timings",
        _id(),
        _live_job_id(),
        sa.Column("output_id", Int64),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("child_status", sa.Text, nullable=False),
        sa.Column("start_date_time", sa.Text, nullable=False),
        sa.Column("message_comment", sa.Text, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("timings_job", "timings", ["live_job_id", "id"])


def downgrade() -> None:
    for table in ("timings", "outputs", "live_jobs", "api_keys", "projects"):
        op.drop_table(table)
