"""SRT and HLS inputs: a job's SRT passphrase, and the HLS source it pulls.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision: str | None = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("live_jobs", sa.Column("srt_passphrase", sa.Text))
    op.add_column("live_jobs", sa.Column("source_url", sa.Text))


def downgrade() -> None:
    # Never recreated on SQLite (its own DROP COLUMN, 3.35+): a copy of live_jobs would
    # lose AUTOINCREMENT, and dropping the old table, with foreign keys on, would
    # cascade to every job's outputs, timings, webhooks, videos and restreams.
    with op.batch_alter_table("live_jobs", recreate="never") as batch:
        batch.drop_column("source_url")
        batch.drop_column("srt_passphrase")
