"""Videos cut from a live's recording (stop-and-cut, cut-and-publish), and the service's
own secrets (the key signing private videos' playback tokens).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision: str | None = "0005"
branch_labels = None
depends_on = None

Int64 = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "videos",
        sa.Column("id", Int64, sa.Identity(), primary_key=True),
        sa.Column("public_id", sa.Text, nullable=False, unique=True),
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
        sa.Column("title", sa.Text),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("visibility", Int64, nullable=False),
        sa.Column("live_start", sa.Text),
        sa.Column("after_live", Int64, nullable=False, server_default=sa.text("0")),
        sa.Column("from_ms", Int64),
        sa.Column("to_ms", Int64),
        sa.Column("duration_ms", Int64),
        sa.Column("video_prefix", sa.Text, nullable=False),
        sa.Column("master_key", sa.Text),
        sa.Column("original_file_key", sa.Text),
        sa.Column("error", sa.Text),
        sa.Column("created_at", sa.Text, nullable=False),
        sa.Column("finished_at", sa.Text),
        sa.Column("attempts", Int64, nullable=False, server_default=sa.text("0")),
        sa.Column("next_attempt_at", sa.Text),
        sa.Column("claimed_by", sa.Text),
        sa.Column("claimed_until", sa.Text),
        sqlite_autoincrement=True,
    )
    op.create_index("videos_project", "videos", ["project_id", "id"])
    op.create_index("videos_due", "videos", ["status", "next_attempt_at"])
    op.create_table(
        "service_secrets",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("created_at", sa.Text, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("service_secrets")
    op.drop_index("videos_due", table_name="videos")
    op.drop_index("videos_project", table_name="videos")
    op.drop_table("videos")
