"""Restreams: where a live is forwarded (an RTMP/RTMPS URL and its stream key), each
enabled or not.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision: str | None = "0006"
branch_labels = None
depends_on = None

Int64 = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "restreams",
        sa.Column("id", Int64, sa.Identity(), primary_key=True),
        sa.Column(
            "project_id",
            sa.Text,
            sa.ForeignKey("projects.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column(
            "live_job_id",
            Int64,
            sa.ForeignKey("live_jobs.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("stream_url", sa.Text, nullable=False),
        sa.Column("stream_key", sa.Text, nullable=False),
        sa.Column("status", Int64, nullable=False),
        sa.Column("created_at", sa.Text, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("restreams_job", "restreams", ["live_job_id", "id"])
    op.create_index("restreams_project", "restreams", ["project_id", "id"])


def downgrade() -> None:
    op.drop_index("restreams_project", table_name="restreams")
    op.drop_index("restreams_job", table_name="restreams")
    op.drop_table("restreams")
