"""Buckets belong to the project whose job first used them.

Existing buckets go to the project of their earliest job. `created_by_onair` is set
when a job's pipeline creates the bucket; claims migrated here are trusted as onair's
(earlier versions created the buckets their jobs used, or used them as found). No ON
DELETE: a bucket is never released, its media stays its owner's.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels = None
depends_on = None

Int64 = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "buckets",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("project_id", sa.Text, sa.ForeignKey("projects.id"), nullable=False),
        sa.Column("created_at", sa.Text, nullable=False),
        sa.Column("created_by_onair", Int64, nullable=False, server_default=sa.text("0")),
    )
    op.execute(
        "INSERT INTO buckets(name, project_id, created_at, created_by_onair)"
        " SELECT j.bucket, j.project_id, j.insert_date, 1 FROM live_jobs AS j"
        " WHERE j.id = (SELECT MIN(e.id) FROM live_jobs AS e WHERE e.bucket = j.bucket)"
    )
    op.create_index("live_jobs_bucket", "live_jobs", ["bucket", "id"])


def downgrade() -> None:
    op.drop_index("live_jobs_bucket", "live_jobs")
    op.drop_table("buckets")
