"""Standard inputs: when a job's input is lost, which one it prefers, when it fails
back, and the backup source an HLS pull job fetches.

Existing jobs get the defaults (1000 ms, primary, 30 s) from the columns' server
defaults, which stay: a row written without them reads the same.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision: str | None = "0008"
branch_labels = None
depends_on = None

Int64 = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.add_column(
        "live_jobs",
        sa.Column("input_loss_threshold_ms", Int64, nullable=False, server_default=sa.text("1000")),
    )
    op.add_column(
        "live_jobs",
        sa.Column("input_preference", sa.Text, nullable=False, server_default=sa.text("'primary'")),
    )
    op.add_column(
        "live_jobs",
        sa.Column("failback_after_seconds", sa.Float, nullable=False, server_default=sa.text("30")),
    )
    op.add_column("live_jobs", sa.Column("backup_source_url", sa.Text))


def downgrade() -> None:
    # Never recreated on SQLite (its own DROP COLUMN, 3.35+): a copy of live_jobs would
    # lose AUTOINCREMENT, and dropping the old table, with foreign keys on, would
    # cascade to every job's outputs, timings, webhooks, videos and restreams.
    with op.batch_alter_table("live_jobs", recreate="never") as batch:
        batch.drop_column("backup_source_url")
        batch.drop_column("failback_after_seconds")
        batch.drop_column("input_preference")
        batch.drop_column("input_loss_threshold_ms")
