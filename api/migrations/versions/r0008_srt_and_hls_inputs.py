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
    with op.batch_alter_table("live_jobs") as batch:
        batch.drop_column("source_url")
        batch.drop_column("srt_passphrase")
