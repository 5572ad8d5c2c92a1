"""When a job's pipeline first wrote at its prefix.

Before that, objects found there are not onair's (they are never continued nor
overwritten). Jobs that published before this migration own what is at theirs.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision: str | None = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("live_jobs", sa.Column("prefix_claimed_at", sa.Text))
    op.execute(
        "UPDATE live_jobs SET prefix_claimed_at = insert_date"
        " WHERE id IN (SELECT live_job_id FROM outputs WHERE counter > 0)"
    )


def downgrade() -> None:
    with op.batch_alter_table("live_jobs") as batch:
        batch.drop_column("prefix_claimed_at")
